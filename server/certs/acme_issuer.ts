/**
 * Certificates from an ACME CA (RFC 8555) with `npm:acme-client`, HTTP-01 only:
 * Deno's TLS cannot present the TLS-ALPN-01 challenge certificate (it rejects the
 * critical acmeIdentifier extension). Key authorizations go to the database, where
 * every node's HTTP listener finds them (`challenge(token)`), so the CA may reach
 * any node. The account key is created once per directory and stored sealed.
 */
import { Agent } from "node:https";
import acme from "acme-client";
import type { CertificateStore } from "../../db/mod.ts";
import type { IssuedCertificate, Issuer } from "./manager.ts";
import { TokenBucket } from "../../shared/rate_limit.ts";

export interface AcmeIssuerOptions {
  certs: CertificateStore;
  /** ACME directory URL (`HOP_ACME_CA_DIR`). */
  directoryUrl: string;
  /** Account contact (`HOP_ACME_EMAIL`). */
  email?: string | undefined;
  /** PEM of a private CA that signs the directory's HTTPS certificate (`HOP_ACME_CA_CERT`). */
  caCert?: string | undefined;
  /** Shortest and longest wait between polls of an order. Default 2 s and 30 s. */
  pollMinMs?: number;
  pollMaxMs?: number;
  now?: () => number;
  /** A challenge lookup refused without asking the database (the flood bound hit). */
  onLookupShed?: () => void;
}

/** How long a published challenge stays answerable. */
const CHALLENGE_TTL_MS = 60 * 60_000;
/** HTTP-01 tokens are base64url (RFC 8555 8.3) of at least 128 bits. */
const TOKEN = /^[A-Za-z0-9_-]{22,256}$/;
/**
 * Challenge requests come from anyone on port 80. Tokens this node published
 * answer from memory; a miss reaches the database (another node's order) at
 * most this often, so a flood of made-up tokens costs no more than that.
 */
const DB_LOOKUPS_PER_SECOND = 20;

/** Issues certificates from an ACME CA over HTTP-01, with the account key kept in the database. */
export class AcmeIssuer implements Issuer {
  readonly kind = "acme";
  readonly #o: AcmeIssuerOptions;
  readonly #now: () => number;
  #client: Promise<acme.Client> | undefined;
  /** Tokens this node published: token → key authorization and expiry. */
  readonly #mine = new Map<string, { key: string; until: number }>();
  readonly #lookups: TokenBucket;
  /** Challenge lookups refused without asking the database (flood bound). */
  lookupsShed = 0;

  /** An issuer for the CA at `options.directoryUrl`. */
  constructor(options: AcmeIssuerOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
    this.#lookups = new TokenBucket({
      burst: DB_LOOKUPS_PER_SECOND,
      perSecond: DB_LOOKUPS_PER_SECOND,
      now: this.#now,
    });
    if (options.caCert) {
      // acme-client talks through its own axios instance; only it trusts this CA.
      acme.axios.defaults.httpsAgent = new Agent({ ca: options.caCert, keepAlive: false });
    }
  }

  async challenge(token: string): Promise<string | undefined> {
    if (!TOKEN.test(token)) return undefined;
    const now = this.#now();
    const mine = this.#mine.get(token);
    if (mine && mine.until > now) return mine.key;
    if (!this.#lookups.take()) {
      this.lookupsShed++;
      this.#o.onLookupShed?.();
      return undefined;
    }
    return await this.#o.certs.getChallenge(token, new Date(now));
  }

  /** Orders, proves and downloads a certificate for `domain`. */
  async issue(domain: string): Promise<IssuedCertificate> {
    const client = await this.#account();
    const certs = this.#o.certs;
    const [keyPem, csr] = await acme.crypto.createCsr(
      { commonName: domain, altNames: [domain] },
      await acme.crypto.createPrivateEcdsaKey(),
    );
    await certs.deleteExpiredChallenges(new Date(this.#now()));
    const chain = await client.auto({
      csr,
      termsOfServiceAgreed: true,
      ...(this.#o.email ? { email: this.#o.email } : {}),
      challengePriority: ["http-01"],
      // The CA is the judge; a self-check would need our own DNS view of the name.
      skipChallengeVerification: true,
      challengeCreateFn: async (_authz, challenge, keyAuthorization) => {
        if (challenge.type !== "http-01") {
          throw new Error(`Cannot answer ${challenge.type}: only http-01 is supported`);
        }
        const until = this.#now() + CHALLENGE_TTL_MS;
        await certs.putChallenge(challenge.token, domain, keyAuthorization, new Date(until));
        this.#mine.set(challenge.token, { key: keyAuthorization, until });
      },
      challengeRemoveFn: async (_authz, challenge) => {
        this.#mine.delete(challenge.token);
        await certs.deleteChallenge(challenge.token);
      },
    });
    const info = acme.crypto.readCertificateInfo(chain);
    return {
      cert: chain,
      key: keyPem.toString(),
      notBefore: info.notBefore,
      notAfter: info.notAfter,
    };
  }

  /** The ACME client with the stored account (registered on first use). */
  #account(): Promise<acme.Client> {
    this.#client ??= (async () => {
      const url = this.#o.directoryUrl;
      const { key, accountUrl } = await this.#o.certs.accountKey(
        url,
        async () => (await acme.crypto.createPrivateEcdsaKey()).toString(),
      );
      const client = new acme.Client({
        directoryUrl: url,
        accountKey: key,
        ...(accountUrl ? { accountUrl } : {}),
        backoffMin: this.#o.pollMinMs ?? 2000,
        backoffMax: this.#o.pollMaxMs ?? 30_000,
      });
      if (!accountUrl) {
        await client.createAccount({
          termsOfServiceAgreed: true,
          ...(this.#o.email ? { contact: [`mailto:${this.#o.email}`] } : {}),
        });
        await this.#o.certs.setAccountUrl(url, client.getAccountUrl());
      }
      return client;
    })();
    // a failed registration is retried on the next order
    this.#client.catch(() => this.#client = undefined);
    return this.#client;
  }
}
