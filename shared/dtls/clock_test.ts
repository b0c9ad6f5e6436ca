/**
 * The DTLS handshake on fake time: retransmission and the handshake timeout run
 * on the injected clock, so lossy handshakes are tested in milliseconds of real
 * time, with exact timings, on the shared simulated network.
 */
import { equal, ok } from "node:assert/strict";
import { derivePsk, type DtlsConn, dtlsConnect, DtlsError, DtlsServer } from "./mod.ts";
import { FakeClock, runUntil, settle } from "../testing/fake_clock.ts";
import { SimNet } from "../testing/sim_net.ts";
import { ContentType, HandshakeType } from "./constants.ts";

const DOMAIN = "app.example.test";
const PSK = derivePsk("the-api-key");

/** True for a datagram whose first record is a ClientHello. */
function isClientHello(d: Uint8Array): boolean {
  return d[0] === ContentType.Handshake && d[13] === HandshakeType.ClientHello;
}

function setup(filter?: (d: Uint8Array, from: string, to: string) => boolean) {
  const clock = new FakeClock();
  const net = new SimNet(filter ? { clock, delayMs: 20, filter } : { clock, delayMs: 20 });
  const accepted: DtlsConn[] = [];
  const server = DtlsServer.listen({
    hostname: "10.0.0.1",
    port: 5684,
    socket: net.socket,
    clock,
    lookupPsk: (id) => Promise.resolve(id === DOMAIN ? PSK : undefined),
    onConnection: (c) => accepted.push(c),
  });
  const connect = (timeoutMs = 10_000) =>
    dtlsConnect({
      hostname: "10.0.0.1",
      port: 5684,
      identity: DOMAIN,
      psk: PSK,
      clock,
      handshakeTimeoutMs: timeoutMs,
      initialRtoMs: 500,
      socket: (_h, port, handler) => net.socket("10.0.0.2", port, handler),
    });
  return { clock, net, server, accepted, connect };
}

Deno.test("dtls on fake time: a clean handshake takes five one-way trips of fake time", async () => {
  const { clock, net, server, accepted, connect } = setup();
  const t0 = clock.now();
  let conn: DtlsConn | undefined;
  connect().then((c) => conn = c);
  await runUntil(clock, () => conn !== undefined && accepted.length === 1, 5_000, "handshake");
  // ClientHello → HelloVerifyRequest → ClientHello(cookie) → server flight → client's
  // Finished → server's Finished: 5 one-way trips of 20 ms before both ends are up.
  const took = clock.now() - t0;
  ok(took >= 80 && took <= 120, `handshake took ${took} ms of fake time`);
  conn!.close();
  await server.close();
  net.close();
});

Deno.test("dtls on fake time: lost ClientHellos are resent at 500, then 1000 ms", async () => {
  let dropped = 0;
  const { clock, net, server, accepted, connect } = setup((d) => {
    if (isClientHello(d) && dropped < 2) {
      dropped++;
      return false;
    }
    return true;
  });
  const t0 = clock.now();
  let conn: DtlsConn | undefined;
  connect().then((c) => conn = c);
  await runUntil(clock, () => conn !== undefined && accepted.length === 1, 10_000, "handshake");
  equal(dropped, 2);
  // First hello lost, resent at 500 ms (lost), then at 500 + 1000 ms (doubling RTO).
  const took = clock.now() - t0;
  ok(took >= 1500 + 80 && took <= 1500 + 120, `handshake took ${took} ms of fake time`);
  conn!.close();
  await server.close();
  net.close();
});

Deno.test("dtls on fake time: a silent server fails the handshake at its timeout", async () => {
  const { clock, net, server, connect } = setup(() => false);
  const t0 = clock.now();
  let failed: unknown;
  const p = connect(3_000).catch((e) => failed = e);
  await runUntil(clock, () => failed !== undefined, 10_000, "handshake timeout");
  await p;
  ok(failed instanceof DtlsError);
  equal((failed as DtlsError).code, "HANDSHAKE_TIMEOUT");
  equal(clock.now() - t0, 3_000);
  await settle();
  await server.close();
  net.close();
});
