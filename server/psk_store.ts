/**
 * The DTLS server's `lookupPsk(identity)`: reads a domain's PSK from the store,
 * with a short cache so a burst of handshakes costs one query. Unregister, delete
 * and rotation call `invalidate(domain)`; other nodes sharing the database see a
 * change at the latest after `cacheTtlMs`.
 *
 * A failed lookup is never "not found": the lookup rejects, and the DTLS server
 * answers the handshake with an `internal_error` alert (the client reports the
 * server's storage as unavailable and retries soon), not `unknown_psk_identity`
 * (which the client reports as an unregistered domain and retries late). While
 * the database fails, a PSK this process read within `outageTtlMs` is still used,
 * so domains that were connected before an outage reconnect during it. What is
 * kept is the derived PSK (HMAC of the client API key, the value the handshake
 * needs), never the key.
 *
 * Anyone who passes the DTLS cookie exchange can make the server look identities
 * up, and an identity nobody registered is a database query every `cacheTtlMs`. So
 * store queries are also bounded per source address (an IPv4 address, an IPv6
 * /64): `queriesPerAddress` (default a burst of 100, then 10 per second). Past it the
 * lookup rejects with `PskLookupLimitedError` and the handshake fails with
 * `internal_error`, which the client retries soon; cached answers are not limited.
 * Per-address budgets alone do not bound the database's load: an attacker with many
 * addresses (IPv6 /64s are cheap) gets a fresh budget on each. So at most
 * `maxQueriesInFlight` store queries (default 64) run at once; past that a lookup
 * that needs the store is refused the same way (`busy`), and the database, its
 * connection pool's queue and this map stay bounded whatever the caller count. While
 * the store fails (the last query that settled failed), a full house answers a
 * domain kept for the outage from the cache, as a failed query would.
 */
import { tryNormalizeDomain } from "../db/mod.ts";
import { type Logger, silentLogger } from "./log.ts";
import { addressGroup } from "../shared/dtls/mod.ts";
import { KeyedTokenBuckets } from "../shared/rate_limit.ts";

/** Where PSKs come from (`DomainStore` fits). */
export interface PskSource {
  getPsk(domain: string): Promise<Uint8Array | undefined>;
}

/** The DTLS handshake's PSK source: the domain store behind a short cache. */
export interface PskLookup {
  /**
   * The PSK for a DTLS PSK identity (the domain, lowercase ASCII), or undefined when
   * no such domain is registered. When the store fails (database down, hung, or any
   * other error) it answers the PSK last read within `outageTtlMs`, if any, and
   * otherwise rejects with the store's error (logged, not cached): the DTLS
   * handshake then fails with `internal_error`.
   */
  lookupPsk(identity: string, peer?: { hostname: string }): Promise<Uint8Array | undefined>;
  /** Forgets what is cached for `domain` (and any lookup in flight for it). */
  invalidate(domain: string): void;
}

export interface PskLookupOptions {
  /** How long an answer (found or not found) is reused; default 5000 ms. 0 disables the cache. */
  cacheTtlMs?: number;
  /**
   * How long after it was last read a PSK may still be used while the store fails
   * (`HOP_PSK_OUTAGE_CACHE_SECONDS`); default 3,600,000 ms (1 h). 0: never.
   */
  outageTtlMs?: number;
  /**
   * Most found PSKs kept at once, and apart from them most "not registered" answers;
   * the oldest of each goes first. Default 10,000. Kept apart so that a stream of
   * unknown identities (anyone who passes the cookie exchange can send them) cannot
   * push out the PSKs kept for a database outage.
   */
  maxEntries?: number;
  /** Clock, in milliseconds. */
  now?: () => number;
  logger?: Logger;
  /** A handshake got a PSK from the outage cache because the store failed (metrics). */
  onOutageHit?: () => void;
  /**
   * Store queries allowed per source address: `burst` at once, refilled at
   * `perSecond`. Default { burst: 100, perSecond: 10 }. Addresses tracked at once are
   * bounded by `maxEntries` (the least recently used goes first).
   */
  queriesPerAddress?: { burst: number; perSecond: number };
  /**
   * Store queries running at once, in all; a lookup that needs one more is refused
   * (`PskLookupLimitedError`, result `busy`). Default 64.
   */
  maxQueriesInFlight?: number;
  /** Each lookup's outcome (metrics). */
  onLookup?: (result: PskLookupResult) => void;
}

/**
 * What a lookup did: `cached` answered from memory (found or not registered);
 * `found` / `not_registered` asked the store; `outage` used a PSK read before;
 * `failed` the store failed; `rate_limited` the address had no query left;
 * `busy` `maxQueriesInFlight` store queries were running; `invalid` the identity
 * cannot be a domain.
 */
export type PskLookupResult =
  | "cached"
  | "found"
  | "not_registered"
  | "outage"
  | "failed"
  | "rate_limited"
  | "busy"
  | "invalid";

/** A lookup refused because its source address asked the store too often. */
export class PskLookupLimitedError extends Error {
  constructor(message = "Too many PSK lookups from this address; retry later") {
    super(message);
    this.name = "PskLookupLimitedError";
  }
}

/** Default `outageTtlMs`. */
export const DEFAULT_PSK_OUTAGE_TTL_MS = 3_600_000;

interface Entry {
  psk: Uint8Array;
  /** Until then the answer is used without asking the store. */
  expiresAt: number;
  /** Until then a found PSK is used when the store fails. */
  usableInOutageUntil: number;
  /** Logged once per outage and domain. */
  outageLogged: boolean;
}

