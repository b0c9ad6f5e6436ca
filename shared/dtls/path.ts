/**
 * How large a datagram a DTLS connection may carry (`maxDatagramSize`, the payload
 * of one record, which is one mux packet). The mux above probes the path up to this
 * ceiling (DPLPMTUD), so the ceiling decides what may ever be tried:
 * - loopback carries whole 16 KiB records (the DTLS plaintext limit) without loss;
 * - elsewhere, what fits the smallest MTU IPv6 allows, 1280 bytes: 1280 - 40 (IPv6)
 *   - 8 (UDP) - 37 (DTLS header, explicit nonce, tag) = 1195 bytes of record payload;
 *   over IPv4, 1280 - 20 - 8 - 37 = 1215.
 * The 37 bytes are AES-128-GCM's, the suite that adds most: the ceiling bounds the UDP
 * payload (ceiling + 37), and the record's payload is what is left of that under the
 * negotiated suite (`Connection.setSuite`). ChaCha20-Poly1305 has no explicit nonce, so
 * its records carry 8 bytes more (1223 over IPv4); a record with a connection ID (the
 * client's records carry the server's) carries 9 fewer (the CID and the real content
 * type). A download under ChaCha20 thus takes 0.65 % fewer datagrams (each one a seal, a
 * send, a receive and an open); its goodput hardly moves, as each datagram's 57 bytes of
 * headers are now 4.45 % of 1280 bytes instead of 4.48 % of 1272 (WAN lab P2, later 20 MiB
 * GETs: 3.696-3.727 s against 3.684-3.730 s, six each).
 *
 * Why not probe higher: Deno's UDP sockets cannot set the don't-fragment bit, so
 * Linux sends them with its default (DF set until an ICMP "fragmentation needed"
 * arrives, then fragments locally). A probe above the path's MTU is lost once and
 * then "succeeds" as IP fragments, and every later packet goes out in two pieces:
 * a lost fragment loses the packet. Measured on the WAN lab's 50 ms / 50 Mbit/s path
 * with a 1280-byte MTU (BBR both runs): with a 1400 ceiling the emulator carried
 * 83,226 datagrams for 61 MB (every packet two fragments), with 1215 it carried
 * 47,980, and the 10 MiB POST took 2.82 s against 2.31 s.
 *
 * Operators whose whole path carries more (a LAN, a known 1500-byte path) raise the
 * ceiling on both ends (`HOP_TUNNEL_MAX_DATAGRAM_BYTES`, `--max-datagram-bytes`).
 */
import { MAX_PLAINTEXT } from "./constants.ts";

/** Record payload that fits a 1280-byte MTU over IPv6 (1280 - 40 - 8 - 37). */
export const PATH_SAFE_DATAGRAM_SIZE = 1195;
/** Record payload that fits a 1280-byte MTU over IPv4 (1280 - 20 - 8 - 37). */
export const PATH_SAFE_DATAGRAM_SIZE_IPV4 = 1215;

/** Whether `ip` is an IPv4 or IPv6 loopback address (IPv4-mapped included). */
export function isLoopbackAddress(ip: string): boolean {
  return ip.startsWith("127.") || ip === "::1" || ip === "[::1]" || ip.startsWith("::ffff:127.");
}

/** Whether `hostname` (a name or an address) is `localhost` or a loopback address. */
export function isLoopbackHost(hostname: string): boolean {
  return hostname === "localhost" || isLoopbackAddress(hostname);
}

/** The default ceiling for a peer at `ip`. */
export function defaultMaxDatagramSize(ip: string): number {
  if (isLoopbackAddress(ip)) return MAX_PLAINTEXT;
  const v4 = !ip.includes(":") || ip.startsWith("::ffff:");
  return v4 ? PATH_SAFE_DATAGRAM_SIZE_IPV4 : PATH_SAFE_DATAGRAM_SIZE;
}

/** Returns `n` if it is a valid maxDatagramSize, else throws a RangeError naming it. */
export function checkDatagramSize(n: number): number {
  if (!Number.isInteger(n) || n < 64 || n > MAX_PLAINTEXT) {
    throw new RangeError(`maxDatagramSize must be an integer in 64..${MAX_PLAINTEXT}, got ${n}`);
  }
  return n;
}
