/**
 * Automatic HTTPS (DESIGN.md "Certificates"): the certificate manager and what
 * it is built from. `createCertificateManager` picks the issuer from the config:
 * ACME (HTTP-01) normally, self-signed in debug mode.
 */
import type { Database } from "../../db/database.ts";
import type { DomainStore } from "../../db/domain_store.ts";
import type { SecretBox } from "../../db/secret_box.ts";
import type { ServerConfig } from "../config.ts";
import type { Logger } from "../log.ts";
import { AcmeIssuer } from "./acme_issuer.ts";
import { CertificateStore } from "./cert_store.ts";
import { CertificateManager, type CertificateManagerOptions } from "./manager.ts";
import { SelfSignedIssuer } from "./self_signed_issuer.ts";

export { AcmeIssuer } from "./acme_issuer.ts";
export { CertificateStore, type StoredCertificate } from "./cert_store.ts";
export { CHALLENGE_PREFIX, type HttpFrontOptions, withHttpFront } from "./http_front.ts";
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

/** Timing knobs, mostly for tests. */
export type CertificateTuning =
  & Partial<
    Pick<CertificateManagerOptions, "now" | "checkIntervalMs" | "retryBaseMs" | "retryMaxMs">
  >
  & {
    /** Shortest wait between ACME order polls (default 2 s). */
    acmePollMinMs?: number;
  };

export function createCertificateManager(deps: {
  config: Pick<ServerConfig, "debug" | "serverDomain" | "proxyDomains" | "acme">;
  db: Database;
  secretBox: SecretBox;
  store: Pick<DomainStore, "exists">;
  logger: Logger;
  onChange: () => void;
  onOrder?: CertificateManagerOptions["onOrder"];
  onExpiry?: CertificateManagerOptions["onExpiry"];
  /** An ACME challenge lookup shed by the database bound (20/s). */
  onChallengeLookupShed?: () => void;
  tuning?: CertificateTuning | undefined;
}): CertificateManager {
  const { config, tuning = {} } = deps;
  const certs = new CertificateStore(deps.db, deps.secretBox);
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
    ...timing,
  });
}
