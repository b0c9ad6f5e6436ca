/**
 * The admin REST API as a Hono app, to be mounted at `/api/v1/admin`
 * (`ADMIN_BASE_PATH`). See DESIGN.md "Control plane and storage".
 */
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { methodNotAllowed } from "hono/method-not-allowed";
import { silentLogger } from "../log.ts";
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
  const logger = deps.logger ?? silentLogger;
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
