/**
 * A mux session over one DatagramConn: one receive path (onDatagram) and one
 * send loop (#flush) per session. See mod.ts for the public API and DESIGN.md
 * "Mux" for the why.
 *
 * Send order inside each packet: ACK, then control frames (they jump the
 * queue), then stream data — retransmissions before new data — round-robin
 * across streams so no stream starves and none blocks another.
 */
import type { DatagramConn } from "../datagram.ts";
import { AckTracker } from "./ack_tracker.ts";
import { type Clock, realClock } from "./clock.ts";
import { MuxSessionError, SessionErrorCode, StreamErrorCode } from "./errors.ts";
import { ReceiveWindow, SessionReceiveWindow } from "./flow.ts";
import {
  ackFrameLength,
  decodeFrame,
  decodePacketHeader,
  encodeAck,
  encodeAckFrequency,
  encodeClose,
  encodeGoAway,
  encodeMaxData,
  encodeMaxStreamData,
  encodeMaxStreams,
  encodePacketHeader,
  encodeResetStream,
  encodeStopSending,
  encodeStreamHeader,
  type Frame,
  FrameType,
  MAX_CONTROL_FRAME_LENGTH,
  packetHeaderLength,
  streamFrameOverhead,
} from "./frames.ts";
import {
  type MuxParams,
  resolveParams,
  WIRE_INITIAL_MAX_STREAMS,
  WIRE_INITIAL_SESSION_WINDOW_BYTES,
  WIRE_INITIAL_STREAM_WINDOW_BYTES,
} from "./params.ts";
import { PathMtu } from "./pmtud.ts";
import { Recovery } from "./recovery.ts";
import { type MuxStream, Stream, type StreamHost } from "./stream.ts";
import { Reader, Writer } from "./wire.ts";
import { setImmediate } from "node:timers";

export interface MuxSessionOptions {
  /** Client-opened stream ids are even, server-opened odd. */
  role: "client" | "server";
  clock?: Clock;
  params?: Partial<MuxParams>;
  /** Called for each stream the peer opens. Without it, use `acceptStream()`. */
  onStream?: (stream: MuxStream) => void;
}

/** Why and how a session ended. */
export interface MuxCloseInfo {
  code: number;
  reason: string;
  /** True if the peer closed it. */
  remote: boolean;
}

export interface MuxStats {
  packetsSent: number;
  packetsReceived: number;
  packetsLost: number;
  /** Bytes of stream data sent again after loss or PTO. */
  bytesRetransmitted: number;
  /** Frames of stream data sent again. */
  framesRetransmitted: number;
  duplicatePackets: number;
  bytesSent: number;
  bytesReceived: number;
  /** Application bytes sent / delivered to readers. */
  streamBytesSent: number;
  streamBytesReceived: number;
  srttMs: number;
  minRttMs: number;
  cwndBytes: number;
  bytesInFlight: number;
  /** Bytes held in all streams' send and receive buffers. */
  bufferedBytes: number;
  sendBufferedBytes: number;
  recvBufferedBytes: number;
  /**
   * Receive credit the open streams hold: the most they may yet buffer (flow.ts). With
   * the headroom, the session's receive commitment, capped at maxSessionWindowBytes.
   */
  recvStreamCreditBytes: number;
  activeStreams: number;
  ptoCount: number;
  /** Current packet size (path MTU discovery) and the transport's ceiling. */
  packetSizeBytes: number;
  maxDatagramSize: number;
  /** Losses later disproved by an ACK, and congestion reductions undone for them. */
  spuriousLosses: number;
  undoneReductions: number;
  mtuProbesSent: number;
  mtuProbesLost: number;
  mtuBlackHoles: number;
  /** PMTU discovery is probing (false once the search ended, until the raise timer). */
  mtuSearching: boolean;
}

/** Kinds of frames remembered per sent packet, for ack and loss handling. */
const K_STREAM = 0;
const K_RESET = 1;
const K_STOP = 2;
const K_MAX_STREAM_DATA = 3;
const K_MAX_DATA = 4;
const K_MAX_STREAMS = 5;
const K_GOAWAY = 6;
const K_PING = 7;
const K_CLOSE = 8;
const K_ACK_FREQUENCY = 9;
/** A PMTU probe (PING + PADDING); `off` holds its size. */
const K_MTU_PROBE = 10;

class SentFrame {
  constructor(
    readonly k: number,
    readonly s: Stream | null,
    readonly off: number,
    readonly len: number,
    readonly fin: boolean,
  ) {}
}
const SF_MAX_DATA = new SentFrame(K_MAX_DATA, null, 0, 0, false);
const SF_MAX_STREAMS = new SentFrame(K_MAX_STREAMS, null, 0, 0, false);
const SF_GOAWAY = new SentFrame(K_GOAWAY, null, 0, 0, false);
const SF_PING = new SentFrame(K_PING, null, 0, 0, false);
const SF_CLOSE = new SentFrame(K_CLOSE, null, 0, 0, false);

type State = "open" | "draining" | "closed";

export class MuxSession implements StreamHost {
  readonly role: "client" | "server";
  readonly params: Readonly<MuxParams>;
  readonly closed: Promise<MuxCloseInfo>;
  /** The transport's ceiling; packets start smaller and grow by PMTU discovery (`packetSize`). */
  readonly maxDatagramSize: number;
  /** Resolves when the peer sent GOAWAY: open no more streams. */
  readonly goAwayReceived: Promise<void>;
  readonly sendBufferLimit: number;

  readonly #conn: DatagramConn;
  readonly #clock: Clock;
  readonly #recovery: Recovery<SentFrame>;
  readonly #ack: AckTracker;
  readonly #pmtu: PathMtu;
  readonly #onStream: ((s: MuxStream) => void) | undefined;
  #state: State = "open";
  #closeInfo: MuxCloseInfo | null = null;
  #resolveClosed!: (i: MuxCloseInfo) => void;
  #resolveGoAway!: () => void;

