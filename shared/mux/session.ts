/**
 * A mux session over one DatagramConn: its lifecycle (graceful and immediate close),
 * its timers and its receive path, which hands each frame to the part it concerns:
 *
 * - streams_map.ts: streams by id, opening and accepting them, MAX_STREAMS, GOAWAY;
 * - conn_flow.ts: session flow control, and the checks incoming stream frames pass;
 * - control_frames.ts: the retransmittable control frames (encode, ACK, loss);
 * - packer.ts: the send loop: ACKs, control frames, stream data, PMTU probes;
 * - recovery.ts, ack_tracker.ts, pmtud.ts: loss recovery, when to ACK, packet size;
 * - congestion.ts (NewReno), bbr.ts, delivery_rate.ts: the congestion controller.
 *
 * See mod.ts for the public API, and docs/architecture.md ("Why we own the mux") for why
 * HopGate has its own stream layer over DTLS.
 */
import { setImmediate } from "node:timers";
import type { DatagramConn } from "../datagram.ts";
import { AckTracker } from "./ack_tracker.ts";
import { type Clock, realClock } from "./clock.ts";
import { ConnFlow } from "./conn_flow.ts";
import { AckFrequency, ControlFrames, Pings } from "./control_frames.ts";
import { MuxSessionError, SessionErrorCode } from "./errors.ts";
import { decodeFrame, decodePacketHeader, type Frame, FrameType } from "./frames.ts";
import { Packer } from "./packer.ts";
import { type MuxParams, resolveParams } from "./params.ts";
import { PathMtu } from "./pmtud.ts";
import { Recovery } from "./recovery.ts";
import { FrameKind, type SentFrame } from "./sent_frame.ts";
import type { Stream, StreamHost } from "./stream.ts";
import { StreamsMap } from "./streams_map.ts";
import type { MuxCloseInfo, MuxSessionOptions, MuxStats, MuxStream } from "./types.ts";
import { WarmUp, type WarmUpOptions, type WarmUpResult } from "./warm_up.ts";
import { Reader } from "./wire.ts";

export type { MuxCloseInfo, MuxSessionOptions, MuxStats } from "./types.ts";

type State = "open" | "draining" | "closed";

/**
 * A timer this late means the event loop stalled: silence is then judged again after
 * as long as the stall (at most STALL_RECHECK_MAX_MS), once the sockets were read.
 */
const STALL_MS = 250;
const STALL_RECHECK_MAX_MS = 1000;

/** How an immediate close goes. */
interface CloseHow {
  /** The peer closed the session (its CLOSE arrived). */
  remote?: boolean;
  /** Tell the peer: send CLOSE (twice, not retransmitted). */
  notifyPeer: boolean;
}

/**
 * Reliable, ordered, flow-controlled streams over one DatagramConn, which it owns: the
 * session attaches to it and closes it when the session ends. One end is the client,
 * the other the server.
 */
export class MuxSession {
  /** Which side this is: decides the parity of the stream ids it opens. */
  readonly role: "client" | "server";
  /** The resolved tunables (defaults plus the options' overrides). */
  readonly params: Readonly<MuxParams>;
  /** Resolves once the session has ended, however it ended; never rejects. */
  readonly closed: Promise<MuxCloseInfo>;
  /** The transport's ceiling; packets start smaller and grow by PMTU discovery (`packetSize`). */
  readonly maxDatagramSize: number;
  /** Resolves when the peer sent GOAWAY: open no more streams. */
  readonly goAwayReceived: Promise<void>;
  /** Bytes a stream's send buffer holds before `write` waits (`streamSendBufferBytes`). */
  readonly sendBufferLimit: number;

