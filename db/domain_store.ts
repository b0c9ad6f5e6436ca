/**
 * Domain registrations and their key lifecycle. Each domain has one client API key,
 * shown once (at registration or rotation) and never stored: the row keeps its
 * SHA-256 (to verify `unregister`) and the derived DTLS PSK, sealed (for the
 * handshake). See `db/schema.ts`.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { and, asc, eq, gt } from "drizzle-orm";
import { derivePsk } from "../shared/credentials.ts";
import type { Database } from "./database.ts";
import { normalizeDomain } from "./domain_name.ts";
import {
  ApiKeyMismatchError,
  DomainExistsError,
  DomainNotFoundError,
  SecretKeyMismatchError,
  sqlStateOf,
  StoreError,
} from "./errors.ts";
import { QueryGuard } from "./guard.ts";
import { type DomainRow, domains } from "./schema.ts";
import type { SecretBox } from "./secret_box.ts";

/** A registered domain as the admin API shows it (no secrets). */
export interface DomainInfo {
  /** The row's UUID. */
  id: string;
  /** The domain, lowercase ASCII (IDNs in punycode). */
  domain: string;
  /** The operator's note. */
  memo: string;
  /** When it was registered. */
  createdAt: Date;
  /** When its row last changed. */
  updatedAt: Date;
  /** When its client API key was last rotated; null if never. */
  keyRotatedAt: Date | null;
}

/** A domain and its freshly issued client API key (the only time the key exists). */
export interface IssuedKey {
  /** The domain's record. */
  domain: DomainInfo;
  /** The client API key, shown once and never stored. */
  apiKey: string;
}

/** One page of `list()`; pass `nextCursor` as `after` to get the next. */
export interface DomainPage {
  /** The domains on this page, in name order. */
  domains: DomainInfo[];
  /** Where the next page starts; undefined on the last page. */
  nextCursor: string | undefined;
}

/** Longest memo accepted, in characters. */
export const MAX_MEMO_CHARS = 1000;
/** Largest page `list()` returns. */
export const MAX_PAGE_SIZE = 500;

const UNIQUE_VIOLATION = "23505";

/** Creates a client API key: 32 random bytes, lowercase hex. */
export function generateApiKey(): string {
  return randomBytes(32).toString("hex");
}

/** Hex SHA-256 of an API key, as stored in `api_key_sha256`. */
export function hashApiKey(apiKey: string): string {
  return createHash("sha256").update(apiKey, "utf8").digest("hex");
}

/**
 * Queries over the `domains` table. Every method accepts a domain in any form
 * `normalizeDomain` accepts and throws `InvalidDomainError` for others; database
 * failures become `StoreError` (no SQL parameters in it), and a database that does
 * not answer within the guard's timeout or cannot be reached `StorageUnavailableError`:
 * never "not found".
 */
export class DomainStore {
  readonly #db: Database;
  readonly #box: SecretBox;
  readonly #newKey: () => string;
  readonly #guard: QueryGuard;

  /**
   * A store over `db`, sealing PSKs with `box`; `generateApiKey` replaces the key
   * generator (tests); `guard` bounds and reports each query (default: 5 s, unreported).
   */
  constructor(
    db: Database,
    box: SecretBox,
    options: { generateApiKey?: () => string; guard?: QueryGuard } = {},
  ) {
    this.#db = db;
    this.#box = box;
    this.#newKey = options.generateApiKey ?? generateApiKey;
    this.#guard = options.guard ?? new QueryGuard();
  }

