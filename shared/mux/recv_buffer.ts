/**
 * A stream's incoming bytes: frames arrive at any offset, possibly overlapping;
 * contiguous data is queued for the reader as zero-copy views of the datagrams.
 */
interface Segment {
  offset: number;
  data: Uint8Array;
}

export class RecvBuffer {
  /** Bytes handed to the reader so far. */
  readOffset = 0;
  /** End of the contiguous prefix received. */
  contiguousEnd = 0;
  /** Largest offset + length seen (counts against flow control). */
  highest = 0;
  /** Final size once FIN or RESET told us, else -1. */
  finalSize = -1;
  readonly #ready: Uint8Array[] = [];
  #readyHead = 0;
  #readyBytes = 0;
  /** Out-of-order segments above contiguousEnd, sorted by offset. */
  #pending: Segment[] = [];
  #pendingBytes = 0;

  /** Bytes held (ready + out of order). */
  get buffered(): number {
    return this.#readyBytes + this.#pendingBytes;
  }
  get readyBytes(): number {
    return this.#readyBytes;
  }
  /** All data up to the final size was handed to the reader. */
  get finished(): boolean {
    return this.finalSize >= 0 && this.readOffset === this.finalSize;
  }

  /** Adds a received range. The caller checked flow control and final size. */
  insert(offset: number, data: Uint8Array): void {
    const end = offset + data.length;
    if (end > this.highest) this.highest = end;
    if (end <= this.contiguousEnd || data.length === 0) return;
    if (offset <= this.contiguousEnd) {
      this.#append(data.subarray(this.contiguousEnd - offset));
      this.#drainPending();
      return;
    }
    // Out of order: insert sorted; skip an exact duplicate.
    const p = this.#pending;
    let i = p.length;
    while (i > 0 && p[i - 1]!.offset > offset) i--;
    const prev = p[i - 1];
    if (prev !== undefined && prev.offset === offset && prev.data.length >= data.length) return;
    p.splice(i, 0, { offset, data });
    this.#pendingBytes += data.length;
  }

  #append(data: Uint8Array): void {
    this.#ready.push(data);
    this.#readyBytes += data.length;
    this.contiguousEnd += data.length;
  }

  #drainPending(): void {
    const p = this.#pending;
    let n = 0;
    while (n < p.length && p[n]!.offset <= this.contiguousEnd) {
      const s = p[n]!;
      this.#pendingBytes -= s.data.length;
      const end = s.offset + s.data.length;
      if (end > this.contiguousEnd) this.#append(s.data.subarray(this.contiguousEnd - s.offset));
      n++;
    }
    if (n > 0) p.splice(0, n);
  }

  /**
   * Takes ready data: one chunk as is, or several joined up to `maxBytes`.
   * Returns null if nothing is ready.
   */
  take(maxBytes: number): Uint8Array | null {
    const r = this.#ready;
    if (this.#readyHead === r.length) return null;
    const first = r[this.#readyHead]!;
    let out: Uint8Array;
    if (this.#readyHead + 1 === r.length || first.length >= maxBytes) {
      out = first;
      this.#readyHead++;
    } else {
      let total = 0;
      let j = this.#readyHead;
      while (j < r.length && total + r[j]!.length <= maxBytes) total += r[j++]!.length;
      if (j === this.#readyHead) j++, total = first.length;
      out = new Uint8Array(total);
      let pos = 0;
      for (let k = this.#readyHead; k < j; k++) {
        out.set(r[k]!, pos);
        pos += r[k]!.length;
      }
      this.#readyHead = j;
    }
    if (this.#readyHead === r.length) {
      r.length = 0;
      this.#readyHead = 0;
    } else if (this.#readyHead > 1024) {
      r.splice(0, this.#readyHead);
      this.#readyHead = 0;
    }
    this.#readyBytes -= out.length;
    this.readOffset += out.length;
    return out;
  }

  /** Drops everything held (stop sending / reset). Returns bytes dropped from `highest`'s view. */
  clear(): void {
    this.#ready.length = 0;
    this.#readyHead = 0;
    this.#readyBytes = 0;
    this.#pending = [];
    this.#pendingBytes = 0;
  }
}
