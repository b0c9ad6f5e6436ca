/**
 * A stream's outgoing bytes: a growable ring holding everything written and not
 * yet acknowledged, plus which ranges were acked and which must be sent again, and
 * the STREAM frames cut from them.
 *
 * ```
 * ackedPrefix        nextNew                 writeEnd
 *     |== sent, some acked/lost ==|== unsent ==|
 * ```
 */
import { EMPTY_BYTES } from "../bytes.ts";
import { encodeStreamHeader, streamFrameOverhead } from "./frames.ts";
import { type SentStream, SentStreamData } from "./sent_frame.ts";
import type { Writer } from "./wire.ts";

/** Sorted, disjoint, half-open ranges as flat [start0, end0, start1, end1, ...]. */
export class RangeSet {
  r: number[] = [];
  get empty(): boolean {
    return this.r.length === 0;
  }
  /** Start and end of the first range (when not empty). */
  get firstStart(): number {
    return this.r[0]!;
  }
  get firstEnd(): number {
    return this.r[1]!;
  }
  add(start: number, end: number): void {
    if (end <= start) return;
    const r = this.r;
    // Fast path: append at the end.
    const n = r.length;
    if (n === 0 || start > r[n - 1]!) {
      r.push(start, end);
      return;
    }
    if (start === r[n - 1]!) {
      r[n - 1] = end;
      return;
    }
    let i = 0;
    while (i < r.length && r[i + 1]! < start) i += 2;
    let j = i;
    let s = start;
    let e = end;
    while (j < r.length && r[j]! <= e) {
      s = Math.min(s, r[j]!);
      e = Math.max(e, r[j + 1]!);
      j += 2;
    }
    r.splice(i, j - i, s, e);
  }
  remove(start: number, end: number): void {
    if (end <= start) return;
    const r = this.r;
    const out: number[] = [];
    let changed = false;
    for (let i = 0; i < r.length; i += 2) {
      const s = r[i]!;
      const e = r[i + 1]!;
      if (e <= start || s >= end) {
        out.push(s, e);
        continue;
      }
      changed = true;
      if (s < start) out.push(s, start);
      if (e > end) out.push(end, e);
    }
    if (changed) this.r = out;
  }
  /** Drops everything below `offset`. */
  trimBelow(offset: number): void {
    const r = this.r;
    let i = 0;
    while (i < r.length && r[i + 1]! <= offset) i += 2;
    if (i > 0) r.splice(0, i);
    if (r.length > 0 && r[0]! < offset) r[0] = offset;
  }
  contains(start: number, end: number): boolean {
    const r = this.r;
    for (let i = 0; i < r.length; i += 2) {
      if (r[i]! <= start && r[i + 1]! >= end) return true;
    }
    return false;
  }
}

/** Smallest ring, made on the first write: a small request or response fits. */
const MIN_RING_BYTES = 512;
/**
 * Smallest rings that streams are done with, for the next streams: most streams need one
 * and no more, and a fresh one costs ~1.5 µs in Deno (bench/alloc_bench.ts), a few
 * percent of a small request's CPU. A ring is given back only once nothing it holds can
 * be read again (all of it acknowledged after the FIN, a bigger ring took its bytes, or a
 * reset), and it is only ever read through its SendBuffer, so no view of it outlives that.
 */
const spareRings: Uint8Array[] = [];
const MAX_SPARE_RINGS = 1024;

function takeRing(size: number): Uint8Array {
  return size === MIN_RING_BYTES && spareRings.length > 0
    ? spareRings.pop()!
    : new Uint8Array(size);
}

function giveRing(ring: Uint8Array): void {
  if (ring.length === MIN_RING_BYTES && spareRings.length < MAX_SPARE_RINGS) {
    spareRings.push(ring);
  }
}

export class SendBuffer {
  /** Empty until the first write: most streams carry a few hundred bytes, many none. */
  #ring = EMPTY_BYTES;
  #mask = -1;
  /** Offset of the first unacknowledged byte; the ring starts here. */
  ackedPrefix = 0;
  /** Offset after the last byte written. */
  writeEnd = 0;
  /** Offset of the first byte never sent. */
  nextNew = 0;
  /** Acknowledged ranges above ackedPrefix. */
  readonly acked = new RangeSet();
  /** Ranges declared lost (or probed) that must be sent again. */
  readonly lost = new RangeSet();
  /** The writer closed: FIN goes at writeEnd. */
  finQueued = false;
  /** FIN must be (re)sent. */
  finPending = false;
  finAcked = false;

  /** Bytes held: written and not yet acknowledged. */
  get buffered(): number {
    return this.writeEnd - this.ackedPrefix;
  }

  /** Bytes written and never sent. */
  get unsent(): number {
    return this.writeEnd - this.nextNew;
  }

  /**
   * Copies up to `limit - unsent` bytes of `src[from..]` in; returns how many. What was
   * sent and awaits its ACK does not count: the peer's window bounds it.
   */
  write(src: Uint8Array, from: number, limit: number): number {
    const room = limit - this.unsent;
    if (room <= 0) return 0;
    const n = Math.min(room, src.length - from);
    this.#ensure(this.buffered + n);
    const ring = this.#ring;
    const pos = this.writeEnd & this.#mask;
    const first = Math.min(n, ring.length - pos);
    ring.set(src.subarray(from, from + first), pos);
    if (first < n) ring.set(src.subarray(from + first, from + n), 0);
    this.writeEnd += n;
    return n;
  }

