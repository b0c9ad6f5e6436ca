/**
 * Every tunable of the mux, with its unit in its name and a line on why.
 * Defaults follow RFC 9002 where it gives one. `resolveParams` validates and
 * names the bad field.
 */

/** The congestion controllers `congestionControl` names (congestion.ts, bbr.ts). */
export type CongestionControlName = "newreno" | "bbr";
export const CONGESTION_CONTROLS: readonly CongestionControlName[] = ["newreno", "bbr"];

/** The mux's tunables (`defaultParams` holds their defaults); every field is required. */
export interface MuxParams {
  /** RTT assumed before the first sample (RFC 9002 §6.2.2 says 333; we target LAN/WAN tunnels). */
  initialRttMs: number;
  /** Longest we delay an ACK; advertised implicitly, used in PTO (RFC 9000 §13.2.1). */
  maxAckDelayMs: number;
  /** Send an ACK after this many ack-eliciting packets (RFC 9000 §13.2.2 recommends 2). */
  ackElicitingThresholdPackets: number;
  /**
   * During bulk transfer we ask the peer (ACK_FREQUENCY) to ack only every
   * cwnd/`ackFrequencyCwndDivisor` packets, at most this many; 0 disables.
   * Fewer ACKs halve the datagrams a Deno peer must receive and send.
   */
  ackFrequencyMaxPackets: number;
  /** The threshold we ask for is cwnd (in packets) divided by this (the draft suggests 4). */
  ackFrequencyCwndDivisor: number;
  /** ACK ranges kept and sent; older ranges are forgotten. */
  maxAckRanges: number;
  /** Reordering threshold in packets before declaring loss (RFC 9002 §6.1.1: 3). */
  packetThresholdPackets: number;
  /** Largest the reordering threshold grows to after spurious losses (a late ACK of a "lost" packet). */
  maxPacketThresholdPackets: number;
  /** Time threshold as a multiple of max(srtt, latest_rtt) (RFC 9002 §6.1.2: 9/8). */
  timeThresholdRatio: number;
  /** Timer granularity (RFC 9002 §6.1.2: 1 ms). */
  timerGranularityMs: number;
  /**
   * The congestion controller (congestion.ts; docs/congestion.md compares them):
   * "newreno" (RFC 9002 §7 with the loss tolerance and window cap below) or "bbr"
   * (bbr.ts: paces at the measured bottleneck rate, keeps its rate under random loss).
   * Both ends choose their own: it decides only how this side sends.
   */
  congestionControl: CongestionControlName;
  /** Initial congestion window, in packets (RFC 9002 §7.2: 10). */
  initialWindowPackets: number;
  /** Minimum congestion window, in packets (RFC 9002 §7.2: 2; BBR never goes below 4). */
  minimumWindowPackets: number;
  /** Upper bound on the congestion window; caps memory in flight. */
  maxCongestionWindowBytes: number;
  /** NewReno: multiplicative decrease on loss (RFC 9002 §7.3.2: 0.5). */
  lossReductionRatio: number;
  /**
   * NewReno: losses up to this fraction of the packets recently seen are taken as
   * random, not congestion: no reduction (BBRv2 uses 2 %). 0 gives classic NewReno.
   * BBR tolerates as much at a standing queue (`bbrQueueDelayRatio`).
   */
  lossToleranceRatio: number;
  /** Packets over which that loss rate is measured (decaying counts). */
  lossToleranceWindowPackets: number;
  /**
   * NewReno: the congestion window stops growing at 2 x the measured bandwidth-delay
   * product plus this many bytes of queue; 0 disables the cap. Keep it well under a
   * receiver's socket buffer (Linux default 208 KiB), which loss-based growth alone
   * overflows.
   */
  queueLimitBytes: number;
  /**
   * The BDP's RTT is the smallest sample within this window (a longer path is learned).
   * Also BBR's min_rtt window: when it was not seen again for this long, ProbeRTT.
   */
  queueBaseRttWindowMs: number;
  /**
   * The BDP's bandwidth is the largest delivery rate of this many window-limited rounds
   * (BBR: of this many rounds, app-limited samples counting only when they raise it).
   */
  bandwidthWindowRounds: number;
  /**
   * BBR: losing more than this fraction of the packets (judged over at least 200 packets
   * and a round trip) is congestion whatever the RTT. Well above random loss (a path that
   * loses 15 % at random is unusable anyway), below a queue overflowing under BBR's own
   * rate (a bottleneck that halved loses ~50 %).
   */
  bbrLossThresholdRatio: number;
  /**
   * BBR: losses detected while the RTT (the latest sample and a short average) stands
   * more than this fraction above min_rtt are congestion once the recent loss rate passes
   * `lossToleranceRatio`: a full queue. BBR's own probing queues ~0.25; a loss-based flow
   * sharing the bottleneck fills the queue before it drops. A queue standing through two
   * whole rounds makes BBR's window loss-based (AIMD) until it drains.
   */
  bbrQueueDelayRatio: number;
  /** BBR: how long ProbeRTT holds the window at half a BDP (and at least a round trip). */
  bbrProbeRttMs: number;
  /**
   * Tail copies: when the send queue runs empty after streams sent their last bytes, and
   * the controller takes the path's loss for random (BBR, not congested) with the recent
   * loss rate at least this, what those streams sent in the last half round trip goes out
   * once more (as far as the BDP exceeds what is in flight), so a loss there costs no
   * round trip (packer.ts). 1 turns them off.
   */
  tailCopyLossRatio: number;
  /**
   * BBR: a session's first full flight (its initial window) leaves back to back, and the
   * rate its ACKs come back at is the path's bottleneck rate, measured in one round trip
   * (first_flight.ts). Startup then begins at this fraction of it (a window of the
   * fraction x rate x min_rtt, paced at Startup's gain) instead of doubling up from the
   * initial window. 0 turns it off.
   */
  startupFirstFlightRatio: number;
  /** Durations of PTO-equivalents without an ack that mean persistent congestion (RFC 9002 §7.6: 3). */
  persistentCongestionThresholdPtos: number;
  /**
   * NewReno: pacing rate = this ratio x cwnd / srtt (RFC 9002 §7.7 suggests 1.25). BBR
   * paces at its phase's gain x its bandwidth estimate.
   */
  pacingGainRatio: number;
  /**
   * Packets the pacer may send back to back. BBR's bursts are 4 ms at its pacing rate (at
   * least 2 packets), at most this: 48 x 1215 bytes holds 4 ms at 100 Mbit/s, so a timer
   * that fires ~2 ms late (Deno's do) loses no rate.
   */
  pacingBurstPackets: number;
  /** ... and at most this many bytes: well under a receiver's socket buffer (Linux: 208 KiB). */
  pacingMaxBurstBytes: number;
  /**
   * A pacer out of tokens waits until it holds this many milliseconds' worth at the pacing
   * rate (at most half a burst, at least one packet), not one packet's worth. Waits under
   * 1 ms run on setImmediate, which spins the event loop: waiting one packet's worth at a
   * time (97 us at 100 Mbit/s) cost a sending client over half its CPU (docs/congestion.md).
   */
  pacingQuantumMs: number;
  /**
   * Hard cap on packets sent per second, 0 for none. Deno's UDP receive drops beyond
   * ~37k datagrams/s, so a sender to a Deno peer gains nothing above that.
   */
  maxSendRatePacketsPerSecond: number;
  /**
   * Path MTU discovery (RFC 8899): packets start at this size (QUIC's minimum,
   * safe on any path) and grow by probing up to the transport's maxDatagramSize.
   */
  pmtudBaseBytes: number;
  /** Losses of one probe size before it counts as too big (RFC 8899 MAX_PROBES). */
  pmtudMaxProbes: number;
  /** The search stops when the largest acked and smallest failed sizes are this close. */
  pmtudGranularityBytes: number;
  /** A finished search below the ceiling starts again after this long (RFC 8899 §5.1.1: 600 s). */
  pmtudRaiseIntervalMs: number;
  /** Packets above base lost in a row (none acked between) that mean a black hole: back to base. */
  pmtudBlackHoleLostPackets: number;
  /** Consecutive PTOs with packets above base in flight that mean a black hole, too. */
  pmtudBlackHolePtos: number;
  /**
   * Per-stream receive window announced once a stream is being read (grows with use up to
   * the max; the peer starts at the wire's 64 KiB). flow.ts explains the receive budget.
   */
  initialStreamWindowBytes: number;
  /**
   * Largest per-stream receive window auto-tuning may reach, and so the most one stream
   * buffers: 16 MiB keeps one stream at ~25 MB/s past 300 ms RTT. A stream gets it only
   * while the session's pool is free enough (`streamWindowShareRatio`).
   */
  maxStreamWindowBytes: number;
  /**
   * Session credit kept beyond what the streams hold (MAX_DATA = consumed + credit of the
   * streams + this): the whole session window while no stream has credit, then the room
   * new streams' first bytes share (64 KiB each on the wire default) before we hear of
   * them. Bytes parked in an unread stream count against that stream, never against this.
   */
  initialSessionWindowBytes: number;
  /**
   * The most the receiver commits per session (bytes buffered + in flight to it): MAX_DATA
   * never runs further than this past what was read or discarded. 32 MiB = the pool stream
   * windows grow from (22.5 MiB: one 16 MiB stream at 3/4) + headroom + reserve.
   */
  maxSessionWindowBytes: number;
  /**
   * A stream's window grows to at most this fraction of the pool (maxSessionWindowBytes -
   * headroom - reserve) the other streams leave: alone it gets 3/4 (16.9 MiB, above the
   * per-stream max), N read at once settle near pool / (N + 1/3) each, and streams that
   * stop reading keep no more than that share. 1 would let the first stream to stall
   * take the whole pool and leave concurrent streams unfair; much lower holds a lone bulk
   * stream under 16 MiB.
   */
  streamWindowShareRatio: number;
  /**
   * Fraction of maxSessionWindowBytes no stream window grows into (1/4: 8 MiB). Every
   * stream may keep the wire's 64 KiB whatever the pool says; this is what keeps those of
   * new streams that arrive after the pool was handed out (~140 of them, parked) under
   * the cap, so a stream waits for session credit only past that.
   */
  streamWindowReserveRatio: number;
  /**
   * Bytes written to a stream and not yet sent before `write` waits. Sent bytes stay
   * until acknowledged, beside these; the peer's window for the stream bounds them.
   */
  streamSendBufferBytes: number;
  /** Streams the peer may have open at once (we grant MAX_STREAMS as streams close). */
  maxIncomingStreams: number;
  /** Close the session after this long without hearing from the peer. */
  idleTimeoutMs: number;
  /**
   * Send a PING when nothing was sent or received for this long (must be < idle timeout);
   * 0 sends none: the peer's keepalives hold the session, and a dead peer is noticed by
   * its silence (`idleTimeoutMs`). A tunnel's server side sends none (tunnel_params.ts).
   */
  keepAliveIntervalMs: number;
  /**
   * Each wait for a keepalive is drawn anew from [1 - this, 1] x `keepAliveIntervalMs`,
   * so that sessions started together (a fleet reconnecting at once) spread their PINGs
   * out instead of sending them in the same millisecond forever. 0: no jitter; below 1.
   */
  keepAliveJitterRatio: number;
  /**
   * Close the session when a packet that asks for an ACK (a keepalive PING, data) has
   * brought nothing back from the peer for this long: the peer is gone, without waiting
   * for `idleTimeoutMs` of silence. Several PTO probes fit in it, so one lost packet does
   * not end a session. 0: only the idle timeout. Must be < idle timeout.
   */
  unansweredTimeoutMs: number;
  /** `close()` gives up draining after this long and closes anyway. */
  closeDrainTimeoutMs: number;
  /**
   * After a drained close, how long (in PTOs) CLOSE is retransmitted while waiting for
   * its ACK (RFC 9000 §10.2 uses 3 PTO; more covers lossier links: probes back off).
   */
  closingPeriodPtos: number;
}

