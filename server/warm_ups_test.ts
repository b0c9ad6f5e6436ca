/**
 * The node's warm-up grants (warm_ups.ts) with real mux sessions on a fake clock, over a
 * 20 Mbit/s, 100 ms path (a warm-up there takes about a second).
 */
import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { FakeClock, runFor, runUntil } from "../shared/testing/fake_clock.ts";
import { sessionPair } from "../shared/mux/testing/harness.ts";
import { createLinkPair } from "../shared/mux/testing/lossy_link.ts";
import { TUNNEL_MUX_PARAMS } from "../shared/tunnel_params.ts";
import { WarmUpGrants, zeroWarmUpCounts } from "./warm_ups.ts";

Deno.test("warm-up grants: a few at a time, each held through its hold time and the server's warm-up", async () => {
  const clock = new FakeClock();
  const link = createLinkPair({ clock, delayMs: 50, rateBytesPerMs: 2_500, queueBytes: 375_000 });
  const p = sessionPair(link.a, link.b, { clock, params: TUNNEL_MUX_PARAMS });
  const g = new WarmUpGrants({ concurrency: 1, holdMs: 500, clock });
  try {
    await runFor(clock, 100);
    const first = g.tryGrant();
    ok(first !== null);
    equal(g.tryGrant(), null, "the one grant is held");
    first.start(p.server);
    // Past the hold time the warm-up still runs: the grant is still held.
    await runFor(clock, 600);
    ok(p.server.stats.warmUpBytesSent > 0);
    equal(g.tryGrant(), null);
    await runUntil(clock, () => g.held === 0, 10_000, "the warm-up's end");
    deepEqual(g.counts, { ...zeroWarmUpCounts(), modelled: 1, skipped: 2 });
    equal(g.bytesSent, p.server.stats.warmUpBytesSent);
    // A grant whose tunnel never came up is held for its hold time only; start after drop
    // does nothing.
    const dropped = g.tryGrant();
    ok(dropped !== null);
    dropped.drop();
    dropped.start(p.server);
    equal(g.held, 1);
    await runFor(clock, 499);
    equal(g.held, 1);
    await runFor(clock, 2);
    equal(g.held, 0);
    equal(g.bytesSent, p.server.stats.warmUpBytesSent, "no second warm-up");
  } finally {
    p.client.abort(0, "done");
    p.server.abort(0, "done");
    await runFor(clock, 10);
  }
  throws(() => new WarmUpGrants({ concurrency: 0, clock }), RangeError);
});
