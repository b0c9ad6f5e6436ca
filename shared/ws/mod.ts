/**
 * A small RFC 6455 WebSocket of our own, for the tunnel's TCP/TLS path
 * (docs/tcp-fallback.md): the opening handshake both ways, binary frames with
 * strict limits, ping/pong and close, and a connection with a bounded send queue.
 */
export {
  applyMask,
  CloseCode,
  closePayload,
  encodeFrame,
  type FrameHeader,
  MAX_CONTROL_PAYLOAD,
  MAX_HEADER_BYTES,
  Opcode,
  parseClosePayload,
  parseFrameHeader,
  WsProtocolError,
} from "./frame.ts";
export {
  acceptKeyFor,
  checkUpgradeRequest,
  checkUpgradeResponse,
  clientUpgradeRequest,
  field,
  type Fields,
  HandshakeError,
  newClientKey,
  readResponseHead,
  type ResponseHead,
  type UpgradeRefusal,
  type UpgradeRequest,
  WS_GUID,
} from "./handshake.ts";
export {
  type ByteStream,
  connStream,
  type WsCloseInfo,
  WsConn,
  type WsConnOptions,
  type WsConnStats,
} from "./conn.ts";

/** The path of the tunnel's WebSocket endpoint on the server's own domain. */
export const TUNNEL_WS_PATH = "/.well-known/hopgate/tunnel";
/** The subprotocol the client offers and the server echoes: one DTLS datagram per message. */
export const TUNNEL_WS_PROTOCOL = "hopgate-dtls.v1";
/**
 * Largest message on the tunnel WebSocket: a DTLS record is at most 16 KiB of
 * plaintext plus its overhead, and handshake flights are smaller; 64 KiB leaves room.
 */
export const TUNNEL_WS_MAX_MESSAGE = 64 * 1024;