  #ensure(size: number): void {
    if (size <= this.#ring.length) return;
    let c = Math.max(MIN_RING_BYTES, this.#ring.length * 2);
    while (c < size) c *= 2;
    // In the new ring, offset o lives at o & (c-1): copy the held bytes to their new home.
    const next = takeRing(c);
    const n = this.buffered;
    if (n > 0) {
      const start = this.ackedPrefix & (c - 1);
      const first = Math.min(n, c - start);
      this.#copyOut(this.ackedPrefix, first, next, start);
      if (first < n) this.#copyOut(this.ackedPrefix + first, n - first, next, 0);
    }
    giveRing(this.#ring);
    this.#ring = next;
    this.#mask = c - 1;
  }

  /** Nothing held can be read again: the ring goes back for another stream. */
  #releaseRing(): void {
    giveRing(this.#ring);
    this.#ring = EMPTY_BYTES;
    this.#mask = -1;
  }

  #copyOut(offset: number, len: number, dst: Uint8Array, dstPos: number): void {
    const ring = this.#ring;
    const pos = offset & this.#mask;
    const first = Math.min(len, ring.length - pos);
    dst.set(ring.subarray(pos, pos + first), dstPos);
    if (first < len) dst.set(ring.subarray(0, len - first), dstPos + first);
  }

  /** Lost data waits to be sent again. */
  get retransmitting(): boolean {
    return !this.lost.empty;
  }

  /** Something to send: lost data, the FIN, or new data below `limit` (flow control). */
  hasWork(limit: number): boolean {
    if (!this.lost.empty) return true;
    if (this.finPending && this.nextNew === this.writeEnd) return true;
    return this.nextNew < this.writeEnd && this.nextNew < limit;
  }

  /**
   * Writes the next STREAM frame of stream s into w: lost data first, else new data
   * below `limit` (the stream's and the session's flow-control limits); the FIN rides
   * along when the frame reaches the end. Returns what was sent, or null if nothing fit.
   */
  writeFrame(w: Writer, s: SentStream, limit: number): SentStreamData | null {
    const lost = this.lost;
    if (!lost.empty) {
      const off = lost.firstStart;
      const end = lost.firstEnd;
      const room = w.remaining - streamFrameOverhead(s.id, off, end - off);
      const len = Math.min(end - off, room);
      if (len <= 0) return null;
      const fin = this.finQueued && this.finPending && off + len === this.writeEnd &&
        this.nextNew === this.writeEnd;
      encodeStreamHeader(w, s.id, off, len, fin);
      this.read(off, len, w.buf, w.pos);
      w.pos += len;
      lost.remove(off, off + len);
      if (fin) this.finPending = false;
      return new SentStreamData(s, off, len, fin);
    }
    const off = this.nextNew;
    const avail = Math.max(0, Math.min(this.writeEnd, limit) - off);
    const room = w.remaining - streamFrameOverhead(s.id, off, avail);
    const len = Math.min(avail, room);
    const fin = this.finPending && off + len === this.writeEnd;
    if (len < 0 || (len === 0 && !fin)) return null;
    encodeStreamHeader(w, s.id, off, len, fin);
    if (len > 0) this.read(off, len, w.buf, w.pos);
    w.pos += len;
    this.nextNew += len;
    if (fin) this.finPending = false;
    return new SentStreamData(s, off, len, fin);
  }

  /** Copies bytes [offset, offset+len) into dst at dstPos. They must still be held. */
  read(offset: number, len: number, dst: Uint8Array, dstPos: number): void {
    this.#copyOut(offset, len, dst, dstPos);
  }

  onAcked(offset: number, len: number, fin: boolean): void {
    if (fin) {
      this.finAcked = true;
      this.finPending = false;
    }
    const end = offset + len;
    if (end <= this.ackedPrefix) {
      if (fin && this.ackedPrefix === this.writeEnd) this.#releaseRing();
      return;
    }
    this.lost.remove(offset, end);
    if (offset <= this.ackedPrefix) {
      this.ackedPrefix = end;
      const a = this.acked.r;
      // Absorb acked ranges now contiguous with the prefix.
      while (a.length > 0 && a[0]! <= this.ackedPrefix) {
        if (a[1]! > this.ackedPrefix) this.ackedPrefix = a[1]!;
        a.splice(0, 2);
      }
      this.lost.trimBelow(this.ackedPrefix);
      if (this.finAcked && this.ackedPrefix === this.writeEnd) this.#releaseRing();
    } else {
      this.acked.add(offset, end);
    }
  }

  onLost(offset: number, len: number, fin: boolean): void {
    if (fin && !this.finAcked) this.finPending = true;
    let s = Math.max(offset, this.ackedPrefix);
    const end = offset + len;
    if (s >= end) return;
    // Add [s, end) minus acked ranges.
    const a = this.acked.r;
    for (let i = 0; i < a.length && s < end; i += 2) {
      const as = a[i]!;
      const ae = a[i + 1]!;
      if (ae <= s) continue;
      if (as >= end) break;
      if (as > s) this.lost.add(s, as);
      s = Math.max(s, ae);
    }
    if (s < end) this.lost.add(s, end);
  }

  /** Drops everything (stream reset). */
  clear(): void {
    this.ackedPrefix = this.writeEnd;
    this.nextNew = this.writeEnd;
    this.acked.r.length = 0;
    this.lost.r.length = 0;
    this.finPending = false;
    this.#releaseRing();
  }
}