  readonly #conn: DatagramConn;
  readonly #clock: Clock;
  readonly #recovery: Recovery<SentFrame>;
  readonly #ack: AckTracker;
  readonly #pmtu: PathMtu;
  readonly #streams: StreamsMap;
  readonly #flow: ConnFlow;
  readonly #control: ControlFrames;
  readonly #packer: Packer;
  #state: State = "open";
  #closeInfo: MuxCloseInfo | null = null;
  #resolveClosed!: (i: MuxCloseInfo) => void;
  #resolveGoAway!: () => void;

  readonly #reader = new Reader(new Uint8Array(0));
  readonly #timerBound = () => this.#onTimer();
  #timer: unknown = null;
  #timerAt = Infinity;
  /** After a stall, silence is not judged before this (see #onTimer); -Infinity: no stall. */
  #stallRecheckAt = -Infinity;
  /** Releases the transport's hold (`#updateHold`), or null. */
  #hold: (() => void) | null = null;
  #lastReceiveTime: number;
  #drainDeadline = Infinity;
  #closeReason = "";
  readonly #pings: Pings;
  readonly #random: () => number;
  /** This keepalive cycle's wait (`keepAliveIntervalMs` less its jitter); Infinity: none. */
  #keepAliveWaitMs = Infinity;
  /** Graceful close: CLOSE queued as a reliable frame; done when acked or after 3 PTO. */
  #closeQueued = false;
  /** Peer's CLOSE seen in the packet being processed. */
  #remoteClose: { code: number; reason: string } | null = null;
  /** Streams whose waiting reader has data to be handed over (`#deliverLater`). */
  #toDeliver: Stream[] = [];
  /** The peer broke a rule: close and tell it. */
  readonly #fail = (code: number, reason: string) =>
    this.#closeNow(code, reason, { notifyPeer: true });

