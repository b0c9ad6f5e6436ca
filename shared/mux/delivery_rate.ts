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
 */

/** What the estimator stores on each sent packet. */
export interface RateSnapshot {
  /** Bytes delivered on the connection when the packet was sent. */
  delivered: number;
  /** When `delivered` last grew, as of the send. */
  deliveredTime: number;
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
  #firstSentTime = 0;
  /** While > 0: sending is app-limited until `delivered` passes this (the draft's C.app_limited). */
  #appLimitedUntil = 0;
  // The sample being built for the ACK in progress.
  #priorDelivered = -1;
  #priorTime = 0;
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
    }
    p.delivered = this.delivered;
    p.deliveredTime = this.#deliveredTime;
    p.firstSentTime = this.#firstSentTime;
    p.appLimited = this.#appLimitedUntil > 0;
  }

  /** Starts the sample of one ACK. */
  beginAck(): void {
    this.#priorDelivered = -1;
  }

  /** An ack-eliciting packet sent at `timeSent` of `size` bytes was acknowledged at `now`. */
  onPacketAcked(p: RateSnapshot, timeSent: number, size: number, now: number): void {
    this.delivered += size;
    this.#deliveredTime = now;
    // The sample follows the most recently sent packet this ACK covers.
    if (p.delivered > this.#priorDelivered) {
      this.#priorDelivered = p.delivered;
      this.#priorTime = p.deliveredTime;
      this.#sampleAppLimited = p.appLimited;
      this.#sendElapsed = timeSent - p.firstSentTime;
      this.#firstSentTime = timeSent;
    }
  }

  /**
   * Ends the ACK's sample. A sample over less than `minRttMs` is dropped: a flight cannot
   * be delivered faster than a round trip, so such a rate is an artefact.
   */
  endAck(now: number, minRttMs: number): RateSample {
    if (this.#appLimitedUntil > 0 && this.delivered > this.#appLimitedUntil) {
      this.#appLimitedUntil = 0;
    }
    if (this.#priorDelivered < 0) return { deliveredBytes: 0, intervalMs: 0, appLimited: false };
    const ackElapsed = now - this.#priorTime;
    const interval = Math.max(this.#sendElapsed, ackElapsed);
    const delivered = this.delivered - this.#priorDelivered;
    if (interval <= 0 || interval < minRttMs) {
      return { deliveredBytes: 0, intervalMs: 0, appLimited: this.#sampleAppLimited };
    }
    return { deliveredBytes: delivered, intervalMs: interval, appLimited: this.#sampleAppLimited };
  }
}
