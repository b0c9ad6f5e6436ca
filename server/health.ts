/**
 * Liveness and readiness.
 *
 * - `GET /healthz`: the process answers (200 `{"status":"ok"}`).
 * - `GET /readyz`: 200 when the database answered its last check and every
 *   listener is up; otherwise 503 with the reasons, e.g.
 *   `{"status":"not ready","reasons":["database: connection refused"]}`.
 *   During shutdown it answers 503 "shutting down" so load balancers stop
 *   sending new requests.
 *
 * The database is checked in the background (`SELECT 1`, bounded by a timeout)
 * so `/readyz` never waits on a hung connection. A failed check is logged once
 * when the state changes, not on every probe.
 */
import type { Logger } from "./log.ts";

export interface ReadinessOptions {
  /** Runs a trivial query; rejects when the database cannot answer. */
  ping: () => Promise<unknown>;
  logger: Logger;
  /** Time between database checks. Default 5 s. */
  intervalMs?: number;
  /** A check slower than this fails. Default 3 s. */
  timeoutMs?: number;
}

export interface ReadinessReport {
  ready: boolean;
  reasons: string[];
  database: { ok: boolean; error?: string; checkedAt?: string };
  listeners: Record<string, boolean>;
  /** Cluster mode: this node and what it knows of the others. */
  cluster?: Record<string, unknown>;
}

export class Readiness {
  readonly #opts: ReadinessOptions;
  readonly #listeners = new Map<string, boolean>();
  #cluster: (() => Record<string, unknown>) | undefined;
  #dbOk = false;
  #dbError: string | undefined = "not checked yet";
  #checkedAt: Date | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #running: Promise<void> | undefined;
  #stopped = false;
  #shuttingDown = false;

  constructor(opts: ReadinessOptions) {
    this.#opts = opts;
  }

  /** Records a listener (`http`, `https`, `dtls`, `metrics`) as up or down. */
  listener(name: string, up: boolean): void {
    this.#listeners.set(name, up);
  }

  /** Cluster mode: `/readyz` adds what `describe` says (node id, live nodes…). */
  cluster(describe: () => Record<string, unknown>): void {
    this.#cluster = describe;
  }

  /** From now on `/readyz` says "shutting down". */
  shuttingDown(): void {
    this.#shuttingDown = true;
  }

  get databaseUp(): boolean {
    return this.#dbOk;
  }

  /** Checks the database now, then every `intervalMs` until `stop()`. */
  async start(): Promise<void> {
    await this.check();
    this.#schedule();
  }

  #schedule(): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      this.check().finally(() => this.#schedule());
    }, this.#opts.intervalMs ?? 5000);
  }

  /** One database check (concurrent callers share it). */
  check(): Promise<void> {
    this.#running ??= this.#check().finally(() => this.#running = undefined);
    return this.#running;
  }

  async #check(): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeoutMs = this.#opts.timeoutMs ?? 3000;
    let error: string | undefined;
    try {
      await Promise.race([
        this.#opts.ping(),
        new Promise((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`no answer within ${timeoutMs} ms`)),
            timeoutMs,
          );
        }),
      ]);
    } catch (e) {
      error = describeDbError(e);
    } finally {
      clearTimeout(timer);
    }
    this.#checkedAt = new Date();
    const wasOk = this.#dbOk;
    this.#dbOk = error === undefined;
    const before = this.#dbError;
    this.#dbError = error;
    const first = before === "not checked yet";
    if ((wasOk || first) && error !== undefined) {
      this.#opts.logger.error("database unreachable", { component: "health", error });
    } else if (!wasOk && !first && error === undefined) {
      this.#opts.logger.info("database reachable again", { component: "health" });
    }
  }

  report(): ReadinessReport {
    const reasons: string[] = [];
    if (this.#shuttingDown) reasons.push("shutting down");
    if (!this.#dbOk) reasons.push(`database: ${this.#dbError ?? "unreachable"}`);
    for (const [name, up] of this.#listeners) if (!up) reasons.push(`${name} listener: down`);
    return {
      ready: reasons.length === 0,
      reasons,
      database: {
        ok: this.#dbOk,
        ...(this.#dbError !== undefined ? { error: this.#dbError } : {}),
        ...(this.#checkedAt ? { checkedAt: this.#checkedAt.toISOString() } : {}),
      },
      listeners: Object.fromEntries(this.#listeners),
      ...(this.#cluster ? { cluster: this.#cluster() } : {}),
    };
  }

  /** Stops the background checks and waits for one in progress. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#running;
  }
}

/**
 * One line for an operator, without connection strings (a driver's message can
 * quote the DSN): the error code and message, any URL's credentials cut.
 */
export function describeDbError(e: unknown): string {
  const err = e as { code?: unknown; message?: unknown; cause?: unknown };
  const inner = err?.cause && typeof err.cause === "object" ? err.cause as typeof err : err;
  const code = typeof inner?.code === "string" ? inner.code : undefined;
  let msg = typeof inner?.message === "string" ? inner.message : String(e);
  msg = msg.replace(/[a-z][a-z0-9+.-]*:\/\/[^\s]*/gi, "<url>").split("\n")[0]!.slice(0, 200);
  return code && !msg.includes(code) ? `${code}: ${msg}` : msg;
}

/** `/healthz` and `/readyz`; undefined for other paths. */
export function healthResponse(req: Request, readiness: Readiness): Response | undefined {
  const path = new URL(req.url).pathname;
  if (path === "/healthz") return Response.json({ status: "ok" });
  if (path !== "/readyz") return undefined;
  const r = readiness.report();
  return Response.json(
    { status: r.ready ? "ready" : "not ready", ...r },
    { status: r.ready ? 200 : 503, headers: { "cache-control": "no-store" } },
  );
}
