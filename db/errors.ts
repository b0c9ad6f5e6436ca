/**
 * The store's error vocabulary. Each has a stable `code`; the admin API maps them
 * to HTTP statuses. `StoreError` replaces driver errors so that SQL parameters
 * (which drizzle copies into `DrizzleQueryError.message`) never reach a log.
 */
export { InvalidDomainError } from "./domain_name.ts";

/** Registering a domain that is already registered. */
export class DomainExistsError extends Error {
  /** The error's name, for logs. */
  override name = "DomainExistsError";
  /** Stable code. */
  readonly code = "DOMAIN_EXISTS";
  /** An error about `domain`. */
  constructor(readonly domain: string) {
    super(`domain ${domain} is already registered`);
  }
}

/** The domain is not registered. */
export class DomainNotFoundError extends Error {
  /** The error's name, for logs. */
  override name = "DomainNotFoundError";
  /** Stable code. */
  readonly code = "DOMAIN_NOT_FOUND";
  /** An error about `domain`. */
  constructor(readonly domain: string) {
    super(`domain ${domain} is not registered`);
  }
}

/** `unregister` with a client API key that is not the domain's current key. */
export class ApiKeyMismatchError extends Error {
  /** The error's name, for logs. */
  override name = "ApiKeyMismatchError";
  /** Stable code. */
  readonly code = "API_KEY_MISMATCH";
  /** An error about `domain`. */
  constructor(readonly domain: string) {
    super(`client_api_key does not match domain ${domain}`);
  }
}

/** The secret-box key does not open the PSKs stored in the database. */
export class SecretKeyMismatchError extends Error {
  /** The error's name, for logs. */
  override name = "SecretKeyMismatchError";
  /** Stable code. */
  readonly code = "SECRET_KEY_MISMATCH";
  /** The error, with what to restore. */
  constructor() {
    super(
      "Cannot read stored PSKs: they were sealed with another key. Restore the HOP_SECRET_KEY " +
        "(or the secret.key file in HOP_DATA_DIR) they were created with.",
    );
  }
}

/**
 * A database failure, stripped of everything that could carry a secret: it keeps
 * the operation, the SQLSTATE (or system error code) and the server's message with
 * quoted values masked. It deliberately has no `cause`.
 */
export class StoreError extends Error {
  /** The error's name, for logs. */
  override name: string = "StoreError";
  /** Stable code: `STORAGE_UNAVAILABLE` for a `StorageUnavailableError`. */
  readonly code: "STORE_FAILED" | "STORAGE_UNAVAILABLE" = "STORE_FAILED";
  /** An error for `operation` (e.g. "register domain") with the driver's SQLSTATE and a masked detail. */
  constructor(
    readonly operation: string,
    readonly sqlState: string | undefined,
    detail: string,
    what = "database error",
  ) {
    super(`Cannot ${operation}: ${what}${sqlState ? ` ${sqlState}` : ""}: ${detail}`);
  }

  /**
   * Builds a `StoreError` from anything a driver threw: a `StorageUnavailableError`
   * when the database could not be reached or went away (`isUnavailable`).
   */
  static from(operation: string, err: unknown): StoreError {
    if (err instanceof StoreError) return err;
    // drizzle wraps driver errors: DrizzleQueryError { query, params, cause }.
    // Only the cause (the driver's own error) is looked at, never the message.
    const inner = (isRecord(err) && "params" in err && "cause" in err) ? err.cause : err;
    const code = isRecord(inner) && typeof inner.code === "string" ? inner.code : undefined;
    const message = isRecord(inner) && typeof inner.message === "string"
      ? maskMessage(inner.message)
      : "unknown error";
    if (isUnavailable(code)) {
      return new StorageUnavailableError(operation, "unreachable", code, message);
    }
    return new StoreError(operation, code, message);
  }
}

/**
 * The database did not answer in time (`reason` "timeout") or could not be reached
 * or dropped the connection ("unreachable"). It says nothing about the data: a
 * lookup that fails with it must never be read as "not found", and a write that
 * fails with it may or may not have been applied. The admin API answers 503, the
 * DTLS handshake an `internal_error` alert. A `StoreError`, so code that handles
 * database failures in general still catches it.
 */
export class StorageUnavailableError extends StoreError {
  /** The error's name, for logs. */
  override name = "StorageUnavailableError";
  /** Stable code. */
  override readonly code = "STORAGE_UNAVAILABLE";
  /** An error for `operation`: a timeout, or the driver's connection failure (code, masked detail). */
  constructor(
    operation: string,
    readonly reason: "timeout" | "unreachable",
    sqlState: string | undefined,
    detail: string,
  ) {
    super(operation, sqlState, detail, "database unavailable");
  }
}

/**
 * Driver error codes that mean "the database is not there" rather than "the
 * query is wrong": system errors (ECONNREFUSED, ECONNRESET, ETIMEDOUT, EPIPE…),
 * npm:postgres' own connection codes (CONNECTION_CLOSED, CONNECT_TIMEOUT…), and
 * the SQLSTATE classes 08 (connection exception), 53 (insufficient resources,
 * e.g. too many connections), 57P01-57P05 (shutdown, crash, starting up) and
 * 57014 (statement cancelled, e.g. by statement_timeout).
 */
export function isUnavailable(code: string | undefined): boolean {
  if (code === undefined) return false;
  if (/^E[A-Z0-9_]+$/.test(code)) return true; // errno names
  if (/^(CONNECTION_|CONNECT_)/.test(code)) return true;
  return /^08[0-9A-Z]{3}$/.test(code) || /^53[0-9A-Z]{3}$/.test(code) ||
    /^57P0[1-5]$/.test(code) || code === "57014";
}

/** The SQLSTATE of a driver error (inside drizzle's wrapper), if any. */
export function sqlStateOf(err: unknown): string | undefined {
  const inner = (isRecord(err) && "params" in err && "cause" in err) ? err.cause : err;
  return isRecord(inner) && typeof inner.code === "string" ? inner.code : undefined;
}

/**
 * Keeps a server message's wording but masks every quoted or parenthesized value
 * that is not a plain SQL identifier (e.g. `invalid input syntax for type uuid: "…"`).
 */
function maskMessage(message: string): string {
  const firstLine = message.split("\n", 1)[0] ?? "";
  return firstLine
    .replace(/"([^"]*)"/g, (m, inner: string) => /^[a-z_][a-z0-9_.]*$/i.test(inner) ? m : '"…"')
    .replace(/'[^']*'/g, "'…'")
    .replace(/\(([^)]*)\)=\(([^)]*)\)/g, "($1)=(…)")
    .replace(/:\s+\S.*$/, (m) => /^:\s+"…"$/.test(m) ? m : ": …")
    .slice(0, 300);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null;
}
