/**
 * Certificates, ACME challenges and ACME account keys in the database, so that
 * every node serves the same certificates and any node can answer a challenge.
 * Private keys are sealed with the server's `SecretBox` (bound to the domain or
 * the directory URL); they exist in clear only in memory.
 */
import { and, eq, gt, lt } from "drizzle-orm";
import type { AdvisoryLocks, Database } from "./database.ts";
import { QueryGuard } from "./guard.ts";
import { acmeAccounts, acmeChallenges, certificates } from "./schema.ts";
import type { SecretBox } from "./secret_box.ts";

/** A name's certificate (if issued yet) and its issuance state. */
export interface StoredCertificate {
  /** The name (lowercase ASCII). */
  domain: string;
  /** PEM chain and private key; undefined until the first issuance succeeds. */
  cert: string | undefined;
  /** The private key (PEM), unsealed; undefined until the first issuance succeeds. */
  key: string | undefined;
  /** Start of the certificate's validity. */
  notBefore: Date | undefined;
  /** End of the certificate's validity. */
  notAfter: Date | undefined;
  /** Failed issuance attempts since the last success. */
  failures: number;
  /** Why the last attempt failed. */
  lastError: string | undefined;
  /** When to try again after a failure. */
  nextAttemptAt: Date | undefined;
  /** When the row last changed (nodes poll for rows changed since). */
  updatedAt: Date;
}

const certContext = (domain: string) => `certificate:${domain}`;
const accountContext = (directoryUrl: string) => `acme-account:${directoryUrl}`;
const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * The `certificates`, `acme_challenges` and `acme_accounts` tables, secrets sealed.
 * Database failures are `StoreError`s; a database that does not answer in time or
 * cannot be reached, `StorageUnavailableError` (`db/guard.ts`).
 */
export class CertificateStore {
  readonly #db: Database;
  readonly #box: SecretBox;
  readonly #guard: QueryGuard;
  readonly #locks: AdvisoryLocks | undefined;

  /**
   * A store over `db`, sealing private keys with `box`; `guard` bounds each query
   * (default 5 s); `locks` (PostgreSQL) make an order for a name one node's at a time.
   */
  constructor(
    db: Database,
    box: SecretBox,
    guard: QueryGuard = new QueryGuard(),
    locks?: AdvisoryLocks,
  ) {
    this.#db = db;
    this.#box = box;
    this.#guard = guard;
    this.#locks = locks;
  }

