/**
 * Keeps a certificate for every name the server answers for: the server domain,
 * the proxy domains and every registered domain, and for no other name.
 *
 *   register / first handshake / timer
 *          |
 *     ensure(name) --allowed?--no--> refused (no order is placed)
 *          | yes
 *     fresh cert? --yes--> done
 *          | no (missing, or a third of its lifetime left)
 *     in backoff? --yes--> wait for the timer
 *          | no
 *     issue(name) --ok--> store (key sealed), serve, onChange()
 *          |
 *          +-----fail--> store error, failures+1, next attempt after backoff
 *
 * The issuer is pluggable: ACME (HTTP-01, `acme_issuer.ts`) in production,
 * self-signed in debug mode. Certificates live in the database; every node loads
 * what the others issued on its timer, so all serve the same certificates.
 */
import type { Logger } from "../log.ts";
import type { CertifiedKey } from "../front/tls.ts";
import type { CertificateStore, StoredCertificate } from "../../db/mod.ts";

/** A certificate fresh from the CA (or made locally). */
export interface IssuedCertificate extends CertifiedKey {
  /** Start of its validity. */
  notBefore: Date;
  /** End of its validity. */
  notAfter: Date;
}

/** Obtains a certificate for one name. */
export interface Issuer {
  /** "acme" or "self-signed", for logs. */
  readonly kind: string;
  /** Issues a certificate for `domain` (throws if it cannot). */
  issue(domain: string): Promise<IssuedCertificate>;
  /** The HTTP-01 key authorization for `token`, if an order is waiting for it. */
  challenge?(token: string): Promise<string | undefined>;
}

/** What is known about one name's certificate, for the admin status and tests. */
export type CertificateState =
  | { state: "valid"; notAfter: Date }
  | { state: "refused" }
  | { state: "failed"; error: string; failures: number; nextAttemptAt: Date }
  | { state: "pending" };

/** What a `CertificateManager` is built from, and its timers. */
export interface CertificateManagerOptions {
  /** Where certificates and issuance state are stored. */
  certs: CertificateStore;
  /** Who issues certificates (ACME, or self-signed in debug mode). */
  issuer: Issuer;
  /** Whether `domain` is registered (only registered and static names get certificates). */
  isRegistered: (domain: string) => Promise<boolean>;
  /** The server domain and the proxy domains. */
  staticNames: readonly string[];
  /** Where issuance and renewal are logged. */
  logger: Logger;
  /** Certificates changed (issued, renewed, loaded from another node, removed). */
  onChange?: () => void;
  /** An order finished (for metrics). */
  onOrder?: (name: string, kind: "issue" | "renew", ok: boolean) => void;
  /** The certificate served for `name` now expires at `notAfter` (undefined: none any more). */
  onExpiry?: (name: string, notAfter: Date | undefined) => void;
  /** Clock, in milliseconds (tests move it). */
  now?: () => number;
  /** How often to renew, retry and load other nodes' certificates. Default 5 minutes. */
  checkIntervalMs?: number;
  /** First retry delay; doubles per failure up to `retryMaxMs`. Default 1 minute. */
  retryBaseMs?: number;
  /** Longest retry delay. Default 6 hours. */
  retryMaxMs?: number;
  /**
   * Cluster mode: whether this node runs the timer's renewals and retries (the
   * elected node); the others only load what it stores. Default: always.
   */
  isLeader?: () => boolean;
  /**
   * While another node holds a name's order lock, how often to look for its
   * certificate (and try the lock again), and for how long at most. Default 2 s, 3 min.
   */
  orderWaitPollMs?: number;
  /** See `orderWaitPollMs`. */
  orderWaitMaxMs?: number;
}

const MINUTE_MS = 60_000;

interface Loaded {
  pair: CertifiedKey;
  notBefore: number;
  notAfter: number;
}

/** Renew when a third of the lifetime remains. */
export function renewalDue(c: { notBefore: number; notAfter: number }, now: number): boolean {
  return now >= c.notAfter - (c.notAfter - c.notBefore) / 3;
}

