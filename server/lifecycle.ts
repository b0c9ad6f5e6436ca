/**
 * Start-up and shutdown helpers: retrying what the server depends on, and
 * waiting for in-flight work up to a deadline.
 */
import { SecretKeyMismatchError } from "../db/mod.ts";
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
}

/**
 * Opens storage, retrying with exponential backoff while the database cannot
 * be reached (or the data directory is still locked by a process shutting
 * down). A wrong secret key is not retried: waiting cannot fix it.
 */
export async function openWithRetry<T>(open: () => Promise<T>, options: RetryOptions): Promise<T> {
  const min = options.minDelayMs ?? 500;
  const max = options.maxDelayMs ?? 30_000;
  for (let attempt = 1;; attempt++) {
    options.signal?.throwIfAborted();
    try {
      const value = await open();
      if (attempt > 1) {
        options.logger.info("database reachable", { component: "server", attempt });
      }
      return value;
    } catch (e) {
      if (e instanceof SecretKeyMismatchError) throw e;
      const ceiling = Math.min(max, min * 2 ** (attempt - 1));
      const delay = Math.round(ceiling / 2 + Math.random() * ceiling / 2);
      options.logger.warn("database unavailable, retrying", {
        component: "server",
        attempt,
        retry_in_ms: delay,
        error: describeDbError(e),
      });
      await sleep(delay, options.signal);
    }
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
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
