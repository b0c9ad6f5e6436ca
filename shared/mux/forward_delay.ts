/**
 * The forward path's queue, from dated ACKs: a packet's one-way delay on two clocks (when it
 * arrived, on the peer's clock, less when we sent it, on ours) holds the clocks' offset, which
 * is constant, plus the path's delay and its queue. Less the smallest such delay seen lately,
 * what is left is the queue on the way there alone. The round trip also holds the way back,
 * where ACKs queue behind whatever the peer is sending, so where both directions carry data
 * the RTT shows a queue that our sending neither made nor can drain (bbr.ts's queue rules).
 *
 * The smallest delay is kept over a window (two halves, like a windowed min filter), so a
 * longer path after a route change, or clocks drifting apart (~1 ms in 10 s at 100 ppm), are
 * followed within it.
 */

export class ForwardDelay {
  readonly #halfWindowMs: number;
  /** Smallest one-way delay in the current half window and in the one before (Infinity: none). */
  #min = Infinity;
  #prevMin = Infinity;
  #halfStart = -Infinity;

  /** `windowMs`: how long a smallest delay is remembered (the min RTT's window). */
  constructor(windowMs: number) {
    this.#halfWindowMs = windowMs / 2;
  }

  /**
   * A packet sent at `sentMs` (our clock) arrived at `arrivedMs` (the peer's): returns the
   * forward queue it met, in ms (0 when it set the minimum).
   */
  onSample(sentMs: number, arrivedMs: number, now: number): number {
    if (now - this.#halfStart >= this.#halfWindowMs) {
      // A new half: the older half's minimum is forgotten.
      this.#prevMin = now - this.#halfStart >= 2 * this.#halfWindowMs ? Infinity : this.#min;
      this.#min = Infinity;
      this.#halfStart = now;
    }
    const delay = arrivedMs - sentMs;
    if (delay < this.#min) this.#min = delay;
    return delay - Math.min(this.#min, this.#prevMin);
  }
}
