/**
 * The DTLS server's `lookupPsk(identity)`: reads a domain's PSK from the store,
 * with a short cache so a burst of handshakes costs one query. Unregister, delete
 * and rotation call `invalidate(domain)`; other nodes sharing the database see a
 * change at the latest after `cacheTtlMs`.
 */
import { tryNormalizeDomain } from "../db/mod.ts";
import { type Logger, silentLogger } from "./log.ts";

/** Where PSKs come from (`DomainStore` fits). */
export interface PskSource {
  getPsk(domain: string): Promise<Uint8Array | undefined>;
}

/** The DTLS handshake's PSK source: the domain store behind a short cache. */
export interface PskLookup {
  /**
   * The PSK for a DTLS PSK identity (the domain, lowercase ASCII), or undefined when
   * no such domain is registered. Never throws: a store failure is logged and
   * answers undefined (the handshake fails) without being cached.
   */
  lookupPsk(identity: string): Promise<Uint8Array | undefined>;
  /** Forgets what is cached for `domain` (and any lookup in flight for it). */
  invalidate(domain: string): void;
}

export interface PskLookupOptions {
  /** How long an answer (found or not found) is reused; default 5000 ms. 0 disables the cache. */
  cacheTtlMs?: number;
  /** Most identities cached at once; the oldest entry goes first. Default 10,000. */
  maxEntries?: number;
  /** Clock, in milliseconds. */
  now?: () => number;
  logger?: Logger;
}

interface Entry {
  psk: Uint8Array | undefined;
  expiresAt: number;
}

/** Longest identity looked up at all; longer ones cannot be domains. */
const MAX_IDENTITY_CHARS = 253;

export function createPskLookup(source: PskSource, options: PskLookupOptions = {}): PskLookup {
  const ttl = options.cacheTtlMs ?? 5000;
  const maxEntries = options.maxEntries ?? 10_000;
  const now = options.now ?? (() => performance.now());
  const logger = options.logger ?? silentLogger;
  const cache = new Map<string, Entry>();
  const inFlight = new Map<string, Promise<Uint8Array | undefined>>();
  // Bumped by invalidate(): a query that started before it must not refill the cache.
  const generation = new Map<string, number>();

  async function load(domain: string): Promise<Uint8Array | undefined> {
    const gen = generation.get(domain) ?? 0;
    try {
      const psk = await source.getPsk(domain);
      if (ttl > 0 && (generation.get(domain) ?? 0) === gen) {
        if (cache.size >= maxEntries) {
          const oldest = cache.keys().next();
          if (!oldest.done) cache.delete(oldest.value);
        }
        cache.set(domain, { psk, expiresAt: now() + ttl });
      }
      return psk;
    } catch (err) {
      logger.error("PSK lookup failed", { domain, error: err });
      return undefined;
    } finally {
      if ((generation.get(domain) ?? 0) === gen) inFlight.delete(domain);
    }
  }

  return {
    async lookupPsk(identity) {
      if (identity.length > MAX_IDENTITY_CHARS) return undefined;
      const domain = tryNormalizeDomain(identity);
      if (domain === undefined) return undefined;
      const hit = cache.get(domain);
      if (hit && hit.expiresAt > now()) return hit.psk?.slice();
      if (hit) cache.delete(domain);
      let pending = inFlight.get(domain);
      if (!pending) {
        pending = load(domain);
        inFlight.set(domain, pending);
      }
      return (await pending)?.slice();
    },
    invalidate(domainInput) {
      const domain = tryNormalizeDomain(domainInput) ?? domainInput;
      cache.delete(domain);
      inFlight.delete(domain);
      generation.set(domain, (generation.get(domain) ?? 0) + 1);
    },
  };
}