  /**
   * Registers `domain` and issues its key. Concurrent registrations of one domain
   * race on the unique constraint: exactly one wins, the others get `DomainExistsError`.
   */
  async register(domainInput: string, memo = ""): Promise<IssuedKey> {
    const domain = normalizeDomain(domainInput);
    checkMemo(memo);
    const apiKey = this.#newKey();
    const [row] = await this.#guard.run(
      "register domain",
      () =>
        this.#db.insert(domains).values({
          domain,
          memo,
          apiKeySha256: hashApiKey(apiKey),
          pskSealed: this.#box.seal(derivePsk(apiKey), domain),
        }).returning(),
      (err) => sqlStateOf(err) === UNIQUE_VIOLATION ? new DomainExistsError(domain) : undefined,
    );
    if (!row) throw new StoreError("register domain", undefined, "insert returned no row");
    return { domain: toInfo(row), apiKey };
  }

  /** The domain's public record, or undefined if it is not registered. */
  async get(domainInput: string): Promise<DomainInfo | undefined> {
    const row = await this.#row(normalizeDomain(domainInput), "read domain");
    return row ? toInfo(row) : undefined;
  }

  /** Whether the domain is registered. */
  async exists(domainInput: string): Promise<boolean> {
    return (await this.get(domainInput)) !== undefined;
  }

  /** Domains in name order, `limit` at a time (1..MAX_PAGE_SIZE), after the cursor `after`. */
  async list(options: { limit: number; after?: string | undefined }): Promise<DomainPage> {
    const limit = Math.trunc(options.limit);
    if (!(limit >= 1 && limit <= MAX_PAGE_SIZE)) {
      throw new RangeError(`limit must be between 1 and ${MAX_PAGE_SIZE}`);
    }
    const rows = await this.#guard.run("list domains", () =>
      this.#db.select().from(domains)
        .where(options.after === undefined ? undefined : gt(domains.domain, options.after))
        .orderBy(asc(domains.domain))
        .limit(limit + 1));
    const page = rows.slice(0, limit).map(toInfo);
    const more = rows.length > limit;
    return { domains: page, nextCursor: more ? page[page.length - 1]?.domain : undefined };
  }

  /**
   * Removes `domain` if `apiKey` is its current key (compared in constant time).
   * Throws `DomainNotFoundError` or `ApiKeyMismatchError`.
   */
  async unregister(domainInput: string, apiKey: string): Promise<void> {
    const domain = normalizeDomain(domainInput);
    const row = await this.#row(domain, "read domain");
    if (!row) throw new DomainNotFoundError(domain);
    const presented = Buffer.from(hashApiKey(apiKey), "hex");
    const stored = Buffer.from(row.apiKeySha256, "hex");
    if (stored.byteLength !== presented.byteLength || !timingSafeEqual(stored, presented)) {
      throw new ApiKeyMismatchError(domain);
    }
    // The hash in the WHERE clause closes the race with a concurrent rotation.
    const deleted = await this.#run("unregister domain", () =>
      this.#db.delete(domains)
        .where(and(eq(domains.id, row.id), eq(domains.apiKeySha256, row.apiKeySha256)))
        .returning({ id: domains.id }));
    if (deleted.length === 0) {
      if (await this.#row(domain, "read domain")) throw new ApiKeyMismatchError(domain);
      throw new DomainNotFoundError(domain);
    }
  }

  /** Removes `domain` by admin authority (no client key). Throws `DomainNotFoundError`. */
  async delete(domainInput: string): Promise<void> {
    const domain = normalizeDomain(domainInput);
    const deleted = await this.#run(
      "delete domain",
      () =>
        this.#db.delete(domains).where(eq(domains.domain, domain)).returning({ id: domains.id }),
    );
    if (deleted.length === 0) throw new DomainNotFoundError(domain);
  }

  /** Issues a new key for `domain`; the old one stops working. Throws `DomainNotFoundError`. */
  async rotate(domainInput: string): Promise<IssuedKey> {
    const domain = normalizeDomain(domainInput);
    const apiKey = this.#newKey();
    const now = new Date();
    const [row] = await this.#run("rotate domain key", () =>
      this.#db.update(domains).set({
        apiKeySha256: hashApiKey(apiKey),
        pskSealed: this.#box.seal(derivePsk(apiKey), domain),
        updatedAt: now,
        keyRotatedAt: now,
      }).where(eq(domains.domain, domain)).returning());
    if (!row) throw new DomainNotFoundError(domain);
    return { domain: toInfo(row), apiKey };
  }

  /** Changes a domain's memo. Throws `DomainNotFoundError`. */
  async setMemo(domainInput: string, memo: string): Promise<DomainInfo> {
    const domain = normalizeDomain(domainInput);
    checkMemo(memo);
    const [row] = await this.#run(
      "update domain memo",
      () =>
        this.#db.update(domains).set({ memo, updatedAt: new Date() })
          .where(eq(domains.domain, domain)).returning(),
    );
    if (!row) throw new DomainNotFoundError(domain);
    return toInfo(row);
  }

  /** The domain's DTLS PSK, or undefined if it is not registered. */
  async getPsk(domainInput: string): Promise<Uint8Array | undefined> {
    const domain = normalizeDomain(domainInput);
    const [row] = await this.#run(
      "read domain PSK",
      () =>
        this.#db.select({ pskSealed: domains.pskSealed }).from(domains)
          .where(eq(domains.domain, domain)).limit(1),
    );
    return row ? this.#box.open(row.pskSealed, domain) : undefined;
  }

  /**
   * Checks that the secret-box key opens the stored PSKs (it samples one row), so
   * a changed `HOP_SECRET_KEY` or a lost key file stops the server at start-up
   * instead of failing every handshake. Throws `SecretKeyMismatchError`.
   */
  async verifySecretKey(): Promise<void> {
    const [row] = await this.#run(
      "read a sealed PSK",
      () =>
        this.#db.select({ domain: domains.domain, pskSealed: domains.pskSealed }).from(domains)
          .limit(1),
    );
    if (!row) return;
    try {
      this.#box.open(row.pskSealed, row.domain);
    } catch {
      throw new SecretKeyMismatchError();
    }
  }

  async #row(domain: string, operation: string): Promise<DomainRow | undefined> {
    const [row] = await this.#run(
      operation,
      () => this.#db.select().from(domains).where(eq(domains.domain, domain)).limit(1),
    );
    return row;
  }

  #run<T>(operation: string, query: () => PromiseLike<T>): Promise<T> {
    return this.#guard.run(operation, query);
  }
}

function checkMemo(memo: string): void {
  if (memo.length > MAX_MEMO_CHARS) {
    throw new RangeError(`memo is longer than ${MAX_MEMO_CHARS} characters`);
  }
}

function toInfo(row: DomainRow): DomainInfo {
  return {
    id: row.id,
    domain: row.domain,
    memo: row.memo,
    createdAt: row.createdAt,
    updatedAt: row.updatedAt,
    keyRotatedAt: row.keyRotatedAt,
  };
}