  // Streams.
  readonly #streams = new Map<number, Stream>();
  #nextLocalIndex = 0;
  /** Next peer stream index not yet seen. */
  #nextPeerIndex = 0;
  /** Peer streams allowed (cumulative), what we advertised. */
  #localMaxStreams: number;
  /** The largest MAX_STREAMS sent so far (the peer's view, once it arrives). */
  #advertisedMaxStreams = WIRE_INITIAL_MAX_STREAMS;
  /** Our streams the peer allows (cumulative). */
  #peerMaxStreams = WIRE_INITIAL_MAX_STREAMS;
  #maxStreamsPending = true;
  #sendQueue: Stream[] = [];
  #controlSet = new Set<Stream>();
  #acceptQueue: Stream[] = [];
  #acceptWaiters: ((s: MuxStream | null) => void)[] = [];
  #goAwaySent = false;
  #goAwayPending = false;
  /** Peer streams with index >= this are refused (after our GOAWAY). */
  #goAwayLimitIndex = Infinity;
  #peerGoAway = false;

  // Session flow control.
  readonly #recvWindow: SessionReceiveWindow;
  #recvHighestTotal = 0;
  #maxDataPending = true;
  #sendMax = WIRE_INITIAL_SESSION_WINDOW_BYTES;
  #sentNewTotal = 0;

  // Packets and timers.
  #nextPn = 0;
  readonly #scratch: Uint8Array;
  /** The transport is done with a sent buffer when `send` returns (`DatagramConn.sendCopies`). */
  readonly #sendCopies: boolean;
  readonly #writer: Writer;
  readonly #reader = new Reader(new Uint8Array(0));
  #flushScheduled = false;
  readonly #flushBound = () => this.#flush();
  readonly #timerBound = () => this.#onTimer();
  #timer: unknown = null;
  #timerAt = Infinity;
  #pacingAt = Infinity;
  #lastReceiveTime: number;
  #lastSendTime: number;
  #drainDeadline = Infinity;
  #closeReason = "";
  #pingPending = false;
  #pingWaiters: { start: number; resolve: (ms: number) => void; reject: (e: unknown) => void }[] =
    [];
  /** Graceful close: CLOSE queued as a reliable frame; done when acked or after 3 PTO. */
  #closeQueued = false;
  #closePending = false;
  // ACK_FREQUENCY we asked of the peer (threshold in packets, delay in ms).
  #ackFreqSeq = -1;
  #ackFreqThreshold: number;
  #ackFreqDelayMs: number;
  #ackFreqPending = false;
  #ackFreqSentAt = -Infinity;
  /** Peer's CLOSE seen in the packet being processed. */
  #remoteClose: { code: number; reason: string } | null = null;

