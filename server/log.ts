/**
 * A minimal structured logger: one JSON object per line. It is a seam, not a
 * framework: the full logging (logtape) replaces `createJsonLogger` later, and
 * everything else only sees the `Logger` interface.
 */

/** Extra structured data for a log line. */
export type LogFields = Record<string, unknown>;

export type LogLevel = "debug" | "info" | "warn" | "error";
export const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
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
  /** Where each line goes; default stdout (errors and warnings too: one stream for Loki). */
  write?: (line: string) => void;
  /** Clock for the `time` field. */
  now?: () => Date;
  /** Fields added to every line (e.g. `{ component: "admin" }`). */
  base?: LogFields;
}

/** A logger writing `{"time","level","msg",...fields}` lines. */
export function createJsonLogger(options: JsonLoggerOptions = {}): Logger {
  const min = LOG_LEVELS.indexOf(options.level ?? "info");
  const encoder = new TextEncoder();
  const write = options.write ?? ((line: string) => writeAllSync(encoder.encode(line)));
  const now = options.now ?? (() => new Date());
  const base = options.base ?? {};
  const log = (level: LogLevel) => (msg: string, fields: LogFields = {}) => {
    if (LOG_LEVELS.indexOf(level) < min) return;
    const entry = { time: now().toISOString(), level, msg, ...base, ...fields };
    write(JSON.stringify(entry, replacer) + "\n");
  };
  return { debug: log("debug"), info: log("info"), warn: log("warn"), error: log("error") };
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

function replacer(this: unknown, key: string, value: unknown): unknown {
  if (key !== "" && SECRET_FIELD.test(key) && value !== undefined && value !== null) return "***";
  if (value instanceof Error) {
    // name and message only: a cause or extra properties may carry query parameters.
    return { name: value.name, message: value.message };
  }
  if (typeof value === "bigint") return value.toString();
  return value;
}

function writeAllSync(bytes: Uint8Array): void {
  let off = 0;
  while (off < bytes.byteLength) off += Deno.stdout.writeSync(bytes.subarray(off));
}
