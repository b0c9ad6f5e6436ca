/** Types shared by the admin API's app, middleware and routes. */
import type { Context } from "hono";
import type { DomainStore } from "../../db/domain_store.ts";
import type { Logger } from "../log.ts";
import type { PskLookup } from "../psk_store.ts";
import type { TunnelRegistry } from "../registry.ts";
import type { ServerConfig } from "../config.ts";

/** The part of the server configuration the admin API reads. */
export type AdminConfig = Pick<
  ServerConfig,
  "serverDomain" | "debug" | "adminApiKey" | "adminAllowedIps"
>;

/** What `createAdminApp` is built from. */
export interface AdminDeps {
  store: DomainStore;
  registry: TunnelRegistry;
  /** Only `invalidate` is used: changes to a domain's key drop its cached PSK. */
  pskLookup: Pick<PskLookup, "invalidate">;
  config: AdminConfig;
  logger?: Logger;
  /**
   * The client's IP address. Default: `remoteAddr.hostname` of the Deno.serve
   * handler info passed as the Hono env (`app.fetch(req, info)`). Override only
   * behind a proxy you trust to report it.
   */
  clientAddress?: (c: Context<AdminEnv>) => string | undefined;
  /** Called after a domain is registered (the certificate manager issues its certificate). */
  onDomainRegistered?: (domain: string) => void;
  /** Largest request body accepted, in bytes; default 16 KiB. */
  maxBodyBytes?: number;
}

/**
 * The Hono env of the admin app. Bindings are Deno.serve's handler info (absent,
 * i.e. `undefined` at run time, when a test calls `app.request` without it).
 */
export interface AdminEnv {
  Bindings: { remoteAddr?: { hostname?: string } };
  Variables: {
    /** The caller's IP, set by the audit middleware. */
    clientIp: string;
    /** What the request did, for the audit line (e.g. "domains.register"). */
    auditAction: string;
    /** The domain it acted on, if any. */
    auditDomain: string;
  };
}
