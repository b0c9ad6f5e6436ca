/**
 * DTLS 1.2 interop: our `shared/dtls` against peers nobody here wrote (OpenSSL 3.0
 * `s_client`/`s_server`, GnuTLS `gnutls-cli --udp`, npm:node-dtls-client), both suites, data
 * both ways. The server side runs an echo app that answers `ECHO:` + the uppercased datagram,
 * so a reply proves our server decrypted the peer's record and encrypted its own.
 *
 * Needs: openssl (3.0) and gnutls-cli (Debian gnutls-bin) on PATH.
 */
import assert from "node:assert/strict";
import { derivePsk, dtlsConnect, DtlsError, pskIdentity } from "../shared/dtls/mod.ts";
import { connectNodeDtls } from "../client/dtls_node.ts";
import {
  delay,
  freeUdpPort,
  GNUTLS_DESCRIPTION,
  openSslCipherLine,
  type Peer,
  startGnutlsClient,
  startOpenSslClient,
  startOpenSslServer,
  SUITES,
  waitUntil,
} from "./tools/dtls_peers.ts";
import {
  bytes,
  echoText,
  exchangeWithOpenSslServer,
  Inbox,
  startEchoServer,
} from "./tools/dtls_echo.ts";

const IDENTITY = pskIdentity("App.Example.Test");
const PSK = derivePsk("interop-test-api-key");
const OTHER_IDENTITY = "other.example.test";
const OTHER_PSK = derivePsk("another-domain-key");
const KEYS = { [IDENTITY]: PSK, [OTHER_IDENTITY]: OTHER_PSK };

/** A random token, so a test can't pass on text left over from elsewhere. */
function token(): string {
  return crypto.randomUUID().slice(0, 8);
}

async function killAll(peers: (Peer | undefined)[]): Promise<void> {
  await Promise.all(peers.map((p) => p?.kill()));
}

// ---------------------------------------------------------------------------------------------
// openssl s_client → our server

for (const suite of SUITES) {
  Deno.test(`openssl s_client → our server, ${suite}, data both ways`, async () => {
    const echo = startEchoServer(KEYS);
    let client: Peer | undefined;
    try {
      client = startOpenSslClient({ port: echo.port, psk: PSK, identity: IDENTITY, suite });
      await client.waitFor(openSslCipherLine(suite), 10_000);
      const t = token();
      await client.write(`hello-from-openssl-${t}\n`);
      await client.waitFor(echoText(`hello-from-openssl-${t}\n`), 5000);
      // A second record, to see the sequence numbers move on both sides.
      await client.write(`second-${t}\n`);
      await client.waitFor(echoText(`second-${t}\n`), 5000);

      assert.equal(echo.conns.length, 1);
      const conn = echo.conns[0]!;
      assert.equal(conn.suite, suite);
      assert.equal(conn.identity, IDENTITY);
      assert.equal(conn.remoteAddr.hostname, "127.0.0.1");
      assert.deepEqual(
        echo.received.map((r) => r.text),
        [`hello-from-openssl-${t}\n`, `second-${t}\n`],
      );
      assert.equal(echo.server.stats.handshakesCompleted, 1);
      assert.equal(echo.server.stats.handshakesFailed, 0);
      assert.ok(echo.server.stats.helloVerifyRequestsSent >= 1, "no cookie exchange");
    } catch (e) {
      throw new Error(`${(e as Error).message}\n${client?.output() ?? ""}`, { cause: e });
    } finally {
      await killAll([client]);
      await echo.close();
    }
  });
}

