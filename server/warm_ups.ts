/**
 * The node's tunnel warm-ups (shared/mux/warm_up.ts; docs/congestion.md, "Warm-up"): a
 * greeted tunnel whose client asked for one (FEATURE_WARM_UP) has its download direction
 * warmed up while it waits for its first request. A warm-up fills the path to the client
 * for a few round trips (~6 BDPs, at most `maxBytes`), so after a restart, when every
 * client reconnects at once, the node runs at most `concurrency` at a time; the others
 * wait in arrival order, at most `maxWaiting` of them and each at most `maxWaitMs`, and a
 * tunnel beyond either goes without (counted `skipped`): it then learns its path on its
 * first transfer, as without a warm-up.
 */
import type { Clock } from "../shared/clock.ts";
import type { MuxSession, WarmUpEnd, WarmUpOptions } from "../shared/mux/mod.ts";

export interface WarmUpQueueOptions {
  /** Warm-ups running at once. Default 4. */
  concurrency?: number;
  /** Tunnels waiting for a slot. Default 256. */
  maxWaiting?: number;
  /** A tunnel that waited this long goes without. Default 10 000 ms. */
  maxWaitMs?: number;
  /** Each warm-up's bounds. */
  warmUp?: WarmUpOptions;
  clock: Clock;
}

/** Warm-ups by how they ended (`skipped`: never started, the queue was full or too slow). */
export type WarmUpCounts = Record<WarmUpEnd | "skipped", number>;

export class WarmUpQueue {
  /** How the node's warm-ups ended. */
  readonly counts: WarmUpCounts = {
    modelled: 0,
    bytes: 0,
    time: 0,
    closed: 0,
    "not-needed": 0,
    skipped: 0,
  };
  /** Bytes of warm-up packets sent, all warm-ups. */
  bytesSent = 0;
  readonly #concurrency: number;
  readonly #maxWaiting: number;
  readonly #maxWaitMs: number;
  readonly #warmUp: WarmUpOptions;
  readonly #clock: Clock;
  #running = 0;
  readonly #waiting: { session: MuxSession; since: number }[] = [];

  constructor(o: WarmUpQueueOptions) {
    this.#concurrency = o.concurrency ?? 4;
    this.#maxWaiting = o.maxWaiting ?? 256;
    this.#maxWaitMs = o.maxWaitMs ?? 10_000;
    this.#warmUp = o.warmUp ?? {};
    this.#clock = o.clock;
    if (!Number.isInteger(this.#concurrency) || this.#concurrency < 1) {
      throw new RangeError(`warm-up concurrency must be a positive integer, got ${o.concurrency}`);
    }
  }

  /** Warm-ups running now, and tunnels waiting for one. */
  get running(): number {
    return this.#running;
  }
  get waiting(): number {
    return this.#waiting.length;
  }

  /** Warms `session` up when a slot is free (or never: see the module comment). */
  add(session: MuxSession): void {
    if (this.#running < this.#concurrency) return this.#start(session);
    if (this.#waiting.length >= this.#maxWaiting) {
      this.counts.skipped++;
      return;
    }
    this.#waiting.push({ session, since: this.#clock.now() });
  }

  #start(session: MuxSession): void {
    this.#running++;
    void session.warmUp(this.#warmUp).then((r) => {
      this.#running--;
      this.counts[r.end]++;
      this.bytesSent += r.bytes;
      this.#next();
    });
  }

  #next(): void {
    const now = this.#clock.now();
    while (this.#running < this.#concurrency && this.#waiting.length > 0) {
      const { session, since } = this.#waiting.shift()!;
      if (session.isClosed) {
        this.counts.closed++;
      } else if (now - since > this.#maxWaitMs) {
        this.counts.skipped++;
      } else {
        this.#start(session);
      }
    }
  }
}
