/**
 * Bounds-checked big-endian reading and writing for the DTLS codecs.
 *
 * A decoder never throws from deep inside: `Reader` methods record the first
 * problem and return zeros, and the caller checks `reader.error` once at the end
 * (pion/dtls style "unmarshal returns an error").
 */

export class Reader {
  #pos = 0;
  error: string | undefined;

  constructor(readonly bytes: Uint8Array, readonly what: string) {}

  get offset(): number {
    return this.#pos;
  }
  get remaining(): number {
    return this.bytes.length - this.#pos;
  }

  #need(n: number, field: string): boolean {
    if (this.error !== undefined) return false;
    if (this.#pos + n > this.bytes.length) {
      this.error = `Cannot decode ${this.what}: ${field} needs ${n} bytes, ${this.remaining} left`;
      return false;
    }
    return true;
  }

  u8(field: string): number {
    if (!this.#need(1, field)) return 0;
    return this.bytes[this.#pos++]!;
  }

  u16(field: string): number {
    if (!this.#need(2, field)) return 0;
    const b = this.bytes, p = this.#pos;
    this.#pos += 2;
    return (b[p]! << 8) | b[p + 1]!;
  }

  u24(field: string): number {
    if (!this.#need(3, field)) return 0;
    const b = this.bytes, p = this.#pos;
    this.#pos += 3;
    return (b[p]! << 16) | (b[p + 1]! << 8) | b[p + 2]!;
  }

  u48(field: string): number {
    if (!this.#need(6, field)) return 0;
    const b = this.bytes, p = this.#pos;
    this.#pos += 6;
    return ((b[p]! << 8) | b[p + 1]!) * 0x1_0000_0000 +
      ((b[p + 2]! << 24) >>> 0) + ((b[p + 3]! << 16) | (b[p + 4]! << 8) | b[p + 5]!);
  }

  /** `n` raw bytes (a view, not a copy). */
  bytesN(n: number, field: string): Uint8Array {
    if (!this.#need(n, field)) return new Uint8Array(0);
    const v = this.bytes.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    return v;
  }

  /** A vector with a 1-, 2- or 3-byte length prefix, checked against [min, max]. */
  vec(lenBytes: 1 | 2 | 3, field: string, min = 0, max = Infinity): Uint8Array {
    const n = lenBytes === 1 ? this.u8(field) : lenBytes === 2 ? this.u16(field) : this.u24(field);
    if (this.error === undefined && (n < min || n > max)) {
      this.error = `Cannot decode ${this.what}: ${field} length ${n} outside ${min}..${max}`;
      return new Uint8Array(0);
    }
    return this.bytesN(n, field);
  }

  rest(): Uint8Array {
    return this.bytesN(this.remaining, "rest");
  }

  /** Fails unless everything was consumed. */
  end(): void {
    if (this.error === undefined && this.remaining !== 0) {
      this.error = `Cannot decode ${this.what}: ${this.remaining} trailing bytes`;
    }
  }
}

/** Growable writer; `finish()` returns the bytes written. */
export class Writer {
  #buf: Uint8Array;
  #pos = 0;

  constructor(initial = 256) {
    this.#buf = new Uint8Array(initial);
  }

  #room(n: number): void {
    if (this.#pos + n <= this.#buf.length) return;
    let size = this.#buf.length * 2;
    while (size < this.#pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.#buf.subarray(0, this.#pos));
    this.#buf = next;
  }

  get length(): number {
    return this.#pos;
  }

  u8(v: number): this {
    this.#room(1);
    this.#buf[this.#pos++] = v & 0xff;
    return this;
  }
  u16(v: number): this {
    this.#room(2);
    this.#buf[this.#pos++] = (v >>> 8) & 0xff;
    this.#buf[this.#pos++] = v & 0xff;
    return this;
  }
  u24(v: number): this {
    this.#room(3);
    this.#buf[this.#pos++] = (v >>> 16) & 0xff;
    this.#buf[this.#pos++] = (v >>> 8) & 0xff;
    this.#buf[this.#pos++] = v & 0xff;
    return this;
  }
  u48(v: number): this {
    this.u16(Math.floor(v / 0x1_0000_0000));
    this.#room(4);
    const lo = v >>> 0;
    this.#buf[this.#pos++] = lo >>> 24;
    this.#buf[this.#pos++] = (lo >>> 16) & 0xff;
    this.#buf[this.#pos++] = (lo >>> 8) & 0xff;
    this.#buf[this.#pos++] = lo & 0xff;
    return this;
  }
  bytes(b: Uint8Array): this {
    this.#room(b.length);
    this.#buf.set(b, this.#pos);
    this.#pos += b.length;
    return this;
  }
  vec(lenBytes: 1 | 2 | 3, b: Uint8Array): this {
    if (lenBytes === 1) this.u8(b.length);
    else if (lenBytes === 2) this.u16(b.length);
    else this.u24(b.length);
    return this.bytes(b);
  }
  finish(): Uint8Array {
    return this.#buf.slice(0, this.#pos);
  }
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!;
  return d === 0;
}

export const utf8 = new TextEncoder();
export const ascii = new TextDecoder("latin1");