  #stats = {
    packetsSent: 0,
    packetsReceived: 0,
    bytesRetransmitted: 0,
    framesRetransmitted: 0,
    duplicatePackets: 0,
    bytesSent: 0,
    bytesReceived: 0,
    streamBytesSent: 0,
    streamBytesReceived: 0,
  };

  constructor(conn: DatagramConn, options: MuxSessionOptions) {
    this.role = options.role;
    this.params = resolveParams(options.params);
    this.#conn = conn;
    this.#clock = options.clock ?? realClock;
    this.#onStream = options.onStream;
    this.maxDatagramSize = conn.maxDatagramSize;
    if (this.maxDatagramSize < 128) {
      throw new RangeError(`Cannot run mux: maxDatagramSize ${this.maxDatagramSize} is below 128`);
    }
    this.sendBufferLimit = this.params.streamSendBufferBytes;
    this.#scratch = new Uint8Array(this.maxDatagramSize);
    this.#sendCopies = conn.sendCopies === true;
    this.#writer = new Writer(this.#scratch);
    const p = this.params;
    this.#pmtu = new PathMtu({
      baseBytes: p.pmtudBaseBytes,
      ceilingBytes: this.maxDatagramSize,
      maxProbes: p.pmtudMaxProbes,
      granularityBytes: p.pmtudGranularityBytes,
      raiseIntervalMs: p.pmtudRaiseIntervalMs,
      blackHoleLostPackets: p.pmtudBlackHoleLostPackets,
    });
    this.#recovery = new Recovery<SentFrame>(this.params, this.#pmtu.size, {
      onFrameAcked: (f) => this.#onFrameAcked(f),
      onFrameLost: (f) => this.#onFrameLost(f),
      onPacketAcked: (size) => this.#pmtu.onPacketAcked(size),
      onPacketLost: (size) => {
        if (this.#pmtu.onPacketLost(size, this.#clock.now())) {
          this.#recovery.setMaxDatagramSize(this.#pmtu.size);
        }
      },
    });
    this.#ack = new AckTracker(
      this.params.maxAckRanges,
      this.params.ackElicitingThresholdPackets,
      this.params.maxAckDelayMs,
    );
    this.#ackFreqThreshold = this.params.ackElicitingThresholdPackets;
    this.#ackFreqDelayMs = this.params.maxAckDelayMs;
    this.#localMaxStreams = this.params.maxIncomingStreams;
    this.#recvWindow = new SessionReceiveWindow({
      maxBytes: p.maxSessionWindowBytes,
      headroomBytes: p.initialSessionWindowBytes,
      reserveBytes: p.maxSessionWindowBytes * p.streamWindowReserveRatio,
      shareRatio: p.streamWindowShareRatio,
      floorBytes: WIRE_INITIAL_STREAM_WINDOW_BYTES,
    });
    const now = this.#clock.now();
    this.#lastReceiveTime = now;
    this.#lastSendTime = now;
    this.closed = new Promise((r) => (this.#resolveClosed = r));
    this.goAwayReceived = new Promise((r) => (this.#resolveGoAway = r));
    conn.attach({
      onDatagram: (d) => this.#onDatagram(d),
      onClose: (reason) =>
        this.#closeNow(
          SessionErrorCode.TRANSPORT_CLOSED,
          reason || "transport closed",
          false,
          false,
        ),
    });
    // Advertise our windows and stream limit at once (there is no handshake).
    this.#scheduleFlush();
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
    if (this.#peerGoAway) {
      throw new MuxSessionError(SessionErrorCode.NO_ERROR, true, "peer sent GOAWAY");
    }
    const index = this.#nextLocalIndex++;
    const s = this.#newStream(index * 2 + (this.role === "server" ? 1 : 0), true);
    return s;
  }

  /** Next stream the peer opened, or null once the session is closed or going away. */
  acceptStream(): Promise<MuxStream | null> {
    const s = this.#acceptQueue.shift();
    if (s !== undefined) return Promise.resolve(s);
    if (this.#state === "closed") return Promise.resolve(null);
    return new Promise((r) => this.#acceptWaiters.push(r));
  }

  /** Sends a PING; resolves with the round-trip time in ms when it is acknowledged. */
  ping(): Promise<number> {
    if (this.#state === "closed") return Promise.reject(this.#closedError());
    return new Promise((resolve, reject) => {
      this.#pingWaiters.push({ start: this.#clock.now(), resolve, reject });
      this.#pingPending = true;
      this.#scheduleFlush();
    });
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

  /** Tells the peer to open no more streams; streams it opened so far continue. */
  goAway(): void {
    if (this.#goAwaySent || this.#state === "closed") return;
    this.#goAwaySent = true;
    this.#goAwayPending = true;
    this.#goAwayLimitIndex = this.#nextPeerIndex;
    this.#scheduleFlush();
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
    this.#closeNow(code, reason, false, true);
  }

  get isClosed(): boolean {
    return this.#state === "closed";
  }

  /** Number of streams with state (not yet freed). */
  get activeStreams(): number {
    return this.#streams.size;
  }

  get stats(): MuxStats {
    const r = this.#recovery;
    let sendBuf = 0;
    let recvBuf = 0;
    for (const s of this.#streams.values()) {
      sendBuf += s.send.buffered;
      recvBuf += s.recv.buffered;
    }
    return {
      ...this.#stats,
      packetsLost: r.packetsLost,
      srttMs: r.smoothedRtt,
      minRttMs: r.minRtt === Infinity ? 0 : r.minRtt,
      cwndBytes: r.cwnd,
      bytesInFlight: r.bytesInFlight,
      bufferedBytes: sendBuf + recvBuf,
      sendBufferedBytes: sendBuf,
      recvBufferedBytes: recvBuf,
      recvStreamCreditBytes: this.#recvWindow.streamCredit,
      activeStreams: this.#streams.size,
      ptoCount: r.ptoCount,
      packetSizeBytes: this.#pmtu.size,
      maxDatagramSize: this.maxDatagramSize,
      spuriousLosses: r.spuriousLosses,
      undoneReductions: r.undoneReductions,
      mtuProbesSent: this.#pmtu.probesSent,
      mtuProbesLost: this.#pmtu.probesLost,
      mtuBlackHoles: this.#pmtu.blackHoles,
      mtuSearching: this.#pmtu.searching,
    };
  }

  // ---------------------------------------------------------------- StreamHost

  streamSendable(s: Stream): void {
    if (this.#state === "closed") return;
    if (!s.inSendQueue) {
      s.inSendQueue = true;
      this.#sendQueue.push(s);
    }
    this.#scheduleFlush();
  }

  streamControl(s: Stream): void {
    if (this.#state === "closed") return;
    this.#controlSet.add(s);
    this.#scheduleFlush();
  }

  streamConsumed(s: Stream, n: number): void {
    if (this.#state === "closed") return;
    this.#stats.streamBytesReceived += n;
    const w = s.window;
    w.consumed += n;
    const sw = this.#recvWindow;
    sw.consumed += n;
    if (s.recv.finalSize < 0 && s.recvState === "open" && w.wantsUpdate) {
      // The window grows (or shrinks) within the share of the pool the others leave.
      w.update(this.#clock.now(), this.#recovery.smoothedRtt, sw.streamCap(s.credit));
      s.maxStreamDataPending = true;
      this.streamControl(s);
    }
    this.#updateCredit(s);
  }

  /**
   * Recomputes what the peer may still send on s (0 once its receive half is no longer
   * open: later data is discarded on arrival; 0 for our stream the peer cannot know of
   * yet, beyond its MAX_STREAMS) and re-sends MAX_DATA if the session limit lags (flow.ts).
   */
  #updateCredit(s: Stream): void {
    const r = s.recv;
    const credit = s.recvState === "open" && !s.done &&
        !(s.local && Math.floor(s.id / 2) >= this.#peerMaxStreams)
      ? (r.finalSize >= 0 ? r.finalSize : s.window.limit) - r.readOffset
      : 0;
    const sw = this.#recvWindow;
    sw.streamCredit += credit - s.credit;
    s.credit = credit;
    if (sw.wantsUpdate && this.#state !== "closed") {
      sw.update();
      this.#maxDataPending = true;
      this.#scheduleFlush();
    }
  }

  streamMaybeDone(s: Stream): void {
    if (s.done || !s.sendDone || !s.recvDone) return;
    if (s.resetPending || s.stopPending) return;
    s.done = true;
    this.#updateCredit(s);
    this.#streams.delete(s.id);
    this.#controlSet.delete(s);
    if (!s.local) {
      // Grant the peer a replacement stream (announced in batches: #maybeGrantStreams).
      this.#localMaxStreams++;
      this.#maybeGrantStreams();
    }
    if (this.#state === "draining") this.#checkDrained();
  }

  /**
   * Sends MAX_STREAMS once the peer has used half of the credit it knows of, not
   * once per finished stream (one eliciting packet per request otherwise).
   */
  #maybeGrantStreams(): void {
    const adv = this.#advertisedMaxStreams;
    if (
      this.#localMaxStreams > adv &&
      adv - this.#nextPeerIndex <= this.params.maxIncomingStreams / 2
    ) {
      this.#maxStreamsPending = true;
      this.#scheduleFlush();
    }
  }

  // ---------------------------------------------------------------- streams

  #newStream(id: number, local: boolean): Stream {
    // The peer starts at the wire default; the larger window goes out once the
    // stream has used half of that (streamConsumed), not with every new stream.
    const win = new ReceiveWindow(
      this.params.initialStreamWindowBytes,
      this.params.maxStreamWindowBytes,
      WIRE_INITIAL_STREAM_WINDOW_BYTES,
    );
    const s = new Stream(this, id, local, WIRE_INITIAL_STREAM_WINDOW_BYTES, win);
    this.#streams.set(id, s);
    this.#updateCredit(s);
    return s;
  }

  /** Finds or implicitly opens the stream a frame refers to; null if closed. */
  #streamFor(id: number): Stream | null {
    const s = this.#streams.get(id);
    if (s !== undefined) return s;
    const local = (id & 1) === (this.role === "server" ? 1 : 0);
    const index = Math.floor(id / 2);
    if (local) {
      if (index >= this.#nextLocalIndex) {
        this.#closeNow(
          SessionErrorCode.STREAM_STATE_ERROR,
          `frame for unopened stream ${id}`,
          false,
          true,
        );
      }
      return null;
    }
    if (index < this.#nextPeerIndex) return null; // already closed
    if (index >= this.#localMaxStreams) {
      this.#closeNow(
        SessionErrorCode.STREAM_LIMIT_ERROR,
        `stream ${id} exceeds limit ${this.#localMaxStreams}`,
        false,
        true,
      );
      return null;
    }
    let found: Stream | null = null;
    for (let i = this.#nextPeerIndex; i <= index; i++) {
      const sid = i * 2 + (this.role === "server" ? 0 : 1);
      const ns = this.#newStream(sid, false);
      if (i >= this.#goAwayLimitIndex) {
        ns.reset(StreamErrorCode.REFUSED);
        ns.stopSending(StreamErrorCode.REFUSED);
      } else this.#announce(ns);
      if (i === index) found = ns;
    }
    this.#nextPeerIndex = index + 1;
    this.#maybeGrantStreams();
    return found;
  }

  #announce(s: Stream): void {
    if (this.#onStream !== undefined) {
      this.#onStream(s);
      return;
    }
    const w = this.#acceptWaiters.shift();
    if (w !== undefined) w(s);
    else this.#acceptQueue.push(s);
  }

  // ---------------------------------------------------------------- receive path

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
    let eliciting = false;
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
        this.#closeNow(SessionErrorCode.FRAME_ENCODING_ERROR, r.error ?? "bad frame", false, true);
        return;
      }
      if (f.type !== FrameType.ACK && f.type !== FrameType.PADDING) {
        eliciting = true;
      }
      this.#onFrame(f, now);
      if (this.isClosed) return;
    }
    this.#ack.onPacket(pn, eliciting, now);
    const rc = this.#remoteClose;
    if (rc !== null) {
      // Acknowledge the CLOSE so the closer stops retransmitting it, then go.
      this.#sendAckOnly(now);
      this.#closeNow(rc.code, rc.reason, true, false);
      return;
    }
    this.#scheduleFlush();
  }

  #sendAckOnly(now: number): void {
    const w = this.#writer;
    w.pos = 0;
    encodePacketHeader(w, this.#nextPn++);
    this.#writeAck(w, now);
    this.#conn.send(this.#scratch.slice(0, w.pos));
  }

  #onFrame(f: Frame, now: number): void {
    switch (f.type) {
      case FrameType.PADDING:
      case FrameType.PING:
        return;
      case FrameType.ACK: {
        const acked = this.#recovery.onAck(f.ranges, f.ackDelayUs / 1000, now);
        if (acked && this.#state === "draining") this.#checkDrained();
        return;
      }
      case FrameType.STREAM:
        return this.#onStreamFrame(f.streamId, f.offset, f.data, f.fin);
      case FrameType.RESET_STREAM: {
        const s = this.#streamFor(f.streamId);
        if (s === null) return;
        if (!this.#checkFinalSize(s, f.finalSize)) return;
        this.#accountReceived(s, f.finalSize);
        if (this.#state === "closed") return;
        s.onReset(f.code, f.finalSize);
        this.#updateCredit(s);
        return;
      }
      case FrameType.STOP_SENDING: {
        const s = this.#streamFor(f.streamId);
        if (s !== null) s.onStopSending(f.code);
        return;
      }
      case FrameType.MAX_DATA:
        if (f.max > this.#sendMax) {
          this.#sendMax = f.max;
          this.#requeueAll();
        }
        return;
      case FrameType.MAX_STREAM_DATA: {
        const s = this.#streamFor(f.streamId);
        if (s !== null && f.max > s.sendMax) {
          s.sendMax = f.max;
          this.streamSendable(s);
        }
        return;
      }
      case FrameType.MAX_STREAMS:
        if (f.max > this.#peerMaxStreams) {
          this.#peerMaxStreams = f.max;
          this.#requeueAll();
          for (const s of this.#streams.values()) {
            if (s.resetPending || s.stopPending || s.maxStreamDataPending) this.streamControl(s);
            if (s.local && s.credit === 0) this.#updateCredit(s); // now on the wire
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
      case FrameType.GOAWAY: {
        if (this.#peerGoAway) return;
        this.#peerGoAway = true;
        const refused = new MuxSessionError(
          SessionErrorCode.NO_ERROR,
          true,
          "refused after GOAWAY",
        );
        for (const s of [...this.#streams.values()]) {
          if (s.local && s.id >= f.lastStreamIdPlusOne) {
            s.onSessionClosed(refused, false);
            this.#updateCredit(s);
            this.#streams.delete(s.id);
          }
        }
        this.#resolveGoAway();
        if (this.#state === "draining") this.#checkDrained();
        return;
      }
    }
  }

  #checkFinalSize(s: Stream, finalSize: number): boolean {
    const known = s.recv.finalSize;
    if ((known >= 0 && known !== finalSize) || finalSize < s.recv.highest) {
      this.#closeNow(
        SessionErrorCode.FINAL_SIZE_ERROR,
        `stream ${s.id} final size changed`,
        false,
        true,
      );
      return false;
    }
    return true;
  }

  /** Flow-control accounting for data up to `end` on stream s. */
  #accountReceived(s: Stream, end: number): void {
    const prev = s.recv.highest;
    if (end <= prev) return;
    if (end > s.window.limit) {
      this.#closeNow(
        SessionErrorCode.FLOW_CONTROL_ERROR,
        `stream ${s.id} data to ${end} exceeds window ${s.window.limit}`,
        false,
        true,
      );
      return;
    }
    this.#recvHighestTotal += end - prev;
    if (this.#recvHighestTotal > this.#recvWindow.limit) {
      this.#closeNow(
        SessionErrorCode.FLOW_CONTROL_ERROR,
        `session data exceeds window`,
        false,
        true,
      );
      return;
    }
    s.recv.highest = end;
  }

  #onStreamFrame(id: number, offset: number, data: Uint8Array, fin: boolean): void {
    const s = this.#streamFor(id);
    if (s === null) return;
    const end = offset + data.length;
    if (fin && !this.#checkFinalSize(s, end)) return;
    if (s.recv.finalSize >= 0 && end > s.recv.finalSize) {
      this.#closeNow(
        SessionErrorCode.FINAL_SIZE_ERROR,
        `stream ${id} data past final size`,
        false,
        true,
      );
      return;
    }
    if (s.recvState === "reset" || s.recvState === "closed") return;
    const prevHighest = s.recv.highest;
    this.#accountReceived(s, end);
    if (this.#state === "closed") return;
    if (fin) {
      s.recv.finalSize = end;
      this.#updateCredit(s);
    }
    if (s.recvState === "stopped") {
      // Discard, but return the credit.
      if (end > prevHighest) this.streamConsumed(s, end - prevHighest);
      s.recv.readOffset = s.recv.highest;
      if (fin) {
        s.stopPending = false;
        this.streamMaybeDone(s);
      }
      return;
    }
    s.recv.insert(offset, data);
    s.deliver();
  }

  #requeueAll(): void {
    for (const s of this.#streams.values()) {
      if (this.#hasSendWork(s)) this.streamSendable(s);
    }
  }

  // ---------------------------------------------------------------- ack / loss hooks

  #onFrameAcked(f: SentFrame): void {
    const s = f.s;
    switch (f.k) {
      case K_STREAM:
        if (s !== null && s.sendState !== "reset") {
          s.send.onAcked(f.off, f.len, f.fin);
          s.onSendProgress();
        }
        return;
      case K_RESET:
        if (s !== null) {
          s.resetAcked = true;
          this.streamMaybeDone(s);
        }
        return;
      case K_CLOSE:
        this.#closeNow(SessionErrorCode.NO_ERROR, this.#closeReason, false, false);
        return;
      case K_MTU_PROBE: {
        const before = this.#pmtu.size;
        this.#pmtu.onProbeAcked(f.off, this.#clock.now());
        if (this.#pmtu.size !== before) this.#recovery.setMaxDatagramSize(this.#pmtu.size);
        return;
      }
      case K_PING: {
        const now = this.#clock.now();
        const waiters = this.#pingWaiters;
        this.#pingWaiters = [];
        for (const w of waiters) w.resolve(now - w.start);
        return;
      }
    }
  }

  #onFrameLost(f: SentFrame): void {
    const s = f.s;
    switch (f.k) {
      case K_STREAM:
        if (s !== null && !s.done && s.sendState !== "reset") {
          s.send.onLost(f.off, f.len, f.fin);
          this.streamSendable(s);
        }
        return;
      case K_RESET:
        if (s !== null && !s.resetAcked && !s.done) {
          s.resetPending = true;
          this.streamControl(s);
        }
        return;
      case K_STOP:
        if (s !== null && !s.done && s.recvState === "stopped" && s.recv.finalSize < 0) {
          s.stopPending = true;
          this.streamControl(s);
        }
        return;
      case K_MAX_STREAM_DATA:
        if (s !== null && !s.done && s.recvState === "open" && s.recv.finalSize < 0) {
          s.maxStreamDataPending = true;
          this.streamControl(s);
        }
        return;
      case K_MAX_DATA:
        this.#maxDataPending = true;
        return;
      case K_MAX_STREAMS:
        this.#maxStreamsPending = true;
        return;
      case K_GOAWAY:
        this.#goAwayPending = true;
        return;
      case K_PING:
        if (this.#pingWaiters.length > 0) this.#pingPending = true;
        return;
      case K_CLOSE:
        this.#closePending = true;
        return;
      case K_ACK_FREQUENCY:
        if (f.off === this.#ackFreqSeq) this.#ackFreqPending = true;
        return;
      case K_MTU_PROBE:
        this.#pmtu.onProbeLost(f.off, this.#clock.now());
        return;
    }
  }

  /**
   * Bulk transfer: ask the peer to ack every cwnd/4 packets (at most
   * ackFrequencyMaxPackets) within a quarter RTT, instead of every 2nd packet.
   * Re-sent at most once per RTT, and only when the threshold changes.
   */
  #updateAckFrequency(now: number): void {
    const p = this.params;
    if (p.ackFrequencyMaxPackets <= 0) return;
    const rec = this.#recovery;
    const want = Math.max(
      p.ackElicitingThresholdPackets,
      Math.min(
        p.ackFrequencyMaxPackets,
        Math.floor(rec.cwnd / (this.#pmtu.size * p.ackFrequencyCwndDivisor)),
      ),
    );
    if (want === this.#ackFreqThreshold || now - this.#ackFreqSentAt < rec.smoothedRtt) return;
    this.#ackFreqSeq++;
    this.#ackFreqThreshold = want;
    this.#ackFreqDelayMs = Math.min(
      p.maxAckDelayMs,
      Math.max(p.timerGranularityMs, rec.smoothedRtt / 4),
    );
    this.#ackFreqPending = true;
    this.#ackFreqSentAt = now;
  }

  // ---------------------------------------------------------------- send loop

  /**
   * The send loop runs on setImmediate, not a microtask: a request's head, body and
   * FIN (and the ACKs for a batch of received datagrams) are written over several
   * promise hops, and a microtask flush sent each as its own packet (9 datagrams each
   * way per tiny HTTP exchange, each costing a DTLS record, a syscall and a wakeup
   * on the peer). setImmediate runs once the current turn's promise chains settled.
   */
  #scheduleFlush(): void {
    if (this.#flushScheduled || this.#state === "closed") return;
    this.#flushScheduled = true;
    setImmediate(this.#flushBound);
  }

  #hasSendWork(s: Stream): boolean {
    if (s.done || s.sendState === "reset") return false;
    if (s.local && Math.floor(s.id / 2) >= this.#peerMaxStreams) return false;
    const sb = s.send;
    if (!sb.lost.empty) return true;
    if (sb.finPending && sb.nextNew === sb.writeEnd) return true;
    if (sb.nextNew < sb.writeEnd) {
      return sb.nextNew < s.sendMax && this.#sentNewTotal < this.#sendMax;
    }
    return false;
  }

  #hasControl(): boolean {
    return this.#maxDataPending || this.#maxStreamsPending || this.#goAwayPending ||
      this.#pingPending || this.#closePending || this.#ackFreqPending ||
      this.#controlSet.size > 0;
  }

  #flush(): void {
    this.#flushScheduled = false;
    if (this.#state === "closed") return;
    const now = this.#clock.now();
    const mds = this.#pmtu.size;
    const rec = this.#recovery;
    const ack = this.#ack;
    this.#pacingAt = Infinity;
    this.#maybeProbeMtu(now);
    if (this.#sendQueue.length > 0) this.#updateAckFrequency(now);
    for (let guard = 0; guard < 10_000; guard++) {
      const ackDue = ack.ackNow || (ack.pending && ack.ackDeadline <= now);
      const control = this.#hasControl();
      const probe = rec.probesPending > 0;
      let dataOk = false;
      if (this.#sendQueue.length > 0 || probe) {
        if (!rec.canSend(mds)) {
          rec.cwndLimited = true;
        } else {
          const t = rec.pacingTime(mds, now);
          if (t <= now) dataOk = true;
          else this.#pacingAt = t;
        }
      }
      if (!ackDue && !control && !dataOk) break;

      const w = this.#writer;
      w.pos = 0;
      const pn = this.#nextPn;
      encodePacketHeader(w, pn);
      // Reserve room for an ACK (written last; frame order does not matter).
      const ackLen = ack.pending || ackDue ? this.#ackLength(now, mds) : 0;
      w.end = mds - ackLen;
      const frames: SentFrame[] = [];
      if (control) this.#writeControl(w, frames);
      let eliciting = frames.length > 0 || w.pos > packetHeaderLength(pn);
      if (dataOk) {
        if (this.#sendQueue.length > 0 && this.#writeStreams(w, frames)) eliciting = true;
        if (probe && !eliciting && w.remaining > 0) {
          // PTO with nothing to resend: a PING is enough to elicit an ACK.
          w.u8(FrameType.PING);
          eliciting = true;
        }
      }
      w.end = mds;
      if (!eliciting && !ackDue) break;
      if (ackLen > 0) this.#writeAck(w, now);
      this.#nextPn++;
      // A transport that copies on send (DTLS) gets the scratch itself: at 16 KiB the
      // per-packet copy was a third of the bytes the process allocated.
      const pkt = this.#sendCopies
        ? this.#scratch.subarray(0, w.pos)
        : this.#scratch.slice(0, w.pos);
      if (eliciting) rec.onPacketSent(pn, now, pkt.length, true, frames);
      this.#stats.packetsSent++;
      this.#stats.bytesSent += pkt.length;
      this.#lastSendTime = now;
      this.#conn.send(pkt);
    }
    if (this.#sendQueue.length === 0) rec.cwndLimited = false;
    this.#armTimer();
  }

  /** Sends a PMTU probe (PING + PADDING of the probe size) if one is due and may go now. */
  #maybeProbeMtu(now: number): void {
    const pm = this.#pmtu;
    const size = pm.probeSize(now);
    if (size === 0) return;
    const rec = this.#recovery;
    // One probe at a time may overshoot the window: it stands in for a base-size packet
    // (a 16 KiB probe would never fit an initial window of 10 x 1200 bytes).
    if (!rec.canSend(pm.base) || rec.pacingTime(pm.base, now) > now) return;
    const w = this.#writer;
    w.pos = 0;
    const pn = this.#nextPn++;
    encodePacketHeader(w, pn);
    w.u8(FrameType.PING);
    const pkt = new Uint8Array(size); // zero-filled: the rest is PADDING
    pkt.set(this.#scratch.subarray(0, w.pos));
    pm.onProbeSent(size);
    rec.onPacketSent(pn, now, size, true, [new SentFrame(K_MTU_PROBE, null, size, 0, false)], true);
    this.#stats.packetsSent++;
    this.#stats.bytesSent += size;
    this.#lastSendTime = now;
    this.#conn.send(pkt);
  }

  #ackLength(now: number, mds: number): number {
    const ack = this.#ack;
    const delayUs = Math.max(0, Math.round((now - ack.largestReceivedTime) * 1000));
    return Math.min(ackFrameLength(ack.ranges, delayUs), Math.floor(mds / 2));
  }

  #writeAck(w: Writer, now: number): void {
    const ack = this.#ack;
    const delayUs = Math.max(0, Math.round((now - ack.largestReceivedTime) * 1000));
    let ranges: number[] = ack.ranges;
    const room = Math.min(w.remaining, Math.floor(this.#pmtu.size / 2));
    if (ackFrameLength(ranges, delayUs) > room) {
      ranges = ranges.slice(0, 2);
      for (let n = 4; n <= ack.ranges.length; n += 2) {
        const more = ack.ranges.slice(0, n);
        if (ackFrameLength(more, delayUs) > room) break;
        ranges = more;
      }
    }
    encodeAck(w, ranges, delayUs);
    ack.onAckSent();
  }

  #writeControl(w: Writer, frames: SentFrame[]): void {
    const room = MAX_CONTROL_FRAME_LENGTH;
    if (this.#maxDataPending && w.remaining >= room) {
      encodeMaxData(w, this.#recvWindow.limit);
      this.#maxDataPending = false;
      frames.push(SF_MAX_DATA);
    }
    if (this.#maxStreamsPending && w.remaining >= room) {
      encodeMaxStreams(w, this.#localMaxStreams);
      this.#advertisedMaxStreams = this.#localMaxStreams;
      this.#maxStreamsPending = false;
      frames.push(SF_MAX_STREAMS);
    }
    if (this.#goAwayPending && w.remaining >= room) {
      encodeGoAway(w, this.#goAwayLimitIndex === Infinity ? 0 : this.#goAwayLimitIndex * 2);
      this.#goAwayPending = false;
      frames.push(SF_GOAWAY);
    }
    if (this.#closePending && w.remaining >= 256) {
      encodeClose(w, SessionErrorCode.NO_ERROR, this.#closeReason);
      this.#closePending = false;
      frames.push(SF_CLOSE);
    }
    if (this.#ackFreqPending && w.remaining >= room) {
      encodeAckFrequency(
        w,
        this.#ackFreqSeq,
        this.#ackFreqThreshold,
        Math.round(this.#ackFreqDelayMs * 1000),
      );
      this.#ackFreqPending = false;
      frames.push(new SentFrame(K_ACK_FREQUENCY, null, this.#ackFreqSeq, 0, false));
    }
    if (this.#pingPending && w.remaining >= 1) {
      w.u8(FrameType.PING);
      this.#pingPending = false;
      frames.push(SF_PING);
    }
    for (const s of this.#controlSet) {
      if (w.remaining < room * 3) return;
      // A stream beyond the peer's MAX_STREAMS must not appear on the wire yet.
      if (s.local && Math.floor(s.id / 2) >= this.#peerMaxStreams) continue;
      if (s.resetPending) {
        encodeResetStream(w, s.id, s.resetCode, s.resetFinalSize);
        s.resetPending = false;
        frames.push(new SentFrame(K_RESET, s, 0, 0, false));
      }
      if (s.stopPending) {
        encodeStopSending(w, s.id, s.stopCode);
        s.stopPending = false;
        frames.push(new SentFrame(K_STOP, s, 0, 0, false));
      }
      if (s.maxStreamDataPending) {
        if (s.recvState === "open" && s.recv.finalSize < 0) {
          encodeMaxStreamData(w, s.id, s.window.limit);
          frames.push(new SentFrame(K_MAX_STREAM_DATA, s, 0, 0, false));
        }
        s.maxStreamDataPending = false;
      }
      this.#controlSet.delete(s);
    }
  }

  /** Writes stream frames round-robin; returns true if any were written. */
  #writeStreams(w: Writer, frames: SentFrame[]): boolean {
    const q = this.#sendQueue;
    let wrote = false;
    let visits = q.length;
    while (visits-- > 0 && q.length > 0 && w.remaining > 12) {
      const s = q.shift()!;
      s.inSendQueue = false;
      if (!this.#hasSendWork(s)) continue;
      if (this.#writeStreamFrame(s, w, frames)) wrote = true;
      if (this.#hasSendWork(s)) {
        s.inSendQueue = true;
        q.push(s);
      }
    }
    return wrote;
  }

  #writeStreamFrame(s: Stream, w: Writer, frames: SentFrame[]): boolean {
    const sb = s.send;
    if (!sb.lost.empty) {
      const off = sb.lost.r[0]!;
      const end = sb.lost.r[1]!;
      const room = w.remaining - streamFrameOverhead(s.id, off, end - off);
      const len = Math.min(end - off, room);
      if (len <= 0) return false;
      const fin = sb.finQueued && sb.finPending && off + len === sb.writeEnd &&
        sb.nextNew === sb.writeEnd;
      encodeStreamHeader(w, s.id, off, len, fin);
      sb.read(off, len, w.buf, w.pos);
      w.pos += len;
      sb.lost.remove(off, off + len);
      if (fin) sb.finPending = false;
      frames.push(new SentFrame(K_STREAM, s, off, len, fin));
      this.#stats.bytesRetransmitted += len;
      this.#stats.framesRetransmitted++;
      return true;
    }
    const off = sb.nextNew;
    const credit = Math.min(s.sendMax - off, this.#sendMax - this.#sentNewTotal);
    const avail = Math.max(0, Math.min(sb.writeEnd - off, credit));
    const room = w.remaining - streamFrameOverhead(s.id, off, avail);
    const len = Math.min(avail, room);
    const fin = sb.finPending && off + len === sb.writeEnd;
    if (len < 0 || (len === 0 && !fin)) return false;
    encodeStreamHeader(w, s.id, off, len, fin);
    if (len > 0) sb.read(off, len, w.buf, w.pos);
    w.pos += len;
    sb.nextNew += len;
    this.#sentNewTotal += len;
    this.#stats.streamBytesSent += len;
    if (fin) sb.finPending = false;
    frames.push(new SentFrame(K_STREAM, s, off, len, fin));
    return true;
  }

  // ---------------------------------------------------------------- timers

  #nextDeadline(): number {
    const p = this.params;
    let t = this.#recovery.lossDetectionDeadline;
    const ack = this.#ack;
    if (ack.pending && ack.ackDeadline < t) t = ack.ackDeadline;
    const idle = this.#lastReceiveTime + p.idleTimeoutMs;
    if (idle < t) t = idle;
    const ka = Math.max(this.#lastReceiveTime, this.#lastSendTime) + p.keepAliveIntervalMs;
    if (ka < t) t = ka;
    if (this.#pacingAt < t) t = this.#pacingAt;
    if (this.#drainDeadline < t) t = this.#drainDeadline;
    return t;
  }

  #armTimer(): void {
    if (this.#state === "closed") return;
    const t = this.#nextDeadline();
    if (t >= this.#timerAt) return;
    if (this.#timer !== null) this.#clock.clearTimer(this.#timer);
    this.#timerAt = t;
    this.#timer = this.#clock.setTimer(this.#timerBound, Math.max(0, t - this.#clock.now()));
  }

  #onTimer(): void {
    this.#timer = null;
    this.#timerAt = Infinity;
    if (this.#state === "closed") return;
    const now = this.#clock.now();
    const p = this.params;
    if (now >= this.#lastReceiveTime + p.idleTimeoutMs) {
      this.#closeNow(SessionErrorCode.IDLE_TIMEOUT, "idle timeout", false, true);
      return;
    }
    if (now >= this.#drainDeadline) {
      if (this.#closeQueued) {
        // CLOSE went out but was never acknowledged: the peer is gone or closed too.
        this.#closeNow(SessionErrorCode.NO_ERROR, this.#closeReason, false, false);
      } else {
        this.#closeNow(SessionErrorCode.DRAIN_TIMEOUT, "close did not drain in time", false, true);
      }
      return;
    }
    const rec = this.#recovery;
    if (rec.lossDetectionDeadline <= now) {
      const probe = rec.onTimeout(now);
      if (
        probe !== null && rec.ptoCount >= p.pmtudBlackHolePtos && this.#pmtu.size > this.#pmtu.base
      ) {
        // Nothing acked for several PTOs while sending large packets: maybe they vanish.
        this.#pmtu.onBlackHole(now);
        rec.setMaxDatagramSize(this.#pmtu.size);
      }
      if (probe !== null) {
        for (const f of probe) this.#onFrameLost(f);
        if (this.#sendQueue.length === 0 && !this.#hasControl()) this.#pingPending = true;
      }
    }
    if (now >= Math.max(this.#lastReceiveTime, this.#lastSendTime) + p.keepAliveIntervalMs) {
      this.#pingPending = true;
    }
    this.#flush();
  }

  // ---------------------------------------------------------------- closing

  #checkDrained(): void {
    if (this.#state !== "draining" || this.#closeQueued) return;
    for (const s of this.#streams.values()) {
      if (s.pendingWrite !== null || s.send.buffered > 0 || s.resetPending) return;
      if (s.sendState === "fin" && !s.send.finAcked) return;
    }
    // Everything written is acknowledged: send CLOSE reliably, wait for its ACK.
    this.#closeQueued = true;
    this.#closePending = true;
    this.#drainDeadline = this.#clock.now() + this.params.closingPeriodPtos * this.#recovery.ptoMs;
    this.#timerAt = Infinity; // re-arm for the (possibly earlier) deadline
    if (this.#timer !== null) this.#clock.clearTimer(this.#timer);
    this.#timer = null;
    this.#scheduleFlush();
  }

  #closedError(): MuxSessionError {
    const i = this.#closeInfo;
    return new MuxSessionError(i?.code ?? 0, i?.remote ?? false, i?.reason ?? "");
  }

  #closeNow(code: number, reason: string, remote: boolean, sendClose: boolean): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    this.#closeInfo = { code, reason, remote };
    if (sendClose && !this.#conn.closed) {
      const w = this.#writer;
      w.pos = 0;
      encodePacketHeader(w, this.#nextPn++);
      if (this.#ack.ranges.length > 0) this.#writeAck(w, this.#clock.now());
      encodeClose(w, code >= 0x100 ? SessionErrorCode.NO_ERROR : code, reason);
      const pkt = this.#scratch.slice(0, w.pos);
      // Twice: CLOSE is not retransmitted, and a lost one costs the peer an idle timeout.
      this.#conn.send(pkt);
      this.#conn.send(pkt.slice());
    }
    if (this.#timer !== null) this.#clock.clearTimer(this.#timer);
    this.#timer = null;
    this.#timerAt = Infinity;
    const err = new MuxSessionError(code, remote, reason);
    const graceful = code === SessionErrorCode.NO_ERROR;
    for (const s of this.#streams.values()) s.onSessionClosed(err, graceful);
    this.#streams.clear();
    this.#recvWindow.streamCredit = 0;
    this.#sendQueue = [];
    this.#controlSet.clear();
    this.#recovery.clear();
    for (const w of this.#acceptWaiters) w(null);
    this.#acceptWaiters = [];
    this.#acceptQueue = [];
    for (const p of this.#pingWaiters) p.reject(err);
    this.#pingWaiters = [];
    this.#conn.close(reason);
    this.#resolveClosed(this.#closeInfo);
  }
}
