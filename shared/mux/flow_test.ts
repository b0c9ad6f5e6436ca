/**
 * Receive-window auto-tuning against a sender that ramps up (flow.ts, `ReceiveWindow`):
 * a model of one stream on a path of one RTT, whose sender doubles its rate every round
 * trip up to the path's rate (a congestion controller's Startup) and sees each window
 * update a one-way delay after the receiver sent it; the receiver reads all that arrives.
 * Before an update was judged by the arrival rate of the last round trip too, and could
 * grow the window by more than one doubling: 147 ms and 88 ms held on the first two paths
 * below (85 and 51 with the doublings alone).
 */
import assert from "node:assert/strict";
import { ReceiveWindow } from "./flow.ts";

/** Ms in which the sender wanted to send more than the window let it, and the final size. */
function ramp(rttMs: number, mbit: number, initial: number): { heldMs: number; size: number } {
  const rate = (mbit * 1e6) / 8 / 1000; // bytes per ms
  const w = new ReceiveWindow(initial, 16 << 20, initial, 0);
  const oneWay = rttMs / 2;
  let want = 12_000 / rttMs; // ten packets per round trip
  const sentAt: number[] = [];
  const limitAt: number[] = [];
  let sent = 0;
  let heldMs = 0;
  for (let t = 0; t < 4000; t++) {
    const limit = t >= oneWay ? limitAt[t - oneWay]! : initial;
    const n = Math.max(0, Math.min(want, limit - sent));
    if (n < want) heldMs++;
    sent += n;
    sentAt[t] = n;
    want = Math.min(rate, want * 2 ** (1 / rttMs));
    if (t >= oneWay && sentAt[t - oneWay]! > 0) {
      w.consumed += sentAt[t - oneWay]!;
      w.onArrival(t, w.consumed, rttMs);
    }
    if (w.wantsUpdate) w.update(t, rttMs);
    limitAt[t] = w.limit;
  }
  return { heldMs, size: w.size };
}

Deno.test("flow: a window keeps up with a sender that doubles its rate every round trip", () => {
  for (
    const [rtt, mbit, bound] of [[100, 150, 80], [50, 400, 55], [50, 50, 5]] as const
  ) {
    const r = ramp(rtt, mbit, 512 * 1024);
    const bdp = (mbit * 1e6) / 8 / 1000 * rtt;
    console.log(
      `  ${rtt} ms, ${mbit} Mbit/s: held ${r.heldMs} ms, window ${r.size} B (BDP ${bdp} B)`,
    );
    assert.ok(r.heldMs < bound, `held ${r.heldMs} ms on ${rtt} ms / ${mbit} Mbit/s`);
    // Steady state: no larger than the old rule settles at (the smallest doubling whose
    // whole window lasts 4 RTTs at the path's rate), unless the cap holds it lower.
    assert.ok(r.size <= Math.min(16 << 20, 2 * 4 * bdp), `window ${r.size} B`);
  }
});
