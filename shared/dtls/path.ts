/**
 * How large a datagram a DTLS connection may carry (`maxDatagramSize`, the payload
 * of one record). The mux above probes the path up to this ceiling (DPLPMTUD), so
 * the ceiling only has to be safe to *try*:
 * - loopback carries whole 16 KiB records (the DTLS plaintext limit) without loss;
 * - elsewhere, 1400 bytes: a record of 1400 + 37 bytes of DTLS overhead + 48 of
 *   IPv6/UDP headers fits a 1500-byte MTU. Probing above it would need the
 *   don't-fragment bit, which Deno's UDP sockets cannot set: the kernel would
 *   fragment instead, and one lost fragment loses the whole packet.
 * Callers who know their path (a LAN with jumbo frames) pass a larger size.
 */
import { MAX_PLAINTEXT } from "./constants.ts";

/** The ceiling off loopback: a 1400-byte record payload plus DTLS and IPv6/UDP headers fits a 1500-byte MTU. */
export const PATH_SAFE_DATAGRAM_SIZE = 1400;

/** Whether `ip` is an IPv4 or IPv6 loopback address (IPv4-mapped included). */
export function isLoopbackAddress(ip: string): boolean {
  return ip.startsWith("127.") || ip === "::1" || ip === "[::1]" || ip.startsWith("::ffff:127.");
}

/** The default ceiling for a peer at `ip`. */
export function defaultMaxDatagramSize(ip: string): number {
  return isLoopbackAddress(ip) ? MAX_PLAINTEXT : PATH_SAFE_DATAGRAM_SIZE;
}

/** Returns `n` if it is a valid maxDatagramSize, else throws a RangeError naming it. */
export function checkDatagramSize(n: number): number {
  if (!Number.isInteger(n) || n < 64 || n > MAX_PLAINTEXT) {
    throw new RangeError(`maxDatagramSize must be an integer in 64..${MAX_PLAINTEXT}, got ${n}`);
  }
  return n;
}
