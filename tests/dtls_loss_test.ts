/**
 * DTLS under loss, through the seeded UDP relay (tests/tools/udp_relay.ts): handshakes survive
 * 20 % loss in both directions (flight retransmission), and an established session survives a
 * burst of 200 lost records in either direction (the anti-replay window slides past a gap).
 */
import assert from "node:assert/strict";
import { derivePsk, dtlsConnect, pskIdentity } from "../shared/dtls/mod.ts";
import { connectNodeDtls } from "../client/dtls_node.ts";
import { UdpRelay } from "./tools/udp_relay.ts";
import {
  freeUdpPort,
  openSslCipherLine,
  type Peer,
  startOpenSslClient,
  startOpenSslServer,
  waitUntil,
} from "./tools/dtls_peers.ts";
import { bytes, echoText, Inbox, startEchoServer } from "./tools/dtls_echo.ts";

const IDENTITY = pskIdentity("loss.example.test");
const PSK = derivePsk("loss-test-api-key");
const KEYS = { [IDENTITY]: PSK };

function relayTo(port: number, seed: number, loss = 0): UdpRelay {
  return new UdpRelay({
    upstream: { hostname: "127.0.0.1", port },
    seed,
    toServer: { loss },
    toClient: { loss },
    trace: true,
  });
}

function describe(relay: UdpRelay): string {
  return `relay counters ${JSON.stringify(relay.counters)}\nlast datagrams:\n${
    relay.formatTrace(60)
  }`;
}

Deno.test("harness check: openssl s_client ↔ openssl s_server through the relay at 20 % loss", async () => {
  const port = freeUdpPort();
  const server = await startOpenSslServer({
    port,
    psk: PSK,
    suite: "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256",
  });
  const relay = relayTo(port, 3, 0.2);
  let client: Peer | undefined;
  try {
    client = startOpenSslClient({
      port: relay.addr.port,
      psk: PSK,
      identity: IDENTITY,
      suite: "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256",
    });
    await server.waitFor("CIPHER is ECDHE-PSK-CHACHA20-POLY1305", 30_000);
    relay.set("toServer", { loss: 0 });
    relay.set("toClient", { loss: 0 });
    await client.write("through-the-relay\n");
    await server.waitFor("through-the-relay", 5000);
  } catch (e) {
    throw new Error(`${(e as Error).message}\n${describe(relay)}\n${client?.output()}`, {
      cause: e,
    });
  } finally {
    await client?.kill();
    await relay.close();
    await server.kill();
  }
});

for (const seed of [1, 3, 4, 5, 6]) {
  Deno.test(`our client ↔ our server: handshake completes at 20 % loss both ways (seed ${seed})`, async () => {
    const echo = startEchoServer(KEYS, { initialRtoMs: 100, maxRtoMs: 800 });
    const relay = relayTo(echo.port, seed, 0.2);
    let conn: Awaited<ReturnType<typeof dtlsConnect>> | undefined;
    try {
      conn = await dtlsConnect({
        hostname: "127.0.0.1",
        port: relay.addr.port,
        identity: IDENTITY,
        psk: PSK,
        handshakeTimeoutMs: 30_000,
        initialRtoMs: 100,
        maxRtoMs: 800,
      });
      assert.equal(echo.server.stats.handshakesCompleted, 1);
      const lostInHandshake = relay.counters.toServer.droppedRandom +
        relay.counters.toClient.droppedRandom;
      // The seeds are chosen so that the handshake itself loses datagrams.
      assert.ok(lostInHandshake > 0, `no loss during the handshake\n${describe(relay)}`);
      assert.ok(
        echo.server.stats.flightsRetransmitted + conn.stats.flightsRetransmitted > 0,
        "nothing was retransmitted",
      );
      // Data flows afterwards (still at 20 % loss: send until one gets through both ways).
      const inbox = new Inbox(conn);
      for (let i = 0; i < 40 && inbox.texts.length === 0; i++) {
        conn.send(bytes(`ping-${i}`));
        await new Promise((r) => setTimeout(r, 20));
      }
      await waitUntil(() => inbox.texts.length > 0, 5000, () => "no echo at 20 % loss");
    } catch (e) {
      throw new Error(`${(e as Error).message}\n${describe(relay)}`, { cause: e });
    } finally {
      conn?.close();
      await relay.close();
      await echo.close();
    }
  });
}

