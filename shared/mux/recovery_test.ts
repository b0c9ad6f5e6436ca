import { deepEqual, equal, ok } from "node:assert/strict";
import { type MuxParams, resolveParams } from "./params.ts";
import { Recovery } from "./recovery.ts";

/**
 * One flow through a bottleneck of 10 packets/ms with a 2 ms base RTT (BDP 20 KB) and an
 * unbounded queue, no loss: a loss-based window alone grows without end and so does the
 * queue; the BDP cap keeps the window near 2 x BDP + queueLimitBytes at full rate.
 */
function simulate(queueLimitBytes: number) {
  const size = 1000;
  const params = resolveParams({ queueLimitBytes, pacingGainRatio: 1000 });
  const rec = new Recovery<number>(params, size, { onFrameAcked() {}, onFrameLost() {} });
  const queue: { pn: number; at: number }[] = [];
  const acks: { pn: number; at: number }[] = [];
  let pn = 0, delivered = 0, maxQueue = 0, nextServe = 0;
  for (let t = 0; t < 2000; t = Math.round((t + 0.1) * 10) / 10) {
    while (acks.length > 0 && acks[0]!.at <= t) {
      const a = acks.shift()!;
      rec.onAck([a.pn, a.pn], 0, t);
    }
    while (rec.canSend(size)) {
      rec.onPacketSent(pn, t, size, true, [pn]);
      queue.push({ pn: pn++, at: t + 1 });
    }
    rec.cwndLimited = true;
    if (t >= nextServe && queue.length > 0 && queue[0]!.at <= t) {
      const p = queue.shift()!;
      acks.push({ pn: p.pn, at: t + 1 });
      delivered++;
      nextServe = t + 0.1;
    }
    maxQueue = Math.max(maxQueue, queue.filter((q) => q.at <= t).length);
  }
  return { rec, delivered, maxQueue };
}

Deno.test("recovery: the BDP cap bounds the queue a loss-free bottleneck builds, at full rate", () => {
  const capped = simulate(8000);
  const uncapped = simulate(0);
  ok(uncapped.maxQueue > 1000, `uncapped queue ${uncapped.maxQueue}`);
  ok(capped.maxQueue <= 40, `capped queue ${capped.maxQueue} packets`);
  ok(capped.rec.cwnd <= 2 * 20_000 + 8000 + 1000, `cwnd ${capped.rec.cwnd}`);
  ok(capped.rec.capHeldAcks > 0);
  // The bottleneck stays busy: as much delivered as with the window unbounded.
  ok(capped.delivered >= 0.99 * uncapped.delivered, `${capped.delivered} vs ${uncapped.delivered}`);
  equal(capped.rec.packetsLost, 0);
});

/**
 * A Recovery of 1000-byte packets whose frames are the strings `p<pn>`, recording the
 * frames it reports acked and lost. Loss tolerance is off unless `over` says otherwise, so
 * every loss is a congestion event (RFC 9002's NewReno).
 */
function recovery(over: Partial<MuxParams> = {}) {
  const size = 1000;
  const params = resolveParams({ lossToleranceRatio: 0, ...over });
  const acked: string[] = [];
  const lost: string[] = [];
  const rec = new Recovery<string>(params, size, {
    onFrameAcked: (f) => acked.push(f),
    onFrameLost: (f) => lost.push(f),
  });
  const send = (from: number, to: number, at: number) => {
    for (let pn = from; pn <= to; pn++) rec.onPacketSent(pn, at, size, true, [`p${pn}`]);
  };
  /** Acks [lo, hi] (one range, no ack delay) at `at`. */
  const ack = (lo: number, hi: number, at: number) => rec.onAck([hi, lo], 0, at);
  return { rec, params, size, acked, lost, send, ack };
}

Deno.test("recovery: packet threshold: 3 below the largest acked is lost, later ones wait for the time threshold", () => {
  const { rec, lost, send, ack } = recovery();
  send(0, 3, 0);
  equal(ack(3, 3, 50), true);
  equal(rec.smoothedRtt, 50, "first sample");
  deepEqual(lost, ["p0"], "pn 0 is 3 below 3");
  equal(rec.packetsLost, 1);
  // pn 1 and 2: lost once 9/8 x max(srtt, latest) passed since they were sent.
  equal(rec.lossTime, (9 / 8) * 50);
  equal(rec.lossDetectionDeadline, rec.lossTime);
  equal(rec.onTimeout(rec.lossTime), null, "a time-threshold loss, not a PTO");
  deepEqual(lost, ["p0", "p1", "p2"]);
  equal(rec.packetsLost, 3);
  equal(rec.ptoCount, 0);
  equal(rec.bytesInFlight, 0);
  equal(rec.lossDetectionDeadline, Infinity, "nothing in flight: no timer");
});

