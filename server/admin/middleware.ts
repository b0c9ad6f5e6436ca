/**
 * The admin API's guards, as middleware factories. Order in the app:
 * audit → server host → enabled → secure transport → allowed IPs → bearer key
 * → method check → body limit → routes.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { Context, MiddlewareHandler } from "hono";
import { hostHeaderName } from "../../shared/names.ts";
import type { Secret } from "../config.ts";
import type { Logger } from "../log.ts";
import { type Cidr, ipInRanges, isLoopback } from "./cidr.ts";
import type { AdminEnv } from "./env.ts";
import { AdminHttpError, badRequest } from "./errors.ts";

type AdminMiddleware = MiddlewareHandler<AdminEnv>;

/** Deno.serve's `remoteAddr.hostname`, passed as the Hono env. */
export function defaultClientAddress(c: Context<AdminEnv>): string | undefined {
  const env = c.env as AdminEnv["Bindings"] | undefined;
  return env?.remoteAddr?.hostname;
}

/**
 * Logs one audit line per admin request once it is answered: who (client IP),
 * what (method, path, action, domain), result (status). Never a key: bodies and
 * the Authorization header are not logged.
 */
export function auditLog(
  logger: Logger,
  clientAddress: (c: Context<AdminEnv>) => string | undefined,
): AdminMiddleware {
  return async function auditLog(c, next) {
    c.set("clientIp", clientAddress(c) ?? "unknown");
    await next();
    const status = c.res.status;
    const fields = {
      event: "admin.audit",
      ip: c.get("clientIp"),
      method: c.req.method,
      path: c.req.path,
      action: c.get("auditAction") ?? null,
      domain: c.get("auditDomain") ?? null,
      status,
      result: status < 400
        ? "ok"
        : status === 401 || status === 403
        ? "denied"
        : status < 500
        ? "rejected"
        : "failed",
    };
    if (status >= 500) logger.error("admin action", fields);
    else if (status >= 400) logger.warn("admin action", fields);
    else logger.info("admin action", fields);
  };
}

/** Serves only requests whose Host is the server's own domain (any port); others get 404. */
export function requireServerHost(serverDomain: string): AdminMiddleware {
  return async function requireServerHost(c, next) {
    if (hostHeaderName(c.req.header("host")) !== serverDomain) {
      throw new AdminHttpError(404, "not found");
    }
    await next();
  };
}

/** With no admin key configured the API is off, and says so. */
export function requireEnabled(adminApiKey: Secret | undefined): AdminMiddleware {
  return async function requireEnabled(_c, next) {
    if (!adminApiKey) {
      throw new AdminHttpError(503, "admin API is disabled: HOP_ADMIN_API_KEY is not set");
    }
    await next();
  };
}

/**
 * Plain HTTP is accepted only in debug mode or from loopback: elsewhere the
 * bearer key would cross the network in the clear.
 */
export function requireSecureTransport(
  debug: boolean,
  clientAddress: (c: Context<AdminEnv>) => string | undefined,
): AdminMiddleware {
  return async function requireSecureTransport(c, next) {
    if (!debug && new URL(c.req.url).protocol !== "https:") {
      const ip = clientAddress(c);
      if (ip === undefined || !isLoopback(ip)) {
        throw new AdminHttpError(403, "admin API requires HTTPS");
      }
    }
    await next();
  };
}

/** `HOP_ADMIN_ALLOWED_IPS`: when the list is not empty, other addresses get 403. */
export function allowIps(
  ranges: readonly Cidr[],
  clientAddress: (c: Context<AdminEnv>) => string | undefined,
): AdminMiddleware {
  return async function allowIps(c, next) {
    if (ranges.length > 0) {
      const ip = clientAddress(c);
      if (ip === undefined || !ipInRanges(ip, ranges)) {
        throw new AdminHttpError(403, "client address is not allowed");
      }
    }
    await next();
  };
}

/**
 * `Authorization: Bearer <HOP_ADMIN_API_KEY>`. Both sides are hashed to equal
 * length first, then compared with `timingSafeEqual`: neither the key's length
 * nor a matching prefix shows in the timing.
 */
export function requireAdminKey(adminApiKey: Secret | undefined): AdminMiddleware {
  const expected = sha256(adminApiKey?.reveal() ?? "");
  const challenge = { "WWW-Authenticate": 'Bearer realm="hopgate-admin"' };
  return async function requireAdminKey(c, next) {
    const match = /^Bearer[ ]+([^\s]+)[ ]*$/i.exec(c.req.header("authorization") ?? "");
    if (!match) throw new AdminHttpError(401, "missing bearer token", challenge);
    if (!adminApiKey || !timingSafeEqual(sha256(match[1]!), expected)) {
      throw new AdminHttpError(401, "invalid admin API key", challenge);
    }
    await next();
  };
}

/** Body-limit handler for hono/body-limit: a JSON 413. */
export function bodyTooLarge(maxBytes: number) {
  return function bodyTooLarge(): never {
    throw new AdminHttpError(413, `request body is larger than ${maxBytes} bytes`);
  };
}

/**
 * Reads the body as JSON whatever its Content-Type (the original server did, and
 * `curl -d` sends form-urlencoded), requires an object, and hands it to `parse`,
 * whose result handlers get from `c.req.valid("json")`.
 */
export function jsonBody<T extends object>(
  parse: (body: Record<string, unknown>) => T,
): MiddlewareHandler<AdminEnv, string, { in: { json: unknown }; out: { json: T } }> {
  return async function jsonBody(c, next) {
    const text = await c.req.text();
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      throw badRequest(
        text.trim() === "" ? "request body is empty" : "malformed JSON in request body",
      );
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      throw badRequest("request body must be a JSON object");
    }
    c.req.addValidatedData("json", parse(value as Record<string, unknown>));
    await next();
  };
}

function sha256(s: string): Buffer {
  return createHash("sha256").update(s, "utf8").digest();
}