/** Longest identity looked up at all; longer ones cannot be domains. */
const MAX_IDENTITY_CHARS = 253;

export function createPskLookup(source: PskSource, options: PskLookupOptions = {}): PskLookup {
  const ttl = options.cacheTtlMs ?? 5000;
  const outageTtl = options.outageTtlMs ?? DEFAULT_PSK_OUTAGE_TTL_MS;
  const maxEntries = options.maxEntries ?? 10_000;
  const now = options.now ?? (() => performance.now());
  const logger = options.logger ?? silentLogger;
  // Found PSKs (the outage cache lives here), and "not registered" answers until when.
  const cache = new Map<string, Entry>();
  const missing = new Map<string, number>();
  const inFlight = new Map<string, Promise<Uint8Array | undefined>>();
  // Bumped by invalidate(): a query that started before it must not refill the cache.
  const generation = new Map<string, number>();
  const perAddress = options.queriesPerAddress ?? { burst: 100, perSecond: 10 };
  const buckets = new KeyedTokenBuckets({ ...perAddress, maxKeys: maxEntries, now });
  const report = options.onLookup ?? (() => {});
  const maxRunning = options.maxQueriesInFlight ?? 64;
  if (!Number.isInteger(maxRunning) || maxRunning < 1) {
    throw new RangeError(`maxQueriesInFlight must be a positive integer, got ${maxRunning}`);
  }
  /** Store queries not settled yet (an invalidated one too: it still holds its connection). */
  let running = 0;
  /** The last store query that settled failed: a full house of queries is an outage's. */
  let storeFailing = false;
  /** A PSK kept for an outage, if `domain` has one still usable. */
  const keptForOutage = (domain: string) => {
    const kept = cache.get(domain);
    return kept && kept.usableInOutageUntil > now() ? kept : undefined;
  };
  /** Answers from the outage cache (counted). */
  const fromOutageCache = (kept: Entry) => {
    options.onOutageHit?.();
    report("outage");
    return kept.psk.slice();
  };

  function remember(domain: string, psk: Uint8Array | undefined): void {
    const t = now();
    // Re-inserted last: a Map's order is the eviction order.
    cache.delete(domain);
    missing.delete(domain);
    if (psk === undefined) {
      if (ttl > 0) insertBounded(missing, domain, t + ttl);
      return;
    }
    const keepForOutage = outageTtl > 0;
    if (ttl <= 0 && !keepForOutage) return;
    insertBounded(cache, domain, {
      psk: psk.slice(),
      expiresAt: t + ttl,
      usableInOutageUntil: keepForOutage ? t + outageTtl : 0,
      outageLogged: false,
    });
  }

  function insertBounded<V>(map: Map<string, V>, key: string, value: V): void {
    if (map.size >= maxEntries) {
      const oldest = map.keys().next();
      if (!oldest.done) map.delete(oldest.value);
    }
    map.set(key, value);
  }

  async function load(domain: string): Promise<Uint8Array | undefined> {
    const gen = generation.get(domain) ?? 0;
    running++;
    try {
      const psk = await source.getPsk(domain);
      storeFailing = false;
      if ((generation.get(domain) ?? 0) === gen) remember(domain, psk);
      report(psk ? "found" : "not_registered");
      return psk;
    } catch (err) {
      storeFailing = true;
      const kept = keptForOutage(domain);
      if (kept && (generation.get(domain) ?? 0) === gen) {
        if (!kept.outageLogged) {
          kept.outageLogged = true;
          logger.warn("PSK lookup failed; using the PSK read before", {
            domain,
            error: err,
          });
        }
        return fromOutageCache(kept);
      }
      report("failed");
      logger.error("PSK lookup failed", { domain, error: err });
      throw err;
    } finally {
      running--;
      if ((generation.get(domain) ?? 0) === gen) inFlight.delete(domain);
    }
  }

  return {
    async lookupPsk(identity, peer) {
      const domain = identity.length > MAX_IDENTITY_CHARS
        ? undefined
        : tryNormalizeDomain(identity);
      if (domain === undefined) {
        report("invalid");
        return undefined;
      }
      const notRegisteredUntil = missing.get(domain);
      if (notRegisteredUntil !== undefined) {
        if (notRegisteredUntil > now()) {
          report("cached");
          return undefined;
        }
        missing.delete(domain);
      }
      const hit = cache.get(domain);
      if (hit && hit.expiresAt > now()) {
        report("cached");
        return hit.psk.slice();
      }
      if (hit && !(hit.usableInOutageUntil > now())) cache.delete(domain);
      let pending = inFlight.get(domain);
      if (!pending) {
        if (running >= maxRunning) {
          // A hung database fills every slot: a domain read before still connects.
          const kept = storeFailing ? keptForOutage(domain) : undefined;
          if (kept) return fromOutageCache(kept);
          report("busy");
          throw new PskLookupLimitedError("Too many PSK lookups in progress; retry later");
        }
        if (peer && !buckets.take(addressGroup(peer.hostname))) {
          report("rate_limited");
          throw new PskLookupLimitedError();
        }
        pending = load(domain);
        inFlight.set(domain, pending);
      }
      return (await pending)?.slice();
    },
    invalidate(domainInput) {
      const domain = tryNormalizeDomain(domainInput) ?? domainInput;
      cache.delete(domain);
      missing.delete(domain);
      inFlight.delete(domain);
      generation.set(domain, (generation.get(domain) ?? 0) + 1);
    },
  };
}
