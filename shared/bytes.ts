/** Byte-array helpers every layer uses. */

/**
 * The parts in one array. When only one part has bytes, that part itself is
 * returned (no copy): callers only read the result.
 */
export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  let only: Uint8Array | undefined;
  let nonEmpty = 0;
  for (const p of parts) {
    if (p.length === 0) continue;
    n += p.length;
    only = p;
    nonEmpty++;
  }
  if (nonEmpty === 1) return only!;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