Deno.test("openssl s_client with a wrong PSK or an unknown identity fails; a good session is unaffected", async () => {
  const suite = "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256";
  const failures: string[] = [];
  const echo = startEchoServer(KEYS, {
    onHandshakeError: (_peer, err) => failures.push(`${err.code}: ${err.message}`),
  });
  let good: Peer | undefined;
  let wrongPsk: Peer | undefined;
  let unknownId: Peer | undefined;
  try {
    good = startOpenSslClient({ port: echo.port, psk: PSK, identity: IDENTITY, suite });
    await good.waitFor(openSslCipherLine(suite), 10_000);
    await good.write("before\n");
    await good.waitFor(echoText("before\n"), 5000);

    // Same identity, another domain's key: the Finished does not verify.
    wrongPsk = startOpenSslClient({ port: echo.port, psk: OTHER_PSK, identity: IDENTITY, suite });
    // Unknown identity: lookupPsk returns undefined.
    unknownId = startOpenSslClient({
      port: echo.port,
      psk: PSK,
      identity: "nobody.example.test",
      suite,
    });
    // The server aborts each handshake with a fatal alert, which s_client names on stderr
    // before it exits with an error. (s_client 3.0 may still print "New, TLSv1.2, Cipher is
    // ..." for a failed ECDHE-PSK handshake, so that line proves nothing here.) RFC 4279 lets a
    // server answer an unknown identity with unknown_psk_identity or, to hide which identities
    // exist, decrypt_error.
    const expected = [
      [wrongPsk, /alert (decrypt error|bad record mac)/],
      [unknownId, /alert (unknown psk identity|decrypt error)/],
    ] as const;
    for (const [bad, alert] of expected) {
      await bad.waitFor(alert, 15_000, true);
      const status = await bad.waitExit(5000);
      assert.ok(status && !status.success, `s_client did not fail:\n${bad.output()}`);
    }
    await waitUntil(
      () => echo.server.stats.handshakesFailed >= 2,
      10_000,
      () => `stats: ${JSON.stringify(echo.server.stats)}`,
    );
    assert.equal(echo.server.stats.handshakesFailed, 2, JSON.stringify(failures));
    assert.equal(echo.server.stats.handshakesCompleted, 1);
    assert.ok(echo.lookups.includes("nobody.example.test"));

    // The good session still works, and nothing from the bad ones reached the app.
    await good.write("after\n");
    await good.waitFor(echoText("after\n"), 5000);
    assert.deepEqual(echo.received.map((r) => r.text), ["before\n", "after\n"]);
    assert.equal(echo.conns.length, 1);
    assert.equal(echo.conns[0]!.closed, false);
  } catch (e) {
    throw new Error(
      `${(e as Error).message}\n${good?.output()}\n${wrongPsk?.output()}\n${unknownId?.output()}`,
      { cause: e },
    );
  } finally {
    await killAll([good, wrongPsk, unknownId]);
    await echo.close();
  }
});

// ---------------------------------------------------------------------------------------------
// our client → openssl s_server

for (const suite of SUITES) {
  Deno.test(`our client → openssl s_server, ${suite}, data both ways`, async () => {
    await exchangeWithOpenSslServer({ suite, identity: IDENTITY, psk: PSK, pads: [0] });
  });
}

Deno.test("our client → openssl s_server offering both suites picks ECDHE-PSK-CHACHA20", async () => {
  const port = freeUdpPort();
  const server = await startOpenSslServer({
    port,
    psk: PSK,
    suite: "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256",
    cipherList: "PSK-AES128-GCM-SHA256:ECDHE-PSK-CHACHA20-POLY1305",
  });
  let conn: Awaited<ReturnType<typeof dtlsConnect>> | undefined;
  try {
    // s_server prefers the client's order by default: we offer CHACHA first.
    conn = await dtlsConnect({
      hostname: "127.0.0.1",
      port,
      identity: IDENTITY,
      psk: PSK,
      handshakeTimeoutMs: 10_000,
    });
    assert.equal(conn.suite, "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256");
    await server.waitFor("CIPHER is ECDHE-PSK-CHACHA20-POLY1305", 5000);
  } catch (e) {
    throw new Error(`${(e as Error).message}\n${server.output()}`, { cause: e });
  } finally {
    conn?.close();
    await server.kill();
  }
});

