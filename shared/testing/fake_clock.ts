/**
 * A fake clock for deterministic tests: time moves only when a test steps it.
 * `runUntil` alternates "let every promise settle" (one macrotask turn) with
 * "fire the earliest timers", so Web Streams, the mux and the link all run on
 * fake time, in order, with no real waiting.
 */
import { setImmediate } from "node:timers";
import type { Clock } from "../clock.ts";

interface Timer {
  at: number;
  seq: number;
  fn: () => void;
}

export class FakeClock implements Clock {
  #now: number;
  #seq = 0;
  #heap: Timer[] = [];
  #cancelled = new Set<number>();
  #live = new Set<number>();

  constructor(start = 1000) {
    this.#now = start;
  }
  now(): number {
    return this.#now;
  }
  setTimer(fn: () => void, delayMs: number): unknown {
    const t: Timer = { at: this.#now + Math.max(0, delayMs), seq: ++this.#seq, fn };
    this.#push(t);
    this.#live.add(t.seq);
    return t.seq;
  }
  clearTimer(handle: unknown): void {
    if (typeof handle === "number" && this.#live.delete(handle)) this.#cancelled.add(handle);
  }
  /** Timers not yet fired or cleared. */
  get pendingTimers(): number {
    return this.#live.size;
  }
  /** When the next timer fires, or Infinity. */
  get nextAt(): number {
    this.#dropCancelled();
    return this.#heap[0]?.at ?? Infinity;
  }
  /** Fires every timer due at the earliest instant; returns false if there are none. */
  step(): boolean {
    const at = this.nextAt;
    if (at === Infinity) return false;
    if (at > this.#now) this.#now = at;
    let n = 0;
    while (this.nextAt <= this.#now) {
      if (++n > 1_000_000) throw new Error(`FakeClock: timers keep firing at ${this.#now} ms`);
      const t = this.#pop()!;
      this.#live.delete(t.seq);
      t.fn();
    }
    return true;
  }
  /** Moves time forward by `ms`, firing timers on the way (no promise settling between them). */
  advance(ms: number): void {
    const end = this.#now + ms;
    while (this.nextAt <= end) this.step();
    this.#now = end;
  }

  #dropCancelled(): void {
    while (this.#heap.length > 0 && this.#cancelled.has(this.#heap[0]!.seq)) {
      this.#cancelled.delete(this.#heap[0]!.seq);
      this.#pop();
    }
  }
  #less(a: Timer, b: Timer): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }
  #push(t: Timer): void {
    const h = this.#heap;
    h.push(t);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.#less(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }
  #pop(): Timer | undefined {
    const h = this.#heap;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last !== undefined) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && this.#less(h[l]!, h[m]!)) m = l;
        if (r < h.length && this.#less(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }
}

/** Lets all pending promise jobs run (one macrotask turn). */
export function settle(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

/**
 * Runs fake time until `done()` is true. Throws if fake time passes `maxMs`
 * or nothing is left to happen (a deadlock), naming `what`.
 */
export async function runUntil(
  clock: FakeClock,
  done: () => boolean,
  maxMs: number,
  what = "condition",
): Promise<void> {
  const limit = clock.now() + maxMs;
  for (;;) {
    await settle();
    if (done()) return;
    if (clock.nextAt > limit) {
      throw new Error(`Timed out after ${maxMs} ms of fake time waiting for ${what}`);
    }
    if (!clock.step()) {
      await settle();
      if (done()) return;
      throw new Error(`Stalled waiting for ${what}: no timers left`);
    }
  }
}

/** Runs fake time for `ms`, settling promises between timers. */
export async function runFor(clock: FakeClock, ms: number): Promise<void> {
  const end = clock.now() + ms;
  for (;;) {
    await settle();
    if (clock.nextAt > end) break;
    clock.step();
  }
  clock.advance(end - clock.now());
  await settle();
}

export { prng } from "./prng.ts";
