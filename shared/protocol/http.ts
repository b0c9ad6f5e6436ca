/** HTTP header rules shared by both ends of the tunnel (RFC 9110 7.6.1). */

/** Hop-by-hop headers: meaningful for one connection only, never forwarded. */
export const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

/** Status codes whose responses have no body (RFC 9110 6.4.1). */
export function isNullBodyStatus(status: number): boolean {
  return status === 101 || status === 103 || status === 204 || status === 205 || status === 304;
}
