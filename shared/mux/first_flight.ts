/**
 * The rate a session's first full flight came back at (docs/congestion.md, "A session's
 * first window"): the initial window leaves back to back, the bottleneck spaces its
 * packets at its own rate, the receiver acknowledges them as they come, and so the ACKs
 * arrive at the bottleneck's rate, one round trip after the flight left. BBR's Startup
 * would need ~log2(BDP / initial window) round trips of doubling to learn that rate from
 * delivery-rate samples, each a round behind; with it, Startup begins at half of it.
 *
 * The meter is armed until it has measured once. While armed, packets sent back to back
 * (less than TRAIN_GAP_MS apart, up to the initial window) form a train and skip the
 * pacer. The train is measured if it had TRAIN_MIN_PACKETS or more: over the ACKs that
 * cover it, the bytes the third and later ones acknowledged, over the time from the
 * second to the last (an ACK's own bytes arrived before its time, so the first timing
 * ACK's are not counted, and the first interval is left out: see endAck). An ACK's time
 * is when it arrived less the ACK delay its sender reports: when the largest packet it
 * acknowledges arrived there, a round trip's fixed part later. So an ACK the receiver's
 * timer sent (the last few packets of a train, fewer than its ACK threshold) still tells
 * when they came, and a receiver whose event loop read the whole train before it could
 * acknowledge any sends timed ACK frames, one per few packets, each with its own delay
 * (packer.ts, "Timed ACKs"). An ACK that also covers packets sent after the train does
 * not count: its time is theirs, and they may have left at another rate. A shorter train
 * (a hello, a small request or answer), or one with too few such ACKs, measures nothing
 * and the meter stays armed.
 *
 * The rate can be wrong in both directions. Lower: the sender's own spacing (a train sent
 * slower than the bottleneck takes it measures the sender), a receiver that reads late,
 * ACKs held on the way back. Higher: ACKs bunched on the way back (a busy reverse path).
 * Startup takes half of it, as careful resume takes half of a remembered window, so a
 * rate up to twice too high fills the path without a queue, and its own samples take over
 * from the next round trip.
 */

/** Sends further apart than this end a train. */
export const TRAIN_GAP_MS = 1;
/** A train shorter than this measures nothing. */
export const TRAIN_MIN_PACKETS = 16;

export class FirstFlightMeter {
  #state: "armed" | "measuring" | "done" = "armed";
  readonly #maxPackets: number;
  // The train being sent: packet numbers [#firstPn, #lastPn], ack-eliciting ones only.
  #firstPn = -1;
  #lastPn = -1;
  #count = 0;
  #lastSend = -Infinity;
  /** Train packets neither acknowledged nor declared lost. */
  #outstanding = 0;
  // Its ACKs.
  #ackBytes = 0;
  /** ACKs that timed the train so far. */
  #timedAcks = 0;
  #firstAckAt = -1;
  #lastAckAt = -1;
  #countedBytes = 0;
  #countedPackets = 0;
  #ackPackets = 0;

  /** `maxPackets`: the longest train (the initial window in packets). */
  constructor(maxPackets: number) {
    this.#maxPackets = Math.max(maxPackets, TRAIN_MIN_PACKETS);
  }

  /** No rate measured yet: trains are still formed. */
  get armed(): boolean {
    return this.#state === "armed";
  }

  /** Measured, or stopped: it will never measure again. */
  get done(): boolean {
    return this.#state === "done";
  }

  /** Stops measuring for good (the controller no longer wants a rate). */
  disarm(): void {
    this.#state = "done";
  }

  /** A packet sent at `now` would belong to a train, and so skips the pacer. */
  unpaced(now: number): boolean {
    return this.#state === "armed" &&
      (this.#count === 0 ||
        (this.#count < this.#maxPackets && now - this.#lastSend < TRAIN_GAP_MS));
  }

  /**
   * An ack-eliciting packet went out; `full` if it had the session's packet size (or
   * nearly). A smaller one ends a train and is no part of one: the bottleneck spaces small
   * packets by their size, so what spaces a run of small answers sent at once is the two
   * ends' per-packet work, and its rate says little of the path's.
   */
  onSent(pn: number, now: number, full: boolean): void {
    if (this.#state !== "armed") return;
    if (!full) {
      if (this.#count > 0) this.#close();
      return;
    }
    if (
      this.#count > 0 && (this.#count >= this.#maxPackets || now - this.#lastSend >= TRAIN_GAP_MS)
    ) {
      if (this.#close()) return;
    }
    if (this.#count === 0) this.#firstPn = pn;
    this.#lastPn = pn;
    this.#count++;
    this.#outstanding++;
    this.#lastSend = now;
  }

  /** The train ended: measure it if it is long enough (true), else start over. */
  #close(): boolean {
    if (this.#count >= TRAIN_MIN_PACKETS) {
      this.#state = "measuring";
      return true;
    }
    this.#count = 0;
    this.#outstanding = 0;
    return false;
  }

  #inTrain(pn: number): boolean {
    return pn >= this.#firstPn && pn <= this.#lastPn && this.#count > 0;
  }

  /** An ack-eliciting packet of `size` bytes was acknowledged (within one ACK). */
  onAcked(pn: number, size: number): void {
    if (!this.#inTrain(pn)) return;
    // The first ACK of a train ends it: what goes out after is clocked by ACKs.
    if (this.#state === "armed" && !this.#close()) return;
    if (this.#state !== "measuring") return;
    this.#ackBytes += size;
    this.#ackPackets++;
    this.#outstanding--;
  }

  /** A packet was declared lost. */
  onLost(pn: number): void {
    if (this.#state === "measuring" && this.#inTrain(pn)) this.#outstanding--;
  }

  /**
   * Ends an ACK whose largest packet number is `largest`, that arrived at `now` and was
   * held `ackDelayMs` by the peer. Returns the train's rate in bytes/ms once its last
   * packet is accounted for, or 0 (not yet, or nothing measured: then the meter is armed
   * again).
   */
  endAck(now: number, ackDelayMs: number, largest: number): number {
    if (this.#state !== "measuring") return 0;
    // The delay counts from the largest packet's arrival, which may be one sent after the
    // train (an ACK-only packet too, which the meter never sees go).
    if (this.#ackPackets > 0 && largest <= this.#lastPn) {
      // Never before an earlier ACK's time: a delay reported too long cannot shrink the span.
      const at = Math.max(now - ackDelayMs, this.#lastAckAt, this.#firstAckAt);
      // The span starts at the second: the flight's first packets leave and are read on
      // the first turns of two idle event loops, slower than the rest (on the WAN lab the
      // first 3 of 32 took 3.3 ms, the others 0.2 ms each).
      if (++this.#timedAcks <= 2) this.#firstAckAt = at;
      else {
        this.#countedBytes += this.#ackBytes;
        this.#countedPackets += this.#ackPackets;
        this.#lastAckAt = at;
      }
    }
    this.#ackBytes = 0;
    this.#ackPackets = 0;
    if (this.#outstanding > 0) return 0;
    const span = this.#lastAckAt - this.#firstAckAt;
    if (this.#countedPackets >= TRAIN_MIN_PACKETS / 2 && span > 0) {
      this.#state = "done";
      return this.#countedBytes / span;
    }
    this.#state = "armed";
    this.#count = 0;
    this.#timedAcks = 0;
    this.#firstAckAt = -1;
    this.#lastAckAt = -1;
    this.#countedBytes = 0;
    this.#countedPackets = 0;
    return 0;
  }
}
