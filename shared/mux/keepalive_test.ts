/**
 * Keepalives and dead peers as a tunnel uses them (shared/tunnel_params.ts): only one
 * side PINGs, only when the session was silent, with jitter; the other side notices a
 * dead peer by silence, the PINGing side by its unanswered PING. Fake time, memory link.
 */
import assert from "node:assert/strict";
import { SessionErrorCode } from "./errors.ts";
import { MuxSession } from "./session.ts";
import type { MuxParams } from "./params.ts";
import { FakeClock, runFor, runUntil } from "./testing/fake_clock.ts";
import { createLinkPair } from "./testing/lossy_link.ts";

const CLIENT: Partial<MuxParams> = {
  idleTimeoutMs: 30_000,
  keepAliveIntervalMs: 15_000,
  keepAliveJitterRatio: 0.25,
  unansweredTimeoutMs: 5_000,
};
const SERVER: Partial<MuxParams> = { ...CLIENT, keepAliveIntervalMs: 0 };

function pair(random: () => number = Math.random, client = CLIENT, server = SERVER) {
  const clock = new FakeClock();
  const link = createLinkPair({ clock, delayMs: 5 });
  const c = new MuxSession(link.a, { role: "client", clock, params: client, random });
  const s = new MuxSession(link.b, { role: "server", clock, params: server, random });
  return {
    clock,
    link,
    client: c,
    server: s,
    async dispose() {
      c.abort(0, "test done");
      s.abort(0, "test done");
      await runFor(clock, 100);
    },
  };
}

Deno.test("keepalive: only the client PINGs an idle session, once per silent interval; both stay open", async () => {
  // random() = 0: no jitter taken, every wait is the whole 15 s.
  const p = pair(() => 0);
  await runFor(p.clock, 1000); // the opening MAX_DATA / MAX_STREAMS and their ACKs
  const c0 = p.client.stats.packetsSent;
  const s0 = p.server.stats.packetsSent;
  await runFor(p.clock, 150_000);
  const pings = p.client.stats.packetsSent - c0;
  const acks = p.server.stats.packetsSent - s0;
  // 150 s at one PING per 15 s (+ the ACK's 5 ms + delayed-ACK 25 ms each cycle).
  assert.ok(pings >= 9 && pings <= 10, `client sent ${pings} packets in 150 s`);
  // The server sends nothing of its own: one ACK per PING.
  assert.equal(acks, pings, `server sent ${acks} packets for ${pings} PINGs`);
  assert.equal(p.client.isClosed, false);
  assert.equal(p.server.isClosed, false);
  await p.dispose();
});

Deno.test("keepalive: jitter shortens each wait by up to keepAliveJitterRatio", async () => {
  // random() just below 1: each wait is 15 s x (1 - 0.25) = 11.25 s.
  const p = pair(() => 0.999_999);
  await runFor(p.clock, 1000);
  const c0 = p.client.stats.packetsSent;
  await runFor(p.clock, 150_000);
  const pings = p.client.stats.packetsSent - c0;
  // 150 s / 11.25 s = 13.3 cycles (against 10 without jitter).
  assert.ok(pings >= 12 && pings <= 14, `client sent ${pings} packets in 150 s`);
  await p.dispose();
});

Deno.test("keepalive: a session carrying traffic sends no PING", async () => {
  const p = pair(() => 0);
  await runFor(p.clock, 1000);
  const c0 = p.client.stats.packetsSent;
  const stream = p.client.openStream();
  void (async () => {
    for (let s; (s = await p.server.acceptStream()) !== null;) {
      void s.readable.pipeTo(new WritableStream()).catch(() => {});
    }
  })();
  // A byte every 10 s: never 15 s of silence, so every packet is data (or its ACK).
  for (let i = 0; i < 10; i++) {
    await stream.write(new Uint8Array([i]));
    await runFor(p.clock, 10_000);
  }
  const sent = p.client.stats.packetsSent - c0;
  assert.ok(sent >= 10 && sent <= 11, `client sent ${sent} packets for 10 writes`);
  await p.dispose();
});

Deno.test("keepalive: the client notices a vanished server by its next PING, unanswered for unansweredTimeoutMs", async () => {
  const p = pair(() => 0);
  await runFor(p.clock, 1000);
  p.link.ab.blackhole = true;
  p.link.ba.blackhole = true;
  const t0 = p.clock.now();
  let closedAt = 0;
  const info = p.client.closed.then((i) => (closedAt = p.clock.now(), i));
  await runUntil(p.clock, () => closedAt > 0, 60_000, "client closes");
  const { code, reason } = await info;
  const took = closedAt - t0;
  assert.equal(code, SessionErrorCode.IDLE_TIMEOUT);
  assert.match(reason, /no answer from the peer in 5000 ms/);
  // The next keepalive was due 15 s after the last exchange (~1 s before t0), then 5 s.
  assert.ok(took >= 18_000 && took <= 20_000, `detected after ${took} ms`);
  await p.dispose();
});

Deno.test("keepalive: a lost PING is probed again, not taken for a dead peer", async () => {
  const p = pair(() => 0);
  await runFor(p.clock, 1000);
  // The keepalive goes ~15 s after the opening exchange (at ~0 s): drop what the client
  // sends from 14.5 s to 15.5 s (that PING and the first PTO probes).
  await runFor(p.clock, 13_500);
  const sent = p.link.ab.stats.sent;
  p.link.ab.blackhole = true;
  await runFor(p.clock, 1_000);
  p.link.ab.blackhole = false;
  assert.ok(p.link.ab.stats.sent > sent, "the PING went into the black hole");
  await runFor(p.clock, 60_000);
  assert.equal(p.client.isClosed, false);
  assert.equal(p.server.isClosed, false);
  await p.dispose();
});

Deno.test("keepalive: the server, which never PINGs, notices a vanished client by silence", async () => {
  const p = pair(() => 0);
  await runFor(p.clock, 1000);
  p.link.ab.blackhole = true;
  p.link.ba.blackhole = true;
  const t0 = p.clock.now();
  let closedAt = 0;
  const info = p.server.closed.then((i) => (closedAt = p.clock.now(), i));
  await runUntil(p.clock, () => closedAt > 0, 60_000, "server closes");
  const { code, reason } = await info;
  assert.equal(code, SessionErrorCode.IDLE_TIMEOUT);
  assert.equal(reason, "idle timeout");
  // 30 s after it last heard the client (the opening exchange, ~1 s before t0).
  const took = closedAt - t0;
  assert.ok(took >= 28_000 && took <= 30_000, `detected after ${took} ms`);
  await p.dispose();
});

Deno.test("keepalive: a server sending a request to a vanished client gives up after unansweredTimeoutMs", async () => {
  const p = pair(() => 0);
  await runFor(p.clock, 1000);
  p.link.ab.blackhole = true;
  p.link.ba.blackhole = true;
  const t0 = p.clock.now();
  const s = p.server.openStream();
  void s.write(new Uint8Array(100)).catch(() => {});
  let closedAt = 0;
  const info = p.server.closed.then((i) => (closedAt = p.clock.now(), i));
  await runUntil(p.clock, () => closedAt > 0, 60_000, "server closes");
  assert.match((await info).reason, /no answer/);
  const took = closedAt - t0;
  assert.ok(took >= 5_000 && took <= 5_100, `detected after ${took} ms`);
  await p.dispose();
});
