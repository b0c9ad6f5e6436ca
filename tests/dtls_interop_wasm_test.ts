/**
 * The ChaCha20-Poly1305 records the client makes through libsodium's wasm
 * (shared/dtls/chacha_wasm.ts), against OpenSSL, a peer nobody here wrote: this process turns the
 * wasm engine on before any DTLS connection exists, so every record of ours below, both ways, is
 * sealed and opened by libsodium (the records are short of its 4 KiB limit). Our client against
 * `openssl s_server`, and `openssl s_client` against our server.
 */
import assert from "node:assert/strict";
import { derivePsk, pskIdentity, useWasmChaCha } from "../shared/dtls/mod.ts";
import { openSslCipherLine, type Peer, startOpenSslClient } from "./tools/dtls_peers.ts";
import { echoText, exchangeWithOpenSslServer, startEchoServer } from "./tools/dtls_echo.ts";

await useWasmChaCha();

const SUITE = "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256";
const IDENTITY = pskIdentity("Wasm.Example.Test");
const PSK = derivePsk("interop-wasm-api-key");

function token(): string {
  return crypto.randomUUID().slice(0, 8);
}

Deno.test("wasm ChaCha20: our client → openssl s_server, lines of 20 B to 2 KB both ways", async () => {
  await exchangeWithOpenSslServer({
    suite: SUITE,
    identity: IDENTITY,
    psk: PSK,
    pads: [0, 200, 2000],
  });
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
