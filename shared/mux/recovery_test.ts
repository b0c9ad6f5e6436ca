import { equal, ok } from "node:assert/strict";
import { resolveParams } from "./params.ts";
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
