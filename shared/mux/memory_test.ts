/** The conformance suite over the in-memory lossy link, on fake time. */
import { FakeClock } from "./testing/fake_clock.ts";
import { createLinkPair } from "./testing/lossy_link.ts";
import { memoryProfiles as profiles } from "./testing/link_profiles.ts";
import { sessionPair } from "./testing/harness.ts";
import { defineConformanceSuite } from "./testing/conformance.ts";

for (const [label, link] of profiles) {
  defineConformanceSuite(label, (params) => {
    const clock = new FakeClock();
    const l = createLinkPair({ clock, ...link });
    return Promise.resolve(sessionPair(l.a, l.b, { clock, params: params ?? {} }));
  }, { bigBytes: 16 * 1024 * 1024, streams: 100, maxStreamBytes: 128 * 1024 });
}
