/** The conformance suite over real UDP sockets on 127.0.0.1 (real time). */
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
