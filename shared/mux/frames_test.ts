import assert from "node:assert/strict";
import {
  decodeFrame,
  decodePacketHeader,
  encodeAck,
  encodeAckFrequency,
  encodeClose,
  encodePacketHeader,
  encodeResetStream,
  encodeStream,
  encodeTimestamp,
  FrameType,
  timestampFrameLength,
} from "./frames.ts";
import { AckTracker } from "./ack_tracker.ts";
import { resolveParams } from "./params.ts";
import { RangeSet } from "./send_buffer.ts";
import { prng } from "./testing/fake_clock.ts";
import { Reader, varintLength, Writer } from "./wire.ts";

Deno.test("mux frames: varints round-trip at every length boundary", () => {
  const buf = new Uint8Array(8);
  for (const v of [0, 63, 64, 16383, 16384, 2 ** 30 - 1, 2 ** 30, 2 ** 53 - 1]) {
    const w = new Writer(buf);
    w.varint(v);
    const r = new Reader(buf, 0, w.pos);
    assert.equal(r.varint(), v);
    assert.equal(r.error, null);
  }
});

Deno.test("mux frames: packet with ACK ranges, STREAM, RESET, CLOSE round-trips", () => {
  const buf = new Uint8Array(1200);
  const w = new Writer(buf);
  encodePacketHeader(w, 123456);
  encodeAck(w, [100, 90, 80, 80, 10, 0], 2500);
  encodeStream(w, 6, 70000, new Uint8Array([1, 2, 3]), true);
  encodeResetStream(w, 9, 42, 1000);
  encodeClose(w, 0, "bye");
  encodeAckFrequency(w, 3, 10, 1000);
  for (const us of [0, 63, 64, 2 ** 30 - 1, 2 ** 30, 7 * 24 * 3600 * 1e6]) {
    assert.equal(timestampFrameLength(us), 1 + varintLength(us));
    encodeTimestamp(w, us);
  }
  w.u8(FrameType.WARM_UP);
  const r = new Reader(buf, 0, w.pos);
  assert.equal(decodePacketHeader(r), 123456);
  assert.deepEqual(decodeFrame(r), {
    type: FrameType.ACK,
    ranges: [100, 90, 80, 80, 10, 0],
    ackDelayUs: 2500,
  });
  const s = decodeFrame(r);
  assert.ok(s !== null && s.type === FrameType.STREAM);
  assert.deepEqual([s.streamId, s.offset, [...s.data], s.fin], [6, 70000, [1, 2, 3], true]);
  assert.deepEqual(decodeFrame(r), {
    type: FrameType.RESET_STREAM,
    streamId: 9,
    code: 42,
    finalSize: 1000,
  });
  assert.deepEqual(decodeFrame(r), { type: FrameType.CLOSE, code: 0, reason: "bye" });
  assert.deepEqual(decodeFrame(r), {
    type: FrameType.ACK_FREQUENCY,
    seq: 3,
    threshold: 10,
    maxAckDelayUs: 1000,
  });
  for (const us of [0, 63, 64, 2 ** 30 - 1, 2 ** 30, 7 * 24 * 3600 * 1e6]) {
    assert.deepEqual(decodeFrame(r), { type: FrameType.TIMESTAMP, us });
  }
  assert.deepEqual(decodeFrame(r), { type: FrameType.WARM_UP });
  assert.equal(r.remaining, 0);
  // A TIMESTAMP cut short is an encoding error, not a zero.
  const cut = new Reader(new Uint8Array([FrameType.TIMESTAMP, 0x80, 0x01]));
  assert.equal(decodeFrame(cut), null);
  assert.match(cut.error ?? "", /end of input in varint/);
});

Deno.test("mux frames: decoding random and truncated bytes never throws", () => {
  const rand = prng(77);
  for (let i = 0; i < 20_000; i++) {
    const n = Math.floor(rand() * 40);
    const b = new Uint8Array(n);
    for (let j = 0; j < n; j++) b[j] = Math.floor(rand() * 256);
    if (n > 0 && rand() < 0.5) {
      b[0] = [0x02, 0x08, 0x09, 0x04, 0x1c, 0x21, 0x22][Math.floor(rand() * 7)]!;
    }
    const r = new Reader(b);
    while (r.remaining > 0 && r.error === null) {
      if (decodeFrame(r) === null) assert.ok(r.error !== null);
    }
  }
  const r = new Reader(new Uint8Array([0x08, 0x01, 0x00, 0x10, 1, 2]));
  assert.equal(decodeFrame(r), null);
  assert.match(r.error ?? "", /length 16 exceeds remaining 2/);
});

Deno.test("mux ack tracker: ranges merge, duplicates are detected, ACK after 2 or on reorder", () => {
  const t = new AckTracker(32, 2, 25);
  t.onPacket(0, true, 0);
  assert.equal(t.ackNow, false);
  assert.equal(t.ackDeadline, 25);
  t.onPacket(1, true, 1);
  assert.equal(t.ackNow, true);
  t.onAckSent();
  t.onPacket(4, true, 2); // gap: 2, 3 missing
  assert.equal(t.ackNow, true);
  assert.deepEqual(t.ranges, [4, 4, 1, 0]);
  t.onPacket(3, false, 3);
  t.onPacket(2, false, 3);
  assert.deepEqual(t.ranges, [4, 0]);
  assert.equal(t.isDuplicate(2), true);
  assert.equal(t.isDuplicate(5), false);
});

