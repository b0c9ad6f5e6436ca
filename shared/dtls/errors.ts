import { alertName } from "./constants.ts";

/** Stable error codes, so callers (the client CLI) can tell failures apart. */
export type DtlsErrorCode =
  | "ALERT_RECEIVED" // the peer sent a fatal alert; `alert` says which
  | "HANDSHAKE_TIMEOUT" // no answer within the handshake deadline
  | "HANDSHAKE_STALLED" // the server answered, then did not finish in time (answeredTimeoutMs, lastFlightTimeoutMs)
  | "HANDSHAKE_FAILED" // we aborted the handshake; `alert` says what we sent
  | "HANDSHAKE_EVICTED" // (server) a half-open handshake made room for a newer one
  | "CLOSED" // the connection or socket was closed
  | "RESOLVE_FAILED" // the server's host name did not resolve
  | "ABORTED"; // the caller's AbortSignal fired

/** A DTLS failure with a stable `code` and, where one was sent or received, the alert. */
export class DtlsError extends Error {
  /** The error's name, for logs. */
  override name = "DtlsError";
  /** An error with `code`, a message and optionally the alert involved. */
  constructor(
    readonly code: DtlsErrorCode,
    message: string,
    /** Alert description code, for ALERT_RECEIVED / HANDSHAKE_FAILED. */
    readonly alert?: number,
  ) {
    super(message);
  }

  /** The error for a fatal alert the peer sent. */
  static alertReceived(alert: number): DtlsError {
    return new DtlsError(
      "ALERT_RECEIVED",
      `Peer aborted the DTLS handshake with alert ${alertName(alert)} (${alert})`,
      alert,
    );
  }
}
