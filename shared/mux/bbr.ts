/**
 * A model-based congestion controller in the spirit of BBR (draft-ietf-ccwg-bbr; BBRv1's
 * state machine and gain cycle, BBRv2/v3's loss-derived `inflight_hi`), selected by
 * `congestionControl: "bbr"`. It sends at the rate the path delivers and keeps about one
 * bandwidth-delay product in flight, measured rather than probed for with losses:
 *
 * - max_bw: the largest delivery rate (delivery_rate.ts) over `bandwidthWindowRounds` round
 *   trips; samples of app-limited flights count only if they raise it;
 * - min_rtt: the smallest RTT (ack delay removed) over `queueBaseRttWindowMs`; a sample
 *   within MIN_RTT_SEEN_AGAIN_RATIO of it (at least QUEUE_DELAY_FLOOR_MS) counts as seeing
 *   it again; when it was not seen again for that long, ProbeRTT holds the window at half a
 *   BDP for `bbrProbeRttMs` and two round trips so the path's own RTT shows;
 * - Startup (pacing gain 2.77) until max_bw grew less than 25 % in 3 rounds, or a loss
 *   counts as congestion (below); Drain (1/2.77) until the queue it built is gone;
 *   ProbeBW: the 8-phase gain cycle 1.25, 0.75, 1 x 6, each about one min_rtt;
 * - cwnd = 2 x BDP + the ACK aggregation seen (BBR's extra_acked), at least 4 packets, and
 *   at most `inflightHi`; pacing at the phase's gain x max_bw.
 *
 * Loss. Random loss does not change the model: lost packets did not use the bottleneck,
 * max_bw is what got through. Loss counts as congestion only when
 * - more than `bbrLossThresholdRatio` of the packets were lost (over at least
 *   LOSS_SAMPLE_PACKETS and a round trip): a queue overflowing under our own rate, or
 * - it was detected while the RTT (the latest sample and a short average) stood more than
 *   `bbrQueueDelayRatio` above min_rtt, with the recent loss rate above
 *   `lossToleranceRatio`: a full drop-tail queue, likely filled by a loss-based flow.
 * Congestion (once per round) ends Startup and sets `inflightHi` to 0.7 x the flight the
 * loss was part of, or 0.7 x the model's BDP if that is more. Each round that used all of
 * `inflightHi` without congestion raises it: by 1, 2, 4... packets while the RTT shows no
 * queue, by one packet (Reno's pace) while it does; once it no longer bounds the model's
 * window it is dropped. A queue standing through whole rounds means another flow holds it:
 * BBR is then `competing`, and its window is `inflightHi` itself (AIMD) instead of the
 * model's, which leaves the other's queue out of the BDP. Losses later acked (reordering)
 * leave the loss-rate sample. Cruising with no queue, the pacing rate makes up for the
 * random loss measured while so (MAX_LOSS_COMPENSATION, QUIET_RTT_RATIO). Where the peer
 * dates its ACKs, "the RTT" these queue rules read is min_rtt plus the queue on the way
 * there (forward_delay.ts): a queue on the way back is not ours to drain.
 * docs/congestion.md explains the choices and has the measurements.
 */
import type {
  AckedPacket,
  AckSample,
  CongestionController,
  CongestionStats,
  LossEvent,
} from "./congestion.ts";
import type { MuxParams } from "./params.ts";

/** BBR's phases ("probe_bw" cycles through its gains). */
export type BbrMode = "startup" | "drain" | "probe_bw" | "probe_rtt";

