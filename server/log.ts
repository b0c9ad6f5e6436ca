/**
 * Structured logging: one JSON object per line on stdout, for Loki:
 * `{"ts","level","msg","component",...fields}`. `createJsonLogger` writes through
 * `npm:@logtape/logtape` (one category per logger instance, so several servers
 * in one test process keep their own sinks and levels); everything else only
 * sees the `Logger` interface.
 *
 * Safety nets, whoever the caller: fields whose names look secret are "***",
 * `Bearer ...` values are masked, URLs and `path`/`url` fields lose their query
 * string, `Secret` values print "***", errors print name and message only.
 */
import {
  configureSync,
  getLogger,
  type Logger as LogtapeLogger,
  type LogLevel as LogtapeLevel,
  type LogRecord,
  type Sink,
} from "@logtape/logtape";

/** Extra structured data for a log line. */
export type LogFields = Record<string, unknown>;

/** A log line's severity, lowest first. */
export type LogLevel = "debug" | "info" | "warn" | "error";
export const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

/** Where the server's components write log lines (JSON in production, memory in tests). */
export interface Logger {
  /** Logs at debug level. */
  debug(msg: string, fields?: LogFields): void;
  /** Logs at info level. */
  info(msg: string, fields?: LogFields): void;
  /** Logs at warn level. */
  warn(msg: string, fields?: LogFields): void;
  /** Logs at error level. */
  error(msg: string, fields?: LogFields): void;
}

/**
 * Field names whose values are replaced by "***" whatever they hold: a safety net;
 * callers should not pass secrets in the first place.
 */
const SECRET_FIELD = /key|secret|token|passw|authorization|psk|dsn|cookie/i;

export interface JsonLoggerOptions {
  /** Lowest level written; default "info". */
  level?: LogLevel;
  /**
   * Where each line goes, at once; default stdout (errors and warnings too: one stream for
   * Loki), where lines below warn are written at the end of their I/O turn (`LineBatcher`).
   */
  write?: (line: string) => void;
  /** Clock for the `ts` field (default: the record's own time). */
  now?: () => Date;
  /** Fields added to every line (e.g. `{ component: "admin" }`). */
  base?: LogFields;
}

const TO_LOGTAPE: Record<LogLevel, LogtapeLevel> = {
  debug: "debug",
  info: "info",
  warn: "warning",
  error: "error",
};
const FROM_LOGTAPE: Partial<Record<LogtapeLevel, LogLevel>> = {
  trace: "debug",
  debug: "debug",
  info: "info",
  warning: "warn",
  error: "error",
  fatal: "error",
};

/** Live logger instances: category suffix -> sink and level. LogTape's config is global. */
const instances = new Map<string, { sink: Sink; level: LogLevel }>();
let nextInstance = 0;

function reconfigure(): void {
  const sinks: Record<string, Sink> = {};
  const loggers: { category: string[]; sinks: string[]; lowestLevel: LogtapeLevel | null }[] = [
    // LogTape's own diagnostics (a sink that throws...) go to stderr, warnings up.
    { category: ["logtape", "meta"], sinks: ["meta"], lowestLevel: "warning" },
  ];
  sinks.meta = (r: LogRecord) => console.error(`logtape: ${r.message.join("")}`);
  for (const [id, { sink, level }] of instances) {
    sinks[id] = sink;
    loggers.push({ category: ["hopgate", id], sinks: [id], lowestLevel: TO_LOGTAPE[level] });
  }
  configureSync({ reset: true, sinks, loggers });
}

/** A logger writing `{"ts","level","msg","component",...fields}` lines through LogTape. */
export function createJsonLogger(options: JsonLoggerOptions = {}): Logger {
  const write = options.write;
  const now = options.now;
  const base = options.base ?? {};
  const id = `i${nextInstance++}`;
  const sink: Sink = (record) => {
    const ts = now ? now() : new Date(record.timestamp);
    const { component, ...fields } = record.properties;
    const entry = {
      ts: ts.toISOString(),
      level: FROM_LOGTAPE[record.level] ?? record.level,
      msg: typeof record.rawMessage === "string" ? record.rawMessage : record.message.join(""),
      component: component ?? "server",
      ...fields,
    };
    const line = JSON.stringify(entry, replacer) + "\n";
    if (write !== undefined) write(line);
    else if (entry.level === "debug" || entry.level === "info") stdoutLines().later(line);
    else stdoutLines().now(line);
  };
  instances.set(id, { sink, level: options.level ?? "info" });
  reconfigure();
  const logger: LogtapeLogger = getLogger(["hopgate", id]);
  // The message is never a template: `{name}` in it stays as written (sink reads rawMessage).
  // A level below the lowest written is a no-op here, before its fields are copied: the
  // ingress logs every request at info, and LogTape would drop it only after that.
  const lowest = LOG_LEVELS.indexOf(options.level ?? "info");
  const log = (level: LogLevel) =>
    LOG_LEVELS.indexOf(level) < lowest
      ? () => {}
      : (msg: string, fields: LogFields = {}) =>
        logger[TO_LOGTAPE[level] as "info"](msg, { ...base, ...fields });
  return { debug: log("debug"), info: log("info"), warn: log("warn"), error: log("error") };
}

/**
 * `logger` with `fields` added to every line (a line's own fields win), e.g.
 * `withFields(logger, { component: "admin" })` for one part of the server.
 */
export function withFields(logger: Logger, fields: LogFields): Logger {
  const wrap = (level: LogLevel) => (msg: string, own: LogFields = {}) =>
    logger[level](msg, { ...fields, ...own });
  return { debug: wrap("debug"), info: wrap("info"), warn: wrap("warn"), error: wrap("error") };
}

