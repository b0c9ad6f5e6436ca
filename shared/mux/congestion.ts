/**
 * The congestion controller behind Recovery (recovery.ts): what it is told (packets sent,
 * acknowledged with a delivery-rate sample, lost, persistent congestion, a spurious loss
 * to undo) and what it answers (the window, the pacing rate, whether a packet may go).
 * Recovery keeps loss detection, RTT, the pacer's token bucket and the packets in flight;
 * the controller only decides how much and how fast.
 *
 * Two controllers, chosen by `MuxParams.congestionControl`:
 * - `NewReno` (here): RFC 9002 §7 with our loss tolerance, the BDP window cap and undo of
 *   spurious reductions;
 * - `Bbr` (bbr.ts): a model of the path (bottleneck bandwidth, min RTT) that random loss
 *   does not shrink. docs/congestion.md compares them.
 */
import type { CongestionControlName, MuxParams } from "./params.ts";

export type { CongestionControlName } from "./params.ts";

/** One acknowledged ack-eliciting packet, in the order the ACK is processed (newest first). */
export interface AckedPacket {
  size: number;
  timeSent: number;
}

/**
 * What one ACK told: a delivery-rate sample (draft-cheng-iccrg-delivery-rate-estimation,
 * computed in delivery_rate.ts) plus the RTT and round-trip bookkeeping.
 */
export interface AckSample {
  now: number;
  /** Bytes of ack-eliciting packets this ACK newly acknowledged. */
  ackedBytes: number;
  /** Bytes delivered over `intervalMs` (the rate sample); 0 with no valid sample. */
  deliveredBytes: number;
  /** The sample's interval, max(send elapsed, ack elapsed); 0 with no valid sample. */
  intervalMs: number;
  /** The sample's packet was sent while the application, not the window, limited sending. */
  appLimited: boolean;
  /** Bytes delivered on the connection so far (acked, ack-eliciting). */
  totalDelivered: number;
  /** This ACK's RTT sample (latest_rtt, ack delay not removed), or -1 if it gave none. */
  rttMs: number;
  /** The same sample with the peer's ack delay removed (RFC 9002 §5.3), or -1. */
  adjustedRttMs: number;
  /**
   * The queue the sample's packet met on its way to the peer alone, in ms, when the ACK was
   * dated (forward_delay.ts); NaN otherwise (no RTT sample, or an undated ACK).
   */
  forwardQueueMs: number;
  /** A packet-timed round trip ended: a packet sent after the previous end was acked. */
  newRound: boolean;
  /** The last send attempt was held back by the window (not by the application). */
  cwndLimited: boolean;
  /** Bytes in flight before this ACK, and after it (before loss detection). */
  priorInFlight: number;
  bytesInFlight: number;
}

/** Packets that loss detection just declared lost (PMTU probes never count). */
export interface LossEvent {
  now: number;
  /** Ack-eliciting bytes and packets declared lost by this detection pass. */
  lostBytes: number;
  lostPackets: number;
  /** Send times of the newest and oldest of them. */
  largestLostSentTime: number;
  firstLostSentTime: number;
  /** The most bytes in flight when any of them was sent (the flight it was part of). */
  txInFlight: number;
  /** Bytes in flight now (the lost ones removed). */
  bytesInFlight: number;
  /**
   * Recovery's decaying counts of packets lost and packets seen (acked + lost) over
   * roughly the last `lossToleranceWindowPackets`, this pass included.
   */
  recentLost: number;
  recentSeen: number;
  /** The latest RTT sample, ack delay removed (-1 before the first): the queue they met. */
  latestRttMs: number;
  /** The forward queue of the latest dated RTT sample (AckSample.forwardQueueMs), or NaN. */
  forwardQueueMs: number;
}