/** 4 ln 2: the smallest gain that doubles the delivery rate each round (BBRv3's Startup). */
const STARTUP_PACING_GAIN = 2.77;
const STARTUP_CWND_GAIN = 2;
const DRAIN_PACING_GAIN = 1 / STARTUP_PACING_GAIN;
const PROBE_BW_CWND_GAIN = 2;
/** BBRv1's ProbeBW cycle: probe up, drain what that queued, cruise six rounds. */
const PROBE_BW_GAINS = [1.25, 0.75, 1, 1, 1, 1, 1, 1];
/** The probe-up phase ends after this many min_rtt even if inflight never reached its target. */
const PROBE_UP_MAX_RTTS = 3;
/** Startup ends once max_bw grew by less than this factor ... */
const FULL_BW_GROWTH = 1.25;
/** ... in this many rounds in a row that were not app-limited. */
const FULL_BW_ROUNDS = 3;
const MIN_WINDOW_PACKETS = 4;
/** max_bw this close to the first flight's rate has found the bottleneck (`bandwidthKnown`). */
const FIRST_FLIGHT_REACHED = 0.9;
/** ProbeRTT's window, in BDPs (BBRv3; BBRv1 used 4 packets). */
const PROBE_RTT_CWND_GAIN = 0.5;
/** Multiplicative decrease of inflightHi on a congested round (BBRv2's beta). */
const BETA = 0.7;
/**
 * The loss rate is judged over at least this many packets (acked + lost) and a round trip:
 * over fewer, random loss alone too often looks high (10 % random loss exceeds 15 % in ~4 %
 * of 100-packet samples, in ~1 % of 200-packet ones), and every false alarm costs rate.
 */
const LOSS_SAMPLE_PACKETS = 200;
/** ACK aggregation is measured over 2 x this many rounds, and allowed up to MAX_EXTRA_ACKED_MS. */
const EXTRA_ACKED_ROUNDS = 5;
const MAX_EXTRA_ACKED_MS = 100;
/** Pacing runs 1 % under the estimate so a standing queue cannot build (Linux BBR). */
const PACING_MARGIN = 0.99;
/**
 * The pacer's burst: this many ms at the pacing rate (at least 2 packets, at most
 * pacingBurstPackets / pacingMaxBurstBytes). The token bucket caps at the burst, so a
 * pacing timer that fires late loses what it could not send: a few ms of burst absorbs
 * a busy event loop's lateness, and queues no more than that at the bottleneck.
 */
const BURST_MS = 4;
/** Queue delay below this many ms is never taken for a full queue (timer noise, bursts). */
const QUEUE_DELAY_FLOOR_MS = 1;
/**
 * An RTT sample at most this fraction (and QUEUE_DELAY_FLOOR_MS) above min_rtt sees min_rtt
 * again: the path shows no queue worth draining, so ProbeRTT is not due. Only samples at or
 * below it used to count, and the scheduling noise of a real event loop (0.1-0.6 ms on a
 * 53 ms path, the WAN lab's P4) kept them from coming while a download kept the path full:
 * ProbeRTT then halved the rate for ~300 ms every 10 s. A queue larger than this still
 * expires min_rtt and drains; a shorter RTT still replaces it at once. Chromium's BBR may
 * skip ProbeRTT when the RTT stayed within 12.5 %; 5 % keeps the queue it lets stand small.
 */
const MIN_RTT_SEEN_AGAIN_RATIO = 0.05;
/**
 * Cruising with no queue, BBR paces at max_bw / (1 - p), p the random loss rate, making up
 * for at most this much. max_bw is what got through: pacing at it leaves the bottleneck idle
 * by about p where the loss comes before it (the WAN lab's emulator); where it comes after,
 * max_bw is the bottleneck's rate less p. Dividing by 1 - p paces at the bottleneck's rate
 * in both cases.
 */
const MAX_LOSS_COMPENSATION = 0.05;
/**
 * "Quiet": ProbeBW at gain 1, no other flow sharing (`competing`), and the RTT's moving
 * average at most this fraction above min_rtt. p counts only packets acked or lost while
 * quiet (a loss then did not come from a queue: ours, probing, queues up to 0.25 BDP), and
 * the pacing makes up for p only while quiet: a queue, or a congested round (which starts p
 * again from 0), stops it at once.
 */
const QUIET_RTT_RATIO = 0.1;
/** Rounds in a row with a standing queue before BBR takes a loss-based flow to be sharing. */
const COMPETE_ROUNDS = 2;

/** A windowed max over round numbers (monotonic deque); only updates expire old entries. */
class MaxFilter {
  readonly #rounds: number[] = [];
  readonly #values: number[] = [];

