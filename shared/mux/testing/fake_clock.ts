/** The mux tests' fake clock: the shared one (shared/testing/fake_clock.ts). */
export { FakeClock, prng, runFor, runUntil, settle } from "../../testing/fake_clock.ts";
