/**
 * The admin API's error responses: always `{"success":false,"error":"..."}` with a
 * 4xx status for client mistakes; only server faults are 5xx. A database that is
 * down or does not answer within `HOP_DB_TIMEOUT_SECONDS` is a 503 with
 * `"error":"storage_unavailable"`, a `reason` ("timeout" or "unreachable") and
 * `Retry-After`: the request may be repeated (a write may or may not have been applied).
 */
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import {
  ApiKeyMismatchError,
  DomainExistsError,
  DomainNotFoundError,
  InvalidDomainError,
  StorageUnavailableError,
  StoreError,
} from "../../db/mod.ts";
import type { Logger } from "../log.ts";
import type { AdminEnv } from "./env.ts";

/** An HTTP error with a message for the client and optional extra headers. */
export class AdminHttpError extends HTTPException {
  constructor(
    status: ContentfulStatusCode,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(status, { message });
  }
}

export const badRequest = (message: string): AdminHttpError => new AdminHttpError(400, message);

/** Seconds a client is told to wait after a 503 storage_unavailable. */
export const STORAGE_RETRY_AFTER_SECONDS = 5;

/** Status and client-safe message (and extra JSON fields) for anything a handler threw. */
export function describeError(
  err: unknown,
): { status: ContentfulStatusCode; message: string; extra?: Record<string, string> } {
  if (err instanceof HTTPException) {
    return { status: err.status as ContentfulStatusCode, message: err.message || "error" };
  }
  if (err instanceof InvalidDomainError) return { status: 400, message: err.message };
  if (err instanceof DomainExistsError) return { status: 409, message: err.message };
  if (err instanceof DomainNotFoundError) return { status: 404, message: err.message };
  if (err instanceof ApiKeyMismatchError) return { status: 403, message: err.message };
  if (err instanceof StorageUnavailableError) {
    return {
      status: 503,
      message: "storage_unavailable",
      extra: {
        reason: err.reason,
        detail: err.reason === "timeout"
          ? "the database did not answer in time"
          : "the database cannot be reached",
      },
    };
  }
  if (err instanceof StoreError) return { status: 500, message: "database error" };
  return { status: 500, message: "internal error" };
}

/** The app's one `onError`: JSON for every error; 5xx are logged (sanitized). */
export function errorHandler(logger: Logger) {
  return function onAdminError(err: Error, c: Context<AdminEnv>): Response {
    const { status, message, extra } = describeError(err);
    if (status >= 500) {
      // StoreError messages carry no SQL parameters; other errors: name and message only.
      logger.error("admin request failed", {
        method: c.req.method,
        path: c.req.path,
        error: { name: err.name, message: err.message },
      });
    }
    const headers = err instanceof AdminHttpError
      ? err.headers
      : err instanceof StorageUnavailableError
      ? { "Retry-After": String(STORAGE_RETRY_AFTER_SECONDS) }
      : {};
    return c.json({ success: false, error: message, ...extra }, status, headers);
  };
}
