/**
 * Delivery-rate estimation (draft-cheng-iccrg-delivery-rate-estimation): each ACK yields
 * the rate at which the network delivered the most recent flight, and whether the
 * application (not the window) limited that flight, so a quiet sender's slow samples can
 * be told apart from a slower path.
 *
 * Each packet remembers, when sent, how much had been delivered and when (`delivered`,
 * `deliveredTime`) and when its flight began (`firstSentTime`). When it is acknowledged,
 * the bytes delivered since it was sent, over the longer of its flight's send time and
 * ack time, is the sample (the longer one keeps ACK compression from inflating it).
 *
 * The ack time is measured on the peer's clock when the peer dates its ACKs (TIMESTAMP
 * frames: each ACK then says when its largest packet arrived there): the span between two
 * arrivals at the receiver, which the bottleneck set. Timed by when ACKs reach us, it also
 * holds the ACKs' own trip, and where the other direction is busy they queue behind its
 * data and come in bunches: a span from a late ACK to a prompt one is short, and the
 * estimate ran 10-20 % over the bottleneck (fake clock, an echo on a 20-100 Mbit/s path).
 * A snapshot taken with no dated ACK to go by (the session's start, a flight after idle,
 * a peer that does not date them) falls back to our clock for that sample.
 */

/** What the estimator stores on each sent packet. */
export interface RateSnapshot {
  /** Bytes delivered on the connection when the packet was sent. */
  delivered: number;
  /** When `delivered` last grew, as of the send. */
  deliveredTime: number;
  /** When the packets that made `delivered` arrived at the peer, on its clock (NaN: unknown). */
  deliveredPeerTime: number;
  /** Send time of the first packet of the flight this one belongs to. */
  firstSentTime: number;
  /** Sent while the application limited sending. */
  appLimited: boolean;
}

/** One ACK's sample: `deliveredBytes` over `intervalMs` (both 0 when there is none). */
export interface RateSample {
  deliveredBytes: number;
  intervalMs: number;
  appLimited: boolean;
}

export class DeliveryRate {
  /** Bytes of ack-eliciting packets acknowledged so far. */
  delivered = 0;
  #deliveredTime = 0;
  #deliveredPeerTime = NaN;
  #firstSentTime = 0;
  /** While > 0: sending is app-limited until `delivered` passes this (the draft's C.app_limited). */
  #appLimitedUntil = 0;
  // The sample being built for the ACK in progress.
  #priorDelivered = -1;
  #priorTime = 0;
  #priorPeerTime = NaN;
  #sendElapsed = 0;
  #sampleAppLimited = false;

  /** True while samples are marked app-limited. */
  get appLimited(): boolean {
    return this.#appLimitedUntil > 0;
  }

  /**
   * The sender has nothing more to send though the window has room: what is in flight
   * now is the last of an app-limited stretch.
   */
  markAppLimited(bytesInFlight: number): void {
    this.#appLimitedUntil = Math.max(this.delivered + bytesInFlight, 1);
  }

  /** Fills `p`'s snapshot for a packet sent at `now` with `priorInFlight` bytes already out. */
  onPacketSent(p: RateSnapshot, now: number, priorInFlight: number): void {
    if (priorInFlight === 0) {
      // A new flight after idle: its rate is measured from here.
      this.#firstSentTime = now;
      this.#deliveredTime = now;
      this.#deliveredPeerTime = NaN;
    }
    p.delivered = this.delivered;
    p.deliveredTime = this.#deliveredTime;
    p.deliveredPeerTime = this.#deliveredPeerTime;
    p.firstSentTime = this.#firstSentTime;
    p.appLimited = this.#appLimitedUntil > 0;
  }

  /** Starts the sample of one ACK. */
  beginAck(): void {
    this.#priorDelivered = -1;
  }

  /**
   * An ack-eliciting packet sent at `timeSent` of `size` bytes was acknowledged at `now` by an
   * ACK whose largest packet arrived at the peer at `peerTime` on its clock (NaN: undated).
   */
  onPacketAcked(
    p: RateSnapshot,
    timeSent: number,
    size: number,
    now: number,
    peerTime = NaN,
  ): void {
    this.delivered += size;
    this.#deliveredTime = now;
    this.#deliveredPeerTime = peerTime;
    // The sample follows the most recently sent packet this ACK covers.
    if (p.delivered > this.#priorDelivered) {
      this.#priorDelivered = p.delivered;
      this.#priorTime = p.deliveredTime;
      this.#priorPeerTime = p.deliveredPeerTime;
      this.#sampleAppLimited = p.appLimited;
      this.#sendElapsed = timeSent - p.firstSentTime;
      this.#firstSentTime = timeSent;
    }
  }

  /**
   * Ends the ACK's sample (`peerTime` as given to `onPacketAcked`). A sample over less than
   * `minRttMs` is dropped: a flight cannot be delivered faster than a round trip, so such a
   * rate is an artefact.
   */
  endAck(now: number, minRttMs: number, peerTime = NaN): RateSample {
    if (this.#appLimitedUntil > 0 && this.delivered > this.#appLimitedUntil) {
      this.#appLimitedUntil = 0;
    }
    if (this.#priorDelivered < 0) return { deliveredBytes: 0, intervalMs: 0, appLimited: false };
    // Both ends of the span dated by the peer: its clock (NaN on either side: ours).
    const peerElapsed = peerTime - this.#priorPeerTime;
    const ackElapsed = peerElapsed > 0 ? peerElapsed : now - this.#priorTime;
    const interval = Math.max(this.#sendElapsed, ackElapsed);
    const delivered = this.delivered - this.#priorDelivered;
    if (interval <= 0 || interval < minRttMs) {
      return { deliveredBytes: 0, intervalMs: 0, appLimited: this.#sampleAppLimited };
    }
    return { deliveredBytes: delivered, intervalMs: interval, appLimited: this.#sampleAppLimited };
  }
}