Deno.test("mux range set: add merges, remove splits", () => {
  const s = new RangeSet();
  s.add(10, 20);
  s.add(30, 40);
  s.add(20, 30);
  assert.deepEqual(s.r, [10, 40]);
  s.remove(15, 25);
  assert.deepEqual(s.r, [10, 15, 25, 40]);
  s.trimBelow(30);
  assert.deepEqual(s.r, [30, 40]);
});

Deno.test("mux params: invalid values are rejected naming the field", () => {
  assert.throws(() => resolveParams({ idleTimeoutMs: -1 }), /idleTimeoutMs/);
  assert.throws(() => resolveParams({ keepAliveIntervalMs: 40_000 }), /keepAliveIntervalMs/);
  assert.throws(() => resolveParams({ keepAliveIntervalMs: -1 }), /keepAliveIntervalMs/);
  assert.equal(resolveParams({ keepAliveIntervalMs: 0 }).keepAliveIntervalMs, 0); // none sent
  assert.throws(() => resolveParams({ keepAliveJitterRatio: 1 }), /keepAliveJitterRatio/);
  assert.throws(() => resolveParams({ keepAliveJitterRatio: -0.1 }), /keepAliveJitterRatio/);
  assert.throws(() => resolveParams({ unansweredTimeoutMs: 30_000 }), /unansweredTimeoutMs/);
  assert.throws(() => resolveParams({ unansweredTimeoutMs: NaN }), /unansweredTimeoutMs/);
  assert.throws(() => resolveParams({ maxStreamWindowBytes: 1 }), /maxStreamWindowBytes/);
  assert.equal(resolveParams().maxAckDelayMs, 25);
});

Deno.test("mux ack tracker: ACK_FREQUENCY raises the threshold; gaps still ack at once", () => {
  const t = new AckTracker(32, 2, 25);
  t.setFrequency(0, 10, 1, 25);
  for (let pn = 0; pn < 9; pn++) t.onPacket(pn, true, 1000);
  assert.equal(t.ackNow, false);
  assert.equal(t.ackDeadline, 1001);
  t.onPacket(9, true, 1000);
  assert.equal(t.ackNow, true);
  t.onAckSent();
  t.onPacket(11, true, 1000); // gap: 10 is missing
  assert.equal(t.ackNow, true);
  t.onAckSent();
  t.setFrequency(0, 2, 1, 25); // stale sequence: ignored
  assert.equal(t.threshold, 10);
  t.setFrequency(1, 4, 500, 25); // delay capped at our max_ack_delay
  t.onPacket(12, true, 2000);
  assert.equal(t.ackDeadline, 2025);
});

Deno.test("mux ack tracker: an ACK due within the timer granularity goes with the packet leaving now", () => {
  const t = new AckTracker(32, 2, 25);
  t.setFrequency(0, 10, 1, 25); // 1 ms delay, as ACK_FREQUENCY asks on a short path
  assert.equal(t.due(1000, 1), false, "nothing received: nothing due");
  t.onPacket(0, true, 1000);
  assert.equal(t.ackDeadline, 1001);
  assert.equal(t.due(1000.2, 0), false, "0.8 ms early without slack");
  assert.equal(
    t.due(1000.2, 1),
    true,
    "within the 1 ms granularity: sent now, never busy-waited for",
  );
  assert.equal(t.due(999, 1), false, "more than the granularity early: the timer waits");
  t.onAckSent();
  assert.equal(t.due(1001, 1), false, "sent: nothing pending");
});

Deno.test("mux ack tracker: arrival times of a run read in one go, spread, oldest first", () => {
  const t = new AckTracker(32, 100, 25);
  for (let pn = 0; pn < 5; pn++) t.onPacket(pn, true, 10 + pn);
  assert.deepEqual(t.timedPoints(8, 8), [], "fewer than the minimum: none");
  for (let pn = 5; pn < 33; pn++) t.onPacket(pn, true, 10 + pn);
  t.onPacket(33, false, 43); // not ack-eliciting: not timed
  // 33 arrivals: 8 points over the first 32, the newest left to the ACK itself.
  assert.deepEqual(t.timedPoints(8, 8), [0, 4, 8, 12, 16, 20, 24, 28].map((p) => [p, 10 + p]));
  assert.deepEqual(t.rangesUpTo(12), [12, 0]);
  t.onAckSent();
  assert.deepEqual(t.timedPoints(1, 8), []);
  // A late packet below the largest is not an arrival of a new largest; ranges keep holes.
  t.onPacket(36, true, 50);
  t.onPacket(35, true, 51);
  t.onPacket(37, true, 52);
  assert.deepEqual(t.timedPoints(1, 8), [[36, 50]]);
  assert.deepEqual(t.rangesUpTo(36), [36, 35, 33, 0]);
  assert.deepEqual(t.rangesUpTo(34), [33, 0]);
  // Once no ACK will carry them, none are kept.
  t.onAckSent();
  t.timeArrivals = false;
  for (let pn = 38; pn < 60; pn++) t.onPacket(pn, true, 60 + pn);
  assert.deepEqual(t.timedPoints(1, 8), []);
});
