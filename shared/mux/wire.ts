/**
 * Byte-level primitives for the mux wire format: QUIC variable-length integers
 * (RFC 9000 §16) read from and written into preallocated buffers.
 *
 * ```
 * 2 high bits | length | usable bits | max value
 *     00      |   1    |     6       | 63
 *     01      |   2    |    14       | 16383
 *     10      |   4    |    30       | 1073741823
 *     11      |   8    |    62       | 2^53 - 1 here (JS safe integers)
 * ```
 *
 * Reading never throws: a truncated or oversized value sets `Reader.error`.
 */
import { EMPTY_BYTES } from "../bytes.ts";

/** Bytes needed to encode `v` as a varint. */
export function varintLength(v: number): 1 | 2 | 4 | 8 {
  if (v < 0x40) return 1;
  if (v < 0x4000) return 2;
  if (v < 0x40000000) return 4;
  return 8;
}

/** Sequential writer over a caller-owned buffer. The caller checks room first. */
export class Writer {
  buf: Uint8Array;
  pos: number;
  /** Writing stops here (callers may reserve a tail). */
  end: number;
  constructor(buf: Uint8Array, pos = 0) {
    this.buf = buf;
    this.pos = pos;
    this.end = buf.length;
  }
  get remaining(): number {
    return this.end - this.pos;
  }
  u8(v: number): void {
    this.buf[this.pos++] = v;
  }
  varint(v: number): void {
    const b = this.buf;
    let p = this.pos;
    if (v < 0x40) {
      b[p++] = v;
    } else if (v < 0x4000) {
      b[p++] = 0x40 | (v >>> 8);
      b[p++] = v & 0xff;
    } else if (v < 0x40000000) {
      b[p++] = 0x80 | (v >>> 24);
      b[p++] = (v >>> 16) & 0xff;
      b[p++] = (v >>> 8) & 0xff;
      b[p++] = v & 0xff;
    } else {
      const hi = Math.floor(v / 0x100000000);
      const lo = v >>> 0;
      b[p++] = 0xc0 | (hi >>> 24);
      b[p++] = (hi >>> 16) & 0xff;
      b[p++] = (hi >>> 8) & 0xff;
      b[p++] = hi & 0xff;
      b[p++] = lo >>> 24;
      b[p++] = (lo >>> 16) & 0xff;
      b[p++] = (lo >>> 8) & 0xff;
      b[p++] = lo & 0xff;
    }
    this.pos = p;
  }
  bytes(src: Uint8Array): void {
    this.buf.set(src, this.pos);
    this.pos += src.length;
  }
}

/** Sequential reader; on malformed input sets `error` and returns 0 / empty. */
export class Reader {
  buf: Uint8Array;
  pos: number;
  end: number;
  error: string | null = null;
  constructor(buf: Uint8Array, pos = 0, end = buf.length) {
    this.buf = buf;
    this.pos = pos;
    this.end = end;
  }
  get remaining(): number {
    return this.end - this.pos;
  }
  fail(msg: string): 0 {
    if (this.error === null) this.error = msg;
    this.pos = this.end;
    return 0;
  }
  u8(): number {
    if (this.pos >= this.end) return this.fail("unexpected end of input");
    return this.buf[this.pos++]!;
  }
  varint(): number {
    const b = this.buf;
    const p = this.pos;
    if (p >= this.end) return this.fail("unexpected end of input in varint");
    const first = b[p]!;
    const len = 1 << (first >>> 6);
    if (p + len > this.end) return this.fail("unexpected end of input in varint");
    this.pos = p + len;
    switch (len) {
      case 1:
        return first;
      case 2:
        return ((first & 0x3f) << 8) | b[p + 1]!;
      case 4:
        return ((first & 0x3f) * 0x1000000) + ((b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!);
      default: {
        const hi = ((first & 0x3f) * 0x1000000) +
          ((b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!);
        if (hi > 0x1fffff) return this.fail("varint exceeds 2^53 - 1");
        const lo = ((b[p + 4]! << 24) >>> 0) + ((b[p + 5]! << 16) | (b[p + 6]! << 8) | b[p + 7]!);
        return hi * 0x100000000 + lo;
      }
    }
  }
  /** A view (no copy) of the next `n` bytes. */
  bytes(n: number): Uint8Array {
    if (n > this.end - this.pos) {
      this.fail(`length ${n} exceeds remaining ${this.end - this.pos}`);
      return EMPTY_BYTES;
    }
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }
}