  /**
   * Takes the right to order a certificate for `domain` across every node that
   * shares the database (`pg_try_advisory_lock`): a release function, or
   * undefined when another node is ordering it now. Without locks (PGlite, one
   * process) it is always granted.
   */
  async lockOrder(domain: string): Promise<(() => Promise<void>) | undefined> {
    const locks = this.#locks;
    if (!locks) return () => Promise.resolve();
    const key = `hopgate/acme-order/${domain}`;
    const trying = locks.tryLock(key);
    let got: boolean;
    try {
      got = await this.#guard.run("lock ACME order", () => trying);
    } catch (e) {
      // Given up on: a lock it still takes later is given back then.
      trying.then((late) => late ? locks.unlock(key) : undefined).catch(() => {});
      throw e;
    }
    if (!got) return undefined;
    return async () => {
      await this.#guard.run("unlock ACME order", () => locks.unlock(key)).catch(() => {
        // The lock connection then drops all its locks (db/database.ts).
      });
    };
  }

  /** Every row, or those updated after `since`. */
  async list(since?: Date): Promise<StoredCertificate[]> {
    const rows = await this.#guard.run(
      "list certificates",
      () =>
        this.#db.select().from(certificates)
          .where(since ? gt(certificates.updatedAt, since) : undefined),
    );
    return rows.map((r) => this.#open(r));
  }

  /** The row for `domain`, if any. */
  async get(domain: string): Promise<StoredCertificate | undefined> {
    const [row] = await this.#guard.run(
      "read certificate",
      () => this.#db.select().from(certificates).where(eq(certificates.domain, domain)),
    );
    return row ? this.#open(row) : undefined;
  }

  /** Stores a newly issued certificate; clears the failure state. */
  async saveIssued(
    domain: string,
    c: { cert: string; key: string; notBefore: Date; notAfter: Date },
    now: Date,
  ): Promise<void> {
    const values = {
      certPem: c.cert,
      keySealed: this.#box.seal(enc.encode(c.key), certContext(domain)),
      notBefore: c.notBefore,
      notAfter: c.notAfter,
      issuedAt: now,
      failures: 0,
      lastError: null,
      lastAttemptAt: now,
      nextAttemptAt: null,
      updatedAt: now,
    };
    await this.#guard.run(
      "save certificate",
      () =>
        this.#db.insert(certificates).values({ domain, ...values })
          .onConflictDoUpdate({ target: certificates.domain, set: values }),
    );
  }

  /** Records a failed attempt; the certificate in place (if any) stays. */
  async saveFailure(
    domain: string,
    f: { error: string; failures: number; nextAttemptAt: Date },
    now: Date,
  ): Promise<void> {
    const values = {
      failures: f.failures,
      lastError: f.error.slice(0, 1000),
      lastAttemptAt: now,
      nextAttemptAt: f.nextAttemptAt,
      updatedAt: now,
    };
    await this.#guard.run(
      "save certificate failure",
      () =>
        this.#db.insert(certificates).values({ domain, ...values })
          .onConflictDoUpdate({ target: certificates.domain, set: values }),
    );
  }

  /** Forgets `domain`'s certificate and issuance state. */
  async delete(domain: string): Promise<void> {
    await this.#guard.run(
      "delete certificate",
      () => this.#db.delete(certificates).where(eq(certificates.domain, domain)),
    );
  }

  /** Publishes an HTTP-01 key authorization until `expiresAt`. */
  async putChallenge(
    token: string,
    domain: string,
    keyAuthorization: string,
    expiresAt: Date,
  ): Promise<void> {
    await this.#guard.run(
      "publish ACME challenge",
      () =>
        this.#db.insert(acmeChallenges).values({ token, domain, keyAuthorization, expiresAt })
          .onConflictDoUpdate({
            target: acmeChallenges.token,
            set: { domain, keyAuthorization, expiresAt },
          }),
    );
  }

  /** The key authorization for `token`, unless expired. */
  async getChallenge(token: string, now: Date): Promise<string | undefined> {
    const [row] = await this.#guard.run(
      "read ACME challenge",
      () =>
        this.#db.select({ k: acmeChallenges.keyAuthorization })
          .from(acmeChallenges)
          .where(and(eq(acmeChallenges.token, token), gt(acmeChallenges.expiresAt, now))),
    );
    return row?.k;
  }

  /** Withdraws the challenge for `token`. */
  async deleteChallenge(token: string): Promise<void> {
    await this.#guard.run(
      "delete ACME challenge",
      () => this.#db.delete(acmeChallenges).where(eq(acmeChallenges.token, token)),
    );
  }

  /** Removes challenges left behind by a node that stopped mid-order. */
  async deleteExpiredChallenges(now: Date): Promise<void> {
    await this.#guard.run(
      "delete expired ACME challenges",
      () => this.#db.delete(acmeChallenges).where(lt(acmeChallenges.expiresAt, now)),
    );
  }

  /**
   * The account key (PEM) for `directoryUrl`, created with `create` on first use.
   * Concurrent first uses on several nodes agree on one key (the first insert wins).
   */
  async accountKey(
    directoryUrl: string,
    create: () => Promise<string>,
  ): Promise<{ key: string; accountUrl: string | undefined }> {
    const read = async () => {
      const [row] = await this.#guard.run(
        "read ACME account",
        () =>
          this.#db.select().from(acmeAccounts)
            .where(eq(acmeAccounts.directoryUrl, directoryUrl)),
      );
      return row;
    };
    let row = await read();
    if (!row) {
      const key = await create();
      const keySealed = this.#box.seal(enc.encode(key), accountContext(directoryUrl));
      await this.#guard.run(
        "store ACME account",
        () =>
          this.#db.insert(acmeAccounts).values({ directoryUrl, keySealed }).onConflictDoNothing(),
      );
      row = await read();
      if (!row) throw new Error("Cannot store ACME account key");
    }
    const key = dec.decode(this.#box.open(row.keySealed, accountContext(directoryUrl)));
    return { key, accountUrl: row.accountUrl ?? undefined };
  }

  /** Records the account URL the CA gave the account for `directoryUrl`. */
  async setAccountUrl(directoryUrl: string, accountUrl: string): Promise<void> {
    await this.#guard.run(
      "update ACME account",
      () =>
        this.#db.update(acmeAccounts).set({ accountUrl })
          .where(eq(acmeAccounts.directoryUrl, directoryUrl)),
    );
  }

  #open(r: typeof certificates.$inferSelect): StoredCertificate {
    const key = r.keySealed
      ? dec.decode(this.#box.open(r.keySealed, certContext(r.domain)))
      : undefined;
    return {
      domain: r.domain,
      cert: r.certPem ?? undefined,
      key,
      notBefore: r.notBefore ?? undefined,
      notAfter: r.notAfter ?? undefined,
      failures: r.failures,
      lastError: r.lastError ?? undefined,
      nextAttemptAt: r.nextAttemptAt ?? undefined,
      updatedAt: r.updatedAt,
    };
  }
}