/** What a controller reports for MuxStats. */
export interface CongestionStats {
  /** "slow_start" | "avoidance" (NewReno); "startup" | "drain" | "probe_bw" | "probe_rtt" (BBR). */
  state: string;
  /** BBR's windowed max delivery rate in bytes/ms; NewReno: the BDP cap's rate, 0 if none. */
  maxBwBytesPerMs: number;
  /** BBR's windowed min RTT (the model's); NewReno: the BDP cap's base RTT; 0 if none. */
  modelMinRttMs: number;
  /** The pacing gain in use (NewReno: pacingGainRatio). */
  pacingGain: number;
  /** BBR's loss-derived bound on bytes in flight, 0 when there is none (always 0 for NewReno). */
  inflightHiBytes: number;
  /** Times BBR entered ProbeRTT (0 for NewReno). */
  probeRttCount: number;
  /** Congestion responses: NewReno's window reductions, BBR's congested rounds. */
  congestionEvents: number;
  /** BBR's estimate of the path's random loss (its pacing makes up for up to 5 %); 0 for NewReno. */
  randomLossRatio: number;
  /** The first flight's ACK rate Startup began from (first_flight.ts), 0 if none. */
  firstFlightRateBytesPerMs: number;
}

/** The decisions Recovery delegates. Sizes in bytes, times in ms, rates in bytes per ms. */
export interface CongestionController {
  readonly name: CongestionControlName;
  /** Bytes that may be in flight. */
  readonly cwnd: number;
  /** The smallest `cwnd` gets. */
  readonly minWindow: number;
  /**
   * True while the controller sends below the path's rate on purpose (BBR's ProbeRTT):
   * Recovery then marks packets app-limited, so their slow delivery-rate samples do not
   * lower a bandwidth estimate.
   */
  readonly holdingBack: boolean;
  /** Losses now are the path's, not a queue's (BBR alone tells them apart): tail copies may go. */
  readonly lossIsRandom: boolean;
  /**
   * The controller would start from the rate of the session's first full flight
   * (first_flight.ts): BBR in its first Startup. Recovery measures it while this holds.
   */
  readonly wantsFirstFlightRate: boolean;
  /**
   * The controller measured the path's rate, so a transfer starts at it (BBR: Startup ended,
   * or max_bw stopped growing near the first flight's rate). NewReno keeps no rate to learn:
   * true. A warm-up (warm_up.ts) runs until this holds.
   */
  readonly bandwidthKnown: boolean;
  /** Room in the window for a packet of `size` bytes on top of `bytesInFlight`. */
  canSend(bytesInFlight: number, size: number): boolean;
  /** Pacing rate in bytes/ms (`srtt`: Recovery's smoothed RTT, for controllers that need it). */
  pacingRate(srtt: number): number;
  /** Bytes the pacer may send back to back. */
  pacingBurstBytes(): number;
  /**
   * An ack-eliciting packet of `size` bytes went out at `now`; `priorInFlight` bytes were
   * in flight before it, and the application (not the window) limits sending if `appLimited`.
   */
  onPacketSent(now: number, size: number, priorInFlight: number, appLimited: boolean): void;
  /** One acknowledged ack-eliciting packet (PMTU probes too); `bytesInFlight` after it. */
  onPacketAcked(p: AckedPacket, bytesInFlight: number, cwndLimited: boolean): void;
  /** After an ACK's packets were processed and the RTT updated, before loss detection. */
  onAck(s: AckSample): void;
  /** Packets were declared lost. Returns true if the window was reduced (a new epoch to undo). */
  onPacketsLost(e: LossEvent): boolean;
  /** A packet of `size` bytes declared lost was acknowledged after all (reordering). */
  onSpuriousLoss(size: number): void;
  /** Losses spanning more than the persistent-congestion duration (RFC 9002 §7.6). */
  onPersistentCongestion(now: number): void;
  /** Every loss behind the last reduction proved spurious: restore. True if it did. */
  undo(): boolean;
  /** The packet size changed (path MTU discovery). */
  setMaxDatagramSize(size: number): void;
  /** The rate (bytes/ms) the session's first full flight came back at (first_flight.ts). */
  onFirstFlightRate(rate: number): void;
  stats(): CongestionStats;
}

