import { alertName } from "./constants.ts";

/** Stable error codes, so callers (the client CLI) can tell failures apart. */
export type DtlsErrorCode =
  | "ALERT_RECEIVED" // the peer sent a fatal alert; `alert` says which
  | "HANDSHAKE_TIMEOUT" // no answer within the handshake deadline
  | "HANDSHAKE_FAILED" // we aborted the handshake; `alert` says what we sent
  | "CLOSED" // the connection or socket was closed
  | "ABORTED"; // the caller's AbortSignal fired

export class DtlsError extends Error {
  override name = "DtlsError";
  constructor(
    readonly code: DtlsErrorCode,
    message: string,
    /** Alert description code, for ALERT_RECEIVED / HANDSHAKE_FAILED. */
    readonly alert?: number,
  ) {
    super(message);
  }

  static alertReceived(alert: number): DtlsError {
    return new DtlsError(
      "ALERT_RECEIVED",
      `Peer aborted the DTLS handshake with alert ${alertName(alert)} (${alert})`,
      alert,
    );
  }
}