  get best(): number {
    return this.#values.length > 0 ? this.#values[0]! : 0;
  }

  update(round: number, value: number, window: number): void {
    const r = this.#rounds;
    const v = this.#values;
    while (v.length > 0 && v[v.length - 1]! <= value) {
      v.pop();
      r.pop();
    }
    r.push(round);
    v.push(value);
    while (r.length > 1 && r[0]! <= round - window) {
      r.shift();
      v.shift();
    }
  }
}

export class Bbr implements CongestionController {
  readonly name = "bbr";
  cwnd: number;
  mode: BbrMode = "startup";
  pacingGain = STARTUP_PACING_GAIN;
  cwndGain = STARTUP_CWND_GAIN;
  /** Packet-timed round trips so far. */
  round = 0;
  /** The model's min RTT (ms) and when it was last seen. */
  minRtt = Infinity;
  minRttAt = 0;
  /** Startup found the pipe full (bandwidth plateau or congestion). */
  fullBwReached = false;
  /** The first flight's rate (first_flight.ts) set Startup's start, bytes/ms; 0 if not. */
  firstFlightRate = 0;
  /** Loss-derived bound on bytes in flight; Infinity when none holds. */
  inflightHi = Infinity;
  /** Times ProbeRTT was entered, and when last. */
  probeRttCount = 0;
  probeRttAt = -Infinity;
  /** Rounds whose loss counted as congestion. */
  congestionRounds = 0;
  /** Index into PROBE_BW_GAINS. */
  cycleIndex = 0;
  /**
   * A queue stood through whole rounds (not ours: our own drains every gain cycle), so
   * a loss-based flow shares the bottleneck: the window is `inflightHi`, grown and cut
   * like theirs, not the model's.
   */
  competing = false;

  readonly #p: MuxParams;
  #mds: number;
  readonly #bw = new MaxFilter();
  #pacingRate = 0;
  #fullBw = 0;
  #fullBwCount = 0;
  #cycleStart = 0;
  #lostInPhase = 0;
  #priorCwnd = 0;
  #probeRttDoneAt = 0;
  #probeRttRound = 0;
  #idleRestart = false;
  // ACK aggregation (BBR's extra_acked): two slots of EXTRA_ACKED_ROUNDS rounds each.
  readonly #extraAcked = [0, 0];
  #extraAckedIdx = 0;
  #extraAckedRounds = 0;
  #ackEpochStart = 0;
  #ackEpochAcked = 0;
  // The loss-rate sample (LOSS_SAMPLE_PACKETS), and this round's congestion and limits.
  #sampleAcked = 0;
  #sampleLost = 0;
  #roundCongested = false;
  #congestedRound = -Infinity;
  // Random loss: packets acked and lost while quiet (QUIET_RTT_RATIO), and their loss
  // rate, a moving average (gain 1/8) over samples of LOSS_SAMPLE_PACKETS.
  #quietNow = false;
  #quietAcked = 0;
  #quietLost = 0;
  #randomLoss = 0;
  #roundMaxInflight = 0;
  #roundMaxRtt = 0;
  #roundMinRtt = Infinity;
  /** A short moving average of RTT samples (gain 1/4): jitter averages out, a queue does not. */
  #rttAvg = -1;
  /** Rounds in a row whose every RTT sample showed a queue. */
  #queueRounds = 0;
  /** Packets inflightHi grows by at the next round without a queue. */
  #probeUpPackets = 1;
  #undoInflightHi = 0;
  /** A small deterministic generator for where the gain cycle starts. */
  #seed = 0x2545f491;

  constructor(params: MuxParams, maxDatagramSize: number) {
    this.#p = params;
    this.#mds = maxDatagramSize;
    this.cwnd = params.initialWindowPackets * maxDatagramSize;
  }

