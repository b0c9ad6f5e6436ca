/**
 * Token buckets, alone or by key (a source address, say), for bounding what outsiders can make
 * the server do. Each key's bucket holds up to `burst` tokens and refills at
 * `perSecond`; the map of buckets is bounded by `maxKeys`, the least recently used
 * key going first (a forgotten key starts again with a full bucket, so the bound
 * trades memory for a little leniency toward floods from very many addresses).
 */

/** How `KeyedTokenBuckets` refills and how many keys it keeps. */
export interface KeyedTokenBucketsOptions {
  /** Tokens a bucket holds at most (and starts with). */
  burst: number;
  /** Tokens added per second. */
  perSecond: number;
  /** Keys kept at once. Default 10,000. */
  maxKeys?: number;
  /** Clock, in milliseconds. Default `performance.now`. */
  now?: () => number;
}

/** One token bucket: `burst` tokens at most (and at first), refilled at `perSecond`. */
export class TokenBucket {
  readonly #burst: number;
  readonly #perMs: number;
  readonly #now: () => number;
  #tokens: number;
  #at: number;

  constructor(o: Omit<KeyedTokenBucketsOptions, "maxKeys">) {
    checkRate(o);
    this.#burst = this.#tokens = o.burst;
    this.#perMs = o.perSecond / 1000;
    this.#now = o.now ?? (() => performance.now());
    this.#at = this.#now();
  }

  /** Takes a token: false when the bucket is empty. */
  take(): boolean {
    const now = this.#now();
    this.#tokens = refill(this.#tokens, now - this.#at, this.#burst, this.#perMs);
    this.#at = now;
    if (this.#tokens < 1) return false;
    this.#tokens--;
    return true;
  }
}

/** Tokens after `dt` ms at `perMs` a ms, never above `burst`. */
function refill(tokens: number, dt: number, burst: number, perMs: number): number {
  return Math.min(burst, tokens + dt * perMs);
}

function checkRate(o: { burst: number; perSecond: number }): void {
  if (!(o.burst >= 1) || !(o.perSecond > 0)) {
    throw new RangeError(
      `A token bucket needs burst >= 1 and perSecond > 0, got ${o.burst} and ${o.perSecond}`,
    );
  }
}

/** Per-key token buckets in one bounded map. */
export class KeyedTokenBuckets {
  readonly #burst: number;
  readonly #perMs: number;
  readonly #maxKeys: number;
  readonly #now: () => number;
  /** key → tokens left and when they were counted; Map order is recency. */
  readonly #buckets = new Map<string, { tokens: number; at: number }>();

  constructor(o: KeyedTokenBucketsOptions) {
    checkRate(o);
    this.#burst = o.burst;
    this.#perMs = o.perSecond / 1000;
    this.#maxKeys = o.maxKeys ?? 10_000;
    this.#now = o.now ?? (() => performance.now());
  }

  /** Takes a token from `key`'s bucket: false when it is empty. */
  take(key: string): boolean {
    const now = this.#now();
    const b = this.#buckets.get(key);
    let tokens = this.#burst;
    if (b) {
      tokens = refill(b.tokens, now - b.at, this.#burst, this.#perMs);
      this.#buckets.delete(key);
    } else if (this.#buckets.size >= this.#maxKeys) {
      this.#buckets.delete(this.#buckets.keys().next().value!);
    }
    const ok = tokens >= 1;
    this.#buckets.set(key, { tokens: ok ? tokens - 1 : tokens, at: now });
    return ok;
  }

  /** Keys tracked now. */
  get size(): number {
    return this.#buckets.size;
  }
}
