/**
 * The admin REST API as a Hono app, to be mounted at `/api/v1/admin`
 * (`ADMIN_BASE_PATH`). docs/admin-api.md lists the routes and their errors.
 */
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { methodNotAllowed } from "hono/method-not-allowed";
import { hostHeaderName } from "../../shared/names.ts";
import { silentLogger, withFields } from "../log.ts";
import type { AdminDeps, AdminEnv } from "./env.ts";
import { errorHandler } from "./errors.ts";
import {
  allowIps,
  auditLog,
  bodyTooLarge,
  defaultClientAddress,
  requireAdminKey,
  requireEnabled,
  requireSecureTransport,
  requireServerHost,
} from "./middleware.ts";
import { domainRoutes } from "./routes/domains.ts";
import { sessionRoutes } from "./routes/sessions.ts";

/** Where the public HTTP(S) server mounts the admin app. */
export const ADMIN_BASE_PATH = "/api/v1/admin";

const DEFAULT_MAX_BODY_BYTES = 16 * 1024;

/**
 * Builds the admin app with routes relative to its mount point. Mount it with
 * `parent.route(ADMIN_BASE_PATH, createAdminApp(deps))`, passing Deno.serve's
 * handler info as the env (`Deno.serve((req, info) => parent.fetch(req, info))`),
 * so the guards see the client's address.
 */
export function createAdminApp(deps: AdminDeps): Hono<AdminEnv> {
  const { config } = deps;
  // Audit lines and admin failures are `"component":"admin"` (docs/observability.md).
  const logger = withFields(deps.logger ?? silentLogger, { component: "admin" });
  const clientAddress = deps.clientAddress ?? defaultClientAddress;
  const maxBodyBytes = deps.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;

  const app = new Hono<AdminEnv>();
  app.onError(errorHandler(logger));
  app.use(auditLog(logger, clientAddress));
  app.use(requireServerHost(config.serverDomain));
  app.use(requireEnabled(config.adminApiKey));
  app.use(requireSecureTransport(config.debug, clientAddress));
  app.use(allowIps(config.adminAllowedIps, clientAddress));
  app.use(requireAdminKey(config.adminApiKey));
  app.use(methodNotAllowed({
    app,
    onMethodNotAllowed: (c, methods) =>
      c.json({ success: false, error: `method ${c.req.method} not allowed` }, 405, {
        Allow: methods.join(", "),
      }),
  }));
  app.use(bodyLimit({ maxSize: maxBodyBytes, onError: bodyTooLarge(maxBodyBytes) }));

  app.route("/domains", domainRoutes(deps));
  app.route("/sessions", sessionRoutes(deps));
  // Mounted apps do not use their own notFound; a last catch-all does. It returns
  // (not throws) its 404 so that methodNotAllowed can still turn it into a 405.
  app.all("*", (c) => c.json({ success: false, error: "not found" }, 404));
  return app;
}

/** Deno.serve's handler info, as far as the admin API uses it. */
export interface ServeInfo {
  /** The caller's address. */
  remoteAddr: { hostname: string };
}

/**
 * The admin app mounted at `ADMIN_BASE_PATH`, as a plain request handler for a
 * server that is not itself a Hono app: call it for requests `isAdminRequest` accepts.
 */
export function createAdminHandler(
  deps: AdminDeps,
): (req: Request, info: ServeInfo) => Response | Promise<Response> {
  const root = new Hono<AdminEnv>().route(ADMIN_BASE_PATH, createAdminApp(deps));
  return (req, info) => root.fetch(req, info);
}

/**
 * Whether the public server should hand `req` to the admin API rather than to a
 * tunnel: its Host is the server domain (any port) and its path is under
 * `ADMIN_BASE_PATH`.
 */
export function isAdminRequest(req: Request, serverDomain: string): boolean {
  const path = new URL(req.url).pathname;
  if (path !== ADMIN_BASE_PATH && !path.startsWith(`${ADMIN_BASE_PATH}/`)) return false;
  return hostHeaderName(req.headers.get("host")) === serverDomain;
}
