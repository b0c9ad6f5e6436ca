/**
 * Loss detection and congestion control per RFC 9002: RTT estimation (§5),
 * packet- and time-threshold loss (§6.1), probe timeout (§6.2), NewReno (§7)
 * and a token-bucket pacer (§7.7). Frames ride along as opaque `F` values so
 * the session can retransmit lost *frames*, not packets.
 */
import type { MuxParams } from "./params.ts";

export interface SentPacket<F> {
  pn: number;
  timeSent: number;
  size: number;
  ackEliciting: boolean;
  /** A PMTU probe: its loss is not congestion (RFC 9000 §14.4). */
  mtuProbe: boolean;
  frames: F[];
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
  // Congestion control (§7), bytes.
  cwnd: number;
  ssthresh = Infinity;
  bytesInFlight = 0;
  recoveryStartTime = -Infinity;
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
  #lostRecent = new Map<number, { epoch: number; distance: number; at: number }>();
  // Loss per round trip (a round ends when a packet sent after it began is acked).
  #lastSentPn = -1;
  #roundEndPn = -1;
  #roundDelivered = 0;
  #roundLost = 0;
  /** Acks on which the window did not grow because it reached `windowCapBytes`. */
  capHeldAcks = 0;
  // Window cap (see windowCapBytes): a windowed minimum RTT and the largest recent
  // delivery rate (bytes/ms) of a round in which the window was the limit.
  #baseRtt = Infinity;
  #baseRttAt = -Infinity;
  #maxBw = 0;
  readonly #bwSamples: number[] = [];
  #roundStart = -1;
  #roundAckedBytes = 0;
  #roundCwndLimited = false;
  /** Congestion epoch: counts reductions; lost packets remember theirs. */
  #epoch = 0;
  #epochLost = 0;
  #epochSpurious = 0;
  #undoCwnd = 0;
  #undoSsthresh = Infinity;
  readonly #hooks: RecoveryHooks<F>;

  constructor(params: MuxParams, maxDatagramSize: number, hooks: RecoveryHooks<F>) {
    this.#p = params;
    this.#mds = maxDatagramSize;
    this.#hooks = hooks;
    this.smoothedRtt = params.initialRttMs;
    this.rttVar = params.initialRttMs / 2;
    this.cwnd = params.initialWindowPackets * maxDatagramSize;
    this.packetThreshold = params.packetThresholdPackets;
    this.#tokens = params.pacingBurstPackets * maxDatagramSize;
  }

  get minWindow(): number {
    return this.#p.minimumWindowPackets * this.#mds;
  }

  /**
   * The packet size changed (path MTU discovery). The window stays in bytes, but
   * never below the minimum window of the new size.
   */
  setMaxDatagramSize(size: number): void {
    this.#mds = size;
    if (this.cwnd < this.minWindow) this.cwnd = this.minWindow;
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
    this.#sent[idx] = { pn, timeSent: now, size, ackEliciting, mtuProbe, frames };
    this.#outstanding++;
    if (ackEliciting) {
      this.timeOfLastAckElicitingSent = now;
      this.bytesInFlight += size;
      if (this.probesPending > 0) this.probesPending--;
    }
    this.#consumeTokens(size, now);
  }

