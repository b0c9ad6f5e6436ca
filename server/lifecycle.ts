/**
 * Start-up and shutdown helpers: retrying what the server depends on, and
 * waiting for in-flight work up to a deadline.
 */
import { SecretKeyMismatchError } from "../db/mod.ts";
import { sleep } from "../shared/sleep.ts";
import { describeDbError } from "./health.ts";
import type { Logger } from "./log.ts";

export interface RetryOptions {
  logger: Logger;
  /** Stops retrying (rejects with the signal's reason). */
  signal?: AbortSignal | undefined;
  /** First delay; doubles up to `maxDelayMs`, with full jitter. Default 500 ms. */
  minDelayMs?: number;
  /** Default 30 s. */
  maxDelayMs?: number;
  /**
   * An abort also gives up on an attempt in flight (a PostgreSQL connect to a
   * host that never answers would otherwise hold a SIGTERM for its whole timeout);
   * a value it still yields is closed. Off for the embedded database: an attempt
   * that is creating it is local and short, and must not be cut half-way.
   */
  abandonOnAbort?: boolean;
}

/**
 * Opens storage, retrying with exponential backoff while the database cannot
 * be reached (or the data directory is still locked by a process shutting
 * down). A wrong secret key and a path outside the process's permissions are
 * not retried: waiting cannot fix them.
 */
export async function openWithRetry<T>(open: () => Promise<T>, options: RetryOptions): Promise<T> {
  const min = options.minDelayMs ?? 500;
  const max = options.maxDelayMs ?? 30_000;
  for (let attempt = 1;; attempt++) {
    options.signal?.throwIfAborted();
    try {
      const value = await attemptOnce(open, options.abandonOnAbort ? options.signal : undefined);
      if (options.signal?.aborted) {
        // stopped while an attempt that is not abandoned ran: it is not used
        await (value as { close?: () => unknown } | undefined)?.close?.();
        options.signal.throwIfAborted();
      }
      if (attempt > 1) {
        options.logger.info("database reachable", { component: "server", attempt });
      }
      return value;
    } catch (e) {
      if (e instanceof SecretKeyMismatchError || notPermitted(e)) throw e;
      options.signal?.throwIfAborted();
      const ceiling = Math.min(max, min * 2 ** (attempt - 1));
      const delay = Math.round(ceiling / 2 + Math.random() * ceiling / 2);
      options.logger.warn("database unavailable, retrying", {
        component: "server",
        attempt,
        retry_in_ms: delay,
        error: describeDbError(e),
      });
      await sleep(delay, options.signal); // an abort ends the wait; the loop then throws
    }
  }
}

/** A permission error (Deno's own or the OS's): a configuration problem, not an outage. */
function notPermitted(e: unknown): boolean {
  return e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied;
}

/**
 * `open()`, or the signal's reason as soon as `signal` aborts; a value that
 * arrives after that is closed, if it can be.
 */
function attemptOnce<T>(open: () => Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  const attempt = open();
  if (!signal) return attempt;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      reject(signal.reason);
      attempt
        .then((late) => (late as { close?: () => unknown } | undefined)?.close?.())
        .catch(() => {});
    };
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    attempt.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/** Resolves true when `work` settles within `ms`, false when the deadline comes first. */
export async function withinDeadline(work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<false>((r) => timer = setTimeout(() => r(false), ms));
  try {
    return await Promise.race([work.then(() => true, () => true), deadline]);
  } finally {
    clearTimeout(timer);
  }
}