  readonly #stats = {
    packetsSent: 0,
    packetsReceived: 0,
    bytesRetransmitted: 0,
    framesRetransmitted: 0,
    tailCopyBytes: 0,
    duplicatePackets: 0,
    bytesSent: 0,
    bytesReceived: 0,
    streamBytesSent: 0,
    streamBytesReceived: 0,
    openWindowsLimited: 0,
    timestampsReceived: 0,
    warmUpPacketsSent: 0,
    warmUpBytesSent: 0,
  };
  /** The TIMESTAMP of the packet being read (NaN: it had none), in ms on the peer's clock. */
  #peerTimestampMs = NaN;

  /** Attaches to `conn` and starts at once; throws on invalid params or datagrams < 128 bytes. */
  constructor(conn: DatagramConn, options: MuxSessionOptions) {
    this.role = options.role;
    const p = this.params = resolveParams(options.params);
    this.#conn = conn;
    const clock = this.#clock = options.clock ?? realClock;
    this.#random = options.random ?? Math.random;
    this.#drawKeepAlive();
    this.maxDatagramSize = conn.maxDatagramSize;
    if (this.maxDatagramSize < 128) {
      throw new RangeError(`Cannot run mux: maxDatagramSize ${this.maxDatagramSize} is below 128`);
    }
    this.sendBufferLimit = p.streamSendBufferBytes;
    const pmtu = this.#pmtu = new PathMtu({
      baseBytes: p.pmtudBaseBytes,
      ceilingBytes: this.maxDatagramSize,
      maxProbes: p.pmtudMaxProbes,
      granularityBytes: p.pmtudGranularityBytes,
      raiseIntervalMs: p.pmtudRaiseIntervalMs,
      blackHoleLostPackets: p.pmtudBlackHoleLostPackets,
    });
    const recovery = this.#recovery = new Recovery<SentFrame>(p, pmtu.size, {
      onFrameAcked: (f) => this.#packer.onFrameAcked(f),
      onFrameLost: (f) => this.#packer.onFrameLost(f),
      onPacketAcked: (size) => pmtu.onPacketAcked(size),
      onPacketLost: (size) => {
        if (pmtu.onPacketLost(size, clock.now())) recovery.setMaxDatagramSize(pmtu.size);
      },
    });
    this.#ack = new AckTracker(p.maxAckRanges, p.ackElicitingThresholdPackets, p.maxAckDelayMs);
    const host: StreamHost = {
      sendBufferLimit: this.sendBufferLimit,
      sentUnackedLimit: p.maxStreamWindowBytes,
      sendable: (s) => this.#packer.queue(s),
      queueControl: (s, kind) => this.#control.queueStream(s, kind),
      consumed: (s, n) => this.#flow.onConsumed(s, n),
      maybeDone: (s) => this.#streamMaybeDone(s),
      deliverLater: (s) => this.#deliverLater(s),
    };
    const flow = this.#flow = new ConnFlow(p, clock, recovery, this.#stats, {
      fail: this.#fail,
      beyondPeerLimit: (s) => this.#streams.beyondPeerLimit(s),
      sendMaxData: () => this.#control.queueAndWake(FrameKind.MAX_DATA),
      sendMaxStreamData: (s) => this.#control.queueStream(s, FrameKind.MAX_STREAM_DATA),
    });
    const streams = this.#streams = new StreamsMap(this.role, p.maxIncomingStreams, host, flow, {
      grant: () => this.#control.queueAndWake(FrameKind.MAX_STREAMS),
      fail: this.#fail,
      onStream: options.onStream,
    });
    const ackFrequency = new AckFrequency(p);
    const control = this.#control = new ControlFrames({
      wake: () => this.#packer.schedule(),
      recvWindow: flow.recvWindow,
      streams,
      ackFrequency,
      pings: this.#pings = new Pings(clock),
      closeReason: () => this.#closeReason,
      onCloseAcked: () =>
        this.#closeNow(SessionErrorCode.NO_ERROR, this.#closeReason, { notifyPeer: false }),
    });
    // Advertise our windows and stream limit at once (there is no handshake).
    control.queue(FrameKind.MAX_DATA);
    control.queue(FrameKind.MAX_STREAMS);
    const now = clock.now();
    this.#packer = new Packer({
      conn,
      clock,
      recovery,
      ack: this.#ack,
      pmtu,
      control,
      ackFrequency,
      streams,
      flow,
      stats: this.#stats,
      blackHolePtos: p.pmtudBlackHolePtos,
      tailCopyLossRatio: p.tailCopyLossRatio,
      timerGranularityMs: p.timerGranularityMs,
      onFlushed: () => this.#armTimer(),
    }, now);
    this.#lastReceiveTime = now;
    this.closed = new Promise((r) => (this.#resolveClosed = r));
    this.goAwayReceived = new Promise((r) => (this.#resolveGoAway = r));
    conn.attach({
      onDatagram: (d) => this.#onDatagram(d),
      onPathChanged: () => this.#onPathChanged(),
      onClose: (reason) =>
        this.#closeNow(SessionErrorCode.TRANSPORT_CLOSED, reason || "transport closed", {
          notifyPeer: false,
        }),
    });
    this.#packer.schedule();
    this.#armTimer();
  }

  // ---------------------------------------------------------------- public API

  /** Opens a stream at once (no round trip). Throws after GOAWAY or close. */
  openStream(): MuxStream {
    if (this.#state !== "open") {
      throw new MuxSessionError(
        this.#closeInfo?.code ?? SessionErrorCode.NO_ERROR,
        false,
        "session closing",
      );
    }
    return this.#streams.open();
  }

  /** Next stream the peer opened, or null once the session is closed or going away. */
  acceptStream(): Promise<MuxStream | null> {
    return this.#streams.accept(this.#state === "closed");
  }

  /** Sends a PING; resolves with the round-trip time in ms when it is acknowledged. */
  ping(): Promise<number> {
    if (this.#state === "closed") {
      const i = this.#closeInfo!;
      return Promise.reject(new MuxSessionError(i.code, i.remote, i.reason));
    }
    const rtt = this.#pings.add();
    this.#control.queueAndWake(FrameKind.PING);
    return rtt;
  }

  /** Current packet size in bytes (path MTU discovery), at most `maxDatagramSize`. */
  get packetSize(): number {
    return this.#pmtu.size;
  }

  /** RTT estimates in ms (smoothed is the initial guess until a sample arrives). */
  get rtt(): { smoothedMs: number; minMs: number; latestMs: number; varianceMs: number } {
    const r = this.#recovery;
    return {
      smoothedMs: r.smoothedRtt,
      minMs: r.minRtt === Infinity ? 0 : r.minRtt,
      latestMs: r.latestRtt,
      varianceMs: r.rttVar,
    };
  }

  /**
   * Dates our ACKs from now on (TIMESTAMP frames): call it once the peer has said it reads
   * them (the tunnel's hello and welcome, FEATURE_ACK_TIMESTAMPS); a peer that does not
   * would close the session on the first one.
   */
  sendAckTimestamps(): void {
    this.#packer.timestamps = true;
  }

  /**
   * Warms the path up (warm_up.ts): fills what the window leaves with WARM_UP packets
   * until the congestion controller has measured the path's rate, or a bound. Call it only
   * once the peer has said it reads WARM_UP frames (the tunnel's hello and welcome,
   * FEATURE_WARM_UP). Resolves when it stops; a second call while one runs gets that one.
   */
  warmUp(o: WarmUpOptions = {}): Promise<WarmUpResult> {
    const running = this.#packer.warmUp;
    if (running !== null) return running.done;
    const now = this.#clock.now();
    const w = new WarmUp(now, o);
    if (this.#state !== "open") w.finish(now, "closed");
    else if (this.#recovery.cc.bandwidthKnown) w.finish(now, "not-needed");
    else this.#packer.startWarmUp(w);
    return w.done;
  }

  /** Tells the peer to open no more streams; streams it opened so far continue. */
  goAway(): void {
    if (this.#state === "closed" || !this.#streams.goAway()) return;
    this.#control.queueAndWake(FrameKind.GOAWAY);
  }

  /**
   * Graceful close: GOAWAY, wait until every byte written is acknowledged (at
   * most `closeDrainTimeoutMs`), then CLOSE. Resolves like `closed`.
   */
  close(reason = ""): Promise<MuxCloseInfo> {
    if (this.#state !== "open") return this.closed;
    this.#state = "draining";
    this.#closeReason = reason;
    this.goAway();
    this.#drainDeadline = this.#clock.now() + this.params.closeDrainTimeoutMs;
    this.#checkDrained();
    this.#armTimer();
    return this.closed;
  }

  /** Immediate close with an error code: sends CLOSE, fails every open stream. */
  abort(code: number = SessionErrorCode.INTERNAL_ERROR, reason = ""): void {
    this.#closeNow(code, reason, { notifyPeer: true });
  }

  /** Milliseconds since the last packet from the peer arrived (or since the session began). */
  get silentForMs(): number {
    return this.#clock.now() - this.#lastReceiveTime;
  }

  /** True once the session has ended (streams failed, transport closed). */
  get isClosed(): boolean {
    return this.#state === "closed";
  }

  /** Number of streams with state (not yet freed). */
  get activeStreams(): number {
    return this.#streams.size;
  }

  /** A fresh snapshot of the session's counters and gauges. */
  get stats(): MuxStats {
    const r = this.#recovery;
    const pm = this.#pmtu;
    const { send: sendBuf, recv: recvBuf } = this.#streams.bufferedBytes();
    const cc = r.cc.stats();
    return {
      ...this.#stats,
      packetsLost: r.packetsLost,
      srttMs: r.smoothedRtt,
      minRttMs: r.minRtt === Infinity ? 0 : r.minRtt,
      cwndBytes: r.cwnd,
      congestionControl: r.cc.name,
      congestionState: cc.state,
      pacingRateBytesPerSecond: r.pacingRate * 1000,
      pacingGain: cc.pacingGain,
      maxBandwidthBytesPerSecond: cc.maxBwBytesPerMs * 1000,
      modelMinRttMs: cc.modelMinRttMs,
      inflightHiBytes: cc.inflightHiBytes,
      probeRttCount: cc.probeRttCount,
      congestionEvents: cc.congestionEvents,
      randomLossRatio: cc.randomLossRatio,
      firstFlightRateBytesPerSecond: cc.firstFlightRateBytesPerMs * 1000,
      bytesInFlight: r.bytesInFlight,
      bufferedBytes: sendBuf + recvBuf,
      sendBufferedBytes: sendBuf,
      recvBufferedBytes: recvBuf,
      recvStreamCreditBytes: this.#flow.recvWindow.streamCredit,
      activeStreams: this.#streams.size,
      ptoCount: r.ptoCount,
      packetSizeBytes: pm.size,
      maxDatagramSize: this.maxDatagramSize,
      spuriousLosses: r.spuriousLosses,
      undoneReductions: r.undoneReductions,
      mtuProbesSent: pm.probesSent,
      mtuProbesLost: pm.probesLost,
      mtuBlackHoles: pm.blackHoles,
      mtuSearching: pm.searching,
    };
  }

  // ---------------------------------------------------------------- streams

  #streamMaybeDone(s: Stream): void {
    if (!s.finished) return;
    s.done = true;
    this.#flow.updateCredit(s);
    this.#streams.remove(s);
    this.#control.forgetStream(s);
    if (this.#state === "draining") this.#checkDrained();
  }

  // ---------------------------------------------------------------- receive path

  /**
   * Hands data to waiting readers after the current I/O turn: the UDP loop reads every
   * datagram already queued on its socket before a setImmediate runs, so a burst reaches
   * a reader as one chunk. Handed over per datagram, each became its own write to the
   * caller's or the origin's socket, ~20 % of either process's CPU on a 1215-byte path
   * (docs/congestion.md, "CPU per packet").
   */
  #deliverLater(s: Stream): void {
    if (s.deliverQueued) return;
    s.deliverQueued = true;
    this.#toDeliver.push(s);
    if (this.#toDeliver.length === 1) setImmediate(this.#deliverAll);
  }

  readonly #deliverAll = () => {
    const q = this.#toDeliver;
    this.#toDeliver = [];
    for (const s of q) {
      s.deliverQueued = false;
      s.deliver();
    }
  };

  #onDatagram(d: Uint8Array): void {
    if (this.#state === "closed") return;
    const now = this.#clock.now();
    const st = this.#stats;
    st.packetsReceived++;
    st.bytesReceived += d.length;
    const r = this.#reader;
    r.buf = d;
    r.pos = 0;
    r.end = d.length;
    r.error = null;
    const pn = decodePacketHeader(r);
    if (pn < 0) return; // not ours: drop
    if (this.#ack.isDuplicate(pn)) {
      st.duplicatePackets++;
      return;
    }
    this.#lastReceiveTime = now;
    this.#packer.unansweredSince = Infinity;
    this.#stallRecheckAt = -Infinity;
    let eliciting = false;
    /** Nothing but PING, PADDING and ACK: a keepalive, a PTO or a PMTU probe. */
    let probeOnly = true;
    this.#peerTimestampMs = NaN;
    while (r.pos < r.end) {
      if (d[r.pos] === FrameType.PADDING) {
        // A run of PADDING (PMTU probes): skip it without decoding byte by byte.
        let i = r.pos + 1;
        while (i < r.end && d[i] === 0) i++;
        r.pos = i;
        continue;
      }
      const f = decodeFrame(r);
      if (f === null) {
        this.#fail(SessionErrorCode.FRAME_ENCODING_ERROR, r.error ?? "bad frame");
        return;
      }
      if (
        f.type !== FrameType.ACK && f.type !== FrameType.PADDING && f.type !== FrameType.TIMESTAMP
      ) {
        eliciting = true;
        if (f.type !== FrameType.PING) probeOnly = false;
      }
      this.#onFrame(f, now);
      if (this.isClosed) return;
    }
    this.#ack.onPacket(pn, eliciting, now);
    // A probe is answered at once: its sender is waiting to learn whether the path
    // holds, and delaying the ACK would cost an idle node one more wake-up per
    // keepalive (the ACK's timer) for nothing to batch it with.
    if (eliciting && probeOnly) this.#ack.ackNow = true;
    const rc = this.#remoteClose;
    if (rc !== null) {
      // Acknowledge the CLOSE so the closer stops retransmitting it, then go.
      this.#packer.sendAckOnly(now);
      this.#closeNow(rc.code, rc.reason, { remote: true, notifyPeer: false });
      return;
    }
    this.#packer.schedule();
  }

  #onFrame(f: Frame, now: number): void {
    switch (f.type) {
      case FrameType.PADDING:
      case FrameType.PING:
      case FrameType.WARM_UP:
        return;
      case FrameType.TIMESTAMP:
        this.#peerTimestampMs = f.us / 1000;
        this.#stats.timestampsReceived++;
        return;
      case FrameType.ACK: {
        // Dated by a TIMESTAMP ahead of it: when its largest packet arrived, on the peer's clock.
        const arrivedMs = this.#peerTimestampMs - f.ackDelayUs / 1000;
        const acked = this.#recovery.onAck(f.ranges, f.ackDelayUs / 1000, now, arrivedMs);
        if (acked && this.#state === "draining") this.#checkDrained();
        return;
      }
      case FrameType.STREAM: {
        const s = this.#streams.getOrOpen(f.streamId);
        if (s !== null) this.#flow.onStreamFrame(s, f.offset, f.data, f.fin);
        return;
      }
      case FrameType.RESET_STREAM: {
        const s = this.#streams.getOrOpen(f.streamId);
        if (s !== null) this.#flow.onResetStream(s, f.code, f.finalSize);
        return;
      }
      case FrameType.STOP_SENDING: {
        const s = this.#streams.getOrOpen(f.streamId);
        if (s !== null) s.onStopSending(f.code);
        return;
      }
      case FrameType.MAX_DATA:
        if (this.#flow.onMaxData(f.max)) this.#packer.requeueAll();
        return;
      case FrameType.MAX_STREAM_DATA:
        this.#streams.getOrOpen(f.streamId)?.onMaxStreamData(f.max);
        return;
      case FrameType.MAX_STREAMS:
        if (this.#streams.onMaxStreams(f.max)) {
          this.#packer.requeueAll();
          for (const s of this.#streams.values()) {
            this.#control.requeueStream(s);
            if (s.local && s.credit === 0) this.#flow.updateCredit(s); // now on the wire
          }
        }
        return;
      case FrameType.CLOSE:
        this.#remoteClose = { code: f.code, reason: f.reason };
        return;
      case FrameType.ACK_FREQUENCY:
        this.#ack.setFrequency(
          f.seq,
          f.threshold,
          f.maxAckDelayUs / 1000,
          this.params.maxAckDelayMs,
        );
        return;
      case FrameType.GOAWAY:
        if (!this.#streams.onGoAway(f.lastStreamIdPlusOne, (s) => this.#control.forgetStream(s))) {
          return;
        }
        this.#resolveGoAway();
        if (this.#state === "draining") this.#checkDrained();
        return;
    }
  }

  // ---------------------------------------------------------------- timers

  #nextDeadline(): number {
    const p = this.params;
    let t = this.#recovery.lossDetectionDeadline;
    const ack = this.#ack;
    if (ack.pending && ack.ackDeadline < t) t = ack.ackDeadline;
    // After a stall, silence is judged again at #stallRecheckAt, not before.
    const idle = Math.max(this.#lastReceiveTime + p.idleTimeoutMs, this.#stallRecheckAt);
    if (idle < t) t = idle;
    const unanswered = Math.max(this.#unansweredDeadline(), this.#stallRecheckAt);
    if (unanswered < t) t = unanswered;
    const ka = Math.max(this.#lastReceiveTime, this.#packer.lastSendTime) + this.#keepAliveWaitMs;
    if (ka < t) t = ka;
    if (this.#packer.pacingAt < t) t = this.#packer.pacingAt;
    if (this.#drainDeadline < t) t = this.#drainDeadline;
    return t;
  }

  /** When the packets unanswered since the peer was last heard mean it is gone (Infinity: never). */
  #unansweredDeadline(): number {
    const ms = this.params.unansweredTimeoutMs;
    // A graceful close has its own deadline for an unanswered CLOSE (closingPeriodPtos).
    if (ms === 0 || this.#state !== "open") return Infinity;
    return this.#packer.unansweredSince + ms;
  }

  /** Draws the next keepalive wait: [1 - jitter, 1] x keepAliveIntervalMs, Infinity if off. */
  #drawKeepAlive(): void {
    const p = this.params;
    this.#keepAliveWaitMs = p.keepAliveIntervalMs === 0
      ? Infinity
      : p.keepAliveIntervalMs * (1 - p.keepAliveJitterRatio * this.#random());
  }

  #armTimer(): void {
    if (this.#state === "closed") return;
    this.#updateHold();
    const now = this.#clock.now();
    const t = coalesceDeadline(this.#nextDeadline(), now);
    if (t >= this.#timerAt) return;
    if (this.#timer !== null) this.#clock.clearTimer(this.#timer);
    this.#timerAt = t;
    this.#timer = this.#clock.setTimer(this.#timerBound, Math.max(0, t - now));
  }

  /**
   * Holds the transport's prompt delivery (DatagramConn.hold) while this side waits on
   * the peer for something: a stream it opened (a request: its answer), data in flight,
   * data queued. An idle session (keepalives, the peer's control stream) holds nothing.
   */
  #updateHold(): void {
    if (this.#conn.hold === undefined) return;
    const busy = this.#streams.localCount > 0 || this.#recovery.bytesInFlight > 0 ||
      this.#packer.hasQueuedStreams;
    if (busy === (this.#hold !== null)) return;
    if (busy) this.#hold = this.#conn.hold();
    else {
      this.#hold!();
      this.#hold = null;
    }
  }

  /**
   * The transport reaches the peer at a new address. The PTO backoff measured the old
   * one, and what is in flight may have gone there: probe now, as a PTO would, and
   * start the backoff again (RFC 9000 9.4 resets recovery on a new path; a NAT
   * rebinding keeps the same route, so the RTT and congestion state are kept).
   */
  #onPathChanged(): void {
    if (this.#state === "closed") return;
    this.#packer.probeOnNewPath(this.#clock.now());
    this.#packer.flush();
    this.#armTimer();
  }

  /**
   * True while silence must not be judged yet: the recheck after a stall is pending, or
   * this timer (due at `due`) fired more than STALL_MS late, which starts one. Deno runs
   * due timers before it reads the sockets, so after a stall (a busy or starved process)
   * what the peer sent in time may still wait there; it is read before the recheck.
   */
  #stalled(now: number, due: number): boolean {
    if (now < this.#stallRecheckAt) return true;
    if (now - due <= STALL_MS || this.#stallRecheckAt !== -Infinity) return false;
    this.#stallRecheckAt = now + Math.min(now - due, STALL_RECHECK_MAX_MS);
    return true;
  }

  #onTimer(): void {
    const due = this.#timerAt;
    this.#timer = null;
    this.#timerAt = Infinity;
    if (this.#state === "closed") return;
    const now = this.#clock.now();
    const p = this.params;
    const idle = now >= this.#lastReceiveTime + p.idleTimeoutMs;
    const unanswered = now >= this.#unansweredDeadline();
    // After a stall, silence is judged again at #stallRecheckAt instead.
    if ((idle || unanswered) && !this.#stalled(now, due)) {
      const reason = idle
        ? "idle timeout"
        : `no answer from the peer in ${p.unansweredTimeoutMs} ms`;
      this.#closeNow(SessionErrorCode.IDLE_TIMEOUT, reason, { notifyPeer: true });
      return;
    }
    if (now >= this.#drainDeadline) {
      if (this.#closeQueued) {
        // CLOSE went out but was never acknowledged: the peer is gone or closed too.
        this.#closeNow(SessionErrorCode.NO_ERROR, this.#closeReason, { notifyPeer: false });
      } else {
        this.#closeNow(SessionErrorCode.DRAIN_TIMEOUT, "close did not drain in time", {
          notifyPeer: true,
        });
      }
      return;
    }
    if (this.#recovery.lossDetectionDeadline <= now) this.#packer.onLossDetectionTimeout(now);
    const lastActive = Math.max(this.#lastReceiveTime, this.#packer.lastSendTime);
    if (now >= lastActive + this.#keepAliveWaitMs) {
      this.#control.queue(FrameKind.PING);
      this.#drawKeepAlive();
    }
    this.#packer.flush();
  }

  // ---------------------------------------------------------------- closing

  #checkDrained(): void {
    if (this.#state !== "draining" || this.#closeQueued) return;
    for (const s of this.#streams.values()) if (!s.sendSettled) return;
    // Everything written is acknowledged: send CLOSE reliably, wait for its ACK.
    this.#closeQueued = true;
    this.#control.queue(FrameKind.CLOSE);
    this.#drainDeadline = this.#clock.now() + this.params.closingPeriodPtos * this.#recovery.ptoMs;
    this.#timerAt = Infinity; // re-arm for the (possibly earlier) deadline
    if (this.#timer !== null) this.#clock.clearTimer(this.#timer);
    this.#timer = null;
    this.#packer.schedule();
  }

  /** Ends the session now: every stream fails, and the transport closes. */
  #closeNow(code: number, reason: string, how: CloseHow): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    const remote = how.remote ?? false;
    this.#closeInfo = { code, reason, remote };
    if (how.notifyPeer && !this.#conn.closed) {
      this.#packer.sendClose(code, reason, this.#clock.now());
    }
    if (this.#timer !== null) this.#clock.clearTimer(this.#timer);
    this.#timer = null;
    this.#timerAt = Infinity;
    this.#hold?.();
    this.#hold = null;
    const err = new MuxSessionError(code, remote, reason);
    const graceful = code === SessionErrorCode.NO_ERROR;
    for (const s of this.#streams.values()) s.onSessionClosed(err, graceful);
    this.#streams.clear();
    this.#flow.clear();
    this.#packer.clear();
    this.#control.clear();
    this.#recovery.clear();
    this.#pings.rejectAll(err);
    this.#conn.close(reason);
    this.#resolveClosed(this.#closeInfo);
  }
}

/**
 * A deadline more than 64 ms away, moved later onto a grid of at most 1/16 of the wait
 * (a power of two of milliseconds, at most 1024): the idle, keepalive and unanswered
 * timers of thousands of sessions then fire together, one wake-up of the process for
 * many of them, instead of one each. A wait is stretched by at most 1/16 (under 6.3 %),
 * never shortened; a deadline at most 64 ms away is kept exact.
 */
export function coalesceDeadline(t: number, now: number): number {
  const wait = t - now;
  if (!(wait > 64) || wait === Infinity) return t;
  let grid = 4;
  while (grid < 1024 && grid * 32 <= wait) grid *= 2;
  return Math.ceil(t / grid) * grid;
}