Deno.test("our client → openssl s_server with a wrong PSK fails with a DtlsError", async () => {
  const port = freeUdpPort();
  const server = await startOpenSslServer({
    port,
    psk: PSK,
    suite: "TLS_PSK_WITH_AES_128_GCM_SHA256",
  });
  try {
    await assert.rejects(
      dtlsConnect({
        hostname: "127.0.0.1",
        port,
        identity: IDENTITY,
        psk: OTHER_PSK,
        suites: ["TLS_PSK_WITH_AES_128_GCM_SHA256"],
        handshakeTimeoutMs: 4000,
      }),
      (e: unknown) => {
        assert.ok(e instanceof DtlsError, String(e));
        // OpenSSL drops a Finished that does not decrypt (DTLS), so we time out; or it alerts.
        assert.ok(["HANDSHAKE_TIMEOUT", "ALERT_RECEIVED"].includes(e.code), e.code);
        return true;
      },
    );
    assert.doesNotMatch(server.stdout, /CIPHER is/);
  } finally {
    await server.kill();
  }
});

// ---------------------------------------------------------------------------------------------
// gnutls-cli → our server

for (const suite of SUITES) {
  Deno.test(`gnutls-cli → our server, ${suite}`, async () => {
    const echo = startEchoServer(KEYS);
    let client: Peer | undefined;
    try {
      client = startGnutlsClient({ port: echo.port, psk: PSK, identity: IDENTITY, suite });
      // gnutls-cli prints the session description only after gnutls_handshake() succeeded,
      // i.e. after it verified our server's Finished.
      await client.waitFor(GNUTLS_DESCRIPTION[suite], 10_000);
      await waitUntil(() => echo.conns.length === 1, 5000, () => "no connection on our side");
      assert.equal(echo.conns[0]!.suite, suite);
      assert.equal(echo.conns[0]!.identity, IDENTITY);
      assert.equal(echo.server.stats.handshakesCompleted, 1);

      if (suite === "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256") {
        // gnutls-cli 3.7.9 (Debian 12) crashes (SIGSEGV) right after an ECDHE-PSK handshake,
        // while printing the session info, against openssl s_server as well: no data can be
        // exchanged with it. The handshake itself is proven above (both Finished verified).
        return;
      }
      await client.waitFor("- Handshake was completed", 5000);
      const t = token();
      await client.write(`hello-from-gnutls-${t}\n`);
      await client.waitFor(echoText(`hello-from-gnutls-${t}\n`), 5000);
      assert.deepEqual(echo.received.map((r) => r.text), [`hello-from-gnutls-${t}\n`]);
    } catch (e) {
      throw new Error(`${(e as Error).message}\n${client?.output() ?? ""}`, { cause: e });
    } finally {
      await killAll([client]);
      await echo.close();
    }
  });
}

// ---------------------------------------------------------------------------------------------
// node-dtls-client → our server

Deno.test("node-dtls-client → our server, PSK-AES128-GCM, data both ways", async () => {
  const echo = startEchoServer(KEYS);
  let conn: Awaited<ReturnType<typeof connectNodeDtls>> | undefined;
  try {
    conn = await connectNodeDtls({
      hostname: "127.0.0.1",
      port: echo.port,
      identity: IDENTITY,
      psk: PSK,
      timeoutMs: 10_000,
    });
    const inbox = new Inbox(conn);
    const t = token();
    for (let i = 0; i < 20; i++) conn.send(bytes(`node-${t}-${i}`));
    for (let i = 0; i < 20; i++) await inbox.waitFor(echoText(`node-${t}-${i}`), 5000);
    assert.equal(echo.conns[0]!.suite, "TLS_PSK_WITH_AES_128_GCM_SHA256");
    assert.equal(echo.conns[0]!.identity, IDENTITY);
    // close_notify reaches our server.
    conn.close();
    await conn.whenClosed;
    await waitUntil(() => echo.closes.has(0), 5000, () => "server did not see the close");
  } finally {
    conn?.close();
    await conn?.whenClosed;
    await echo.close();
  }
});

