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

/**
 * A zero-length array to share. In Deno every `new Uint8Array(n)`, even n = 0, gets an
 * ArrayBuffer of its own and costs ~1 µs (bench/alloc_bench.ts); an empty one has nothing
 * to write, so one will do for everyone.
 */
export const EMPTY_BYTES: Uint8Array = new Uint8Array(0);

/**
 * Arrays up to this size come out of a shared slab (`transientBytes`); larger ones get
 * their own buffer, whose cost is small next to filling it.
 */
const TRANSIENT_MAX_BYTES = 32 * 1024;
const SLAB_BYTES = 256 * 1024;
let slab = EMPTY_BYTES;
let slabUsed = 0;

/**
 * `n` zeroed bytes for data that is copied or written out soon (an encoded head, a sealed
 * record, a request head for a socket). A fresh ArrayBuffer costs ~1-2 µs at a few hundred
 * bytes and ~5 µs at 16 KiB in Deno; a slice of a shared 256 KiB slab costs ~0.1 µs. Bytes
 * are never handed out twice (a full slab is replaced, never reused), so an array stays
 * valid for as long as it is referenced, and a slab is freed once none of its arrays is.
 * The price: an array that is kept keeps its whole slab, so do not use this for anything
 * that lives on (a stream's buffers, a cache).
 */
export function transientBytes(n: number): Uint8Array {
  if (n > TRANSIENT_MAX_BYTES) return new Uint8Array(n);
  if (slab.length - slabUsed < n) {
    slab = new Uint8Array(SLAB_BYTES);
    slabUsed = 0;
  }
  const out = slab.subarray(slabUsed, slabUsed + n);
  slabUsed += n;
  return out;
}
