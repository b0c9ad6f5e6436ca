/**
 * The conformance suite with `congestionControl: "bbr"` on both ends, over every in-memory
 * link profile memory_test.ts runs NewReno over (fake time).
 */
import { FakeClock } from "./testing/fake_clock.ts";
import { createLinkPair } from "./testing/lossy_link.ts";
import { memoryProfiles } from "./testing/link_profiles.ts";
import { sessionPair } from "./testing/harness.ts";
import { defineConformanceSuite } from "./testing/conformance.ts";

for (const [label, link] of memoryProfiles) {
  defineConformanceSuite(`bbr ${label}`, (params) => {
    const clock = new FakeClock();
    const l = createLinkPair({ clock, ...link });
    return Promise.resolve(
      sessionPair(l.a, l.b, { clock, params: { ...params, congestionControl: "bbr" } }),
    );
  }, { bigBytes: 16 * 1024 * 1024, streams: 100, maxStreamBytes: 128 * 1024 });
}