/**
 * NewReno (RFC 9002 §7) as the mux always ran it: slow start and congestion avoidance,
 * a halving per congestion epoch, plus
 * - loss tolerance: losses within `lossToleranceRatio` of the recently seen packets do
 *   not reduce the window (BBRv2's loss_thresh idea);
 * - a window cap at 2 x the measured BDP + `queueLimitBytes` (`windowCapBytes`);
 * - undo of a reduction whose losses all proved spurious;
 * - pacing at `pacingGainRatio` x cwnd / srtt.
 */
export class NewReno implements CongestionController {
  readonly name = "newreno";
  readonly holdingBack = false;
  readonly lossIsRandom = false;
  readonly wantsFirstFlightRate = false;
  readonly bandwidthKnown = true;
  cwnd: number;
  ssthresh = Infinity;
  recoveryStartTime = -Infinity;
  /** Acks on which the window did not grow because it reached `windowCapBytes`. */
  capHeldAcks = 0;
  /** Window reductions (congestion events), persistent congestion included. */
  reductions = 0;
  readonly #p: MuxParams;
  #mds: number;
  // Window cap (see windowCapBytes): a windowed minimum RTT and the largest recent
  // delivery rate (bytes/ms) of a round in which the window was the limit.
  #baseRtt = Infinity;
  #baseRttAt = -Infinity;
  #maxBw = 0;
  readonly #bwSamples: number[] = [];
  #roundStart = -1;
  #roundAckedBytes = 0;
  #roundCwndLimited = false;
  #undoCwnd = 0;
  #undoSsthresh = Infinity;

  constructor(params: MuxParams, maxDatagramSize: number) {
    this.#p = params;
    this.#mds = maxDatagramSize;
    this.cwnd = params.initialWindowPackets * maxDatagramSize;
  }

  get minWindow(): number {
    return this.#p.minimumWindowPackets * this.#mds;
  }

  setMaxDatagramSize(size: number): void {
    this.#mds = size;
    if (this.cwnd < this.minWindow) this.cwnd = this.minWindow;
  }

  canSend(bytesInFlight: number, size: number): boolean {
    return bytesInFlight + size <= this.cwnd;
  }