Deno.test("node-dtls-client → our server with a wrong PSK fails, server counts it", async () => {
  const echo = startEchoServer(KEYS);
  try {
    await assert.rejects(
      connectNodeDtls({
        hostname: "127.0.0.1",
        port: echo.port,
        identity: IDENTITY,
        psk: OTHER_PSK,
        timeoutMs: 3000,
      }),
      /node-dtls-client: handshake with .* failed/,
    );
    await waitUntil(
      () => echo.server.stats.handshakesFailed === 1,
      5000,
      () => JSON.stringify(echo.server.stats),
    );
    assert.equal(echo.conns.length, 0);
  } finally {
    await echo.close();
  }
});

// ---------------------------------------------------------------------------------------------
// our client ↔ our server

for (const suite of SUITES) {
  Deno.test(`our client ↔ our server, ${suite}, data both ways`, async () => {
    const echo = startEchoServer(KEYS);
    let conn: Awaited<ReturnType<typeof dtlsConnect>> | undefined;
    try {
      conn = await dtlsConnect({
        hostname: "127.0.0.1",
        port: echo.port,
        identity: IDENTITY,
        psk: PSK,
        suites: [suite],
        handshakeTimeoutMs: 10_000,
      });
      assert.equal(conn.suite, suite);
      assert.equal(conn.identity, IDENTITY);
      const inbox = new Inbox(conn);
      const big = "x".repeat(conn.maxDatagramSize - 5); // the echo adds 5 bytes
      conn.send(bytes("one"));
      conn.send(bytes(big));
      await inbox.waitFor(echoText("one"));
      await inbox.waitFor(echoText(big));
      assert.equal(echo.conns[0]!.suite, suite);
      conn.close();
      await waitUntil(() => echo.closes.has(0), 5000, () => "server did not see close_notify");
    } finally {
      conn?.close();
      await echo.close();
    }
  });
}

Deno.test("our client ↔ our server: default offer negotiates ECDHE-PSK-CHACHA20", async () => {
  const echo = startEchoServer(KEYS);
  let conn: Awaited<ReturnType<typeof dtlsConnect>> | undefined;
  try {
    conn = await dtlsConnect({
      hostname: "127.0.0.1",
      port: echo.port,
      identity: OTHER_IDENTITY,
      psk: OTHER_PSK,
      handshakeTimeoutMs: 10_000,
    });
    assert.equal(conn.suite, "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256");
    assert.equal(echo.conns[0]!.identity, OTHER_IDENTITY);
  } finally {
    conn?.close();
    await echo.close();
  }
});

Deno.test("our client ↔ our server: wrong PSK and unknown identity are refused with alerts", async () => {
  const echo = startEchoServer(KEYS);
  try {
    await assert.rejects(
      dtlsConnect({
        hostname: "127.0.0.1",
        port: echo.port,
        identity: IDENTITY,
        psk: OTHER_PSK,
        handshakeTimeoutMs: 5000,
      }),
      (e: unknown) => e instanceof DtlsError && e.code === "ALERT_RECEIVED" && e.alert === 51,
    );
    await assert.rejects(
      dtlsConnect({
        hostname: "127.0.0.1",
        port: echo.port,
        identity: "nobody.example.test",
        psk: PSK,
        handshakeTimeoutMs: 5000,
      }),
      // unknown_psk_identity (115), or decrypt_error (51) from a server hiding its identities.
      (e: unknown) =>
        e instanceof DtlsError && e.code === "ALERT_RECEIVED" &&
        (e.alert === 115 || e.alert === 51),
    );
    assert.equal(echo.server.stats.handshakesFailed, 2);
    assert.equal(echo.conns.length, 0);
    await delay(10);
  } finally {
    await echo.close();
  }
});
