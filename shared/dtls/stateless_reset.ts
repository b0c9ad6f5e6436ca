/**
 * Stateless reset, after QUIC's (RFC 9000 10.3): a server that lost a connection's
 * state (it restarted, or crashed and came back) tells the client at once, instead of
 * the client finding out only when its packets go unanswered (10 s and more).
 *
 * - The server holds a static key (derived from its secret, the same after a restart
 *   and on every node sharing the secret). A connection's token is
 *   `HMAC-SHA256(key, "hopgate stateless reset" || server CID)`, first 16 bytes.
 * - The server gives the client its token inside the encrypted tunnel (the tunnel's
 *   welcome, docs/protocol.md); the client keeps it (`expectStatelessReset`).
 * - A record whose connection ID names no connection is answered with a reset
 *   datagram carrying the token for that CID, if the record was larger than the
 *   reset (nothing is amplified) and the server's reset budget allows it.
 * - The client that receives exactly its token closes the connection.
 *
 * Only the server (anyone with its key) can make a token for a CID, and the token is
 * sent in the clear only when the connection it names is gone: an on-path observer
 * sees CIDs, never a live connection's token. A wrong token is ignored (counted).
 *
 * The datagram: a DTLS 1.2 epoch-0 alert record whose body is 18 bytes instead of
 * an alert's 2 (so no DTLS stack takes it for a real alert):
 *
 *   21 | fe fd | 00 00 | 00 00 00 00 00 00 | 00 12 | 02 ff | token (16)
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { ContentType, RECORD_HEADER_SIZE } from "./constants.ts";

/** Bytes of a token. */
export const STATELESS_RESET_TOKEN_LENGTH = 16;
/** Bytes of a reset datagram. */
export const STATELESS_RESET_LENGTH: number = RECORD_HEADER_SIZE + 2 + STATELESS_RESET_TOKEN_LENGTH;

const LABEL = new TextEncoder().encode("hopgate stateless reset");
const HEADER = new Uint8Array([
  ContentType.Alert,
  0xfe,
  0xfd,
  0,
  0,
  0,
  0,
  0,
  0,
  0,
  0,
  0,
  2 + STATELESS_RESET_TOKEN_LENGTH,
  0x02,
  0xff,
]);

/** The token for the connection whose server-side connection ID is `cid`. */
export function statelessResetToken(key: Uint8Array, cid: Uint8Array): Uint8Array {
  const h = createHmac("sha256", key).update(LABEL).update(cid).digest();
  return new Uint8Array(h.buffer, h.byteOffset, STATELESS_RESET_TOKEN_LENGTH).slice();
}

/** The reset datagram carrying `token`. */
export function encodeStatelessReset(token: Uint8Array): Uint8Array {
  const out = new Uint8Array(STATELESS_RESET_LENGTH);
  out.set(HEADER);
  out.set(token, HEADER.length);
  return out;
}

/** Whether `datagram` has a reset datagram's shape (any token). */
export function looksLikeStatelessReset(datagram: Uint8Array): boolean {
  if (datagram.length !== STATELESS_RESET_LENGTH) return false;
  for (let i = 0; i < HEADER.length; i++) if (datagram[i] !== HEADER[i]) return false;
  return true;
}

/** Whether `datagram` is a reset datagram carrying `token` (compared in constant time). */
export function isStatelessReset(datagram: Uint8Array, token: Uint8Array): boolean {
  return looksLikeStatelessReset(datagram) &&
    timingSafeEqual(datagram.subarray(HEADER.length), token);
}