Deno.test("recovery: time threshold: a packet is lost 9/8 RTT after it was sent once a later one is acked", () => {
  const { rec, lost, send, ack } = recovery();
  send(0, 0, 0);
  send(1, 1, 10);
  ack(1, 1, 200); // sample 190 ms
  equal(rec.latestRtt, 190);
  deepEqual(lost, [], "only 1 below the largest acked, and younger than 9/8 RTT");
  equal(rec.lossDetectionDeadline, (9 / 8) * 190);
  rec.onTimeout((9 / 8) * 190);
  deepEqual(lost, ["p0"]);
  equal(rec.packetsLost, 1);
});

Deno.test("recovery: PTO resends the two oldest packets' frames, backs off exponentially, resets on ACK", () => {
  const { rec, params, acked, lost, send, ack } = recovery();
  // No RTT sample yet: srtt = initialRttMs, rttvar = srtt / 2 (RFC 9002 §6.2.2).
  const base = params.initialRttMs + 4 * (params.initialRttMs / 2) + params.maxAckDelayMs;
  send(0, 2, 0);
  equal(rec.ptoMs, base);
  equal(rec.lossDetectionDeadline, base);
  deepEqual(rec.onTimeout(base), ["p0", "p1"]);
  equal(rec.ptoCount, 1);
  equal(rec.probesPending, 2, "two probes may bypass the window and the pacer");
  ok(rec.canSend(1e9));
  equal(rec.pacingTime(1e9, base), base);
  deepEqual(lost, [], "a PTO declares nothing lost: the packets stay in flight");
  equal(rec.bytesInFlight, 3000);
  equal(rec.ptoMs, 2 * base);
  send(3, 4, base); // the probes
  equal(rec.probesPending, 0);
  equal(rec.lossDetectionDeadline, base + 2 * base, "from the last ack-eliciting packet sent");
  deepEqual(rec.onTimeout(3 * base), ["p0", "p1"]);
  equal(rec.ptoCount, 2);
  equal(rec.ptoMs, 4 * base);
  rec.ptoCount = 40;
  equal(rec.ptoMs, base * 2 ** 16, "the backoff is capped");
  rec.ptoCount = 2;
  // An ACK of the originals (late) still counts, and ends the backoff.
  ack(0, 4, 3 * base + 10);
  equal(rec.ptoCount, 0);
  deepEqual(acked.sort(), ["p0", "p1", "p2", "p3", "p4"]);
  equal(rec.bytesInFlight, 0);
  equal(rec.lossDetectionDeadline, Infinity);
});

Deno.test("recovery: persistent congestion (losses spanning 3 PTOs) collapses the window to the minimum", () => {
  for (const [firstSent, persistent] of [[20, true], [250, false]] as const) {
    const { rec, params, size, send, ack } = recovery();
    send(0, 0, 0);
    ack(0, 0, 20); // srtt 20, rttvar 10: PTO 20 + 40 + 25 = 85 ms, 3 PTOs = 255 ms
    const before = rec.cwnd;
    send(1, 1, firstSent);
    send(2, 5, 300);
    ack(5, 5, 320); // 1 and 2 lost (packet threshold), 3 and 4 not yet
    equal(rec.packetsLost, 2);
    const minWindow = params.minimumWindowPackets * size;
    if (persistent) equal(rec.cwnd, minWindow, `losses ${300 - firstSent} ms apart`);
    else equal(rec.cwnd, before * params.lossReductionRatio, `losses ${300 - firstSent} ms apart`);
    equal(rec.minWindow, minWindow);
  }
});

Deno.test("recovery: an ACK for packets declared lost undoes the reduction once all of them were spurious", () => {
  const { rec, params, lost, send, ack } = recovery();
  send(0, 0, 0);
  ack(0, 0, 20);
  send(1, 8, 20);
  ack(5, 8, 40);
  deepEqual(lost, ["p1", "p2", "p3", "p4"]);
  const reduced = rec.cwnd;
  equal(rec.ssthresh, reduced, "one congestion event");
  // A late ACK (reordering) for two of the four: not all spurious yet.
  equal(ack(1, 2, 42), false, "nothing newly acked: they were forgotten as lost");
  equal(rec.spuriousLosses, 2);
  equal(rec.undoneReductions, 0);
  equal(rec.cwnd, reduced);
  // The other two: the reduction is undone.
  ack(3, 4, 43);
  equal(rec.spuriousLosses, 4);
  equal(rec.undoneReductions, 1);
  equal(rec.cwnd, reduced / params.lossReductionRatio);
  equal(rec.ssthresh, Infinity, "back in slow start, as before the reduction");
  // pn 1 was declared lost 7 below the largest acked: tolerate that much reordering now.
  equal(rec.packetThreshold, 8);
});

