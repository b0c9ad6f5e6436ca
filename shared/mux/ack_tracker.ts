/**
 * Received packet numbers, kept as a short list of ranges, and the decision of
 * when to send an ACK (RFC 9000 §13.2): after `ackElicitingThresholdPackets`
 * ack-eliciting packets, at once on reordering, otherwise after max_ack_delay.
 * The peer may raise the threshold and shorten the delay with ACK_FREQUENCY
 * (draft-ietf-quic-ack-frequency) during bulk transfer.
 *
 * It also keeps when each new largest packet since the last ACK arrived, so that an ACK
 * for a run of packets read in one go can say when some of them came (`timedPoints`).
 */

/** Arrival times kept between two ACKs. */
const MAX_ARRIVALS = 64;
export class AckTracker {
  /** Flat, descending, inclusive: [high0, low0, high1, low1, ...]. */
  readonly ranges: number[] = [];
  /** Ack-eliciting packets received since the last ACK we sent. */
  unackedEliciting = 0;
  /** An ACK should go out now (threshold reached or reordering seen). */
  ackNow = false;
  /** When a delayed ACK is due, or Infinity. */
  ackDeadline = Infinity;
  /** Receive time of the largest packet number, for ack_delay. */
  largestReceivedTime = 0;
  readonly #maxRanges: number;
  #threshold: number;
  #maxAckDelayMs: number;
  /** Arrival times are kept (`timedPoints`); off once no ACK will carry them. */
  timeArrivals = true;
  /** Sequence number of the last ACK_FREQUENCY applied (-1: none). */
  #freqSeq = -1;
  /** New largest ack-eliciting packets since the last ACK, and when each arrived. */
  readonly #arrivedPn: number[] = [];
  readonly #arrivedAt: number[] = [];

  constructor(maxRanges: number, threshold: number, maxAckDelayMs: number) {
    this.#maxRanges = maxRanges;
    this.#threshold = threshold;
    this.#maxAckDelayMs = maxAckDelayMs;
  }

  /**
   * Applies an ACK_FREQUENCY request (older sequence numbers are ignored). The
   * delay is capped at `maxDelayMs`, so a peer cannot make us sit on ACKs.
   */
  setFrequency(seq: number, threshold: number, delayMs: number, maxDelayMs: number): void {
    if (seq <= this.#freqSeq) return;
    this.#freqSeq = seq;
    this.#threshold = Math.max(1, threshold);
    this.#maxAckDelayMs = Math.min(Math.max(delayMs, 0), maxDelayMs);
    if (this.unackedEliciting >= this.#threshold) this.ackNow = true;
    else if (this.ackDeadline !== Infinity) {
      this.ackDeadline = Math.min(this.ackDeadline, this.largestReceivedTime + this.#maxAckDelayMs);
    }
  }

  /**
   * An ACK is due now, or within `slackMs` (the timer granularity): then it goes with
   * whatever packet leaves now. Without the slack a deadline under a millisecond away
   * was waited for on setImmediate (the real clock's sub-millisecond timer), a busy
   * wait: with a 1 ms ACK delay (ACK_FREQUENCY on loopback) it took 25-35 % of one
   * request at a time's throughput.
   */
  due(now: number, slackMs: number): boolean {
    return this.ackNow || (this.pending && this.ackDeadline <= now + slackMs);
  }

  /** Current ack-eliciting threshold (packets). */
  get threshold(): number {
    return this.#threshold;
  }

  /** True if `pn` was already received (or is too old to tell, which we treat as received). */
  isDuplicate(pn: number): boolean {
    const r = this.ranges;
    if (r.length === 0) return false;
    for (let i = 0; i < r.length; i += 2) {
      if (pn > r[i]!) return false;
      if (pn >= r[i + 1]!) return true;
    }
    return r.length >= this.#maxRanges * 2;
  }

  /** Records a new (non-duplicate) packet. */
  onPacket(pn: number, ackEliciting: boolean, now: number): void {
    const r = this.ranges;
    let reordered = false;
    if (r.length === 0) {
      r.push(pn, pn);
      this.largestReceivedTime = now;
    } else if (pn === r[0]! + 1) {
      r[0] = pn;
      this.largestReceivedTime = now;
    } else if (pn > r[0]!) {
      r.unshift(pn, pn); // gap: a packet was lost or is late
      reordered = true;
      this.largestReceivedTime = now;
    } else {
      reordered = true;
      this.#insert(pn);
    }
    if (r.length > this.#maxRanges * 2) r.length = this.#maxRanges * 2;
    if (!ackEliciting) return;
    if (this.timeArrivals && pn === r[0]! && this.#arrivedPn.length < MAX_ARRIVALS) {
      this.#arrivedPn.push(pn);
      this.#arrivedAt.push(now);
    }
    this.unackedEliciting++;
    if (reordered || this.unackedEliciting >= this.#threshold) this.ackNow = true;
    else if (this.ackDeadline === Infinity) this.ackDeadline = now + this.#maxAckDelayMs;
  }

  #insert(pn: number): void {
    const r = this.ranges;
    for (let i = 0; i < r.length; i += 2) {
      const hi = r[i]!;
      const lo = r[i + 1]!;
      if (pn > hi) {
        // Between range i-1 (above) and range i.
        const extendsAbove = i > 0 && pn === r[i - 1]! - 1;
        const extendsBelow = pn === hi + 1;
        if (extendsAbove && extendsBelow) {
          r[i - 1] = r[i + 1]!;
          r.splice(i, 2);
        } else if (extendsAbove) r[i - 1] = pn;
        else if (extendsBelow) r[i] = pn;
        else r.splice(i, 0, pn, pn);
        return;
      }
      if (pn >= lo) return;
      if (pn === lo - 1) {
        const next = r[i + 2];
        if (next !== undefined && next === pn - 1) {
          r[i + 1] = r[i + 3]!;
          r.splice(i + 2, 2);
        } else r[i + 1] = pn;
        return;
      }
    }
    r.push(pn, pn);
  }

  /** Any ack-eliciting packet not yet acknowledged. */
  get pending(): boolean {
    return this.unackedEliciting > 0;
  }

  /**
   * For an ACK of `min` or more new packets read since the last one: up to `count` of
   * them, evenly spread, oldest first, the newest left out (the ACK itself covers it), as
   * [pn, arrival time] pairs; none for fewer.
   */
  timedPoints(min: number, count: number): [number, number][] {
    const n = this.#arrivedPn.length;
    if (n < min || count <= 0) return [];
    const m = Math.min(count, n - 1);
    const out: [number, number][] = [];
    for (let k = 0; k < m; k++) {
      const j = Math.floor((k * (n - 1)) / m);
      out.push([this.#arrivedPn[j]!, this.#arrivedAt[j]!]);
    }
    return out;
  }

  /** The ranges as they are, but only up to `pn` (a packet received). */
  rangesUpTo(pn: number): number[] {
    const r = this.ranges;
    for (let i = 0; i < r.length; i += 2) {
      if (pn >= r[i + 1]!) return [Math.min(pn, r[i]!), ...r.slice(i + 1)];
    }
    return [];
  }

  /** Call after an ACK frame went out. */
  onAckSent(): void {
    this.unackedEliciting = 0;
    this.ackNow = false;
    this.ackDeadline = Infinity;
    this.#arrivedPn.length = 0;
    this.#arrivedAt.length = 0;
  }
}
