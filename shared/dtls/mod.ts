/**
 * DTLS 1.2 with per-domain pre-shared keys, both sides (docs/architecture.md says why
 * the project owns its DTLS; docs/protocol.md gives the suites and the PSK).
 *
 * - `DtlsServer.listen(...)`: one UDP socket, many peers, stateless cookies.
 * - `dtlsConnect(...)`: a client connection.
 * Both give established connections as `DtlsConn`, a `DatagramConn`.
 */
export { addressGroup, DtlsServer, type DtlsServerOptions } from "./server.ts";
export { type DtlsClientConn, type DtlsClientOptions, dtlsConnect } from "./client.ts";
export type { DtlsConn, PeerAddr } from "./connection.ts";
export type { DatagramConn, DatagramHandler } from "../datagram.ts";
export type { Clock } from "../clock.ts";
export type { PacketSocket, PacketSocketFactory, QuietBatching, UdpHandler } from "./udp.ts";
export { bindUdpBatching } from "./udp.ts";
export { DtlsError, type DtlsErrorCode } from "./errors.ts";
export { AlertDescription, alertName } from "./constants.ts";
export {
  type CipherSuite,
  ECDHE_PSK_CHACHA20,
  PSK_AES128_GCM,
  type SuiteName,
  SUITES,
  useWasmChaCha,
  WASM_AEAD_MAX_BYTES,
} from "./cipher.ts";
export { derivePsk, PSK_LABEL } from "../credentials.ts";
export { pskIdentity } from "./psk.ts";
export { type DtlsStats, newStats } from "./stats.ts";
export {
  encodeStatelessReset,
  STATELESS_RESET_LENGTH,
  statelessResetToken,
} from "./stateless_reset.ts";
export type { PskLookup } from "./server_handshake.ts";
export {
  defaultMaxDatagramSize,
  isLoopbackAddress,
  isLoopbackHost,
  PATH_SAFE_DATAGRAM_SIZE,
} from "./path.ts";