Deno.test("recovery: a late ACK for an older epoch's losses does not undo a newer reduction", () => {
  const { rec, lost, send, ack } = recovery();
  send(0, 0, 0);
  ack(0, 0, 20);
  send(1, 8, 20);
  ack(5, 8, 40);
  deepEqual(lost, ["p1", "p2", "p3", "p4"]);
  const first = rec.cwnd;
  send(9, 13, 50);
  ack(11, 13, 70); // p9, p10 lost: sent after the first reduction began, so a second one
  deepEqual(lost.slice(4), ["p9", "p10"]);
  const second = rec.cwnd;
  ok(second < first, `${second} < ${first}`);
  ack(1, 4, 72);
  equal(rec.spuriousLosses, 4);
  equal(rec.undoneReductions, 0);
  equal(rec.cwnd, second);
});

Deno.test("recovery: the BDP cap is 2 x (max delivery rate x min RTT) + queueLimitBytes, and stops growth", () => {
  const run = (queueLimitBytes: number, cwndLimited: boolean) => {
    const { rec, send, ack } = recovery({ queueLimitBytes });
    rec.cwndLimited = cwndLimited;
    // Three rounds of 10 packets, 10 ms apart: 1000 bytes/ms delivered, RTT 10 ms.
    send(0, 9, 0);
    ack(0, 9, 10);
    equal(rec.windowCapBytes, Infinity, "no rate measured before a full round");
    send(10, 19, 10);
    ack(10, 19, 20);
    const cap = rec.windowCapBytes;
    const afterTwo = rec.cwnd;
    send(20, 29, 20);
    ack(20, 29, 30);
    return { rec, cap, afterTwo };
  };
  const capped = run(8000, true);
  equal(capped.cap, 2 * 1000 * 10 + 8000);
  // Slow start took the window past the cap before it was known; it never shrinks for it.
  equal(capped.afterTwo, 30_000);
  equal(capped.rec.cwnd, 30_000, "held at the cap");
  equal(capped.rec.capHeldAcks, 10);
  equal(capped.rec.ssthresh, 30_000, "slow start ends at the cap");

  const off = run(0, true);
  equal(off.cap, Infinity, "queueLimitBytes 0 disables the cap");
  equal(off.rec.cwnd, 40_000);
  equal(off.rec.capHeldAcks, 0);

  const appLimited = run(8000, false);
  equal(appLimited.cap, Infinity, "rounds the window did not limit measure nothing");
});

Deno.test("recovery: a pacer out of tokens waits for a quantum, and a late timer costs no rate", () => {
  // 1000-byte packets paced at 12.5 bytes/us (100 Mbit/s): gain 125 x 10 packets / 100 ms.
  // A wake that is late (Deno's timers fire ~1-2 ms after the delay asked) finds the tokens
  // that accrued meanwhile, up to the burst (48 KB here, so half of it is the quantum).
  const cases = [
    { pacingQuantumMs: 0, lateMs: 0, packetsPerWake: [0.9, 1] },
    { pacingQuantumMs: 2, lateMs: 0, packetsPerWake: [23, 25] },
    { pacingQuantumMs: 2, lateMs: 1.1, packetsPerWake: [35, 39] },
  ];
  for (const { pacingQuantumMs, lateMs, packetsPerWake } of cases) {
    const { rec, size } = recovery({ pacingGainRatio: 125, pacingQuantumMs });
    const rate = rec.pacingRate;
    equal(rate, 12_500);
    let t = 0, sent = 0, wakes = 0;
    // Spend the initial burst first: from then on each wake is a pacing wake.
    while (rec.pacingTime(size, t) <= t) rec.onPacketSent(sent++, t, size, true, [""]);
    const first = sent;
    t = rec.pacingTime(size, t) + lateMs;
    const start = t;
    while (t < 1000) {
      wakes++;
      while (rec.pacingTime(size, t) <= t) rec.onPacketSent(sent++, t, size, true, [""]);
      t = rec.pacingTime(size, t) + lateMs;
    }
    const perWake = (sent - first) / wakes;
    const achieved = ((sent - first) * size) / (t - start) / rate;
    const label = `quantum ${pacingQuantumMs} ms, timer ${lateMs} ms late`;
    ok(perWake >= packetsPerWake[0]! && perWake <= packetsPerWake[1]!, `${label}: ${perWake}`);
    ok(achieved > 0.97 && achieved < 1.03, `${label}: ${achieved} of the pacing rate`);
  }
});