/** A logger that drops everything. */
export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
};

/** One recorded line of `MemoryLogger`. */
export interface LogEntry {
  level: LogLevel;
  msg: string;
  fields: LogFields;
}

/** Keeps entries in memory, for tests; `lines()` gives what a JSON logger would print. */
export class MemoryLogger implements Logger {
  readonly entries: LogEntry[] = [];
  debug(msg: string, fields: LogFields = {}): void {
    this.entries.push({ level: "debug", msg, fields });
  }
  info(msg: string, fields: LogFields = {}): void {
    this.entries.push({ level: "info", msg, fields });
  }
  warn(msg: string, fields: LogFields = {}): void {
    this.entries.push({ level: "warn", msg, fields });
  }
  error(msg: string, fields: LogFields = {}): void {
    this.entries.push({ level: "error", msg, fields });
  }
  /** The entries serialized exactly as `createJsonLogger` would (secrets masked). */
  lines(): string[] {
    return this.entries.map((e) => JSON.stringify({ ...e.fields, msg: e.msg }, replacer));
  }
}

const URL_FIELD = /^(url|uri|href|path|location|referer|referrer)$|_url$/i;
const URL_IN_TEXT = /\b([a-z][a-z0-9+.-]*:\/\/[^\s?#"']*)\?[^\s#"']*/gi;
const BEARER = /\b(Bearer|Basic)\s+[^\s"',;]+/gi;
/** `scheme://user:password@` in any text. */
const URL_CREDENTIALS = /\b([a-z][a-z0-9+.-]*:\/\/)[^\s/@"']*@/gi;

/** What every pattern above needs somewhere in the text: most strings have none. */
const MAY_CARRY_SECRETS = /:\/\/|bearer|basic/i;

/** Masks what a string may carry: tokens, credentials and query strings in URLs. */
export function scrubText(s: string): string {
  if (!MAY_CARRY_SECRETS.test(s)) return s;
  return s.replace(BEARER, "$1 ***").replace(URL_CREDENTIALS, "$1***@").replace(URL_IN_TEXT, "$1");
}

function replacer(this: unknown, key: string, value: unknown): unknown {
  if (key !== "" && SECRET_FIELD.test(key) && value !== undefined && value !== null) return "***";
  if (value instanceof Error) {
    // name and message only: a cause or extra properties may carry query parameters.
    return { name: value.name, message: scrubText(value.message) };
  }
  if (value instanceof URL) return value.origin + value.pathname;
  if (typeof value === "bigint") return value.toString();
  if (typeof value === "string") {
    const v = URL_FIELD.test(key) ? value.replace(/[?#].*$/s, "") : value;
    return scrubText(v);
  }
  return value;
}

/**
 * Log lines on their way to a stream. A line below warn waits for the end of the current
 * I/O turn (setImmediate) and goes out in one write with the others of that turn: the
 * ingress logs every request at info, and a write each took ~10 % of the server's CPU at
 * 50 connections (docs/observability.md, "Logs"). A warning or an error is written at once,
 * after the lines waiting, so the order holds and the line that explains a failure is out
 * before it. At `maxChars` waiting, they are written at once too.
 */
export class LineBatcher {
  #pending: string[] = [];
  #chars = 0;
  #scheduled = false;
  readonly #write: (text: string) => void;
  readonly #maxChars: number;

  constructor(write: (text: string) => void, maxChars = 64 * 1024) {
    this.#write = write;
    this.#maxChars = maxChars;
  }

  /** Queues `line` for the end of this I/O turn. */
  later(line: string): void {
    this.#pending.push(line);
    this.#chars += line.length;
    if (this.#chars >= this.#maxChars) this.flush();
    else if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#atTurnEnd);
    }
  }

  /** The one scheduled write of a turn (whatever wrote the lines meanwhile leaves none). */
  readonly #atTurnEnd = (): void => {
    this.#scheduled = false;
    this.flush();
  };

  /** Writes the lines waiting, then `line`. */
  now(line: string): void {
    this.#pending.push(line);
    this.flush();
  }

  /** Writes the lines waiting, if any. */
  readonly flush = (): void => {
    const p = this.#pending;
    if (p.length === 0) return;
    this.#pending = [];
    this.#chars = 0;
    this.#write(p.length === 1 ? p[0]! : p.join(""));
  };
}

let stdout: LineBatcher | null = null;

/**
 * The process's one batcher for stdout. What waits in it is written when the program
 * ends, on `Deno.exit` (unload) and before an uncaught error ends the process. A failed
 * write (stdout closed) loses its lines and the process goes on; stderr says so once, until
 * a write succeeds again.
 */
function stdoutLines(): LineBatcher {
  if (stdout !== null) return stdout;
  const encoder = new TextEncoder();
  let failing = false;
  const b = new LineBatcher((text) => {
    try {
      writeAllSync(encoder.encode(text));
      failing = false;
    } catch (e) {
      // Say so on stderr, drop the lines, go on; once per run of failures: every request
      // logs, and a closed stdout must not become a line on stderr per request.
      if (failing) return;
      failing = true;
      try {
        console.error(`log: writing to stdout failed: ${e instanceof Error ? e.message : e}`);
      } catch { /* stderr is gone too */ }
    }
  });
  for (const event of ["unload", "error", "unhandledrejection"]) {
    globalThis.addEventListener(event, b.flush);
  }
  return stdout = b;
}

function writeAllSync(bytes: Uint8Array): void {
  let off = 0;
  while (off < bytes.byteLength) off += Deno.stdout.writeSync(bytes.subarray(off));
}