/** Keeps a certificate for every name the server answers for, issuing and renewing in the background. */
export class CertificateManager {
  readonly #o: CertificateManagerOptions;
  readonly #now: () => number;
  readonly #static: Set<string>;
  readonly #loaded = new Map<string, Loaded>();
  readonly #failed = new Map<string, StoredCertificate>();
  readonly #inflight = new Map<string, Promise<CertificateState>>();
  /**
   * Names found not to be ours (not static, not registered), until when: a TLS
   * handshake for such a name fails without a database query. Bounded: the
   * oldest entry goes first. Registering a domain removes it at once.
   */
  readonly #refused = new Map<string, number>();
  #synced: Date | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #ticking: Promise<void> | undefined;
  #closed = false;

  /** A manager; nothing happens until `start()`. */
  constructor(options: CertificateManagerOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
    this.#static = new Set(options.staticNames);
  }

  /** Loads stored certificates, then issues what the static names lack, in the background. */
  async start(): Promise<void> {
    await this.#sync();
    this.#schedule();
    for (const name of this.#static) this.#background(name, "startup");
  }

  /** Stops the timer and waits for the orders in flight. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    await this.#ticking;
    await Promise.allSettled([...this.#inflight.values()]);
  }

  /** The certificate to serve for `name`; a registered name without one starts issuance. */
  lookup(name: string): Promise<CertifiedKey | undefined> {
    const c = this.#loaded.get(name);
    const now = this.#now();
    if (c && now < c.notAfter) return Promise.resolve(c.pair);
    const refused = this.#refused.get(name);
    if (refused !== undefined && refused > now) return Promise.resolve(undefined);
    this.#background(name, "handshake");
    return Promise.resolve(undefined);
  }

  /** Whether a certificate is being served for `name` (plain HTTP redirects then). */
  hasCertificate(name: string): boolean {
    const c = this.#loaded.get(name);
    return c !== undefined && this.#now() < c.notAfter;
  }

  /** The HTTP-01 key authorization for `token`, if this node's issuer is waiting for it. */
  challenge(token: string): Promise<string | undefined> {
    return this.#o.issuer.challenge?.(token) ?? Promise.resolve(undefined);
  }

  /** What is known about `name`'s certificate. */
  status(name: string): CertificateState {
    const c = this.#loaded.get(name);
    const f = this.#failed.get(name);
    if (f?.lastError && f.nextAttemptAt && (!c || renewalDue(c, this.#now()))) {
      return {
        state: "failed",
        error: f.lastError,
        failures: f.failures,
        nextAttemptAt: f.nextAttemptAt,
      };
    }
    if (c) return { state: "valid", notAfter: new Date(c.notAfter) };
    return { state: "pending" };
  }

  /** Called when a domain is registered: issues its certificate in the background. */
  domainRegistered(domain: string): void {
    this.#refused.delete(domain);
    this.#background(domain, "registered");
  }

  /**
   * Makes sure `name` has a fresh certificate: issues or renews it unless it is
   * fresh, refused (not a name of this server) or waiting out a retry delay
   * (`force` skips the delay). Concurrent calls for one name share one attempt.
   */
  ensure(name: string, reason: string, force = false): Promise<CertificateState> {
    const running = this.#inflight.get(name);
    if (running) return running;
    const p = this.#ensure(name, reason, force).finally(() => this.#inflight.delete(name));
    this.#inflight.set(name, p);
    return p;
  }

  /** Renews what is due, retries what failed, loads other nodes' work. One pass. */
  async check(): Promise<void> {
    await this.#sync();
    const now = this.#now();
    const names = new Set<string>(this.#static);
    // In a cluster, renewals and retries run on the elected node only.
    if (this.#o.isLeader?.() ?? true) {
      for (const [name, c] of this.#loaded) if (renewalDue(c, now)) names.add(name);
      for (const [name, f] of this.#failed) {
        if (!f.nextAttemptAt || f.nextAttemptAt.getTime() <= now) names.add(name);
      }
    }
    await Promise.allSettled([...names].map((n) => this.ensure(n, "timer")));
  }

  async #ensure(name: string, reason: string, force: boolean): Promise<CertificateState> {
    const log = this.#o.logger;
    if (this.#closed) return { state: "pending" };
    if (!(await this.#allowed(name))) {
      if (this.#loaded.delete(name)) {
        // unregistered since: stop serving and renewing it
        await this.#o.certs.delete(name);
        this.#o.onExpiry?.(name, undefined);
        this.#o.onChange?.();
      }
      this.#failed.delete(name);
      // handshakes with unknown names are routine (scanners): keep them out of warn
      (reason === "handshake" ? log.debug : log.warn).call(log, "certificate refused", {
        component: "certs",
        domain: name,
        reason,
      });
      return { state: "refused" };
    }
    const now = this.#now();
    let have = this.#loaded.get(name);
    if (!have || renewalDue(have, now)) {
      // another node may have issued it already
      const row = await this.#o.certs.get(name);
      if (row?.cert && row.key && row.notBefore && row.notAfter && row.cert !== have?.pair.cert) {
        have = {
          pair: { cert: row.cert, key: row.key },
          notBefore: row.notBefore.getTime(),
          notAfter: row.notAfter.getTime(),
        };
        this.#loaded.set(name, have);
        this.#o.onExpiry?.(name, row.notAfter);
        this.#o.onChange?.();
      }
    }
    if (have && !renewalDue(have, now)) {
      return { state: "valid", notAfter: new Date(have.notAfter) };
    }
    const failed = this.#failed.get(name);
    if (!force && failed?.nextAttemptAt && failed.nextAttemptAt.getTime() > now) {
      return this.status(name);
    }
    // One order per name across the nodes sharing the database: the lock's holder
    // orders, the others wait for its certificate to appear in the database.
    const release = await this.#lockOrder(name);
    if (release === "issued") return this.status(name);
    try {
      // The holder before us may have stored it just now.
      const row = await this.#o.certs.get(name);
      if (
        row?.cert && row.key && row.notBefore && row.notAfter &&
        row.cert !== have?.pair.cert && !renewalDue(this.#loadRow(row), now)
      ) {
        return { state: "valid", notAfter: row.notAfter };
      }
      return await this.#order(name, reason, have, failed);
    } finally {
      await release();
    }
  }

  /** Registers `row`'s certificate as served; returns it. */
  #loadRow(row: StoredCertificate): Loaded {
    const loaded = {
      pair: { cert: row.cert!, key: row.key! },
      notBefore: row.notBefore!.getTime(),
      notAfter: row.notAfter!.getTime(),
    };
    this.#loaded.set(row.domain, loaded);
    this.#o.onExpiry?.(row.domain, row.notAfter);
    this.#o.onChange?.();
    return loaded;
  }

  /**
   * The name's order lock (a release function), or "issued" once another node
   * that held it stored a fresh certificate (loaded here then). Gives up waiting
   * after `orderWaitMaxMs` and orders itself (a node that died mid-order lost its
   * lock with its connection long before).
   */
  async #lockOrder(name: string): Promise<(() => Promise<void>) | "issued"> {
    const poll = this.#o.orderWaitPollMs ?? 2000;
    const end = Date.now() + (this.#o.orderWaitMaxMs ?? 180_000);
    let logged = false;
    for (;;) {
      const release = await this.#o.certs.lockOrder(name);
      if (release) return release;
      if (!logged) {
        logged = true;
        this.#o.logger.info("certificate order on another node: waiting for it", {
          component: "certs",
          domain: name,
        });
      }
      if (Date.now() >= end || this.#closed) return () => Promise.resolve();
      await new Promise((r) => setTimeout(r, poll));
      const row = await this.#o.certs.get(name);
      if (row?.cert && row.key && row.notBefore && row.notAfter) {
        const current = this.#loaded.get(name);
        if (row.cert !== current?.pair.cert && !renewalDue(this.#loadRow(row), this.#now())) {
          this.#failed.delete(name);
          return "issued";
        }
      }
    }
  }

  async #order(
    name: string,
    reason: string,
    have: Loaded | undefined,
    failed: StoredCertificate | undefined,
  ): Promise<CertificateState> {
    const log = this.#o.logger;
    log.info("certificate order", {
      component: "certs",
      domain: name,
      reason,
      issuer: this.#o.issuer.kind,
      renewal: have !== undefined,
    });
    try {
      const issued = await this.#o.issuer.issue(name);
      const at = new Date(this.#now());
      await this.#o.certs.saveIssued(name, issued, at);
      this.#failed.delete(name);
      this.#loaded.set(name, {
        pair: { cert: issued.cert, key: issued.key },
        notBefore: issued.notBefore.getTime(),
        notAfter: issued.notAfter.getTime(),
      });
      this.#o.onOrder?.(name, have ? "renew" : "issue", true);
      this.#o.onExpiry?.(name, issued.notAfter);
      log.info("certificate issued", {
        component: "certs",
        domain: name,
        not_after: issued.notAfter.toISOString(),
        renewal: have !== undefined,
      });
      this.#o.onChange?.();
      return { state: "valid", notAfter: issued.notAfter };
    } catch (e) {
      const failures = (failed?.failures ?? 0) + 1;
      const delay = Math.min(
        this.#o.retryMaxMs ?? 360 * MINUTE_MS,
        (this.#o.retryBaseMs ?? MINUTE_MS) * 2 ** (failures - 1),
      );
      const nextAttemptAt = new Date(this.#now() + delay);
      const error = errorText(e);
      const at = new Date(this.#now());
      await this.#o.certs.saveFailure(name, { error, failures, nextAttemptAt }, at)
        .catch(() => {});
      this.#failed.set(name, {
        domain: name,
        cert: undefined,
        key: undefined,
        notBefore: undefined,
        notAfter: undefined,
        failures,
        lastError: error,
        nextAttemptAt,
        updatedAt: at,
      });
      this.#o.onOrder?.(name, have ? "renew" : "issue", false);
      log.warn("certificate failed", {
        component: "certs",
        domain: name,
        error,
        failures,
        retry_at: nextAttemptAt.toISOString(),
      });
      return { state: "failed", error, failures, nextAttemptAt };
    }
  }

  async #allowed(name: string): Promise<boolean> {
    if (this.#static.has(name)) return true;
    let ok: boolean;
    try {
      ok = await this.#o.isRegistered(name);
    } catch {
      return false; // not a valid domain, or the database is down: do not order
    }
    if (!ok) {
      if (this.#refused.size >= MAX_REFUSED_NAMES) {
        this.#refused.delete(this.#refused.keys().next().value!);
      }
      this.#refused.set(name, this.#now() + REFUSED_NAME_TTL_MS);
    }
    return ok;
  }

  #background(name: string, reason: string): void {
    if (this.#closed || this.#inflight.has(name)) return;
    this.ensure(name, reason).catch((e) =>
      this.#o.logger.error("certificate check failed", {
        component: "certs",
        domain: name,
        error: errorText(e),
      })
    );
  }

  /** Loads rows changed since the last sync (other nodes' certificates and failures). */
  async #sync(): Promise<void> {
    const rows = await this.#o.certs.list(this.#synced);
    let changed = false;
    for (const r of rows) {
      if (!this.#synced || r.updatedAt > this.#synced) this.#synced = r.updatedAt;
      if (r.cert && r.key && r.notBefore && r.notAfter) {
        const have = this.#loaded.get(r.domain);
        if (have?.pair.cert !== r.cert) {
          this.#loaded.set(r.domain, {
            pair: { cert: r.cert, key: r.key },
            notBefore: r.notBefore.getTime(),
            notAfter: r.notAfter.getTime(),
          });
          // Served from now on: the expiry metrics count it (after a restart too).
          this.#o.onExpiry?.(r.domain, r.notAfter);
          changed = true;
        }
      }
      if (r.lastError) this.#failed.set(r.domain, r);
      else this.#failed.delete(r.domain);
    }
    if (changed) this.#o.onChange?.();
  }

  #schedule(): void {
    if (this.#closed) return;
    this.#timer = setTimeout(() => {
      this.#ticking = this.check()
        .catch((e) =>
          this.#o.logger.error("certificate check failed", {
            component: "certs",
            error: errorText(e),
          })
        )
        .finally(() => {
          this.#ticking = undefined;
          this.#schedule();
        });
    }, this.#o.checkIntervalMs ?? 5 * MINUTE_MS);
  }
}

/** How long a name that is not ours is refused without asking the database again. */
const REFUSED_NAME_TTL_MS = MINUTE_MS;
/** Refused names remembered at most (a flood of random SNI names costs no more memory). */
const MAX_REFUSED_NAMES = 100_000;

function errorText(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).slice(0, 500);
}