/** The tunables that are numbers (all but `congestionControl`). */
type NumericParam = Exclude<keyof MuxParams, "congestionControl">;

/** The default value of every tunable (frozen); `resolveParams` starts from it. */
export const defaultParams: Readonly<MuxParams> = Object.freeze({
  initialRttMs: 100,
  maxAckDelayMs: 25,
  ackElicitingThresholdPackets: 2,
  ackFrequencyMaxPackets: 10,
  ackFrequencyCwndDivisor: 4,
  maxAckRanges: 32,
  packetThresholdPackets: 3,
  maxPacketThresholdPackets: 32,
  timeThresholdRatio: 9 / 8,
  timerGranularityMs: 1,
  congestionControl: "newreno",
  initialWindowPackets: 10,
  minimumWindowPackets: 2,
  maxCongestionWindowBytes: 16 * 1024 * 1024,
  lossReductionRatio: 0.5,
  lossToleranceRatio: 0.02,
  lossToleranceWindowPackets: 1000,
  queueLimitBytes: 64 * 1024,
  queueBaseRttWindowMs: 10_000,
  bandwidthWindowRounds: 10,
  bbrLossThresholdRatio: 0.15,
  bbrQueueDelayRatio: 0.5,
  bbrProbeRttMs: 200,
  tailCopyLossRatio: 0.005,
  startupFirstFlightRatio: 0.5,
  persistentCongestionThresholdPtos: 3,
  pacingGainRatio: 1.25,
  pacingBurstPackets: 48,
  pacingMaxBurstBytes: 64 * 1024,
  pacingQuantumMs: 2,
  maxSendRatePacketsPerSecond: 0,
  pmtudBaseBytes: 1200,
  pmtudMaxProbes: 3,
  pmtudGranularityBytes: 16,
  pmtudRaiseIntervalMs: 600_000,
  pmtudBlackHoleLostPackets: 6,
  pmtudBlackHolePtos: 2,
  initialStreamWindowBytes: 512 * 1024,
  maxStreamWindowBytes: 16 * 1024 * 1024,
  initialSessionWindowBytes: 1536 * 1024,
  maxSessionWindowBytes: 32 * 1024 * 1024,
  streamWindowShareRatio: 0.75,
  streamWindowReserveRatio: 0.25,
  streamSendBufferBytes: 1024 * 1024,
  maxIncomingStreams: 256,
  idleTimeoutMs: 30_000,
  keepAliveIntervalMs: 10_000,
  keepAliveJitterRatio: 0,
  unansweredTimeoutMs: 0,
  closeDrainTimeoutMs: 10_000,
  closingPeriodPtos: 10,
});