Deno.test("openssl s_client → our server: handshake completes at 20 % loss both ways", async () => {
  const echo = startEchoServer(KEYS, { initialRtoMs: 200, maxRtoMs: 2000 });
  const relay = relayTo(echo.port, 11, 0.2);
  let client: Peer | undefined;
  try {
    client = startOpenSslClient({
      port: relay.addr.port,
      psk: PSK,
      identity: IDENTITY,
      suite: "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256",
    });
    await waitUntil(() => echo.conns.length === 1, 30_000, () => "no connection on our side");
    await client.waitFor(openSslCipherLine("TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256"), 30_000);
    relay.set("toServer", { loss: 0 });
    relay.set("toClient", { loss: 0 });
    // The client may still be waiting for our final flight: data proves both sides are done.
    await client.write("after-loss\n");
    await client.waitFor(echoText("after-loss\n"), 15_000);
    const lost = relay.counters.toServer.droppedRandom + relay.counters.toClient.droppedRandom;
    assert.ok(lost > 0, `the relay lost nothing: the test proved nothing\n${describe(relay)}`);
  } catch (e) {
    throw new Error(`${(e as Error).message}\n${describe(relay)}\n${client?.output()}`, {
      cause: e,
    });
  } finally {
    await client?.kill();
    await relay.close();
    await echo.close();
  }
});

for (const dir of ["toClient", "toServer"] as const) {
  Deno.test(`established session survives a burst of 200 lost records ${dir}`, async () => {
    const echo = startEchoServer(KEYS);
    const relay = relayTo(echo.port, 5, 0);
    let conn: Awaited<ReturnType<typeof dtlsConnect>> | undefined;
    try {
      conn = await dtlsConnect({
        hostname: "127.0.0.1",
        port: relay.addr.port,
        identity: IDENTITY,
        psk: PSK,
        handshakeTimeoutMs: 10_000,
      });
      const inbox = new Inbox(conn);
      conn.send(bytes("before"));
      await inbox.waitFor(echoText("before"));

      relay.dropNext(dir, 200);
      // 200 records the client sends; with dir = toClient their echoes are the lost ones.
      for (let i = 0; i < 200; i++) conn.send(bytes(`burst-${i}`));
      await waitUntil(
        () => relay.counters[dir].droppedBurst === 200,
        10_000,
        () => describe(relay),
      );
      if (dir === "toServer") assert.equal(echo.received.length, 1, "burst records arrived");
      else assert.equal(inbox.texts.length, 1, "burst echoes arrived");

      // After the gap, records with sequence numbers > 200 ahead must be accepted.
      for (let i = 0; i < 5; i++) conn.send(bytes(`after-${i}`));
      for (let i = 0; i < 5; i++) await inbox.waitFor(echoText(`after-${i}`), 5000);
      assert.equal(conn.closed, false);
      assert.equal(echo.conns[0]!.closed, false);
    } catch (e) {
      throw new Error(
        `${(e as Error).message}\nserver stats ${JSON.stringify(echo.server.stats)}\n` +
          `client stats ${JSON.stringify(conn?.stats)}\n${describe(relay)}`,
        { cause: e },
      );
    } finally {
      conn?.close();
      await relay.close();
      await echo.close();
    }
  });
}

Deno.test("node-dtls-client → our server through the relay at 0 % loss", async () => {
  const echo = startEchoServer(KEYS);
  const relay = relayTo(echo.port, 9, 0);
  let conn: Awaited<ReturnType<typeof connectNodeDtls>> | undefined;
  try {
    conn = await connectNodeDtls({
      hostname: "127.0.0.1",
      port: relay.addr.port,
      identity: IDENTITY,
      psk: PSK,
      timeoutMs: 10_000,
    });
    const inbox = new Inbox(conn);
    for (let i = 0; i < 50; i++) conn.send(bytes(`via-relay-${i}`));
    for (let i = 0; i < 50; i++) await inbox.waitFor(echoText(`via-relay-${i}`), 5000);
    assert.ok(relay.counters.toServer.forwarded >= 50 + 3, describe(relay));
    assert.ok(relay.counters.toClient.forwarded >= 50 + 2, describe(relay));
  } finally {
    conn?.close();
    await conn?.whenClosed;
    await relay.close();
    await echo.close();
  }
});
