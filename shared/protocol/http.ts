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

/** Copies headers without hop-by-hop ones, nor any named in `Connection`. */
export function endToEndHeaders(headers: Headers): [string, string][] {
  const extra = new Set(
    (headers.get("connection") ?? "").split(",").map((s) => s.trim().toLowerCase()).filter(Boolean),
  );
  const out: [string, string][] = [];
  for (const [k, v] of headers) {
    if (!HOP_BY_HOP.has(k) && !extra.has(k)) out.push([k, v]);
  }
  return out; // (iteration keeps each Set-Cookie apart, per the Fetch standard)
}

/** Status codes whose responses have no body (RFC 9110 6.4.1). */
export function isNullBodyStatus(status: number): boolean {
  return status === 101 || status === 103 || status === 204 || status === 205 || status === 304;
}
