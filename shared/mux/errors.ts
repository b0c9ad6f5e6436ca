/**
 * The mux's error vocabulary. Codes cross the wire (CLOSE, RESET_STREAM,
 * STOP_SENDING); strings never do, except CLOSE's optional short reason.
 */

/** Session-level codes carried by CLOSE, modelled on RFC 9000 §20.1. */
export const SessionErrorCode = {
  /** Graceful close. */
  NO_ERROR: 0x0,
  /** A bug or resource failure on the sending side. */
  INTERNAL_ERROR: 0x1,
  /** The peer sent more data than a flow-control window allowed. */
  FLOW_CONTROL_ERROR: 0x3,
  /** The peer opened more streams than MAX_STREAMS allowed. */
  STREAM_LIMIT_ERROR: 0x4,
  /** A frame for a stream in a state that forbids it. */
  STREAM_STATE_ERROR: 0x5,
  /** A stream's final size changed or data went past it. */
  FINAL_SIZE_ERROR: 0x6,
  /** A frame could not be decoded. */
  FRAME_ENCODING_ERROR: 0x7,
  /** Anything else the peer did wrong. */
  PROTOCOL_VIOLATION: 0xa,
  /**
   * Local only: nothing heard from the peer for `idleTimeoutMs`, or for
   * `unansweredTimeoutMs` after a packet that asked for an ACK.
   */
  IDLE_TIMEOUT: 0x100,
  /** Local only: the DatagramConn closed under us. */
  TRANSPORT_CLOSED: 0x101,
  /** Local only: `close()` could not drain within `closeDrainTimeoutMs`. */
  DRAIN_TIMEOUT: 0x102,
} as const;
/** One of the `SessionErrorCode` values. */
export type SessionErrorCode = (typeof SessionErrorCode)[keyof typeof SessionErrorCode];

/**
 * Stream-level codes carried by RESET_STREAM and STOP_SENDING. Layers above may
 * use any other number; these are the ones the mux itself produces.
 */
export const StreamErrorCode = {
  /** The stream was abandoned without an error (the application needs no more of it). */
  NO_ERROR: 0x0,
  /** The local application cancelled (readable.cancel / writable.abort without a code). */
  CANCELLED: 0x1,
  /** The peer will not process this stream (after GOAWAY). */
  REFUSED: 0x2,
  /** The session ended before the stream finished. */
  SESSION_CLOSED: 0x3,
  /** An internal failure on the sending side. */
  INTERNAL_ERROR: 0x4,
} as const;

const sessionNames = new Map<number, string>(
  Object.entries(SessionErrorCode).map(([k, v]) => [v, k]),
);
const streamNames = new Map<number, string>(
  Object.entries(StreamErrorCode).map(([k, v]) => [v, k]),
);

/** `NAME (0x3)` for a known code, `0x3` otherwise. */
export function sessionCodeName(code: number): string {
  const n = sessionNames.get(code);
  return n === undefined ? `0x${code.toString(16)}` : `${n} (0x${code.toString(16)})`;
}
/** Like `sessionCodeName`, for stream codes: `NAME (0x3)` if known, `0x3` otherwise. */
export function streamCodeName(code: number): string {
  const n = streamNames.get(code);
  return n === undefined ? `0x${code.toString(16)}` : `${n} (0x${code.toString(16)})`;
}

/** The session ended; every stream still open fails with this. */
export class MuxSessionError extends Error {
  /** The error's name, for logs. */
  override name = "MuxSessionError";
  /** The session's close code (see `SessionErrorCode`). */
  readonly code: number;
  /** True when the peer closed the session (sent CLOSE). */
  readonly remote: boolean;
  /** `reason` is CLOSE's reason or the local one; it only goes into the message. */
  constructor(code: number, remote: boolean, reason = "") {
    super(
      `Session closed ${remote ? "by peer" : "locally"}: ${sessionCodeName(code)}${
        reason ? `: ${reason}` : ""
      }`,
    );
    this.code = code;
    this.remote = remote;
  }
}

/** A stream was reset (send side) or stopped (receive side). */
export class MuxStreamError extends Error {
  /** The error's name, for logs. */
  override name = "MuxStreamError";
  /** The code RESET_STREAM or STOP_SENDING carried (see `StreamErrorCode`). */
  readonly code: number;
  /** True when the peer sent RESET_STREAM / STOP_SENDING. */
  readonly remote: boolean;
  /** Id of the stream that failed. */
  readonly streamId: number;
  /** `what` says what happened ("reset", "stopped") for the message. */
  constructor(streamId: number, code: number, remote: boolean, what: string) {
    super(`Stream ${streamId} ${what} ${remote ? "by peer" : "locally"}: ${streamCodeName(code)}`);
    this.code = code;
    this.remote = remote;
    this.streamId = streamId;
  }
}
