/**
 * The mux's public types (mod.ts exports them): a stream's API, a session's options,
 * how it ended and its counters.
 */
import type { Clock } from "./clock.ts";
import type { CongestionControlName, MuxParams } from "./params.ts";

/** What `new MuxSession(conn, options)` takes: the side it plays, and optional overrides. */
export interface MuxSessionOptions {
  /** Client-opened stream ids are even, server-opened odd. */
  role: "client" | "server";
  /** Time source for timers and RTT (default `realClock`; tests pass a fake clock). */
  clock?: Clock;
  /** Overrides of `defaultParams`, validated by `resolveParams`. */
  params?: Partial<MuxParams>;
  /** Random numbers in [0, 1) for the keepalive jitter (tests pin it). Default Math.random. */
  random?: () => number;
  /** Called for each stream the peer opens. Without it, use `acceptStream()`. */
  onStream?: (stream: MuxStream) => void;
}

/** Why and how a session ended. */
export interface MuxCloseInfo {
  /** A `SessionErrorCode` (NO_ERROR when graceful), or any code `abort()` was given. */
  code: number;
  /** CLOSE's short reason, or why this side closed ("idle timeout"); may be empty. */
  reason: string;
  /** True if the peer closed it. */
  remote: boolean;
}

/** A snapshot of a session's counters and gauges (`MuxSession.stats`). */
export interface MuxStats {
  /** Datagrams sent, probes and retransmissions included. */
  packetsSent: number;
  /** Datagrams received, duplicates and foreign ones included. */
  packetsReceived: number;
  /** Packets declared lost by loss detection (some later prove spurious). */
  packetsLost: number;
  /** Bytes of stream data sent again after loss or PTO. */
  bytesRetransmitted: number;
  /** Frames of stream data sent again. */
  framesRetransmitted: number;
  /**
   * Bytes of stream data queued to go out once more as tail copies (`tailCopyLossRatio`);
   * what was acked before its turn is not sent, the rest counts in `bytesRetransmitted` too.
   */
  tailCopyBytes: number;
  /** Packets received again (a packet number already seen), dropped. */
  duplicatePackets: number;
  /** Bytes of all datagrams handed to the transport (below any DTLS overhead). */
  bytesSent: number;
  /** Bytes of all datagrams the transport delivered. */
  bytesReceived: number;
  /** Application bytes sent, first transmissions only (resends are `bytesRetransmitted`). */
  streamBytesSent: number;
  /** Application bytes consumed here: read, or discarded by a reset or STOP_SENDING. */
  streamBytesReceived: number;
  /**
   * Streams we opened whose window was announced smaller than the session's because the
   * credit announced with our streams and not yet read reached its budget (a quarter of
   * the pool: conn_flow.ts); their answers start with less, down to the wire default.
   */
  openWindowsLimited: number;
  /**
   * TIMESTAMP frames received: the peer dates its ACKs (each ACK after one is timed by when
   * its packets arrived there, not by when the ACK reached us: delivery_rate.ts).
   */
  timestampsReceived: number;
  /** Warm-up packets sent (warm_up.ts: WARM_UP and PADDING, to learn the path's rate). */
  warmUpPacketsSent: number;
  /** Their bytes. */
  warmUpBytesSent: number;
  /** Smoothed RTT in ms (the initial guess until a sample arrives). */
  srttMs: number;
  /** Lowest RTT sample in ms (0 before the first). */
  minRttMs: number;
  /** Congestion window: bytes that may be in flight. */
  cwndBytes: number;
  /** The congestion controller sending with (`MuxParams.congestionControl`). */
  congestionControl: CongestionControlName;
  /**
   * Its state: NewReno "slow_start" | "avoidance"; BBR "startup" | "drain" | "probe_bw" |
   * "probe_rtt".
   */
  congestionState: string;
  /** The pacer's rate in bytes per second. */
  pacingRateBytesPerSecond: number;
  /** The pacing gain in use (BBR's phase gain; NewReno's pacingGainRatio). */
  pacingGain: number;
  /**
   * The bottleneck bandwidth estimate in bytes per second: BBR's windowed max delivery
   * rate, NewReno's window-cap rate; 0 before one is measured.
   */
  maxBandwidthBytesPerSecond: number;
  /** The RTT the controller's model uses (BBR's windowed min_rtt), 0 before a sample. */
  modelMinRttMs: number;
  /** BBR's loss-derived bound on bytes in flight, 0 when none holds (always 0 for NewReno). */
  inflightHiBytes: number;
  /** Times BBR entered ProbeRTT. */
  probeRttCount: number;
  /** Congestion responses: NewReno's window reductions, BBR's rounds whose loss was congestion. */
  congestionEvents: number;
  /** BBR's estimate of the path's random loss (its pacing makes up for up to 5 %); 0 for NewReno. */
  randomLossRatio: number;
  /**
   * The rate the session's first full flight came back at, bytes per second; BBR's Startup
   * began at half of it (docs/congestion.md). 0 before it was measured, and for NewReno.
   */
  firstFlightRateBytesPerSecond: number;
  /** Bytes of ack-eliciting packets sent and neither acked nor declared lost. */
  bytesInFlight: number;
  /** Bytes held in all streams' send and receive buffers. */
  bufferedBytes: number;
  /** The send-buffer share of `bufferedBytes`: written, not yet acknowledged. */
  sendBufferedBytes: number;
  /** The receive-buffer share of `bufferedBytes`: arrived, not yet read. */
  recvBufferedBytes: number;
  /**
   * Receive credit the open streams hold: the most they may yet buffer (flow.ts). With
   * the headroom, the session's receive commitment, capped at maxSessionWindowBytes.
   */
  recvStreamCreditBytes: number;
  /** Streams with state (open, or not yet freed). */
  activeStreams: number;
  /** Probe timeouts in a row without an ACK (resets on each ACK). */
  ptoCount: number;
  /** Current packet size (path MTU discovery) and the transport's ceiling. */
  packetSizeBytes: number;
  /** The transport's largest datagram, the ceiling of `packetSizeBytes`. */
  maxDatagramSize: number;
  /** Losses later disproved by an ACK, and congestion reductions undone for them. */
  spuriousLosses: number;
  /** Congestion-window reductions undone because all their losses proved spurious. */
  undoneReductions: number;
  /** PMTU probes (padded packets of a candidate size) sent. */
  mtuProbesSent: number;
  /** PMTU probes declared lost. */
  mtuProbesLost: number;
  /** Times the packet size fell back to the base after larger packets stopped passing. */
  mtuBlackHoles: number;
  /** PMTU discovery is probing (false once the search ended, until the raise timer). */
  mtuSearching: boolean;
}