/** Merges overrides onto the defaults and validates; throws a TypeError naming the field. */
export function resolveParams(overrides: Partial<MuxParams> = {}): MuxParams {
  const p: MuxParams = { ...defaultParams, ...overrides };
  if (!CONGESTION_CONTROLS.includes(p.congestionControl)) {
    throw new TypeError(
      `Invalid mux param congestionControl: expected one of ${
        CONGESTION_CONTROLS.join(", ")
      }, got ${p.congestionControl}`,
    );
  }
  for (const [k, v] of Object.entries(p)) {
    if (k === "congestionControl") continue;
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0) {
      throw new TypeError(`Invalid mux param ${k}: expected a finite number >= 0, got ${v}`);
    }
  }
  const positive: NumericParam[] = [
    "initialRttMs",
    "ackElicitingThresholdPackets",
    "ackFrequencyCwndDivisor",
    "maxAckRanges",
    "packetThresholdPackets",
    "timeThresholdRatio",
    "timerGranularityMs",
    "initialWindowPackets",
    "minimumWindowPackets",
    "pacingGainRatio",
    "pacingBurstPackets",
    "pacingMaxBurstBytes",
    "lossToleranceWindowPackets",
    "queueBaseRttWindowMs",
    "bandwidthWindowRounds",
    "bbrLossThresholdRatio",
    "bbrQueueDelayRatio",
    "pmtudMaxProbes",
    "pmtudGranularityBytes",
    "pmtudBlackHoleLostPackets",
    "pmtudBlackHolePtos",
    "initialStreamWindowBytes",
    "initialSessionWindowBytes",
    "streamWindowShareRatio",
    "streamSendBufferBytes",
    "idleTimeoutMs",
  ];
  for (const k of positive) {
    if (p[k] <= 0) throw new TypeError(`Invalid mux param ${k}: expected > 0, got ${p[k]}`);
  }
  if (p.maxStreamWindowBytes < p.initialStreamWindowBytes) {
    throw new TypeError(
      `Invalid mux param maxStreamWindowBytes: expected >= initialStreamWindowBytes (${p.initialStreamWindowBytes}), got ${p.maxStreamWindowBytes}`,
    );
  }
  if (p.maxSessionWindowBytes < p.initialSessionWindowBytes) {
    throw new TypeError(
      `Invalid mux param maxSessionWindowBytes: expected >= initialSessionWindowBytes (${p.initialSessionWindowBytes}), got ${p.maxSessionWindowBytes}`,
    );
  }
  for (
    const k of [
      "streamWindowShareRatio",
      "streamWindowReserveRatio",
      "bbrLossThresholdRatio",
      "tailCopyLossRatio",
      "startupFirstFlightRatio",
    ] as const
  ) {
    if (p[k] > 1) throw new TypeError(`Invalid mux param ${k}: expected <= 1, got ${p[k]}`);
  }
  if (p.keepAliveJitterRatio >= 1) {
    throw new TypeError(
      `Invalid mux param keepAliveJitterRatio: expected < 1, got ${p.keepAliveJitterRatio}`,
    );
  }
  for (const k of ["keepAliveIntervalMs", "unansweredTimeoutMs"] as const) {
    if (p[k] >= p.idleTimeoutMs) {
      throw new TypeError(
        `Invalid mux param ${k}: expected < idleTimeoutMs (${p.idleTimeoutMs}), got ${p[k]}`,
      );
    }
  }
  const wire: [NumericParam, number][] = [
    ["initialStreamWindowBytes", WIRE_INITIAL_STREAM_WINDOW_BYTES],
    ["initialSessionWindowBytes", WIRE_INITIAL_SESSION_WINDOW_BYTES],
    ["maxIncomingStreams", WIRE_INITIAL_MAX_STREAMS],
  ];
  for (const [k, min] of wire) {
    if (p[k] < min) {
      throw new TypeError(
        `Invalid mux param ${k}: expected >= ${min} (the wire's initial credit), got ${p[k]}`,
      );
    }
  }
  if (p.pmtudBaseBytes < 128) {
    throw new TypeError(
      `Invalid mux param pmtudBaseBytes: expected >= 128, got ${p.pmtudBaseBytes}`,
    );
  }
  if (p.timeThresholdRatio < 1) {
    throw new TypeError(
      `Invalid mux param timeThresholdRatio: expected >= 1, got ${p.timeThresholdRatio}`,
    );
  }
  return p;
}

/**
 * Credit each side assumes the peer grants before its first MAX_* frame arrives
 * (there is no handshake to carry transport parameters). Part of the wire
 * protocol: both sides must agree; local params may only be larger.
 */
export const WIRE_INITIAL_STREAM_WINDOW_BYTES = 64 * 1024;
/** Session credit (MAX_DATA) assumed before the peer's first MAX_DATA. */
export const WIRE_INITIAL_SESSION_WINDOW_BYTES = 256 * 1024;
/** Streams the peer may open before our first MAX_STREAMS. */
export const WIRE_INITIAL_MAX_STREAMS = 4;
