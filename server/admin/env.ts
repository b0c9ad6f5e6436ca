/** Types shared by the admin API's app, middleware and routes. */
import type { DomainStore } from "../../db/mod.ts";
import type { Secret } from "../../shared/config.ts";
import type { Logger } from "../log.ts";
import type { PskLookup } from "../psk_store.ts";
import type { SessionInfo } from "../registry.ts";
import type { Cidr } from "./cidr.ts";

/** The part of the server configuration the admin API reads (a `ServerConfig` fits). */
export interface AdminConfig {
  /** The server's own name: the admin API answers only requests for this Host. */
  serverDomain: string;
  /** Debug mode: plain HTTP is accepted from anywhere, not only from loopback. */
  debug: boolean;
  /** The bearer key (`HOP_ADMIN_API_KEY`); undefined: the admin API is off. */
  adminApiKey: Secret | undefined;
  /** Callers allowed (`HOP_ADMIN_ALLOWED_IPS`); empty: any address. */
  adminAllowedIps: Cidr[];
}

/** The live tunnels, as far as the admin API lists and closes them (a `TunnelRegistry` fits). */
export interface AdminTunnels {
  /** Whether `domain` has a live tunnel. */
  isConnected(domain: string): boolean;
  /** Live sessions of one domain, or of all domains, oldest first. */
  sessions(domain?: string): SessionInfo[];
  /** Closes every live tunnel of `domain` with `reason`; returns how many were closed. */
  closeDomain(domain: string, reason: string): number;
}

/** What `createAdminApp` is built from. */
export interface AdminDeps {
  /** The registered domains. */
  store: DomainStore;
  /** The live tunnels (listed, and closed on unregister and key rotation). */
  registry: AdminTunnels;
  /** Only `invalidate` is used: changes to a domain's key drop its cached PSK. */
  pskLookup: Pick<PskLookup, "invalidate">;
  /** What the admin API reads of the server configuration. */
  config: AdminConfig;
  /** Where the audit lines and failures are logged; default: nowhere. */
  logger?: Logger;
  /**
   * The client's IP address. Default: `remoteAddr.hostname` of the Deno.serve
   * handler info passed as the Hono env (`app.fetch(req, info)`). Override only
   * behind a proxy you trust to report it.
   */
  clientAddress?: (c: AdminRequestContext) => string | undefined;
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
  /** Deno.serve's handler info, as far as the admin API reads it. */
  Bindings: { remoteAddr?: { hostname?: string } };
  /** What the middleware records for the audit line. */
  Variables: {
    /** The caller's IP, set by the audit middleware. */
    clientIp: string;
    /** What the request did, for the audit line (e.g. "domains.register"). */
    auditAction: string;
    /** The domain it acted on, if any. */
    auditDomain: string;
  };
}

/** What `AdminDeps.clientAddress` may read of a request (a Hono `Context<AdminEnv>` fits). */
export interface AdminRequestContext {
  /** Deno.serve's handler info; undefined when a test calls `app.request` without it. */
  readonly env: AdminEnv["Bindings"] | undefined;
  /** The request as received. */
  readonly req: { readonly raw: Request };
}
