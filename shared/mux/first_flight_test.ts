/**
 * A session's first full flight times the path (first_flight.ts): the meter on made-up
 * sends and ACKs, then whole sessions on the fake clock over the WAN lab's profiles.
 */
import assert from "node:assert/strict";
import { FirstFlightMeter, TRAIN_GAP_MS } from "./first_flight.ts";
import type { MuxParams } from "./params.ts";
import { download, memoryPair } from "./testing/harness.ts";
import { TUNNEL_MUX_PARAMS } from "../tunnel_params.ts";

const SIZE = 1200;

/** Sends `n` packets from `pn` at `at` (ms apart `gap`); returns the next pn. */
function send(m: FirstFlightMeter, pn: number, n: number, at: number, gap = 0): number {
  for (let i = 0; i < n; i++) m.onSent(pn + i, at + i * gap, true);
  return pn + n;
}

/**
 * One ACK of packets [lo, hi] arriving at `at`, held `delay` ms by the receiver since
 * `largest` (hi unless said) arrived.
 */
function ack(m: FirstFlightMeter, lo: number, hi: number, at: number, delay = 0, largest = hi) {
  for (let pn = lo; pn <= hi; pn++) m.onAcked(pn, SIZE);
  return m.endAck(at, delay, largest);
}

Deno.test("first flight meter: the ACKs after the first time the train, each at its packets' arrival", () => {
  const m = new FirstFlightMeter(32);
  assert.ok(m.unpaced(0));
  send(m, 0, 32, 0);
  assert.ok(!m.unpaced(0), "a train ends at the initial window");
  // Four packets per ACK, 1 ms apart (the bottleneck's spacing: 4.8 bytes/µs).
  let rate = 0;
  for (let i = 0; i < 7; i++) rate = ack(m, 4 * i, 4 * i + 3, 50 + i);
  assert.equal(rate, 0, "not before the last packet is accounted for");
  // The last four came with the receiver's ACK timer: 20 ms later, held 19 ms.
  rate = ack(m, 28, 31, 76, 19);
  // From the second ACK (the first interval is left out): 6 ACKs x 4 packets over 6 ms.
  assert.equal(rate, (24 * SIZE) / 6);
  assert.ok(!m.armed && !m.unpaced(100));
});

Deno.test("first flight meter: short trains measure nothing; a gap starts a new train", () => {
  const m = new FirstFlightMeter(32);
  // A hello and a small answer: 3 and 10 packets.
  let pn = send(m, 0, 3, 0);
  assert.equal(ack(m, 0, 2, 50), 0);
  pn = send(m, pn, 10, 100, 0.1);
  assert.ok(!m.unpaced(100 + 10 * 0.1 + TRAIN_GAP_MS), "a gap ends a train");
  assert.equal(ack(m, 3, 12, 150), 0);
  assert.ok(m.armed);
  // Twenty packets, then (a gap) eight more: the first twenty are the train.
  const first = pn;
  pn = send(m, pn, 20, 200, 0.01);
  send(m, pn, 8, 200 + 20 * 0.01 + TRAIN_GAP_MS);
  assert.equal(ack(m, first, first + 4, 250), 0);
  let rate = 0;
  for (let i = 1; i < 4; i++) rate = ack(m, first + 5 * i, first + 5 * i + 4, 250 + i);
  assert.equal(rate, (10 * SIZE) / 2);
});

Deno.test("first flight meter: small packets end a train and are no part of one", () => {
  const m = new FirstFlightMeter(32);
  // Twenty small answers back to back: no train.
  for (let pn = 0; pn < 20; pn++) m.onSent(pn, 0, false);
  assert.equal(ack(m, 0, 19, 50), 0);
  assert.ok(m.armed);
  // A small head, then the body: the train is the body's full packets.
  m.onSent(20, 100, false);
  send(m, 21, 32, 100);
  assert.equal(ack(m, 20, 20, 150), 0, "the head's ACK times nothing");
  let rate = 0;
  for (let i = 0; i < 8; i++) rate = ack(m, 21 + 4 * i, 24 + 4 * i, 151 + i);
  assert.equal(rate, (24 * SIZE) / 6);
});

Deno.test("first flight meter: a lost packet is waited for, not counted; one ACK for all re-arms it", () => {
  const m = new FirstFlightMeter(32);
  send(m, 0, 32, 0);
  assert.equal(ack(m, 0, 9, 50), 0);
  assert.equal(ack(m, 11, 20, 52), 0);
  assert.equal(ack(m, 21, 31, 54), 0, "packet 10 is still out");
  m.onLost(10);
  assert.equal(m.endAck(60, 0, 31), (11 * SIZE) / 2);
  // One ACK for the whole train (a receiver that read it in one go): nothing to time.
  const n = new FirstFlightMeter(32);
  send(n, 0, 32, 0);
  assert.equal(ack(n, 0, 31, 60), 0);
  assert.ok(n.armed && n.unpaced(100));
  // The same with timed ACK frames in that packet: each its own delay, oldest first.
  send(n, 100, 32, 100);
  let rate = 0;
  for (let i = 0; i < 8; i++) rate = ack(n, 100 + 4 * i, 103 + 4 * i, 160, 7 - i);
  assert.equal(rate, (24 * SIZE) / 6);
});

