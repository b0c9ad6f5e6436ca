/**
 * Loss detection per RFC 9002: RTT estimation (§5), packet- and time-threshold loss
 * (§6.1), probe timeout (§6.2), delivery-rate samples (delivery_rate.ts) and a
 * token-bucket pacer (§7.7). The congestion controller (congestion.ts: NewReno, or BBR in
 * bbr.ts, by `MuxParams.congestionControl`) decides the window and the pacing rate.
 * Frames ride along as opaque `F` values so the session can retransmit lost *frames*,
 * not packets.
 */
import { Bbr } from "./bbr.ts";
import { type CongestionController, NewReno } from "./congestion.ts";
import { ForwardDelay } from "./forward_delay.ts";
import { DeliveryRate, type RateSnapshot } from "./delivery_rate.ts";
import { FirstFlightMeter } from "./first_flight.ts";
import type { MuxParams } from "./params.ts";

export interface SentPacket<F> extends RateSnapshot {
  pn: number;
  timeSent: number;
  size: number;
  ackEliciting: boolean;
  /** A PMTU probe: its loss is not congestion (RFC 9000 §14.4). */
  mtuProbe: boolean;
  /** Bytes in flight once this packet was sent. */
  txInFlight: number;
  frames: F[];
}

/** The controller `params.congestionControl` names. */
export function createCongestionController(
  params: MuxParams,
  maxDatagramSize: number,
): CongestionController {
  return params.congestionControl === "bbr"
    ? new Bbr(params, maxDatagramSize)
    : new NewReno(params, maxDatagramSize);
}

export interface RecoveryHooks<F> {
  onFrameAcked(frame: F): void;
  onFrameLost(frame: F): void;
  /** An ack-eliciting packet that was not a PMTU probe was acknowledged / declared lost. */
  onPacketAcked?(size: number): void;
  onPacketLost?(size: number): void;
}

export class Recovery<F> {
  // RTT (§5), milliseconds.
  latestRtt = 0;
  smoothedRtt: number;
  rttVar: number;
  minRtt = Infinity;
  hasRttSample = false;
  /** The latest sample with the peer's ack delay removed (§5.3), -1 before the first. */
  latestAdjustedRtt = -1;
  /** The forward queue of the latest dated RTT sample (forward_delay.ts), NaN if undated. */
  latestForwardQueue = NaN;
  readonly #forwardDelay: ForwardDelay;
  /** The congestion controller: window, pacing rate, response to loss. */
  readonly cc: CongestionController;
  /** Delivery-rate samples for the controller. */
  readonly rate = new DeliveryRate();
  /**
   * The session's first full flight's ACK rate (first_flight.ts), while the controller
   * wants it; null once it measured or stopped (#meter).
   */
  #firstFlight: FirstFlightMeter | null;
  bytesInFlight = 0;
  // Loss detection (§6).
  largestAcked = -1;
  ptoCount = 0;
  lossTime = Infinity;
  timeOfLastAckElicitingSent = 0;
  /** Probe packets that may bypass the congestion window (set by PTO). */
  probesPending = 0;
  // Counters.
  packetsLost = 0;
  /** Packets declared lost that an ACK later covered (reordering or a late ACK). */
  spuriousLosses = 0;
  /** Congestion reductions undone because every loss behind them was spurious. */
  undoneReductions = 0;
  /** Current packet reordering threshold (grows on spurious loss, RFC 9002 §6.1.1 allows it). */
  packetThreshold: number;
  /** True if the last send attempt was held back by cwnd (so cwnd growth is earned). */
  cwndLimited = false;

