/**
 * Every query the stores run goes through a `QueryGuard`: it bounds the wait
 * (a hung database, e.g. a stopped PostgreSQL process behind an open socket,
 * otherwise holds a request forever), turns driver errors into `StoreError`s
 * (`StorageUnavailableError` for a timeout or a lost database) and reports each
 * failure by operation (the server counts them in its metrics).
 *
 * A query given up on is not cancelled (drizzle does not expose the driver's
 * cancel): it holds its pooled connection until the database answers or the
 * connection breaks, and its result is dropped.
 */
import { StorageUnavailableError, StoreError } from "./errors.ts";

/** Default bound on one database call made for a request or a handshake. */
export const DEFAULT_QUERY_TIMEOUT_MS = 5000;

/** A failed database call, as reported to `onFailure`. */
export interface StorageFailure {
  /** What was being done, e.g. "read domain PSK" (a fixed set, fit for a metric label). */
  operation: string;
  /** "timeout": no answer in time; "unreachable": no database; "error": the query failed. */
  kind: "timeout" | "unreachable" | "error";
}

/** How a `QueryGuard` bounds and reports. */
export interface QueryGuardOptions {
  /** Longest wait for one call, in ms; default `DEFAULT_QUERY_TIMEOUT_MS`. 0: no bound. */
  timeoutMs?: number;
  /** Called once per failed call. Must not throw. */
  onFailure?: (failure: StorageFailure) => void;
}

/** Runs store queries with a timeout and one error vocabulary. */
export class QueryGuard {
  /** The bound on one call, in ms (0: none). */
  readonly timeoutMs: number;
  readonly #onFailure: ((failure: StorageFailure) => void) | undefined;

  /** A guard with `options.timeoutMs` (default 5 s) reporting to `options.onFailure`. */
  constructor(options: QueryGuardOptions = {}) {
    this.timeoutMs = options.timeoutMs ?? DEFAULT_QUERY_TIMEOUT_MS;
    this.#onFailure = options.onFailure;
  }

  /**
   * Runs `query` (a drizzle query builder or any promise-returning call) for
   * `operation`. Rejects with `StorageUnavailableError` when it does not settle
   * within the timeout or the database is unreachable, `StoreError` for other
   * database failures. `expected` may turn a driver error into the caller's own
   * error (e.g. a unique violation into `DomainExistsError`), which is thrown as
   * is and not reported as a failure.
   */
  async run<T>(
    operation: string,
    query: () => PromiseLike<T>,
    expected?: (err: unknown) => Error | undefined,
  ): Promise<T> {
    try {
      const running = Promise.resolve().then(query);
      if (this.timeoutMs <= 0) return await running;
      return await answerWithin(
        running,
        this.timeoutMs,
        () =>
          new StorageUnavailableError(
            operation,
            "timeout",
            undefined,
            `no answer within ${this.timeoutMs} ms`,
          ),
      );
    } catch (err) {
      const mine = expected?.(err);
      if (mine) throw mine;
      const e = StoreError.from(operation, err);
      this.#report(operation, e);
      throw e;
    }
  }

  #report(operation: string, e: StoreError): void {
    const kind = e instanceof StorageUnavailableError ? e.reason : "error";
    try {
      this.#onFailure?.({ operation, kind });
    } catch { /* a metrics hook must not change the outcome */ }
  }
}

/**
 * `running`'s outcome, or `timedOut()` thrown once `ms` pass first. The call is not
 * cancelled: it settles some day, and nobody waits for it then.
 */
export async function answerWithin<T>(
  running: Promise<T>,
  ms: number,
  timedOut: () => Error,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  running.catch(() => {});
  try {
    return await Promise.race([
      running,
      new Promise<never>((_, reject) => timer = setTimeout(() => reject(timedOut()), ms)),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
