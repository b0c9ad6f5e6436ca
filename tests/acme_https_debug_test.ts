/**
 * HTTPS by SNI end to end in debug mode (self-signed certificates, no ACME): the
 * whole server on a fresh PostgreSQL database, probed with real TLS clients.
 */
import assert from "node:assert/strict";
import { startTestServer } from "./helpers/server.ts";
import { curl, probeTls } from "./helpers/tls_probe.ts";
import { tlsAcceptorSupported } from "../server/front/tls.ts";

async function waitFor<T>(what: string, fn: () => Promise<T | undefined> | T | undefined) {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

Deno.test("this Deno has what the TLS acceptor needs (node's TCP handle openFromRid)", () => {
  assert.equal(tlsAcceptorSupported(), true);
});

Deno.test("debug mode: self-signed certificates by SNI, registered names only", async () => {
  await using t = await startTestServer();
  const { server } = t;
  const port = server.httpsAddr.port;
  const dir = await Deno.makeTempDir({ prefix: "hopgate-https-" });
  try {
    // the server domain gets one at start-up
    const own = await waitFor(
      "server certificate",
      () => server.certificates.lookup("gateway.test"),
    );
    const ownProbe = await probeTls(port, "gateway.test", own.cert);
    assert.equal(ownProbe.ok, true, ownProbe.error);
    assert.equal(ownProbe.subject, "gateway.test");

    // a registered domain gets its own, different certificate
    await t.register("app.example.com");
    const app = await waitFor(
      "registered certificate",
      () => server.certificates.lookup("app.example.com"),
    );
    assert.notEqual(app.cert, own.cert);
    const appProbe = await probeTls(port, "app.example.com", app.cert);
    assert.equal(appProbe.ok, true, appProbe.error);
    assert.equal(appProbe.subject, "app.example.com");
    // ... and not the server's: verifying app.example.com against gateway's cert fails
    assert.equal((await probeTls(port, "app.example.com", own.cert)).ok, false);

    // HTTPS reaches the ingress (no tunnel → 404 page) and the admin API
    const caFile = `${dir}/app.pem`;
    await Deno.writeTextFile(caFile, app.cert);
    const r = await curl(`https://app.example.com:${port}/hello`, { caFile });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.status, 404);
    const gwFile = `${dir}/gw.pem`;
    await Deno.writeTextFile(gwFile, own.cert);
    const h = await curl(`https://gateway.test:${port}/healthz`, { caFile: gwFile });
    assert.equal(h.status, 200, h.stderr);

    // unknown names and no SNI at all: handshake failure, nobody else's certificate
    const unknown = await probeTls(port, "unknown.example.net", app.cert);
    assert.equal(unknown.ok, false);
    const unknownCurl = await curl(`https://unknown.example.net:${port}/`, { insecure: true });
    assert.notEqual(unknownCurl.code, 0);
    const bare = await curl(`https://127.0.0.1:${port}/`, { insecure: true });
    assert.notEqual(bare.code, 0);
    assert.equal(server.certificates.status("unknown.example.net").state, "pending");
    assert.equal(await server.certificates.lookup("unknown.example.net"), undefined);

    // debug mode does not redirect plain HTTP
    const plain = await curl(`http://app.example.com:${server.httpAddr.port}/`);
    assert.equal(plain.status, 404);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
