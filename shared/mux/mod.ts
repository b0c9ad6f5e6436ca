/**
 * shared/mux — reliable, ordered, flow-controlled streams multiplexed over any
 * DatagramConn (in-memory link, plain UDP, DTLS). QUIC's design (RFC 9000
 * streams, RFC 9002 loss recovery; NewReno, or BBR by `congestionControl`), kept small.
 *
 * ```ts
 * const session = new MuxSession(conn, { role: "client" });
 * const s = session.openStream();            // no round trip
 * await s.writable.getWriter().write(bytes); // backpressure: waits for buffer room
 * for await (const chunk of s.readable) {}   // credit returns as you read
 * await session.close();                     // drains, then CLOSE
 * ```
 */
export { MuxSession } from "./session.ts";
export type { MuxCloseInfo, MuxSessionOptions, MuxStats, MuxStream } from "./types.ts";
export {
  WARM_UP_DEFAULT_MAX_BYTES,
  WARM_UP_DEFAULT_MAX_MS,
  type WarmUpEnd,
  type WarmUpOptions,
  type WarmUpResult,
} from "./warm_up.ts";
export {
  MuxSessionError,
  MuxStreamError,
  sessionCodeName,
  SessionErrorCode,
  streamCodeName,
  StreamErrorCode,
} from "./errors.ts";
export {
  type CongestionControlName,
  defaultParams,
  type MuxParams,
  resolveParams,
} from "./params.ts";
export { type Clock, realClock } from "./clock.ts";