/** The public face of a stream (see mod.ts). */
export interface MuxStream {
  /** Stream id: client-opened streams are even, server-opened odd. */
  readonly id: number;
  /** True if this side opened the stream. */
  readonly local: boolean;
  /** The receive half as a Web Stream (made on first use; then do not call `read`). */
  readonly readable: ReadableStream<Uint8Array>;
  /** The send half as a Web Stream (made on first use; then do not call `write`/`close`). */
  readonly writable: WritableStream<Uint8Array>;
  /**
   * The next chunk, or null once the peer's FIN is reached. Rejects with a
   * MuxStreamError if the stream is reset or stopped, or with the session's error.
   * One read at a time.
   */
  read(): Promise<Uint8Array | null>;
  /**
   * Everything left to read when the FIN and all data before it are already
   * here (the receive half is then finished), else null and nothing is taken.
   */
  readRest(): Uint8Array | null;
  /** Queues bytes; resolves once they are in the send buffer. One write at a time. */
  write(chunk: Uint8Array): Promise<void>;
  /** Ends the send half (FIN) after what was written. */
  close(): void;
  /** Settles once the send half is done: resolves after FIN, rejects on reset/stop/session end. */
  readonly sendClosed: Promise<void>;
  /** Abandons the send half: RESET_STREAM with `code`; the peer's reader fails with it. */
  reset(code: number): void;
  /** Abandons the receive half: STOP_SENDING with `code`; the peer resets its send half. */
  stopSending(code: number): void;
  /** Abandons both halves (reset + stopSending): what a caller that gives up does. */
  abort(code: number): void;
  /** Bytes held by this stream (send buffer + receive buffer). */
  readonly bufferedBytes: number;
}