const PROFILES = [
  // name, one-way delay (ms), bottleneck (bytes/ms), random loss each way, jitter (ms)
  ["P1 20 ms, 100 Mbit/s", 10, 12_500, 0, 0],
  ["P2 50 ms, 50 Mbit/s, 1 %", 25, 6_250, 0.01, 0],
  ["P3 100 ms, 20 Mbit/s, 3 %", 50, 2_500, 0.03, 0],
  ["P4 50 ms, 50 Mbit/s", 25, 6_250, 0, 0],
  ["P2 with 2 ms jitter", 25, 6_250, 0.01, 2],
] as const;

/** A fresh session's first 8 MiB download, and its second, over four seeds. */
async function firstDownloads(
  delayMs: number,
  rate: number,
  loss: number,
  jitterMs: number,
  params: Partial<MuxParams>,
) {
  const first: number[] = [];
  const second: number[] = [];
  const measured: number[] = [];
  for (let seed = 1; seed <= 4; seed++) {
    const queueBytes = Math.round(1.5 * rate * 2 * delayMs);
    const link = { delayMs, rateBytesPerMs: rate, queueBytes, loss, jitterMs, seed };
    const p = memoryPair(link, { ...TUNNEL_MUX_PARAMS, ...params });
    try {
      await p.sleep(100);
      first.push((await download(p, 8 << 20)).ms);
      measured.push(p.server.stats.firstFlightRateBytesPerSecond / 1000 / rate);
      second.push((await download(p, 8 << 20)).ms);
    } finally {
      await p.dispose();
    }
  }
  const mean = (a: number[]) => a.reduce((x, y) => x + y) / a.length;
  return { first: mean(first), second: mean(second), measured };
}

Deno.test("first flight: a fresh session's first download starts at half the bottleneck's rate", async () => {
  for (const [name, delayMs, rate, loss, jitterMs] of PROFILES) {
    const on = await firstDownloads(delayMs, rate, loss, jitterMs, {});
    const off = await firstDownloads(delayMs, rate, loss, jitterMs, { startupFirstFlightRatio: 0 });
    console.log(
      `${name}: first 8 MiB ${on.first.toFixed(0)} ms (the second ${on.second.toFixed(0)}), ` +
        `without ${off.first.toFixed(0)} ms; measured ${
          on.measured.map((r) => r.toFixed(2)).join(", ")
        } x the bottleneck`,
    );
    assert.ok(off.measured.every((r) => r === 0));
    // Never above the bottleneck by much (Startup takes half); jitter spreads the ACKs.
    for (const r of on.measured) assert.ok(r > 0.5 && r < 1.15, `${name}: measured ${r}`);
    if (jitterMs === 0) {
      for (const r of on.measured) assert.ok(r > 0.95, `${name}: measured ${r}`);
    }
    // Sooner by half a round trip (at most 20 ms) where the rate was measured whole;
    // never later.
    const by = jitterMs === 0 ? Math.min(delayMs, 20) : 0;
    assert.ok(on.first < off.first - by, `${name}: ${on.first} vs ${off.first}`);
  }
});

Deno.test("first flight: small exchanges measure nothing, the first full flight does; NewReno never", async () => {
  const p = memoryPair({ delayMs: 25, rateBytesPerMs: 6_250, queueBytes: 470_000 }, {
    ...TUNNEL_MUX_PARAMS,
  });
  const reno = memoryPair({ delayMs: 25, rateBytesPerMs: 6_250, queueBytes: 470_000 }, {
    ...TUNNEL_MUX_PARAMS,
    congestionControl: "newreno",
  });
  try {
    for (let i = 0; i < 20; i++) await download(p, 4096, i);
    assert.equal(p.server.stats.firstFlightRateBytesPerSecond, 0);
    await download(p, 2 << 20);
    const r = p.server.stats.firstFlightRateBytesPerSecond / 6_250_000;
    assert.ok(r > 0.95 && r < 1.05, `measured ${r} x the bottleneck`);
    await download(reno, 2 << 20);
    assert.equal(reno.server.stats.firstFlightRateBytesPerSecond, 0);
  } finally {
    await p.dispose();
    await reno.dispose();
  }
});

Deno.test("first flight meter: an ACK that also covers packets sent after the train does not time it", () => {
  const m = new FirstFlightMeter(32);
  send(m, 0, 32, 0);
  send(m, 32, 8, 0.5, 0.3); // paced after the train
  assert.equal(ack(m, 0, 9, 50), 0);
  assert.equal(ack(m, 10, 19, 52), 0);
  assert.equal(ack(m, 20, 29, 54), 0);
  // Its time is the later packets' (they left paced): only its train packets' arrival
  // is known to be before it.
  assert.equal(ack(m, 30, 39, 58), (10 * SIZE) / 2);
  // The same when the packet after the train was an ACK-only one (never seen go): the
  // ACK's delay counts from its arrival.
  const n = new FirstFlightMeter(32);
  send(n, 0, 32, 0);
  assert.equal(ack(n, 0, 9, 50), 0);
  assert.equal(ack(n, 10, 19, 52), 0);
  assert.equal(ack(n, 20, 29, 54), 0);
  assert.equal(ack(n, 30, 31, 70, 0, 32), (10 * SIZE) / 2);
});