  get minWindow(): number {
    return Math.max(MIN_WINDOW_PACKETS, this.#p.minimumWindowPackets) * this.#mds;
  }

  /** The windowed max delivery rate, bytes/ms (0 before the first sample). */
  get maxBw(): number {
    return this.#bw.best;
  }

  /** The first Startup, before the first flight's rate came (startupFirstFlightRatio). */
  get wantsFirstFlightRate(): boolean {
    return this.#p.startupFirstFlightRatio > 0 && this.mode === "startup" &&
      !this.fullBwReached && this.firstFlightRate === 0;
  }

  /**
   * Startup begins at a fraction (startupFirstFlightRatio, half) of the rate the first
   * flight came back at (first_flight.ts): a window of that x min_rtt (half the path's
   * BDP if the rate is its bottleneck's), paced at Startup's gain over it. Its own samples
   * take over as they pass it.
   */
  onFirstFlightRate(rate: number): void {
    if (!this.wantsFirstFlightRate || this.minRtt === Infinity || !(rate > 0)) return;
    this.firstFlightRate = rate;
    const bw = rate * this.#p.startupFirstFlightRatio;
    const cwnd = Math.min(bw * this.minRtt, this.#p.maxCongestionWindowBytes, this.inflightHi);
    if (cwnd > this.cwnd) this.cwnd = cwnd;
    const pacing = STARTUP_PACING_GAIN * bw * PACING_MARGIN;
    if (pacing > this.#pacingRate) this.#pacingRate = pacing;
  }

  /**
   * Startup ended, or saw a round (not app-limited) in which max_bw grew less than 25 % with
   * max_bw at 90 % or more of the first flight's rate (first_flight.ts: the bottleneck's,
   * where nothing else queues there). One flat round short of that is too often loss
   * (at 3 %, a warm-up stopped at half the rate); three flat rounds cost a warm-up half as
   * much again (warm_up.ts).
   */
  get bandwidthKnown(): boolean {
    return this.fullBwReached ||
      (this.#fullBwCount > 0 && this.firstFlightRate > 0 &&
        this.#bw.best >= FIRST_FLIGHT_REACHED * this.firstFlightRate);
  }

  /** Alone at the bottleneck, and no congested round in the last 10. */
  get lossIsRandom(): boolean {
    return !this.competing && this.round - this.#congestedRound > 10;
  }

  /** ProbeRTT: sending is held below the path's rate, so samples are app-limited. */
  get holdingBack(): boolean {
    return this.mode === "probe_rtt";
  }

  setMaxDatagramSize(size: number): void {
    this.#mds = size;
    if (this.cwnd < this.minWindow) this.cwnd = this.minWindow;
  }

  canSend(bytesInFlight: number, size: number): boolean {
    return bytesInFlight + size <= this.cwnd;
  }

  pacingRate(srtt: number): number {
    if (this.#pacingRate > 0) return this.#pacingRate;
    // No bandwidth sample yet: the initial window over the RTT guess, at Startup's gain.
    return (STARTUP_PACING_GAIN * this.cwnd) / Math.max(srtt, 1);
  }

  pacingBurstBytes(): number {
    const cap = Math.min(this.#p.pacingBurstPackets * this.#mds, this.#p.pacingMaxBurstBytes);
    const burst = Math.min(this.pacingRate(this.#p.initialRttMs) * BURST_MS, cap);
    return Math.max(burst, 2 * this.#mds);
  }

  /** gain x max_bw x min_rtt, or the initial window before both are known. */
  #bdp(gain: number): number {
    const bw = this.#bw.best;
    if (bw === 0 || this.minRtt === Infinity) {
      return this.#p.initialWindowPackets * this.#mds;
    }
    return gain * bw * this.minRtt;
  }

  onPacketSent(now: number, size: number, priorInFlight: number, appLimited: boolean): void {
    if (priorInFlight === 0 && appLimited) {
      // Restarting after idle: send at the estimated rate, not a probing gain.
      this.#idleRestart = true;
      this.#ackEpochStart = now;
      this.#ackEpochAcked = 0;
      if (this.mode === "probe_bw") this.#setPacingRate(1);
    }
    const inflight = priorInFlight + size;
    if (inflight > this.#roundMaxInflight) this.#roundMaxInflight = inflight;
  }

  onPacketAcked(_p: AckedPacket): void {
    this.#sampleAcked++;
    if (this.#quietNow) this.#quietAcked++;
  }

  /** Cruising with no queue (QUIET_RTT_RATIO): a loss now is the path's random loss. */
  #quiet(): boolean {
    return this.mode === "probe_bw" && this.pacingGain === 1 && !this.competing &&
      this.#rttAvg >= 0 && !this.#aboveMinRtt(this.#rttAvg, QUIET_RTT_RATIO);
  }

  onAck(s: AckSample): void {
    if (s.newRound) this.#onRoundStart(s);
    if (s.adjustedRttMs >= 0) {
      const r = this.#queueRtt(s.adjustedRttMs, s.forwardQueueMs);
      this.#rttAvg = this.#rttAvg < 0 ? r : 0.75 * this.#rttAvg + 0.25 * r;
      if (r > this.#roundMaxRtt) this.#roundMaxRtt = r;
      if (r < this.#roundMinRtt) this.#roundMinRtt = r;
    }
    this.#updateBw(s);
    this.#updateAckAggregation(s);
    if (this.mode === "probe_bw" && this.#isNextCyclePhase(s)) this.#advanceCycle(s.now);
    this.#checkFullBw(s);
    this.#checkDrain(s);
    this.#updateMinRtt(s);
    this.#quietNow = this.#quiet();
    this.#setPacingRate(this.#idleRestart && this.mode === "probe_bw" ? 1 : this.pacingGain);
    this.#setCwnd(s);
    if (s.ackedBytes > 0) this.#idleRestart = false;
  }

  #onRoundStart(s: AckSample): void {
    this.round++;
    if (this.#roundMinRtt !== Infinity) {
      this.#queueRounds = this.#queueDelayed(this.#roundMinRtt) ? this.#queueRounds + 1 : 0;
    }
    this.competing = this.fullBwReached && this.#queueRounds >= COMPETE_ROUNDS;
    if (this.competing && this.inflightHi === Infinity) this.inflightHi = this.cwnd;
    if (!this.#roundCongested && this.inflightHi !== Infinity) {
      if (this.#roundMaxInflight + this.#mds >= this.inflightHi) {
        // The bound limited this round and nothing said congestion: raise it.
        if (this.#queueDelayed(this.#roundMaxRtt)) {
          this.inflightHi += this.#mds;
          this.#probeUpPackets = 1;
        } else {
          this.inflightHi += this.#probeUpPackets * this.#mds;
          this.#probeUpPackets *= 2;
        }
      }
      if (!this.competing && this.inflightHi >= this.#targetCwnd()) this.inflightHi = Infinity;
    }
    if (this.#sampleAcked + this.#sampleLost >= LOSS_SAMPLE_PACKETS) {
      this.#sampleAcked = 0;
      this.#sampleLost = 0;
    }
    const quiet = this.#quietAcked + this.#quietLost;
    if (quiet >= LOSS_SAMPLE_PACKETS) {
      this.#randomLoss = 0.875 * this.#randomLoss + 0.125 * (this.#quietLost / quiet);
      this.#quietAcked = 0;
      this.#quietLost = 0;
    }
    this.#roundCongested = false;
    this.#roundMaxInflight = s.bytesInFlight;
    this.#roundMaxRtt = 0;
    this.#roundMinRtt = Infinity;
  }

  #updateBw(s: AckSample): void {
    if (s.intervalMs <= 0 || s.deliveredBytes <= 0) return;
    const bw = s.deliveredBytes / s.intervalMs;
    // An app-limited flight says little about the path unless it was faster still.
    if (s.appLimited && bw < this.#bw.best) return;
    this.#bw.update(this.round, bw, this.#p.bandwidthWindowRounds);
  }

  #updateAckAggregation(s: AckSample): void {
    if (s.ackedBytes <= 0) return;
    if (s.newRound && ++this.#extraAckedRounds >= EXTRA_ACKED_ROUNDS) {
      this.#extraAckedRounds = 0;
      this.#extraAckedIdx ^= 1;
      this.#extraAcked[this.#extraAckedIdx] = 0;
    }
    let expected = this.#bw.best * (s.now - this.#ackEpochStart);
    if (this.#ackEpochAcked <= expected) {
      // Acks came no faster than the rate: a new aggregation epoch starts here.
      this.#ackEpochAcked = 0;
      this.#ackEpochStart = s.now;
      expected = 0;
    }
    this.#ackEpochAcked += s.ackedBytes;
    const extra = Math.min(this.#ackEpochAcked - expected, this.cwnd);
    if (extra > this.#extraAcked[this.#extraAckedIdx]!) {
      this.#extraAcked[this.#extraAckedIdx] = extra;
    }
  }

  /** Room for acks that arrive in bunches (ACK frequency, lost ACKs): cwnd headroom. */
  #ackAggregationCwnd(): number {
    if (!this.fullBwReached) return 0;
    const extra = Math.max(this.#extraAcked[0]!, this.#extraAcked[1]!);
    return Math.min(extra, this.#bw.best * MAX_EXTRA_ACKED_MS);
  }

  #targetCwnd(): number {
    return this.#bdp(this.cwndGain) + this.#ackAggregationCwnd();
  }

  #isNextCyclePhase(s: AckSample): boolean {
    const elapsed = s.now - this.#cycleStart;
    const full = elapsed > this.minRtt;
    const gain = this.pacingGain;
    if (gain === 1) return full;
    const inflight = s.priorInFlight;
    if (gain > 1) {
      // Probe up until the extra is in flight, a loss, or the window stops it.
      return full && (
        this.#lostInPhase > 0 || inflight >= this.#bdp(gain) ||
        inflight + this.#mds > this.cwnd || elapsed > PROBE_UP_MAX_RTTS * this.minRtt
      );
    }
    // Probe down until the queue drained (an overestimated max_bw queues up in cruise;
    // BBRv1 left after one min_rtt regardless), or for at most PROBE_UP_MAX_RTTS.
    return inflight <= this.#bdp(1) || elapsed > PROBE_UP_MAX_RTTS * this.minRtt;
  }

  #advanceCycle(now: number): void {
    this.cycleIndex = (this.cycleIndex + 1) % PROBE_BW_GAINS.length;
    this.#cycleStart = now;
    this.#lostInPhase = 0;
    this.pacingGain = PROBE_BW_GAINS[this.cycleIndex]!;
  }

  #enterProbeBw(now: number): void {
    this.mode = "probe_bw";
    this.cwndGain = PROBE_BW_CWND_GAIN;
    // Start anywhere but the drain phase (BBRv1 randomizes so flows do not probe in step).
    this.#seed = (Math.imul(this.#seed, 1103515245) + 12345) >>> 0;
    const r = (this.#seed >>> 16) % (PROBE_BW_GAINS.length - 1);
    this.cycleIndex = PROBE_BW_GAINS.length - 1 - r;
    this.#advanceCycle(now);
  }

  #checkFullBw(s: AckSample): void {
    if (this.fullBwReached || !s.newRound || s.appLimited) return;
    const bw = this.#bw.best;
    if (bw >= this.#fullBw * FULL_BW_GROWTH) {
      this.#fullBw = bw;
      this.#fullBwCount = 0;
      return;
    }
    if (++this.#fullBwCount >= FULL_BW_ROUNDS) this.fullBwReached = true;
  }

  #checkDrain(s: AckSample): void {
    if (this.mode === "startup" && this.fullBwReached) {
      this.mode = "drain";
      this.pacingGain = DRAIN_PACING_GAIN;
      this.cwndGain = STARTUP_CWND_GAIN;
    }
    if (this.mode === "drain" && s.bytesInFlight <= this.#bdp(1)) this.#enterProbeBw(s.now);
  }

  #updateMinRtt(s: AckSample): void {
    const now = s.now;
    const expired = now > this.minRttAt + this.#p.queueBaseRttWindowMs;
    const rtt = s.adjustedRttMs;
    if (rtt >= 0 && (rtt <= this.minRtt || expired)) {
      this.minRtt = rtt;
      this.minRttAt = now;
    } else if (rtt >= 0 && !this.#aboveMinRtt(rtt, MIN_RTT_SEEN_AGAIN_RATIO)) {
      this.minRttAt = now; // seen again, to within the scheduling noise: min_rtt stays
    }
    if (expired && !this.#idleRestart && this.mode !== "probe_rtt") {
      // min_rtt was not seen again for a whole window: drain the queue to measure it.
      this.mode = "probe_rtt";
      this.pacingGain = 1;
      this.cwndGain = 1;
      this.#priorCwnd = Math.max(this.#priorCwnd, this.cwnd);
      this.#probeRttDoneAt = 0;
      this.probeRttCount++;
      this.probeRttAt = now;
    }
    if (this.mode !== "probe_rtt") return;
    if (this.#probeRttDoneAt === 0) {
      if (s.bytesInFlight <= this.#probeRttCwnd()) {
        this.#probeRttDoneAt = now + this.#p.bbrProbeRttMs;
        this.#probeRttRound = this.round;
      }
      return;
    }
    // Hold for bbrProbeRttMs and a full round trip of packets sent at the low window.
    if (now >= this.#probeRttDoneAt && this.round >= this.#probeRttRound + 2) {
      this.minRttAt = now;
      this.cwnd = Math.max(this.cwnd, this.#priorCwnd);
      this.#priorCwnd = 0;
      if (this.fullBwReached) this.#enterProbeBw(now);
      else {
        this.mode = "startup";
        this.pacingGain = STARTUP_PACING_GAIN;
        this.cwndGain = STARTUP_CWND_GAIN;
      }
    }
  }

  #probeRttCwnd(): number {
    return Math.max(this.minWindow, this.#bdp(PROBE_RTT_CWND_GAIN));
  }

  #setPacingRate(gain: number): void {
    const bw = this.#bw.best;
    if (bw === 0) return;
    if (this.#pacingRate === 0 && this.minRtt !== Infinity) {
      // Startup begins at the initial window per min_rtt, at its gain, as before any sample
      // (Linux BBR's initial rate): a session's first samples are small exchanges (the
      // tunnel's hello), app-limited at a few kB/s, and Startup, which never slows down,
      // would otherwise start from those and take several more rounds to reach the path.
      this.#pacingRate = (STARTUP_PACING_GAIN * this.cwnd) / Math.max(this.minRtt, 1);
    }
    let rate = gain * bw * PACING_MARGIN;
    if (gain === 1 && this.#quietNow) {
      rate /= 1 - Math.min(this.#randomLoss, MAX_LOSS_COMPENSATION);
    }
    // Startup never slows down on a low sample; afterwards the rate follows the model.
    if (this.fullBwReached || rate > this.#pacingRate) this.#pacingRate = rate;
  }

  #setCwnd(s: AckSample): void {
    const target = this.#targetCwnd();
    let cwnd = this.cwnd;
    if (this.fullBwReached) cwnd = Math.min(cwnd + s.ackedBytes, target);
    else if (cwnd < target || s.totalDelivered < this.#p.initialWindowPackets * this.#mds) {
      cwnd += s.ackedBytes;
    }
    cwnd = this.competing ? this.inflightHi : Math.min(cwnd, this.inflightHi);
    cwnd = Math.min(cwnd, this.#p.maxCongestionWindowBytes);
    if (this.mode === "probe_rtt") cwnd = Math.min(cwnd, this.#probeRttCwnd());
    this.cwnd = Math.max(cwnd, this.minWindow);
  }

  /**
   * The RTT the queue rules read: min_rtt plus the forward queue where the peer dates its
   * ACKs (forward_delay.ts), so a queue on the way back (ACKs behind the peer's own data)
   * reads as none; else the sample itself. min_rtt and ProbeRTT keep the real samples.
   */
  #queueRtt(adjustedRttMs: number, forwardQueueMs: number): number {
    if (!Number.isFinite(forwardQueueMs) || this.minRtt === Infinity) return adjustedRttMs;
    return Math.min(adjustedRttMs, this.minRtt + Math.max(forwardQueueMs, 0));
  }

  /** Queue delay: `rtt` more than bbrQueueDelayRatio (and a ms) above min_rtt. */
  #queueDelayed(rtt: number): boolean {
    if (rtt < 0 || this.minRtt === Infinity) return false;
    return this.#aboveMinRtt(rtt, this.#p.bbrQueueDelayRatio);
  }

  /** `rtt` is more than `ratio` x min_rtt (and QUEUE_DELAY_FLOOR_MS) above min_rtt. */
  #aboveMinRtt(rtt: number, ratio: number): boolean {
    return rtt - this.minRtt > Math.max(ratio * this.minRtt, QUEUE_DELAY_FLOOR_MS);
  }

  onPacketsLost(e: LossEvent): boolean {
    this.#sampleLost += e.lostPackets;
    this.#lostInPhase += e.lostPackets;
    if (this.#quietNow) this.#quietLost += e.lostPackets;
    if (this.#roundCongested) return false;
    const seen = this.#sampleAcked + this.#sampleLost;
    const tooMuch = seen >= LOSS_SAMPLE_PACKETS &&
      this.#sampleLost > this.#p.bbrLossThresholdRatio * seen;
    // At a queue: the latest sample and the recent average both high (jitter is not a queue),
    // and the loss rate above the tolerance NewReno gives itself (its 2 % by default).
    const latest = e.latestRttMs < 0 ? -1 : this.#queueRtt(e.latestRttMs, e.forwardQueueMs);
    const queued = this.#queueDelayed(Math.min(latest, this.#rttAvg)) &&
      e.recentLost > this.#p.lossToleranceRatio * e.recentSeen;
    if (!tooMuch && !queued) return false;
    // Congestion: once per round.
    this.#roundCongested = true;
    this.#congestedRound = this.round;
    this.congestionRounds++;
    // Whatever loss was counted as random so far may have been this queue's.
    this.#randomLoss = 0;
    this.#quietAcked = 0;
    this.#quietLost = 0;
    if (this.mode === "startup") this.fullBwReached = true;
    this.#undoInflightHi = this.inflightHi;
    const flight = Math.min(this.inflightHi, Math.max(e.txInFlight, this.minWindow));
    // Never below 0.7 x the model's BDP (BBRv3 bounds its cut so too): a flight the
    // application kept small (an echo that has only what arrived so far to send) says nothing
    // of what the path holds, and a bound set from it held the next bulk transfer there,
    // regrown by a packet a round while the other direction's queue showed in the RTT.
    this.inflightHi = Math.max(BETA * flight, BETA * this.#bdp(1), this.minWindow);
    this.#probeUpPackets = 1;
    if (this.cwnd > this.inflightHi) this.cwnd = this.inflightHi;
    return true;
  }

  onSpuriousLoss(): void {
    // Reordering, not loss: out of the loss-rate sample (Recovery counts it delivered).
    if (this.#sampleLost > 0) {
      this.#sampleLost--;
      this.#sampleAcked++;
    }
    if (this.#quietLost > 0) {
      this.#quietLost--;
      this.#quietAcked++;
    }
  }

  onPersistentCongestion(): void {
    // Nothing got through for several PTOs: start again from the minimum window; the
    // model (max_bw, min_rtt) stays, so the window regrows to it within a few rounds.
    this.cwnd = this.minWindow;
    this.#undoInflightHi = 0;
  }

  undo(): boolean {
    if (this.#undoInflightHi <= this.inflightHi) return false;
    this.inflightHi = this.#undoInflightHi;
    this.#undoInflightHi = 0;
    return true;
  }

  stats(): CongestionStats {
    return {
      state: this.mode,
      maxBwBytesPerMs: this.#bw.best,
      modelMinRttMs: this.minRtt === Infinity ? 0 : this.minRtt,
      pacingGain: this.pacingGain,
      inflightHiBytes: this.inflightHi === Infinity ? 0 : this.inflightHi,
      probeRttCount: this.probeRttCount,
      congestionEvents: this.congestionRounds,
      randomLossRatio: this.#randomLoss,
      firstFlightRateBytesPerMs: this.firstFlightRate,
    };
  }
}
