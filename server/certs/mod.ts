/**
 * Automatic HTTPS (docs/https.md): the certificate manager and what it is built
 * from. `createCertificateManager` picks the issuer from the config:
 * ACME (HTTP-01) normally, self-signed in debug mode.
 */
import type { CertificateStore, DomainStore } from "../../db/mod.ts";
import type { Logger } from "../log.ts";
import { AcmeIssuer } from "./acme_issuer.ts";
import { CertificateManager, type CertificateManagerOptions } from "./manager.ts";
import { SelfSignedIssuer } from "./self_signed_issuer.ts";

export { AcmeIssuer } from "./acme_issuer.ts";
export {
  CHALLENGE_PREFIX,
  type HttpFrontOptions,
  type HttpFrontRequest,
  type HttpFrontResponder,
  withHttpFront,
} from "./http_front.ts";
export {
  CertificateManager,
  type CertificateManagerOptions,
  type CertificateState,
  type IssuedCertificate,
  type Issuer,
  renewalDue,
} from "./manager.ts";
export { createSelfSignedCertificate } from "./self_signed.ts";
export { SelfSignedIssuer } from "./self_signed_issuer.ts";
export type { CertifiedKey } from "../front/tls.ts";
export type { LogFields, Logger } from "../log.ts";

/** The part of the server configuration certificates depend on (a `ServerConfig` fits). */
export interface CertificateConfig {
  /** Debug mode: self-signed certificates instead of ACME. */
  debug: boolean;
  /** The server's own name: always has a certificate. */
  serverDomain: string;
  /** Further names that always have a certificate. */
  proxyDomains: readonly string[];
  /** The ACME CA certificates are ordered from. */
  acme: CertificateAcmeConfig;
}

/** The ACME CA to order from (`HOP_ACME_*`). */
export interface CertificateAcmeConfig {
  /** The CA's directory URL. */
  caDirectoryUrl: string;
  /** Contact address for the ACME account, if any. */
  email: string | undefined;
  /** Extra CA (PEM) trusted for the directory's HTTPS, if any. */
  caCert: string | undefined;
}

/** Timing knobs, mostly for tests. */
export type CertificateTuning =
  & Partial<
    Pick<
      CertificateManagerOptions,
      "now" | "checkIntervalMs" | "retryBaseMs" | "retryMaxMs" | "orderWaitPollMs"
    >
  >
  & {
    /** Shortest wait between ACME order polls (default 2 s). */
    acmePollMinMs?: number;
  };

/** A certificate manager whose issuer fits the config: ACME, or self-signed in debug mode. */
export function createCertificateManager(deps: {
  /** Debug mode, the names that always have a certificate, and the ACME CA. */
  config: CertificateConfig;
  /** Where certificates, challenges and the ACME account live (`Storage.certs`). */
  certs: CertificateStore;
  /** Which names are registered (only they, and the static names, get certificates). */
  store: Pick<DomainStore, "exists">;
  /** Where issuance and renewal are logged. */
  logger: Logger;
  /** Certificates changed: the HTTPS listener reloads them. */
  onChange: () => void;
  /** An order finished (for metrics). */
  onOrder?: CertificateManagerOptions["onOrder"];
  /** A served certificate's expiry changed (for metrics). */
  onExpiry?: CertificateManagerOptions["onExpiry"];
  /** An ACME challenge lookup shed by the database bound (20/s). */
  onChallengeLookupShed?: () => void;
  /** Cluster mode: whether this node runs renewals and retries (the elected one). */
  isLeader?: (() => boolean) | undefined;
  /** Timing knobs (tests). */
  tuning?: CertificateTuning | undefined;
}): CertificateManager {
  const { config, certs, tuning = {} } = deps;
  const { acmePollMinMs, ...timing } = tuning;
  const issuer = config.debug
    ? new SelfSignedIssuer(timing.now ? { now: timing.now } : {})
    : new AcmeIssuer({
      certs,
      directoryUrl: config.acme.caDirectoryUrl,
      email: config.acme.email,
      caCert: config.acme.caCert,
      ...(acmePollMinMs ? { pollMinMs: acmePollMinMs, pollMaxMs: acmePollMinMs * 10 } : {}),
      ...(timing.now ? { now: timing.now } : {}),
      ...(deps.onChallengeLookupShed ? { onLookupShed: deps.onChallengeLookupShed } : {}),
    });
  return new CertificateManager({
    certs,
    issuer,
    isRegistered: (d) => deps.store.exists(d),
    staticNames: [...new Set([config.serverDomain, ...config.proxyDomains])],
    logger: deps.logger,
    onChange: deps.onChange,
    ...(deps.onOrder ? { onOrder: deps.onOrder } : {}),
    ...(deps.onExpiry ? { onExpiry: deps.onExpiry } : {}),
    ...(deps.isLeader ? { isLeader: deps.isLeader } : {}),
    ...timing,
  });
}
