/** Time source and timers, injected so loss recovery and timeouts run on fake time in tests. */
export interface Clock {
  /** Milliseconds, monotonic, fractional allowed. */
  now(): number;
  /** Calls `fn` once after `delayMs`. Returns a handle for `clearTimer`. */
  setTimer(fn: () => void, delayMs: number): unknown;
  clearTimer(handle: unknown): void;
}

/** The real clock: performance.now() and setTimeout. */
export const realClock: Clock = {
  now: () => performance.now(),
  setTimer: (fn, delayMs) => setTimeout(fn, delayMs),
  clearTimer: (h) => clearTimeout(h as number),
};
