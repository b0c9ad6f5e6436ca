/** The mux's clock: the shared one (shared/clock.ts), re-exported for the mux's modules. */
export { type Clock, realClock } from "../clock.ts";
