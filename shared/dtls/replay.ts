/**
 * The sliding anti-replay window (RFC 6347 4.1.2.6), 64 entries.
 *
 * `top` is the highest sequence number accepted so far; slot `seq % 64` records
 * whether `seq` was seen, for seq in (top - 64, top]. A record far ahead slides the
 * window (clearing the slots it passes), so a burst of lost records never wedges it.
 * Only records that authenticated are `accept`ed, so forged sequence numbers
 * cannot slide the window.
 */
export const REPLAY_WINDOW_SIZE = 64;

export class ReplayWindow {
  #top = -1;
  readonly #seen = new Uint8Array(REPLAY_WINDOW_SIZE);

  /** True if `seq` is new and not too old (check before decrypting). */
  check(seq: number): boolean {
    if (seq > this.#top) return true;
    if (this.#top - seq >= REPLAY_WINDOW_SIZE) return false;
    return this.#seen[seq % REPLAY_WINDOW_SIZE] === 0;
  }

  /** Marks `seq` seen (after the record authenticated). */
  accept(seq: number): void {
    if (seq > this.#top) {
      const shift = seq - this.#top;
      if (shift >= REPLAY_WINDOW_SIZE) this.#seen.fill(0);
      else for (let s = this.#top + 1; s < seq; s++) this.#seen[s % REPLAY_WINDOW_SIZE] = 0;
      this.#top = seq;
    }
    this.#seen[seq % REPLAY_WINDOW_SIZE] = 1;
  }

  reset(): void {
    this.#top = -1;
    this.#seen.fill(0);
  }
}
