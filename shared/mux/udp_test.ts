/** The conformance suite over real UDP sockets on 127.0.0.1 (real time). */
import { equal } from "node:assert/strict";
import { setImmediate } from "node:timers";
import { defineConformanceSuite } from "./testing/conformance.ts";
import { sessionPair } from "./testing/harness.ts";
import { createUdpPair } from "./testing/udp_pair.ts";
import { realClock } from "./clock.ts";

for (const [label, loss] of [["udp", 0], ["udp 5% injected loss", 0.05]] as const) {
  defineConformanceSuite(label, (params) => {
    const u = createUdpPair({ maxDatagramSize: 1200, loss, seed: 9 });
    return Promise.resolve(
      sessionPair(u.a, u.b, { clock: realClock, params: params ?? {}, disposeTransport: u.close }),
    );
  }, { bigBytes: 16 * 1024 * 1024, streams: 100, maxStreamBytes: 128 * 1024 });
}

Deno.test("mux/udp: an event loop stalled past the unanswered timeout does not end a session whose peer is there", async () => {
  // Deno runs a timer that fell due during a stall before it reads the sockets: the
  // unanswered-timeout must not be judged before the answers that wait there were read.
  const u = createUdpPair({ maxDatagramSize: 1200 });
  const pair = sessionPair(u.a, u.b, {
    clock: realClock,
    params: { unansweredTimeoutMs: 1000 },
    disposeTransport: u.close,
  });
  try {
    const s = pair.client.openStream();
    await s.write(new Uint8Array([1, 2, 3]));
    const accepted = pair.server.acceptStream();
    // The packet goes out on the next turn; stall before the server reads it.
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    equal(pair.client.stats.packetsSent > 0, true, "the request went out before the stall");
    const end = performance.now() + 1500;
    while (performance.now() < end) { /* the process is stalled */ }
    await pair.sleep(1200);
    equal(pair.client.isClosed, false, "the client kept the session");
    const got = await pair.wait(accepted, "the server's stream");
    equal(got !== null, true);
  } finally {
    await pair.dispose();
  }
});
