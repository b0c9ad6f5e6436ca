/**
 * CertificateManager with a scripted issuer and a fake clock, on both database
 * backends: who gets a certificate, when renewal happens, retry backoff.
 */
import assert from "node:assert/strict";
import { openTestDatabase, TEST_BACKENDS, testSecretBox } from "../db/testing.ts";
import { CertificateStore } from "../db/mod.ts";
import { CertificateManager, type IssuedCertificate, renewalDue } from "../server/certs/manager.ts";
import { MemoryLogger } from "../server/log.ts";

const DAY = 86_400_000;

function setup(certs: CertificateStore, registered: Set<string>) {
  let now = Date.UTC(2030, 0, 1);
  let failWith: string | undefined;
  const issued: string[] = [];
  const logs = new MemoryLogger();
  let changes = 0;
  const manager = new CertificateManager({
    certs,
    issuer: {
      kind: "scripted",
      issue: (domain): Promise<IssuedCertificate> => {
        issued.push(domain);
        if (failWith) return Promise.reject(new Error(failWith));
        return Promise.resolve({
          cert: `CERT ${domain} ${issued.length}`,
          key: `KEY ${domain}`,
          notBefore: new Date(now),
          notAfter: new Date(now + 90 * DAY),
        });
      },
    },
    isRegistered: (d) => Promise.resolve(registered.has(d)),
    staticNames: ["gw.example.com"],
    logger: logs,
    onChange: () => changes++,
    now: () => now,
    checkIntervalMs: 3_600_000,
    retryBaseMs: 60_000,
    retryMaxMs: 240_000,
  });
  return {
    manager,
    issued,
    logs,
    changes: () => changes,
    advance: (ms: number) => now += ms,
    fail: (why: string | undefined) => failWith = why,
  };
}

Deno.test("renewalDue: when a third of the lifetime remains", () => {
  const c = { notBefore: 0, notAfter: 90 };
  assert.equal(renewalDue(c, 59), false);
  assert.equal(renewalDue(c, 60), true);
});

for (const backend of TEST_BACKENDS) {
  Deno.test(`CertificateManager (${backend}): issue, refuse, renew, back off`, async () => {
    const db = await openTestDatabase(backend);
    const registered = new Set(["app.example.com"]);
    const store = new CertificateStore(db.db, testSecretBox());
    const t = setup(store, registered);
    try {
      // static and registered names are issued; others are refused without an order
      assert.equal((await t.manager.ensure("gw.example.com", "test")).state, "valid");
      assert.equal((await t.manager.ensure("app.example.com", "test")).state, "valid");
      assert.deepEqual(await t.manager.ensure("evil.example.com", "test"), { state: "refused" });
      assert.deepEqual(t.issued, ["gw.example.com", "app.example.com"]);
      assert.equal((await t.manager.lookup("app.example.com"))?.cert, "CERT app.example.com 2");
      assert.equal(t.changes(), 2);

      // stored sealed; a second manager (another node) loads it from the database
      const rows = await store.list();
      assert.equal(rows.length, 2);
      const other = setup(store, registered);
      await other.manager.check();
      assert.equal((await other.manager.lookup("app.example.com"))?.key, "KEY app.example.com");
      assert.deepEqual(other.issued, []);
      await other.manager.close();

      // fresh certificates are left alone; at two thirds of the lifetime they renew
      t.advance(59 * DAY);
      await t.manager.check();
      assert.equal(t.issued.length, 2);
      t.advance(2 * DAY);
      await t.manager.check();
      assert.deepEqual(t.issued.slice(2).sort(), ["app.example.com", "gw.example.com"]);

      // failures: reported, retried after 1, 2, 4 (capped) minutes; the old certificate stays
      t.fail("CA says no");
      t.advance(61 * DAY);
      const before = t.issued.length;
      const f1 = await t.manager.ensure("app.example.com", "test");
      assert.equal(f1.state, "failed");
      assert.equal(f1.state === "failed" && f1.error, "CA says no");
      assert.ok(t.manager.hasCertificate("app.example.com"));
      assert.equal((await t.manager.ensure("app.example.com", "again")).state, "failed");
      assert.equal(t.issued.length, before + 1, "no attempt inside the backoff");
      const delays: number[] = [];
      for (let i = 0; i < 4; i++) {
        const st = t.manager.status("app.example.com");
        assert.equal(st.state, "failed");
        if (st.state !== "failed") break;
        const wait = st.nextAttemptAt.getTime() - t.advance(0);
        delays.push(wait);
        t.advance(wait);
        await t.manager.ensure("app.example.com", "retry");
      }
      assert.deepEqual(delays, [60_000, 120_000, 240_000, 240_000]);
      assert.ok(t.logs.entries.some((e) => e.msg === "certificate failed"));
      const row = await store.get("app.example.com");
      assert.equal(row?.lastError, "CA says no");
      assert.equal(row?.failures, 5);

      // recovered: the failure state is cleared
      t.fail(undefined);
      t.advance(10 * 60_000);
      assert.equal((await t.manager.ensure("app.example.com", "retry")).state, "valid");
      assert.equal((await store.get("app.example.com"))?.failures, 0);

      // unregistered: its certificate is dropped at the next check
      registered.delete("app.example.com");
      t.advance(61 * DAY);
      await t.manager.check();
      assert.equal(t.manager.hasCertificate("app.example.com"), false);
      assert.equal(await store.get("app.example.com"), undefined);
    } finally {
      await t.manager.close();
      await db.close();
    }
  });
}

Deno.test("CertificateManager: a name that is not ours is refused from memory until it is registered", async () => {
  const db = await openTestDatabase("pglite");
  const registered = new Set<string>();
  const store = new CertificateStore(db.db, testSecretBox());
  const asked: string[] = [];
  const t = setup(store, registered);
  // Count the registry queries through a wrapper around the set the manager reads.
  const has = registered.has.bind(registered);
  registered.has = (d: string) => {
    asked.push(d);
    return has(d);
  };
  try {
    for (let i = 0; i < 5; i++) {
      assert.equal(await t.manager.lookup("random.example.com"), undefined);
      await new Promise((r) => setTimeout(r, 10)); // the background check runs
    }
    assert.deepEqual(asked, ["random.example.com"], "one registry query for five handshakes");
    // Registered now: the next handshake asks again and issuance starts.
    registered.add("random.example.com");
    t.manager.domainRegistered("random.example.com");
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(asked.length, 2);
    assert.ok(await t.manager.lookup("random.example.com"));
    // After the refusal's time-out a name is asked about again.
    await t.manager.lookup("other.example.com");
    await new Promise((r) => setTimeout(r, 10));
    t.advance(61_000);
    await t.manager.lookup("other.example.com");
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(asked.filter((n) => n === "other.example.com").length, 2);
  } finally {
    await t.manager.close();
    await db.close();
  }
});
