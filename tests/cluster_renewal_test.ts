/**
 * Certificate renewals in a cluster run on the elected node only: a node that is
 * not the leader renews nothing on its timer, and serves what the leader stored.
 */
import assert from "node:assert/strict";
import { openTestDatabase, testSecretBox } from "../db/testing.ts";
import { CertificateStore } from "../db/mod.ts";
import { CertificateManager, type IssuedCertificate } from "../server/certs/manager.ts";
import { MemoryLogger } from "../server/log.ts";

const DAY = 86_400_000;

function node(certs: CertificateStore, clock: { now: number }, leader: { is: boolean }) {
  const issued: string[] = [];
  const manager = new CertificateManager({
    certs,
    issuer: {
      kind: "scripted",
      issue: (domain): Promise<IssuedCertificate> => {
        issued.push(domain);
        return Promise.resolve({
          cert: `CERT ${domain} ${clock.now}`,
          key: `KEY ${domain}`,
          notBefore: new Date(clock.now),
          notAfter: new Date(clock.now + 90 * DAY),
        });
      },
    },
    isRegistered: (d) => Promise.resolve(d === "app.example.com"),
    staticNames: [],
    logger: new MemoryLogger(),
    now: () => clock.now,
    checkIntervalMs: 3_600_000,
    isLeader: () => leader.is,
  });
  return { manager, issued };
}

Deno.test("cluster renewals: only the elected node renews; the other serves what it stored", async () => {
  const db = await openTestDatabase("postgres");
  const store = new CertificateStore(db.db, testSecretBox());
  const clock = { now: Date.UTC(2030, 0, 1) };
  const a = node(store, clock, { is: false });
  const b = node(store, clock, { is: true });
  try {
    assert.equal((await a.manager.ensure("app.example.com", "registered")).state, "valid");
    await b.manager.check();
    assert.deepEqual(b.issued, [], "b loaded a's certificate");
    clock.now += 61 * DAY; // a third of the lifetime left: renewal due
    await a.manager.check();
    assert.deepEqual(a.issued, ["app.example.com"], "a issued once, renews nothing");
    await b.manager.check();
    assert.deepEqual(b.issued, ["app.example.com"], "the leader renewed");
    await a.manager.check();
    assert.equal(
      (await a.manager.lookup("app.example.com"))?.cert,
      `CERT app.example.com ${clock.now}`,
      "a serves the renewed certificate",
    );
  } finally {
    await a.manager.close();
    await b.manager.close();
    await db.close();
  }
});
