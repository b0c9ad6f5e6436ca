/**
 * A receive window that grows with use (auto-tuning as in quic-go's
 * flowcontrol): when the peer used up a window's worth in less than about two
 * round trips, the window doubles, up to a maximum. This is what keeps a single
 * stream from being capped at window/RTT (frp #2987, #3555).
 */
export class ReceiveWindow {
  /** Current window size in bytes. */
  size: number;
  readonly maxSize: number;
  /** Highest offset the peer may send up to (last advertised). */
  limit: number;
  /** Bytes consumed by the reader (credit returned). */
  consumed = 0;
  #epochStart = -1;
  #epochOffset = 0;
  /** The peer still has the smaller starting limit (nothing advertised yet). */
  #belowSize = false;

  /**
   * `advertised` is the limit the peer starts with when it is below `initial` (a
   * stream's wire default): the larger window is announced only once half of that
   * is used, so a small request/response stream never needs a MAX_STREAM_DATA.
   */
  constructor(initial: number, max: number, advertised = initial) {
    this.size = initial;
    this.maxSize = max;
    this.limit = Math.min(initial, advertised);
    this.#belowSize = this.limit < initial;
  }

  /** True when less than half a window of credit is left (of the starting limit, at first). */
  get wantsUpdate(): boolean {
    return this.limit - this.consumed <= (this.#belowSize ? this.limit : this.size) / 2;
  }

  /** Computes a new limit, growing the window if it was used up fast. Returns the new limit. */
  update(now: number, srttMs: number): number {
    if (this.#epochStart >= 0 && this.size < this.maxSize) {
      const used = this.consumed - this.#epochOffset;
      const elapsed = now - this.#epochStart;
      // Window fraction used per RTT: grow if a full window would take < 2 RTTs.
      if (used > 0 && elapsed < (4 * srttMs * used) / this.size) {
        this.size = Math.min(this.size * 2, this.maxSize);
      }
    }
    this.#belowSize = false;
    this.#epochStart = now;
    this.#epochOffset = this.consumed;
    this.limit = this.consumed + this.size;
    return this.limit;
  }

  /** Ensures the window is at least `n` bytes (session window follows its streams). */
  ensureAtLeast(n: number): void {
    if (this.size < n) this.size = Math.min(n, this.maxSize);
  }
}
