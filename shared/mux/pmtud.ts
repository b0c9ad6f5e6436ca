/**
 * Packetization-layer path MTU discovery (DPLPMTUD, RFC 8899; QUIC's use of it,
 * RFC 9000 §14.3). The transport's `maxDatagramSize` is only a ceiling (DTLS may
 * allow 16 KiB records that the path cannot carry); packets start at a safe base
 * and grow when a probe of a larger size is acknowledged.
 *
 * ```
 *        probe acked: size = probe                 hi - size <= granularity
 *   BASE ───────────────────────────> SEARCHING ──────────────────────────> DONE
 *     ^                                 │  probe lost maxProbes times: hi = probe │
 *     │   black hole: full-size packets │                                        │
 *     └─── lost in a row, or PTOs ──────┴──────── raise timer: search again <────┘
 * ```
 *
 * Search: the ceiling first (loopback and LANs converge in one round trip), then
 * binary search between the largest acked size and the smallest failed one. One
 * probe in flight at a time. A lost probe is not congestion (the caller keeps it
 * out of the congestion controller); only `maxProbes` losses of the same size
 * mark it as too big.
 */

export interface PmtuOptions {
  /** Packet size known to pass (RFC 8899 BASE_PLPMTU); capped at the ceiling. */
  baseBytes: number;
  /** The transport's limit (`DatagramConn.maxDatagramSize`). */
  ceilingBytes: number;
  /** Losses of one probe size before it counts as too big (RFC 8899 MAX_PROBES: 3). */
  maxProbes: number;
  /** Search stops when the bracket [acked, failed) is this narrow. */
  granularityBytes: number;
  /** After a search ends below the ceiling, search again after this long (RFC 8899: 600 s). */
  raiseIntervalMs: number;
  /** Packets above base declared lost in a row (none acked between) that mean a black hole. */
  blackHoleLostPackets: number;
}

export class PathMtu {
  /** Current packet size: every packet we send is at most this. */
  size: number;
  readonly base: number;
  readonly ceiling: number;
  /** Probes sent, lost, black holes detected (for stats). */
  probesSent = 0;
  probesLost = 0;
  blackHoles = 0;
  readonly #o: PmtuOptions;
  /** Smallest size known not to pass; ceiling + 1 while none is known. */
  #hi: number;
  /** Size of the probe in flight, 0 if none. */
  #inFlight = 0;
  /** Losses of the current candidate size. */
  #fails = 0;
  #done: boolean;
  #searchAt = 0;
  #largeLostInARow = 0;
  /** A packet of at most base size was acked since the first of those losses. */
  #smallAcked = false;

  constructor(o: PmtuOptions) {
    this.#o = o;
    this.ceiling = o.ceilingBytes;
    this.base = Math.min(o.baseBytes, o.ceilingBytes);
    this.size = this.base;
    this.#hi = this.ceiling + 1;
    this.#done = this.base >= this.ceiling;
  }

  /** True once a search ended (until the raise timer starts another). */
  get searching(): boolean {
    return !this.#done;
  }

  /** The size to probe now, or 0 (a probe is in flight, or the search is done). */
  probeSize(now: number): number {
    if (this.#inFlight !== 0) return 0;
    if (this.#done) {
      if (this.size >= this.ceiling || now < this.#searchAt) return 0;
      this.#done = false; // raise timer: maybe the path got better
      this.#hi = this.ceiling + 1;
      this.#fails = 0;
    }
    return this.#candidate();
  }

  #candidate(): number {
    if (this.#hi > this.ceiling) return this.ceiling;
    return Math.floor((this.size + this.#hi) / 2);
  }

  onProbeSent(size: number): void {
    this.#inFlight = size;
    this.probesSent++;
  }

  onProbeAcked(size: number, now: number): void {
    if (size === this.#inFlight) this.#inFlight = 0;
    if (size <= this.size) return;
    this.size = size;
    this.#fails = 0;
    this.#largeLostInARow = 0;
    if (size >= this.#hi) this.#hi = this.ceiling + 1; // the path got better meanwhile
    this.#checkDone(now);
  }

  onProbeLost(size: number, now: number): void {
    if (size !== this.#inFlight) return;
    this.#inFlight = 0;
    this.probesLost++;
    if (size <= this.size) return;
    if (++this.#fails < this.#o.maxProbes) return;
    this.#fails = 0;
    this.#hi = size;
    this.#checkDone(now);
  }

  #checkDone(now: number): void {
    if (this.size >= this.ceiling || this.#hi - this.size <= this.#o.granularityBytes) {
      this.#done = true;
      this.#searchAt = now + this.#o.raiseIntervalMs;
    }
  }

  /** An ack-eliciting, non-probe packet of `size` was acknowledged. */
  onPacketAcked(size: number): void {
    if (size > this.base) {
      this.#largeLostInARow = 0;
      this.#smallAcked = false;
    } else if (this.#largeLostInARow > 0) this.#smallAcked = true;
  }

  /**
   * A non-probe packet of `size` was declared lost. Returns true when this
   * reveals a black hole (the size fell back to base): large packets lost in a
   * row while small ones still get through. A burst of congestion loss (a
   * receiver's socket buffer overflowing) loses small packets too, or is
   * followed by acked large ones, so it does not count. A path that carries no
   * small packets at all is caught by the PTO rule instead (the caller's).
   */
  onPacketLost(size: number, now: number): boolean {
    if (size <= this.base || this.size <= this.base) return false;
    if (++this.#largeLostInARow < this.#o.blackHoleLostPackets || !this.#smallAcked) return false;
    this.onBlackHole(now);
    return true;
  }

  /** Falls back to base and searches again below the size that stopped passing. */
  onBlackHole(now: number): void {
    if (this.size <= this.base) return;
    this.blackHoles++;
    this.#hi = this.size;
    this.size = this.base;
    this.#largeLostInARow = 0;
    this.#smallAcked = false;
    this.#fails = 0;
    this.#inFlight = 0;
    this.#done = false;
    this.#checkDone(now);
  }
}
