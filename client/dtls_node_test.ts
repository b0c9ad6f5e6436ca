/**
 * The node-dtls-client adapter against `openssl s_server` (a peer nobody here wrote).
 * Needs `openssl` on PATH; run with --allow-net --allow-env --allow-run --allow-read.
 */
import assert from "node:assert/strict";
import { connectNodeDtls, NODE_DTLS_SUITE, NodeDtlsError, nodeDtlsFailure } from "./dtls_node.ts";
import { AlertDescription, DtlsError } from "../shared/dtls/mod.ts";
import { derivePsk } from "../shared/credentials.ts";
import { pskIdentity } from "../shared/dtls/psk.ts";
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

Deno.test("node-dtls-client adapter: failures carry our engine's DtlsError codes", async () => {
  const code = (e: unknown) => {
    assert.ok(e instanceof NodeDtlsError && e instanceof DtlsError, String(e));
    return e.code;
  };
  // Nobody listening: the library's timeout text becomes HANDSHAKE_TIMEOUT.
  const silent = { hostname: "127.0.0.1", port: freeUdpPort(), identity: IDENTITY, psk: PSK };
  const timedOut = await connectNodeDtls({ ...silent, timeoutMs: 300 }).catch((e) => e);
  assert.equal(code(timedOut), "HANDSHAKE_TIMEOUT", String(timedOut));
  // A name that does not resolve: the system error's code becomes RESOLVE_FAILED.
  const unknown = await connectNodeDtls({ ...silent, hostname: "no-such-host.invalid" })
    .catch((e) => e);
  assert.equal(code(unknown), "RESOLVE_FAILED", String(unknown));
  // Aborted by the caller.
  const ac = new AbortController();
  const p = connectNodeDtls({ ...silent, timeoutMs: 5000, signal: ac.signal }).catch((e) => e);
  ac.abort();
  assert.equal(code(await p), "ABORTED");
});

Deno.test("node-dtls-client adapter: the library's alert texts become alert numbers", () => {
  // The library (2.0.3) reports a peer's fatal alert only as this text.
  for (
    const [name, alert] of [
      ["decrypt_error", AlertDescription.DecryptError],
      ["bad_record_mac", AlertDescription.BadRecordMac],
      ["unknown_psk_identity", AlertDescription.UnknownPskIdentity],
      ["handshake_failure", AlertDescription.HandshakeFailure],
    ] as const
  ) {
    const e = nodeDtlsFailure(new Error(`received fatal alert: ${name}`), "h:1");
    assert.equal(e.code, "ALERT_RECEIVED");
    assert.equal(e.alert, alert, name);
    assert.match(e.message, /^node-dtls-client: handshake with h:1 failed: received fatal alert/);
  }
  const other = nodeDtlsFailure(new Error("something else"), "h:1");
  assert.equal(other.code, "HANDSHAKE_FAILED");
  assert.equal(other.alert, undefined);
});