  /**
   * Processes an ACK frame's ranges (flat descending inclusive pairs). Returns
   * true if it acknowledged anything new.
   */
  onAck(ranges: readonly number[], ackDelayMs: number, now: number): boolean {
    const largest = ranges[0]!;
    let newlyAcked = false;
    let largestNewlyAcked: SentPacket<F> | undefined;
    let ackedEliciting = false;
    const sent = this.#sent;
    const firstPn = this.#base + this.#head;
    const lastPn = this.#base + sent.length - 1;
    if (this.#lostRecent.size > 0) this.#checkSpurious(ranges, now);
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
        this.#roundDelivered++;
        this.#recentDelivered++;
        if (largestNewlyAcked === undefined) largestNewlyAcked = p;
        if (p.ackEliciting) {
          ackedEliciting = true;
          this.bytesInFlight -= p.size;
          this.#roundAckedBytes += p.size;
          if (this.cwndLimited) this.#roundCwndLimited = true;
          this.#onCongestionAck(p);
          if (!p.mtuProbe) this.#hooks.onPacketAcked?.(p.size);
        }
        for (let f = 0; f < p.frames.length; f++) this.#hooks.onFrameAcked(p.frames[f]!);
      }
    }
    if (!newlyAcked) return false;
    if (largest > this.largestAcked) this.largestAcked = largest;
    if (largestNewlyAcked !== undefined && largestNewlyAcked.pn === largest && ackedEliciting) {
      this.#updateRtt(now - largestNewlyAcked.timeSent, ackDelayMs, now);
    }
    if (this.largestAcked >= this.#roundEndPn) {
      this.#roundEndPn = this.#lastSentPn;
      this.#roundDelivered = 0;
      this.#roundLost = 0;
      this.#onRoundEnd(now);
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
        // Tolerate this much reordering from now on (bounded).
        if (rec.distance >= this.packetThreshold) {
          this.packetThreshold = Math.min(rec.distance + 1, this.#p.maxPacketThresholdPackets);
        }
        if (rec.epoch === this.#epoch && ++this.#epochSpurious === this.#epochLost) {
          if (this.#undoCwnd > this.cwnd) {
            this.cwnd = this.#undoCwnd;
            this.ssthresh = this.#undoSsthresh;
            this.undoneReductions++;
          }
          this.#undoCwnd = 0;
        }
        break;
      }
    }
  }

  #updateRtt(sample: number, ackDelayMs: number, now: number): void {
    const latest = Math.max(sample, 0.001);
    this.latestRtt = latest;
    if (!this.hasRttSample) {
      this.hasRttSample = true;
      this.minRtt = latest;
      this.smoothedRtt = latest;
      this.rttVar = latest / 2;
      this.#baseRtt = latest;
      this.#baseRttAt = now;
      return;
    }
    this.minRtt = Math.min(this.minRtt, latest);
    const delay = Math.min(ackDelayMs, this.#p.maxAckDelayMs);
    const adjusted = latest >= this.minRtt + delay ? latest - delay : latest;
    // Windowed minimum (BBR's min_rtt filter): a longer path is learned within the window.
    if (adjusted <= this.#baseRtt || now - this.#baseRttAt > this.#p.queueBaseRttWindowMs) {
      this.#baseRtt = adjusted;
      this.#baseRttAt = now;
    }
    this.rttVar = 0.75 * this.rttVar + 0.25 * Math.abs(this.smoothedRtt - adjusted);
    this.smoothedRtt = 0.875 * this.smoothedRtt + 0.125 * adjusted;
  }

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

  /** A round trip ended: its delivery rate counts if the window limited it (not the app). */
  #onRoundEnd(now: number): void {
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
    this.#roundCwndLimited = this.cwndLimited;
  }

  #onCongestionAck(p: SentPacket<F>): void {
    if (p.timeSent <= this.recoveryStartTime) return;
    // App-limited: do not grow (RFC 9002 §7.8).
    if (!this.cwndLimited && this.bytesInFlight * 2 < this.cwnd) return;
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
            this.#hooks.onPacketLost?.(p.size);
            this.#rememberLost(p.pn, this.largestAcked - p.pn, now);
          }
        }
        for (let f = 0; f < p.frames.length; f++) this.#hooks.onFrameLost(p.frames[f]!);
      } else {
        const t = p.timeSent + lossDelay;
        if (t < this.lossTime) this.lossTime = t;
      }
    }
    if (lost > 0) {
      this.#roundLost += lost;
      this.#recentLost += lost;
    }
    this.#decayRecent();
    if (lost > 0 && largestLostTime > -Infinity) {
      if (this.#tolerable()) {
        // Loss rate within lossToleranceRatio: tolerated, no congestion reduction.
        if (this.cwnd < this.ssthresh) this.ssthresh = this.cwnd; // leave slow start, gently
      } else this.#onCongestionEvent(largestLostTime, now);
    }
    if (lost > 0) this.#tagLost();
    if (
      lost > 0 && this.hasRttSample &&
      largestLostTime - firstLostTime > this.#ptoBase() * this.#p.persistentCongestionThresholdPtos
    ) {
      // Persistent congestion (§7.6, simplified: span of one loss episode).
      this.cwnd = this.minWindow;
      this.#undoCwnd = 0;
    }
  }

  /**
   * Random loss is not congestion (BBRv2's loss_thresh idea): losses in this round
   * trip up to lossToleranceRatio of the window (in packets) or of the packets
   * delivered, whichever is larger, do not cut the window. A small window
   * tolerates no loss at all; an overflowing queue loses far more than 2 %.
   */
  #tolerable(): boolean {
    const ratio = this.#p.lossToleranceRatio;
    if (ratio <= 0) return false;
    // Over the last ~lossToleranceWindowPackets packets (decaying counts), not one round:
    // a window of 12 packets would otherwise tolerate nothing and never grow past ~16.
    const seen = this.#recentDelivered + this.#recentLost;
    if (seen < this.#p.lossToleranceWindowPackets / 2) return false;
    return this.#recentLost <= ratio * seen;
  }
  #recentDelivered = 0;
  #recentLost = 0;
  #decayRecent(): void {
    if (this.#recentDelivered + this.#recentLost >= this.#p.lossToleranceWindowPackets) {
      this.#recentDelivered /= 2;
      this.#recentLost /= 2;
    }
  }

  #pendingTag: number[] = [];
  #rememberLost(pn: number, distance: number, now: number): void {
    const m = this.#lostRecent;
    if (m.size >= 1024) m.delete(m.keys().next().value!);
    m.set(pn, { epoch: -1, distance, at: now });
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

  #onCongestionEvent(sentTime: number, now: number): void {
    if (sentTime <= this.recoveryStartTime) return;
    // Remember what to restore if every loss of this epoch proves spurious.
    this.#epoch++;
    this.#epochLost = 0;
    this.#epochSpurious = 0;
    this.#undoCwnd = this.cwnd;
    this.#undoSsthresh = this.ssthresh;
    this.recoveryStartTime = now;
    this.cwnd = Math.max(this.cwnd * this.#p.lossReductionRatio, this.minWindow);
    this.ssthresh = this.cwnd;
  }

  #ptoBase(): number {
    return this.smoothedRtt + Math.max(4 * this.rttVar, this.#p.timerGranularityMs) +
      this.#p.maxAckDelayMs;
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
    return this.probesPending > 0 || this.bytesInFlight + size <= this.cwnd;
  }

  // Pacer: tokens refill at gain x cwnd / srtt, capped at a burst.
  #rateBytesPerMs(): number {
    const rtt = Math.max(this.smoothedRtt, 0.05);
    let rate = (this.#p.pacingGainRatio * this.cwnd) / rtt;
    const cap = this.#p.maxSendRatePacketsPerSecond;
    if (cap > 0) rate = Math.min(rate, (cap * this.#mds) / 1000);
    return rate;
  }
  #burstBytes(): number {
    // Small bursts: a Deno receiver's socket buffer (~200 KB) holds ~10 packets of 16 KiB.
    return Math.max(
      Math.min(this.#p.pacingBurstPackets * this.#mds, this.#p.pacingMaxBurstBytes),
      this.#mds,
    );
  }
  #refill(now: number): void {
    const dt = now - this.#lastRefill;
    this.#lastRefill = now;
    if (dt > 0) {
      this.#tokens = Math.min(this.#burstBytes(), this.#tokens + dt * this.#rateBytesPerMs());
    }
  }
  #consumeTokens(size: number, now: number): void {
    this.#refill(now);
    this.#tokens -= size;
  }
  /** Earliest time a packet of `size` may leave; `now` if it may leave now. */
  pacingTime(size: number, now: number): number {
    if (this.probesPending > 0) return now;
    this.#refill(now);
    if (this.#tokens >= size) return now;
    // Sub-millisecond waits are fine: the real clock runs them with setImmediate.
    return now + (size - this.#tokens) / this.#rateBytesPerMs();
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