  /** In-flight packets indexed by pn - base; undefined once acked or lost. */
  #sent: (SentPacket<F> | undefined)[] = [];
  #head = 0;
  #base = 0;
  #outstanding = 0;
  // Pacer.
  #tokens: number;
  #lastRefill = 0;
  readonly #p: MuxParams;
  #mds: number;
  /**
   * Packets recently declared lost (pn → loss record), so a later ACK of one reveals
   * a spurious loss. Bounded; oldest forgotten first.
   */
  #lostRecent = new Map<number, { epoch: number; distance: number; at: number; size: number }>();
  // Round trips (a round ends when a packet sent after it began is acked).
  #lastSentPn = -1;
  #roundEndPn = -1;
  /** Congestion epoch: counts reductions; lost packets remember theirs. */
  #epoch = 0;
  #epochLost = 0;
  #epochSpurious = 0;
  readonly #hooks: RecoveryHooks<F>;

  constructor(
    params: MuxParams,
    maxDatagramSize: number,
    hooks: RecoveryHooks<F>,
    cc: CongestionController = createCongestionController(params, maxDatagramSize),
  ) {
    this.#p = params;
    this.#mds = maxDatagramSize;
    this.#hooks = hooks;
    this.cc = cc;
    this.smoothedRtt = params.initialRttMs;
    this.rttVar = params.initialRttMs / 2;
    this.packetThreshold = params.packetThresholdPackets;
    this.#tokens = params.pacingBurstPackets * maxDatagramSize;
    this.#forwardDelay = new ForwardDelay(params.queueBaseRttWindowMs);
    this.#firstFlight = cc.wantsFirstFlightRate
      ? new FirstFlightMeter(params.initialWindowPackets)
      : null;
  }

