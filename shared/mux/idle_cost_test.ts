/**
 * What keeps an idle node cheap (docs/operations.md, "Capacity of one node"): a
 * keepalive is answered at once (no delayed-ACK timer per PING), far deadlines sit on
 * a coarse grid so thousands of sessions' timers fire together, and a session holds its
 * transport's prompt delivery only while it waits on the peer for something.
 * Fake time, memory link.
 */
import assert from "node:assert/strict";
import { coalesceDeadline, MuxSession } from "./session.ts";
import type { MuxParams } from "./params.ts";
import { FakeClock, runFor, runUntil } from "./testing/fake_clock.ts";
import { createLinkPair } from "./testing/lossy_link.ts";

const CLIENT: Partial<MuxParams> = {
  idleTimeoutMs: 30_000,
  keepAliveIntervalMs: 15_000,
  keepAliveJitterRatio: 0,
  unansweredTimeoutMs: 10_000,
  maxAckDelayMs: 25,
};
const SERVER: Partial<MuxParams> = { ...CLIENT, keepAliveIntervalMs: 0 };

function pair() {
  const clock = new FakeClock();
  const link = createLinkPair({ clock, delayMs: 5 });
  /** Holds the server's end has taken and not released. */
  const holds = { taken: 0, released: 0 };
  Object.assign(link.b, {
    hold: () => {
      holds.taken++;
      let done = false;
      return () => {
        if (done) return;
        done = true;
        holds.released++;
      };
    },
  });
  const client = new MuxSession(link.a, { role: "client", clock, params: CLIENT });
  const server = new MuxSession(link.b, { role: "server", clock, params: SERVER });
  return {
    clock,
    client,
    server,
    holds,
    async dispose() {
      client.abort(0, "test done");
      server.abort(0, "test done");
      await runFor(clock, 100);
    },
  };
}

Deno.test("idle cost: a keepalive PING is acknowledged at once, not after the ACK delay", async () => {
  const p = pair();
  await runFor(p.clock, 1000); // the opening frames and their ACKs
  const c0 = p.client.stats.packetsSent;
  // The client's PING leaves 15 s after the last packet.
  await runUntil(p.clock, () => p.client.stats.packetsSent > c0, 20_000);
  const sentAt = p.clock.now();
  const s0 = p.server.stats.packetsSent;
  // 5 ms there, 5 ms back: the ACK is back at the client 10 ms after the PING left,
  // well before the 25 ms a delayed ACK would take on its own.
  await runUntil(p.clock, () => p.server.stats.packetsSent > s0, 1000);
  const answeredIn = p.clock.now() - sentAt;
  assert.ok(answeredIn <= 6, `the server answered ${answeredIn} ms after the PING left`);
  await p.dispose();
});

Deno.test("idle cost: far deadlines move onto a grid of at most 1/16 of the wait, never earlier", () => {
  // Within 64 ms: exact.
  for (const wait of [0, 1, 25, 64]) {
    assert.equal(coalesceDeadline(1000.5 + wait, 1000.5), 1000.5 + wait);
  }
  assert.equal(coalesceDeadline(Infinity, 5), Infinity);
  for (let i = 0; i < 2000; i++) {
    const now = Math.random() * 1e7;
    const wait = 65 + Math.random() * 120_000;
    const t = coalesceDeadline(now + wait, now);
    assert.ok(t >= now + wait, `moved earlier: ${t} < ${now + wait}`);
    assert.ok(t - (now + wait) <= wait / 16, `stretched by ${t - now - wait} ms of ${wait}`);
  }
  // Thirty-second deadlines of sessions a few hundred ms apart fire at one instant.
  const fired = new Set(
    [0, 100, 250, 400, 700].map((dt) => coalesceDeadline(30_000 + dt, dt)),
  );
  assert.ok(fired.size <= 2, `fired at ${[...fired].join(", ")}`);
});

Deno.test("idle cost: the server holds prompt delivery only while a stream it opened is open", async () => {
  const p = pair();
  const live = () => p.holds.taken - p.holds.released;
  const drain = async (s: { read(): Promise<Uint8Array | null> }) => {
    while ((await s.read()) !== null) { /* discard */ }
  };
  // The client's control stream (opened by the peer) and keepalives hold nothing.
  const control = p.client.openStream();
  void control.write(new Uint8Array([1, 2, 3])).catch(() => {});
  const accepting = p.server.acceptStream();
  await runFor(p.clock, 100);
  assert.ok(await accepting);
  await runFor(p.clock, 40_000);
  assert.equal(live(), 0, "an idle session holds the socket");
  assert.equal(p.server.isClosed, false);

  // A request: the server opens a stream and waits for the answer.
  const req = p.server.openStream();
  void req.write(new Uint8Array([9])).catch(() => {});
  const incoming = p.client.acceptStream();
  await runFor(p.clock, 20);
  assert.equal(live(), 1, "a stream in progress holds the socket");
  const theirs = await incoming;
  assert.ok(theirs);
  // Waiting for the answer with nothing in flight still holds.
  await runFor(p.clock, 2000);
  assert.equal(live(), 1, "waiting for the answer holds the socket");
  // The answer comes and both sides finish: released.
  void drain(theirs).catch(() => {});
  void drain(req).catch(() => {});
  void theirs.write(new Uint8Array([7])).catch(() => {});
  theirs.close();
  req.close();
  await runFor(p.clock, 1000);
  assert.equal(live(), 0, "a finished request still holds the socket");
  assert.ok(p.holds.taken >= 1);
  await p.dispose();
  assert.equal(live(), 0, "a closed session holds the socket");
});
