/**
 * The node-dtls-client adapter against `openssl s_server` (a peer nobody here wrote).
 * Needs `openssl` on PATH; run with --allow-net --allow-env --allow-run --allow-read.
 */
import assert from "node:assert/strict";
import { connectNodeDtls, NODE_DTLS_SUITE, NodeDtlsError } from "./dtls_node.ts";
import { derivePsk, pskIdentity } from "../shared/dtls/psk.ts";
import { freeUdpPort, startOpenSslServer, waitUntil } from "../tests/tools/dtls_peers.ts";

const IDENTITY = pskIdentity("App.Example.Test");
const PSK = derivePsk("node-dtls-adapter-test-key");

Deno.test("node-dtls-client adapter ↔ openssl s_server, PSK-AES128-GCM, data both ways", async () => {
  const port = freeUdpPort();
  const server = await startOpenSslServer({
    port,
    psk: PSK,
    suite: "TLS_PSK_WITH_AES_128_GCM_SHA256",
  });
  let conn: Awaited<ReturnType<typeof connectNodeDtls>> | undefined;
  try {
    conn = await connectNodeDtls({
      hostname: "127.0.0.1",
      port,
      identity: IDENTITY,
      psk: PSK,
      timeoutMs: 5000,
    });
    assert.equal(conn.suite, NODE_DTLS_SUITE);
    assert.equal(conn.maxDatagramSize, 1200);
    assert.equal(conn.closed, false);
    await server.waitFor("CIPHER is PSK-AES128-GCM-SHA256", 5000);

    const got: string[] = [];
    let closeReason: string | undefined;
    conn.attach({
      onDatagram: (d) => got.push(new TextDecoder().decode(d)),
      onClose: (r) => closeReason = r,
    });
    conn.send(new TextEncoder().encode("from-node-dtls-client\n"));
    await server.waitFor("from-node-dtls-client", 5000);

    await server.write("from-openssl-server\n");
    await waitUntil(
      () => got.join("").includes("from-openssl-server"),
      5000,
      () => `client got ${JSON.stringify(got)}\n${server.output()}`,
    );

    assert.throws(() => conn!.send(new Uint8Array(1201)), RangeError);
    conn.close();
    assert.equal(conn.closed, true);
    assert.equal(closeReason, "closed locally");
    await conn.whenClosed;
    conn.send(new Uint8Array(10)); // dropped, no throw
  } finally {
    conn?.close();
    await conn?.whenClosed;
    await server.kill();
  }
});

Deno.test("node-dtls-client adapter: wrong PSK fails with a clear error", async () => {
  const port = freeUdpPort();
  const server = await startOpenSslServer({
    port,
    psk: PSK,
    suite: "TLS_PSK_WITH_AES_128_GCM_SHA256",
  });
  try {
    await assert.rejects(
      connectNodeDtls({
        hostname: "127.0.0.1",
        port,
        identity: IDENTITY,
        psk: derivePsk("some-other-key"),
        timeoutMs: 3000,
      }),
      (e: unknown) => {
        assert.ok(e instanceof NodeDtlsError, String(e));
        assert.match(e.message, /handshake with 127\.0\.0\.1:\d+ as "app\.example\.test" failed/);
        return true;
      },
    );
  } finally {
    await server.kill();
  }
});

Deno.test("node-dtls-client adapter: nobody listening → handshake timeout error", async () => {
  const port = freeUdpPort();
  await assert.rejects(
    connectNodeDtls({ hostname: "127.0.0.1", port, identity: IDENTITY, psk: PSK, timeoutMs: 300 }),
    (e: unknown) => e instanceof NodeDtlsError && /failed|timed out/.test(e.message),
  );
});

Deno.test("node-dtls-client adapter: abort signal rejects the pending handshake", async () => {
  const port = freeUdpPort();
  const ac = new AbortController();
  const p = connectNodeDtls({
    hostname: "127.0.0.1",
    port,
    identity: IDENTITY,
    psk: PSK,
    timeoutMs: 5000,
    signal: ac.signal,
  });
  setTimeout(() => ac.abort(), 50);
  await assert.rejects(p, /aborted/);
});

Deno.test("node-dtls-client adapter: option validation", () => {
  const base = { hostname: "127.0.0.1", port: 9, identity: IDENTITY, psk: PSK };
  assert.throws(() => connectNodeDtls({ ...base, maxDatagramSize: 20_000 }), RangeError);
  assert.throws(() => connectNodeDtls({ ...base, maxDatagramSize: 0 }), RangeError);
  assert.throws(() => connectNodeDtls({ ...base, psk: new Uint8Array(0) }), RangeError);
});
