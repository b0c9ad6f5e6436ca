/**
 * The ChaCha20-Poly1305 records the client makes through libsodium's wasm
 * (shared/dtls/chacha_wasm.ts), against OpenSSL, a peer nobody here wrote: this process turns the
 * wasm engine on before any DTLS connection exists, so every record of ours below, both ways, is
 * sealed and opened by libsodium (the records are short of its 4 KiB limit). Our client against
 * `openssl s_server`, and `openssl s_client` against our server.
 */
import assert from "node:assert/strict";
import { derivePsk, dtlsConnect, pskIdentity, useWasmChaCha } from "../shared/dtls/mod.ts";
import {
  freeUdpPort,
  OPENSSL_CIPHER,
  openSslCipherLine,
  type Peer,
  startOpenSslClient,
  startOpenSslServer,
  waitUntil,
} from "./tools/dtls_peers.ts";
import { bytes, echoText, Inbox, startEchoServer } from "./tools/dtls_echo.ts";

await useWasmChaCha();

const SUITE = "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256";
const IDENTITY = pskIdentity("Wasm.Example.Test");
const PSK = derivePsk("interop-wasm-api-key");

function token(): string {
  return crypto.randomUUID().slice(0, 8);
}

Deno.test("wasm ChaCha20: our client → openssl s_server, lines of 20 B to 2 KB both ways", async () => {
  const port = freeUdpPort();
  const server = await startOpenSslServer({ port, psk: PSK, suite: SUITE });
  let conn: Awaited<ReturnType<typeof dtlsConnect>> | undefined;
  try {
    conn = await dtlsConnect({
      hostname: "127.0.0.1",
      port,
      identity: IDENTITY,
      psk: PSK,
      suites: [SUITE],
      handshakeTimeoutMs: 10_000,
    });
    assert.equal(conn.suite, SUITE);
    await server.waitFor(`CIPHER is ${OPENSSL_CIPHER[SUITE]}`, 5000);
    const inbox = new Inbox(conn);
    for (const pad of [0, 200, 2000]) {
      const t = token();
      const line = `from-wasm-${t}-${"x".repeat(pad)}`;
      conn.send(bytes(`${line}\n`));
      await server.waitFor(line, 5000);
      const back = `from-openssl-${t}-${"y".repeat(pad)}`;
      await server.write(`${back}\n`);
      await waitUntil(
        () => inbox.texts.join("").includes(`${back}\n`),
        5000,
        () => `client got ${JSON.stringify(inbox.texts).slice(0, 300)}`,
      );
    }
  } catch (e) {
    throw new Error(`${(e as Error).message}\n${server.output()}`, { cause: e });
  } finally {
    conn?.close();
    await server.kill();
  }
});

Deno.test("wasm ChaCha20: openssl s_client → our server, echoed", async () => {
  const echo = startEchoServer({ [IDENTITY]: PSK });
  let client: Peer | undefined;
  try {
    client = startOpenSslClient({ port: echo.port, psk: PSK, identity: IDENTITY, suite: SUITE });
    await client.waitFor(openSslCipherLine(SUITE), 10_000);
    for (const pad of [0, 1500]) {
      const t = token();
      const line = `hello-wasm-${t}-${"z".repeat(pad)}\n`;
      await client.write(line);
      await client.waitFor(echoText(line), 5000);
    }
    assert.equal(echo.conns.length, 1);
    assert.equal(echo.conns[0]!.suite, SUITE);
  } catch (e) {
    throw new Error(`${(e as Error).message}\n${client?.output()}`, { cause: e });
  } finally {
    await client?.kill();
    await echo.close();
  }
});
