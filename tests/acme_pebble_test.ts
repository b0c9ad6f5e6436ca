/**
 * Automatic HTTPS against a real ACME CA: Debian's pebble, validating for real
 * (PEBBLE_VA_ALWAYS_VALID=0) by fetching /.well-known/acme-challenge/ from our
 * HTTP listener, with pebble-challtestsrv as its DNS. The whole server runs
 * in-process (not debug mode) on a fresh PostgreSQL database.
 */
import assert from "node:assert/strict";
import { ADMIN_KEY, startTestServer, type TestServer } from "./helpers/server.ts";
import { freePort, type Pebble, startPebble } from "./helpers/pebble.ts";
import { curl, probeTls } from "./helpers/tls_probe.ts";
import { acmeChallenges, certificates } from "../db/schema.ts";

const GATEWAY = "gateway.hop.test";

async function waitFor<T>(what: string, fn: () => Promise<T | undefined> | T | undefined) {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Registers a domain through the admin API over HTTPS (verified with pebble's root). */
async function registerOverHttps(t: TestServer, rootFile: string, domain: string) {
  const port = t.server.httpsAddr.port;
  const out = await new Deno.Command("curl", {
    args: [
      "-sS",
      "--cacert",
      rootFile,
      "--resolve",
      `${GATEWAY}:${port}:127.0.0.1`,
      "-H",
      `Authorization: Bearer ${ADMIN_KEY}`,
      "-H",
      "Content-Type: application/json",
      "-d",
      JSON.stringify({ domain, memo: "acme test" }),
      `https://${GATEWAY}:${port}/api/v1/admin/domains/register`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  assert.equal(JSON.parse(text).success, true, text);
}

Deno.test("ACME with pebble: issue, serve by SNI, refuse, redirect, renew, retry", async (t) => {
  const httpPort = freePort();
  let pebble: Pebble | undefined;
  let server: TestServer | undefined;
  const dir = await Deno.makeTempDir({ prefix: "hopgate-acme-" });
  let clockOffsetMs = 0;
  try {
    pebble = await startPebble({ httpPort });
    server = await startTestServer({
      HOP_SERVER_DEBUG: "false",
      HOP_SERVER_DOMAIN: GATEWAY,
      HOP_SERVER_HTTP_LISTEN: `127.0.0.1:${httpPort}`,
      HOP_ACME_CA_DIR: pebble.directoryUrl,
      HOP_ACME_CA_CERT: pebble.directoryCaFile,
      HOP_ACME_EMAIL: "ops@hop.test",
    }, {
      certificates: {
        now: () => Date.now() + clockOffsetMs,
        checkIntervalMs: 200,
        retryBaseMs: 300,
        retryMaxMs: 1000,
        acmePollMinMs: 100,
      },
    });
    const s = server.server;
    const certs = s.certificates;
    const httpsPort = s.httpsAddr.port;
    const rootFile = `${dir}/root.pem`;
    const root = await pebble.root();
    await Deno.writeTextFile(rootFile, root);
    const orders = (domain: string) =>
      server!.logs.entries.filter((e) =>
        e.msg === "certificate order" && e.fields.domain === domain
      )
        .length;

    await t.step("the server domain is issued at start-up and serves the admin API", async () => {
      await waitFor("gateway certificate", () => certs.hasCertificate(GATEWAY));
      const p = await probeTls(httpsPort, GATEWAY, root);
      assert.equal(p.ok, true, p.error);
      const h = await curl(`https://${GATEWAY}:${httpsPort}/healthz`, { caFile: rootFile });
      assert.equal(h.status, 200, h.stderr);
    });

    let appSerial = "";
    await t.step(
      "a registered domain gets a certificate through our challenge responder",
      async () => {
        const before = orders("app.hop.test");
        await registerOverHttps(server!, rootFile, "app.hop.test");
        await waitFor("app certificate", () => certs.hasCertificate("app.hop.test"));
        assert.equal(orders("app.hop.test"), before + 1);
        const p = await probeTls(httpsPort, "app.hop.test", root);
        assert.equal(p.ok, true, p.error);
        appSerial = p.serial!;
        // HTTPS reaches the ingress for it (no tunnel connected: the 404 page)
        const r = await curl(`https://app.hop.test:${httpsPort}/x`, { caFile: rootFile });
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.status, 404);
        // challenges are cleaned up; the key is sealed in the database
        const db = s.storage.db;
        assert.equal((await db.select().from(acmeChallenges)).length, 0);
        const [row] = (await db.select().from(certificates))
          .filter((r) => r.domain === "app.hop.test");
        const sealed = row?.keySealed ?? "";
        assert.ok(sealed.startsWith("v1."), "certificate key stored sealed");
        assert.ok(!sealed.includes("PRIVATE KEY"));
        assert.ok(!server!.logs.lines().some((l) => l.includes("PRIVATE KEY")));
      },
    );

    await t.step("a second domain gets its own certificate", async () => {
      await registerOverHttps(server!, rootFile, "second.hop.test");
      await waitFor("second certificate", () => certs.hasCertificate("second.hop.test"));
      const p = await probeTls(httpsPort, "second.hop.test", root);
      assert.equal(p.ok, true, p.error);
      assert.notEqual(p.serial, appSerial);
      const r = await curl(`https://second.hop.test:${httpsPort}/`, { caFile: rootFile });
      assert.equal(r.code, 0, r.stderr);
    });

    await t.step(
      "the first handshake for a registered domain without one starts issuance",
      async () => {
        await s.storage.store.register("late.hop.test"); // no admin call: no registration hook
        const first = await probeTls(httpsPort, "late.hop.test", root);
        assert.equal(first.ok, false); // none yet: handshake failure, no other name's certificate
        await waitFor("late certificate", () => certs.hasCertificate("late.hop.test"));
        const p = await waitFor("late handshake", async () => {
          const p = await probeTls(httpsPort, "late.hop.test", root);
          return p.ok ? p : undefined;
        });
        assert.equal(p.subject ?? "late.hop.test", "late.hop.test");
        assert.ok(
          server!.logs.entries.some((e) =>
            e.msg === "certificate order" && e.fields.domain === "late.hop.test" &&
            e.fields.reason === "handshake"
          ),
        );
      },
    );

    await t.step("unregistered names are refused: no order, handshake failure", async () => {
      const p = await probeTls(httpsPort, "stranger.hop.test", root);
      assert.equal(p.ok, false);
      assert.deepEqual(await certs.ensure("stranger.hop.test", "test"), { state: "refused" });
      await new Promise((r) => setTimeout(r, 300)); // give a background order a chance to show
      assert.equal(orders("stranger.hop.test"), 0);
      assert.equal(certs.hasCertificate("stranger.hop.test"), false);
    });

    await t.step(
      "plain HTTP redirects (308) where a certificate exists, never challenges",
      async () => {
        const r = await curl(`http://app.hop.test:${httpPort}/some/path?q=1`);
        assert.equal(r.status, 308);
        assert.equal(r.location, `https://app.hop.test:${httpsPort}/some/path?q=1`);
        assert.equal(r.body.includes("Strict-Transport-Security"), false);
        const ch = await curl(`http://app.hop.test:${httpPort}/.well-known/acme-challenge/nothing`);
        assert.equal(ch.status, 404);
        const other = await curl(`http://stranger.hop.test:${httpPort}/`);
        assert.equal(other.status, 404); // no certificate: routed as usual
        // the responder answers from the database, for any Host (another node's
        // order: a token of the real shape, 43 base64url characters)
        const token = "tok_en-1".padEnd(43, "x");
        const certsDb = s.storage.db;
        await certsDb.insert(acmeChallenges).values({
          token,
          domain: "app.hop.test",
          keyAuthorization: `${token}.thumb`,
          expiresAt: new Date(Date.now() + 60_000),
        });
        const ok = await curl(
          `http://whatever.example:${httpPort}/.well-known/acme-challenge/${token}`,
        );
        assert.equal(ok.status, 200);
        assert.equal(ok.body, `${token}.thumb`);
        await certsDb.delete(acmeChallenges);
      },
    );

    await t.step("renewal replaces a near-expiry certificate without restart", async () => {
      const p0 = await probeTls(httpsPort, "app.hop.test", root);
      const st = certs.status("app.hop.test");
      assert.equal(st.state, "valid");
      const notAfter = (st as { notAfter: Date }).notAfter.getTime();
      // jump to a moment when less than a third of the lifetime remains
      const row = (await s.storage.db.select().from(certificates))
        .find((r) => r.domain === "app.hop.test")!;
      const lifetime = notAfter - row.notBefore!.getTime();
      clockOffsetMs = notAfter - lifetime / 4 - Date.now();
      await waitFor("renewal", () => orders("app.hop.test") >= 2);
      clockOffsetMs = 0;
      const renewed = await waitFor("renewed certificate", async () => {
        const p = await probeTls(httpsPort, "app.hop.test", root);
        return p.ok && p.serial !== p0.serial ? p : undefined;
      });
      assert.ok(renewed.serial);
      // back to the real clock: fresh certificates are left alone
      const settled = orders("app.hop.test");
      await new Promise((r) => setTimeout(r, 600));
      assert.equal(orders("app.hop.test"), settled);
      assert.equal(certs.status("app.hop.test").state, "valid");
    });

    await t.step("a failed validation is reported and retried with backoff", async () => {
      // the CA resolves this name to an address where nobody answers
      await pebble!.setA("flaky.hop.test", ["127.0.0.2"]);
      await s.storage.store.register("flaky.hop.test");
      certs.domainRegistered("flaky.hop.test");
      const failed = await waitFor("failure", () => {
        const st = certs.status("flaky.hop.test");
        return st.state === "failed" ? st : undefined;
      });
      assert.ok(failed.failures >= 1);
      assert.match(failed.error, /127\.0\.0\.2|connection refused|connect/i, failed.error);
      assert.ok(
        server!.logs.entries.some((e) =>
          e.msg === "certificate failed" && e.fields.domain === "flaky.hop.test"
        ),
      );
      const handshake = await probeTls(httpsPort, "flaky.hop.test", root);
      assert.equal(handshake.ok, false);
      // DNS fixed: the next retry succeeds without anyone asking
      await pebble!.clearA("flaky.hop.test");
      await waitFor("retried certificate", () => certs.hasCertificate("flaky.hop.test"));
      assert.ok(orders("flaky.hop.test") >= 2);
      assert.equal(certs.status("flaky.hop.test").state, "valid");
      const p = await probeTls(httpsPort, "flaky.hop.test", root);
      assert.equal(p.ok, true, p.error);
    });

    await t.step("ACME results and expiry reach the metrics", async () => {
      const text = await s.metrics.render();
      const count = (kind: string, result: string) =>
        Number(
          new RegExp(
            `^hopgate_acme_orders_total\\{kind="${kind}",result="${result}"\\} (\\d+)`,
            "m",
          )
            .exec(text)?.[1] ?? 0,
        );
      assert.ok(count("issue", "success") >= 3, text);
      assert.ok(count("renew", "success") >= 1, text);
      assert.ok(count("issue", "failure") >= 1, text);
      assert.match(text, /^hopgate_certificates [1-9]/m);
    });
  } finally {
    await server?.close();
    await pebble?.close();
    await Deno.remove(dir, { recursive: true });
  }
});
