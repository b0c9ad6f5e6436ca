/**
 * A session's warm-up (docs/congestion.md, "Warm-up"): while the session has nothing else
 * to send, it sends packets of one WARM_UP frame and PADDING, at full size, as fast as the
 * congestion controller lets it, until the controller has measured the path's rate
 * (`CongestionController.bandwidthKnown`), a byte or time bound is reached, or the session
 * closes.
 * Stream data always goes first; a warm-up packet only fills what the data leaves.
 *
 * Why: a fresh session's first bulk transfer otherwise spends its first round trips
 * learning the path (Startup from the first flight), and a tunnel is usually up long
 * before its first request. With the model learned beforehand the first transfer starts
 * at the rate later ones do. Lost warm-up packets are not sent again: they carry nothing.
 *
 * The peer acknowledges WARM_UP as it does stream data, not at once as a PING (a probe):
 * so a warm-up costs it no more ACKs than a download would.
 */

/** Bounds on one warm-up. */
export interface WarmUpOptions {
  /** Stop after this many bytes of warm-up packets. Default 4 MiB. */
  maxBytes?: number;
  /** Stop this long after starting. Default 3000 ms. */
  maxMs?: number;
}

/**
 * Why a warm-up stopped: `modelled` (the controller measured the path's rate), `bytes` or
 * `time` (a bound), `closed` (the session), or `not-needed` (the controller already had a
 * rate, or keeps none to learn: NewReno).
 */
export type WarmUpEnd = "modelled" | "bytes" | "time" | "closed" | "not-needed";

/** How a warm-up went (`MuxSession.warmUp` resolves with it). */
export interface WarmUpResult {
  /** Why it stopped. */
  end: WarmUpEnd;
  /** Warm-up packets sent. */
  packets: number;
  /** Their bytes. */
  bytes: number;
  /** From start to end, ms. */
  ms: number;
}

/** `WarmUpOptions.maxBytes` by default. */
export const WARM_UP_DEFAULT_MAX_BYTES = 4 * 1024 * 1024;
/** `WarmUpOptions.maxMs` by default. */
export const WARM_UP_DEFAULT_MAX_MS = 3000;

export class WarmUp {
  packets = 0;
  bytes = 0;
  readonly done: Promise<WarmUpResult>;
  readonly #started: number;
  readonly #deadline: number;
  readonly #maxBytes: number;
  #resolve!: (r: WarmUpResult) => void;
  #ended = false;

  constructor(now: number, o: WarmUpOptions = {}) {
    const maxBytes = o.maxBytes ?? WARM_UP_DEFAULT_MAX_BYTES;
    const maxMs = o.maxMs ?? WARM_UP_DEFAULT_MAX_MS;
    if (!(maxBytes >= 0) || !(maxMs >= 0)) {
      throw new RangeError(`warm-up bounds must be >= 0: maxBytes ${maxBytes}, maxMs ${maxMs}`);
    }
    this.#started = now;
    this.#deadline = now + maxMs;
    this.#maxBytes = maxBytes;
    this.done = new Promise((r) => (this.#resolve = r));
  }

  /** Why it must stop at `now` (`modelled`: the controller knows the path's rate), or null. */
  endReason(now: number, modelled: boolean): WarmUpEnd | null {
    if (modelled) return "modelled";
    if (this.bytes >= this.#maxBytes) return "bytes";
    if (now >= this.#deadline) return "time";
    return null;
  }

  /** Ends it (once). */
  finish(now: number, end: WarmUpEnd): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#resolve({ end, packets: this.packets, bytes: this.bytes, ms: now - this.#started });
  }
}