  pacingRate(srtt: number): number {
    return (this.#p.pacingGainRatio * this.cwnd) / Math.max(srtt, 0.05);
  }

  pacingBurstBytes(): number {
    // Small bursts: a Deno receiver's socket buffer (~200 KB) holds ~10 packets of 16 KiB.
    return Math.max(
      Math.min(this.#p.pacingBurstPackets * this.#mds, this.#p.pacingMaxBurstBytes),
      this.#mds,
    );
  }

  onPacketSent(): void {}

  /**
   * The window does not grow past twice the measured bandwidth-delay product (BBR's
   * inflight cap) plus `queueLimitBytes`. Loss-based growth alone keeps adding until
   * something drops, and when the bottleneck is a Deno receiver (its socket buffer,
   * 208 KiB on Linux by default, and one thread draining it) those drops came at ~2 %
   * of packets all the time, each one a retransmission and, past the loss tolerance, a
   * halved window. Infinity until a round limited by the window was measured.
   */
  get windowCapBytes(): number {
    const limit = this.#p.queueLimitBytes;
    if (limit === 0 || this.#maxBw === 0 || this.#baseRtt === Infinity) return Infinity;
    return 2 * this.#maxBw * this.#baseRtt + limit;
  }

  onPacketAcked(p: AckedPacket, bytesInFlight: number, cwndLimited: boolean): void {
    this.#roundAckedBytes += p.size;
    if (cwndLimited) this.#roundCwndLimited = true;
    if (p.timeSent <= this.recoveryStartTime) return;
    // App-limited: do not grow (RFC 9002 §7.8).
    if (!cwndLimited && bytesInFlight * 2 < this.cwnd) return;
    if (this.cwnd >= this.windowCapBytes) {
      // Hold (and leave slow start) rather than grow into the receiver's drops. The cap
      // only stops growth: it never shrinks the window, loss still does.
      this.capHeldAcks++;
      if (this.cwnd < this.ssthresh) this.ssthresh = this.cwnd;
      return;
    }
    if (this.cwnd < this.ssthresh) this.cwnd += p.size;
    else this.cwnd += (this.#mds * p.size) / this.cwnd;
    if (this.cwnd > this.#p.maxCongestionWindowBytes) this.cwnd = this.#p.maxCongestionWindowBytes;
  }

  onAck(s: AckSample): void {
    if (s.adjustedRttMs >= 0) {
      // Windowed minimum (BBR's min_rtt filter): a longer path is learned within the window.
      const rtt = s.adjustedRttMs;
      if (rtt <= this.#baseRtt || s.now - this.#baseRttAt > this.#p.queueBaseRttWindowMs) {
        this.#baseRtt = rtt;
        this.#baseRttAt = s.now;
      }
    }
    if (s.newRound) this.#onRoundEnd(s.now, s.cwndLimited);
  }

  /** A round trip ended: its delivery rate counts if the window limited it (not the app). */
  #onRoundEnd(now: number, cwndLimited: boolean): void {
    if (this.#roundStart >= 0 && now > this.#roundStart && this.#roundCwndLimited) {
      const b = this.#bwSamples;
      b.push(this.#roundAckedBytes / (now - this.#roundStart));
      if (b.length > this.#p.bandwidthWindowRounds) b.shift();
      let m = 0;
      for (const x of b) if (x > m) m = x;
      this.#maxBw = m;
    }
    this.#roundStart = now;
    this.#roundAckedBytes = 0;
    this.#roundCwndLimited = cwndLimited;
  }

  onPacketsLost(e: LossEvent): boolean {
    if (this.#tolerable(e)) {
      // Loss rate within lossToleranceRatio: tolerated, no congestion reduction.
      if (this.cwnd < this.ssthresh) this.ssthresh = this.cwnd; // leave slow start, gently
      return false;
    }
    if (e.largestLostSentTime <= this.recoveryStartTime) return false;
    // Remember what to restore if every loss of this epoch proves spurious.
    this.#undoCwnd = this.cwnd;
    this.#undoSsthresh = this.ssthresh;
    this.recoveryStartTime = e.now;
    this.cwnd = Math.max(this.cwnd * this.#p.lossReductionRatio, this.minWindow);
    this.ssthresh = this.cwnd;
    this.reductions++;
    return true;
  }

  /**
   * Random loss is not congestion (BBRv2's loss_thresh idea): losses up to
   * lossToleranceRatio of the packets recently seen (decaying counts over
   * ~lossToleranceWindowPackets, not one round: a window of 12 packets would otherwise
   * tolerate nothing and never grow past ~16) do not cut the window. Too few packets
   * seen tolerates no loss at all; an overflowing queue loses far more than 2 %.
   */
  #tolerable(e: LossEvent): boolean {
    const ratio = this.#p.lossToleranceRatio;
    if (ratio <= 0) return false;
    if (e.recentSeen < this.#p.lossToleranceWindowPackets / 2) return false;
    return e.recentLost <= ratio * e.recentSeen;
  }

  onSpuriousLoss(): void {}

  onFirstFlightRate(): void {}

  onPersistentCongestion(): void {
    this.cwnd = this.minWindow;
    this.#undoCwnd = 0;
    this.reductions++;
  }

  undo(): boolean {
    const restore = this.#undoCwnd > this.cwnd;
    if (restore) {
      this.cwnd = this.#undoCwnd;
      this.ssthresh = this.#undoSsthresh;
    }
    this.#undoCwnd = 0;
    return restore;
  }

  stats(): CongestionStats {
    return {
      state: this.cwnd < this.ssthresh ? "slow_start" : "avoidance",
      maxBwBytesPerMs: this.#maxBw,
      modelMinRttMs: this.#baseRtt === Infinity ? 0 : this.#baseRtt,
      pacingGain: this.#p.pacingGainRatio,
      inflightHiBytes: 0,
      probeRttCount: 0,
      congestionEvents: this.reductions,
      randomLossRatio: 0,
      firstFlightRateBytesPerMs: 0,
    };
  }
}
