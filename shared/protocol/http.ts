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

/**
 * Adds the field names a Connection header value lists (RFC 9110 7.6.1),
 * lowercased, to `into`: those fields are hop-by-hop for this message too.
 */
export function connectionOptions(value: string, into: Set<string> = new Set()): Set<string> {
  for (const t of value.split(",")) into.add(t.trim().toLowerCase());
  return into;
}

/** Status codes whose responses have no body (RFC 9110 6.4.1). */
export function isNullBodyStatus(status: number): boolean {
  return status === 101 || status === 103 || status === 204 || status === 205 || status === 304;
}
