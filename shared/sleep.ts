/**
 * One timer-based wait for both sides' retry loops (the server's database retry
 * at start-up, the client's reconnect backoff).
 */
import { type Clock, realClock } from "./clock.ts";

/**
 * Resolves after `ms`, or as soon as `signal` aborts (at once if it already has).
 * It never rejects: a loop that sleeps between attempts checks `signal.aborted`
 * (or calls `signal.throwIfAborted()`) after it, so stopping is decided in one
 * place, the loop, whether the signal fired during the wait or before it. The
 * timer and the listener are removed either way, so nothing keeps the process up.
 */
export function sleep(ms: number, signal?: AbortSignal, clock: Clock = realClock): Promise<void> {
  if (signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clock.clearTimer(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = clock.setTimer(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