  /** The meter of the first flight while it may still measure, else null (and dropped). */
  #meter(): FirstFlightMeter | null {
    const m = this.#firstFlight;
    if (m === null) return null;
    if (m.armed && !this.cc.wantsFirstFlightRate) m.disarm();
    if (m.done) this.#firstFlight = null;
    return this.#firstFlight;
  }

  /** The congestion window in bytes (the controller's). */
  get cwnd(): number {
    return this.cc.cwnd;
  }

  // NewReno's own figures (recovery_test.ts reads them); neutral values under BBR.
  get ssthresh(): number {
    return this.cc instanceof NewReno ? this.cc.ssthresh : Infinity;
  }
  get recoveryStartTime(): number {
    return this.cc instanceof NewReno ? this.cc.recoveryStartTime : -Infinity;
  }
  /** Acks on which NewReno's window did not grow because it reached `windowCapBytes`. */
  get capHeldAcks(): number {
    return this.cc instanceof NewReno ? this.cc.capHeldAcks : 0;
  }
  /** NewReno's window cap (congestion.ts), Infinity under BBR. */
  get windowCapBytes(): number {
    return this.cc instanceof NewReno ? this.cc.windowCapBytes : Infinity;
  }
  /** The smallest the window gets (the controller's). */
  get minWindow(): number {
    return this.cc.minWindow;
  }

  /**
   * The packet size changed (path MTU discovery). The window stays in bytes, but
   * never below the minimum window of the new size.
   */
  setMaxDatagramSize(size: number): void {
    this.#mds = size;
    this.cc.setMaxDatagramSize(size);
  }

  /**
   * The sender ran out of data to send (or flow control stopped it) with room in the
   * window: delivery-rate samples of what is in flight now are app-limited.
   */
  onAppLimited(): void {
    if (this.bytesInFlight < this.cc.cwnd) this.rate.markAppLimited(this.bytesInFlight);
  }

  /** Records a sent packet. Packets must be recorded in pn order (gaps allowed). */
  onPacketSent(
    pn: number,
    now: number,
    size: number,
    ackEliciting: boolean,
    frames: F[],
    mtuProbe = false,
  ): void {
    if (this.#outstanding === 0) {
      this.#sent.length = 0;
      this.#head = 0;
      this.#base = pn;
    }
    this.#lastSentPn = pn;
    const idx = pn - this.#base;
    const p: SentPacket<F> = {
      pn,
      timeSent: now,
      size,
      ackEliciting,
      mtuProbe,
      txInFlight: 0,
      frames,
      delivered: 0,
      deliveredTime: 0,
      deliveredPeerTime: NaN,
      firstSentTime: 0,
      appLimited: false,
    };
    this.#sent[idx] = p;
    this.#outstanding++;
    if (ackEliciting) {
      const prior = this.bytesInFlight;
      if (this.cc.holdingBack) this.rate.markAppLimited(prior);
      this.rate.onPacketSent(p, now, prior);
      this.timeOfLastAckElicitingSent = now;
      this.bytesInFlight += size;
      p.txInFlight = this.bytesInFlight;
      if (this.probesPending > 0) this.probesPending--;
      this.cc.onPacketSent(now, size, prior, p.appLimited);
      const m = this.#meter();
      if (m !== null) {
        // A train of the first flight skips the pacer (and owes it nothing).
        const unpaced = !mtuProbe && m.unpaced(now);
        m.onSent(pn, now, size >= 0.75 * this.#mds);
        if (unpaced) return;
      }
    }
    this.#consumeTokens(size, now);
  }

  /**
   * Processes an ACK frame's ranges (flat descending inclusive pairs), its largest packet
   * received at `peerTime` on the peer's clock if it was dated (TIMESTAMP; else NaN).
   * Returns true if it acknowledged anything new.
   */
  onAck(ranges: readonly number[], ackDelayMs: number, now: number, peerTime = NaN): boolean {
    const largest = ranges[0]!;
    let newlyAcked = false;
    let largestNewlyAcked: SentPacket<F> | undefined;
    let ackedEliciting = false;
    let ackedBytes = 0;
    const priorInFlight = this.bytesInFlight;
    const sent = this.#sent;
    const firstPn = this.#base + this.#head;
    const lastPn = this.#base + sent.length - 1;
    const cc = this.cc;
    if (this.#lostRecent.size > 0) this.#checkSpurious(ranges, now);
    this.rate.beginAck();
    for (let i = 0; i < ranges.length; i += 2) {
      const hi = Math.min(ranges[i]!, lastPn);
      const lo = Math.max(ranges[i + 1]!, firstPn);
      for (let pn = hi; pn >= lo; pn--) {
        const idx = pn - this.#base;
        const p = sent[idx];
        if (p === undefined) continue;
        sent[idx] = undefined;
        this.#outstanding--;
        newlyAcked = true;
        this.#recentDelivered++;
        if (largestNewlyAcked === undefined) largestNewlyAcked = p;
        if (p.ackEliciting) {
          ackedEliciting = true;
          ackedBytes += p.size;
          this.bytesInFlight -= p.size;
          this.rate.onPacketAcked(p, p.timeSent, p.size, now, peerTime);
          this.#firstFlight?.onAcked(p.pn, p.size);
          cc.onPacketAcked(p, this.bytesInFlight, this.cwndLimited);
          if (!p.mtuProbe) this.#hooks.onPacketAcked?.(p.size);
        }
        for (let f = 0; f < p.frames.length; f++) this.#hooks.onFrameAcked(p.frames[f]!);
      }
    }
    if (!newlyAcked) return false;
    if (largest > this.largestAcked) this.largestAcked = largest;
    let rtt = -1;
    if (largestNewlyAcked !== undefined && largestNewlyAcked.pn === largest && ackedEliciting) {
      this.#updateRtt(now - largestNewlyAcked.timeSent, ackDelayMs);
      rtt = this.latestRtt;
      this.latestForwardQueue = Number.isFinite(peerTime)
        ? this.#forwardDelay.onSample(largestNewlyAcked.timeSent, peerTime, now)
        : NaN;
    }
    const newRound = this.largestAcked >= this.#roundEndPn;
    if (newRound) this.#roundEndPn = this.#lastSentPn;
    const rs = this.rate.endAck(now, this.minRtt === Infinity ? 0 : this.minRtt, peerTime);
    cc.onAck({
      now,
      ackedBytes,
      deliveredBytes: rs.deliveredBytes,
      intervalMs: rs.intervalMs,
      appLimited: rs.appLimited,
      totalDelivered: this.rate.delivered,
      rttMs: rtt,
      adjustedRttMs: rtt < 0 ? -1 : this.latestAdjustedRtt,
      forwardQueueMs: rtt < 0 ? NaN : this.latestForwardQueue,
      newRound,
      cwndLimited: this.cwndLimited,
      priorInFlight,
      bytesInFlight: this.bytesInFlight,
    });
    const m = this.#meter();
    if (m !== null) {
      const rate = m.endAck(now, Math.min(ackDelayMs, this.#p.maxAckDelayMs), largest);
      if (rate > 0) cc.onFirstFlightRate(rate);
    }
    this.#detectLoss(now);
    this.ptoCount = 0;
    this.#compact();
    return true;
  }

  /** An ACK covers packets we declared lost: undo the reduction if all its losses were spurious. */
  #checkSpurious(ranges: readonly number[], now: number): void {
    // A late ACK comes within a round trip or so; forget older losses (they were real).
    const horizon = now - 2 * this.#ptoBase();
    for (const [pn, rec] of this.#lostRecent) {
      if (rec.at < horizon) {
        this.#lostRecent.delete(pn);
        continue;
      }
      for (let i = 0; i < ranges.length; i += 2) {
        if (pn > ranges[i]!) break;
        if (pn < ranges[i + 1]!) continue;
        this.#lostRecent.delete(pn);
        this.spuriousLosses++;
        // It was delivered after all: the delivery rate counts it (reordering is not loss).
        this.rate.delivered += rec.size;
        this.cc.onSpuriousLoss(rec.size);
        // Tolerate this much reordering from now on (bounded).
        if (rec.distance >= this.packetThreshold) {
          this.packetThreshold = Math.min(rec.distance + 1, this.#p.maxPacketThresholdPackets);
        }
        if (rec.epoch === this.#epoch && ++this.#epochSpurious === this.#epochLost) {
          if (this.cc.undo()) this.undoneReductions++;
        }
        break;
      }
    }
  }

  #updateRtt(sample: number, ackDelayMs: number): void {
    const latest = Math.max(sample, 0.001);
    this.latestRtt = latest;
    if (!this.hasRttSample) {
      this.hasRttSample = true;
      this.minRtt = latest;
      this.smoothedRtt = latest;
      this.rttVar = latest / 2;
      this.latestAdjustedRtt = latest;
      return;
    }
    this.minRtt = Math.min(this.minRtt, latest);
    const delay = Math.min(ackDelayMs, this.#p.maxAckDelayMs);
    const adjusted = latest >= this.minRtt + delay ? latest - delay : latest;
    this.latestAdjustedRtt = adjusted;
    this.rttVar = 0.75 * this.rttVar + 0.25 * Math.abs(this.smoothedRtt - adjusted);
    this.smoothedRtt = 0.875 * this.smoothedRtt + 0.125 * adjusted;
  }

  #lossDelay(): number {
    return Math.max(
      this.#p.timeThresholdRatio * Math.max(this.latestRtt, this.smoothedRtt),
      this.#p.timerGranularityMs,
    );
  }

  #detectLoss(now: number): void {
    this.lossTime = Infinity;
    if (this.largestAcked < 0) return;
    const lossDelay = this.#lossDelay();
    const sent = this.#sent;
    const end = Math.min(this.largestAcked - this.#base, sent.length - 1);
    let largestLostTime = -Infinity;
    let firstLostTime = Infinity;
    let lost = 0;
    let lostBytes = 0;
    let lostPackets = 0;
    let txInFlight = 0;
    for (let idx = this.#head; idx <= end; idx++) {
      const p = sent[idx];
      if (p === undefined) continue;
      if (
        p.timeSent + lossDelay <= now || // same expression as lossTime below (no FP gap)
        this.largestAcked >= p.pn + this.packetThreshold
      ) {
        sent[idx] = undefined;
        this.#outstanding--;
        if (p.ackEliciting) this.bytesInFlight -= p.size;
        if (p.mtuProbe) {
          // Too big for the path, not a sign of congestion.
        } else {
          this.packetsLost++;
          lost++;
          if (p.ackEliciting) {
            if (p.timeSent > largestLostTime) largestLostTime = p.timeSent;
            if (p.timeSent < firstLostTime) firstLostTime = p.timeSent;
            lostBytes += p.size;
            lostPackets++;
            if (p.txInFlight > txInFlight) txInFlight = p.txInFlight;
            this.#hooks.onPacketLost?.(p.size);
            this.#firstFlight?.onLost(p.pn);
            this.#rememberLost(p.pn, this.largestAcked - p.pn, now, p.size);
          }
        }
        for (let f = 0; f < p.frames.length; f++) this.#hooks.onFrameLost(p.frames[f]!);
      } else {
        const t = p.timeSent + lossDelay;
        if (t < this.lossTime) this.lossTime = t;
      }
    }
    if (lost > 0) this.#recentLost += lost;
    this.#decayRecent();
    if (lost > 0 && largestLostTime > -Infinity) {
      const reduced = this.cc.onPacketsLost({
        now,
        lostBytes,
        lostPackets,
        largestLostSentTime: largestLostTime,
        firstLostSentTime: firstLostTime,
        txInFlight,
        bytesInFlight: this.bytesInFlight,
        recentLost: this.#recentLost,
        recentSeen: this.#recentDelivered + this.#recentLost,
        latestRttMs: this.latestAdjustedRtt,
        forwardQueueMs: this.latestForwardQueue,
      });
      if (reduced) {
        // A new congestion epoch: undone if all of its losses prove spurious.
        this.#epoch++;
        this.#epochLost = 0;
        this.#epochSpurious = 0;
      }
    }
    if (lost > 0) this.#tagLost();
    if (
      lost > 0 && this.hasRttSample &&
      largestLostTime - firstLostTime > this.#ptoBase() * this.#p.persistentCongestionThresholdPtos
    ) {
      // Persistent congestion (§7.6, simplified: span of one loss episode).
      this.cc.onPersistentCongestion(now);
    }
  }

  // Packets acked and lost recently (decaying counts over ~lossToleranceWindowPackets).
  #recentDelivered = 0;
  #recentLost = 0;
  #decayRecent(): void {
    if (this.#recentDelivered + this.#recentLost >= this.#p.lossToleranceWindowPackets) {
      this.#recentDelivered /= 2;
      this.#recentLost /= 2;
    }
  }

  #pendingTag: number[] = [];
  #rememberLost(pn: number, distance: number, now: number, size: number): void {
    const m = this.#lostRecent;
    if (m.size >= 1024) m.delete(m.keys().next().value!);
    m.set(pn, { epoch: -1, distance, at: now, size });
    this.#pendingTag.push(pn);
  }
  /** Attributes the packets just declared lost to the current epoch (after any new reduction). */
  #tagLost(): void {
    for (const pn of this.#pendingTag) {
      const r = this.#lostRecent.get(pn);
      if (r !== undefined) {
        r.epoch = this.#epoch;
        this.#epochLost++;
      }
    }
    this.#pendingTag.length = 0;
  }

  #ptoBase(): number {
    return this.smoothedRtt + Math.max(4 * this.rttVar, this.#p.timerGranularityMs) +
      this.#p.maxAckDelayMs;
  }

  /** The recent loss rate (the decaying counts, over at least 100 packets), or 0. */
  get recentLossRatio(): number {
    const seen = this.#recentDelivered + this.#recentLost;
    return seen >= 100 ? this.#recentLost / seen : 0;
  }

  /** The packet number of the last packet recorded as sent (-1 before any). */
  get lastSentPn(): number {
    return this.#lastSentPn;
  }

  /**
   * Offers `copy` the frames of each ack-eliciting packet still in flight from packet
   * `fromPn` down to the first sent before `since`, newest first, until it returns false
   * (no room). Returns the packet number to go on from next time (the one it had no room
   * for), or -1 once every packet of the span was offered.
   */
  forEachTail(fromPn: number, since: number, copy: (frames: F[]) => boolean): number {
    const sent = this.#sent;
    for (let pn = fromPn; pn >= this.#base + this.#head; pn--) {
      const p = sent[pn - this.#base];
      if (p === undefined) continue;
      if (p.timeSent < since) return -1;
      if (!p.ackEliciting || p.mtuProbe) continue;
      if (!copy(p.frames)) return pn;
    }
    return -1;
  }

  /** Current probe timeout, with backoff. */
  get ptoMs(): number {
    return this.#ptoBase() * 2 ** Math.min(this.ptoCount, 16);
  }

  /** When the loss-detection timer fires (loss time or PTO), or Infinity. */
  get lossDetectionDeadline(): number {
    if (this.lossTime !== Infinity) return this.lossTime;
    if (this.bytesInFlight <= 0) return Infinity;
    return this.timeOfLastAckElicitingSent + this.ptoMs;
  }

  /**
   * Loss-detection timer expired (§6.2.1 OnLossDetectionTimeout). Returns the
   * frames of up to two oldest in-flight packets to send again as probes when
   * this was a PTO; they stay outstanding (an ACK for them still counts).
   */
  onTimeout(now: number): F[] | null {
    if (this.lossTime !== Infinity && this.lossTime <= now) {
      this.#detectLoss(now);
      this.#compact();
      return null;
    }
    if (this.bytesInFlight <= 0) return null;
    this.ptoCount++;
    this.probesPending = 2;
    const probe: F[] = [];
    let n = 0;
    for (let idx = this.#head; idx < this.#sent.length && n < 2; idx++) {
      const p = this.#sent[idx];
      if (p === undefined || !p.ackEliciting || p.mtuProbe) continue;
      for (const f of p.frames) probe.push(f);
      n++;
    }
    return probe;
  }

  #compact(): void {
    const sent = this.#sent;
    while (this.#head < sent.length && sent[this.#head] === undefined) this.#head++;
    if (this.#head === sent.length) {
      sent.length = 0;
      this.#base += this.#head;
      this.#head = 0;
    } else if (this.#head > 4096 && this.#head * 2 > sent.length) {
      this.#sent = sent.slice(this.#head);
      this.#base += this.#head;
      this.#head = 0;
    }
  }

  /** Room in the congestion window for a packet of `size` bytes (or a probe is due). */
  canSend(size: number): boolean {
    return this.probesPending > 0 || this.cc.canSend(this.bytesInFlight, size);
  }

  /** The pacing rate in bytes/ms: the controller's, under `maxSendRatePacketsPerSecond`. */
  get pacingRate(): number {
    let rate = this.cc.pacingRate(this.smoothedRtt);
    const cap = this.#p.maxSendRatePacketsPerSecond;
    if (cap > 0) rate = Math.min(rate, (cap * this.#mds) / 1000);
    return rate;
  }

  // Pacer: tokens refill at the pacing rate, capped at the controller's burst.
  #refill(now: number): void {
    const dt = now - this.#lastRefill;
    this.#lastRefill = now;
    if (dt > 0) {
      this.#tokens = Math.min(this.cc.pacingBurstBytes(), this.#tokens + dt * this.pacingRate);
    }
  }
  #consumeTokens(size: number, now: number): void {
    this.#refill(now);
    this.#tokens -= size;
  }
  /** Earliest time a packet of `size` may leave; `now` if it may leave now. */
  pacingTime(size: number, now: number): number {
    if (this.probesPending > 0 || this.#meter()?.unpaced(now)) return now;
    this.#refill(now);
    if (this.#tokens >= size) return now;
    const rate = this.pacingRate;
    const quantum = Math.min(rate * this.#p.pacingQuantumMs, this.cc.pacingBurstBytes() / 2);
    return now + (Math.max(size, quantum) - this.#tokens) / rate;
  }

  /** Drops all state (session closed). Frames are not reported lost. */
  clear(): void {
    this.#lostRecent.clear();
    this.#sent = [];
    this.#head = 0;
    this.#outstanding = 0;
    this.bytesInFlight = 0;
    this.lossTime = Infinity;
  }
}
