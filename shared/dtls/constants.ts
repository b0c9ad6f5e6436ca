/** Wire constants for DTLS 1.2 (RFC 6347, RFC 5246) with PSK suites. */

/** DTLS 1.2 on the wire: {254, 253}. */
export const DTLS_1_2 = 0xfefd;
/** DTLS 1.0, allowed as the record version of a first ClientHello (RFC 6347 4.1). */
export const DTLS_1_0 = 0xfeff;

/** Record content types (RFC 5246 6.2.1). */
export const ContentType = {
  ChangeCipherSpec: 20,
  Alert: 21,
  Handshake: 22,
  ApplicationData: 23,
  /** A record carrying a connection ID; its real type is inside the ciphertext (RFC 9146 4). */
  Tls12Cid: 25,
  /** Path validation after an address change (RFC 9853 5). */
  ReturnRoutabilityCheck: 27,
} as const;

/** Handshake message types (RFC 5246 7.4, RFC 6347 4.3.2). */
export const HandshakeType = {
  HelloRequest: 0,
  ClientHello: 1,
  ServerHello: 2,
  HelloVerifyRequest: 3,
  ServerKeyExchange: 12,
  ServerHelloDone: 14,
  ClientKeyExchange: 16,
  Finished: 20,
} as const;

/** Alert levels and descriptions (RFC 5246 7.2, RFC 4279 2). */
export const AlertLevel = { Warning: 1, Fatal: 2 } as const;
/** Alert description codes we send or recognise, by name. */
export const AlertDescription = {
  CloseNotify: 0,
  UnexpectedMessage: 10,
  BadRecordMac: 20,
  HandshakeFailure: 40,
  IllegalParameter: 47,
  DecodeError: 50,
  DecryptError: 51,
  ProtocolVersion: 70,
  InternalError: 80,
  UnsupportedExtension: 110,
  UnknownPskIdentity: 115,
} as const;

const alertNames: Record<number, string> = Object.fromEntries(
  Object.entries(AlertDescription).map(([k, v]) => [v, k]),
);
/** An alert code's name (`alert(N)` for an unknown one). */
export function alertName(code: number): string {
  return alertNames[code] ?? `alert(${code})`;
}

/** Extension types. */
export const ExtensionType = {
  SupportedGroups: 10, // RFC 8422 5.1.1
  EcPointFormats: 11, // RFC 8422 5.1.2
  ExtendedMasterSecret: 23, // RFC 7627
  ConnectionId: 54, // RFC 9146 3
  ReturnRoutabilityCheck: 61, // RFC 9853 4 ("rrc")
  RenegotiationInfo: 0xff01, // RFC 5746
} as const;

/** Named groups we do ECDHE over (RFC 8422, RFC 7748). */
export const NamedGroup = { Secp256r1: 23, X25519: 29 } as const;

/** Handshake header: type(1) length(3) message_seq(2) fragment_offset(3) fragment_length(3). */
export const HANDSHAKE_HEADER_SIZE = 12;
/** Record header: type(1) version(2) epoch(2) sequence_number(6) length(2). */
export const RECORD_HEADER_SIZE = 13;
/** Largest plaintext in one record (RFC 5246 6.2.1). */
export const MAX_PLAINTEXT = 16384;
/** Largest handshake message we accept; ours are all far smaller. */
export const MAX_HANDSHAKE_MESSAGE = 16384;

/**
 * ChaCha20-Poly1305 records up to this size (plaintext) may go to libsodium's wasm; above it
 * node:crypto's native cipher outweighs its fixed cost per record (chacha_wasm.ts).
 */
export const WASM_AEAD_MAX_BYTES = 4096;
