/**
 * Reading configuration, for the server (`server/config.ts`: environment) and the
 * client (`client/config.ts`: flags over environment over `.env`) alike: every
 * value is checked, every problem is collected, and one `ConfigError` lists them
 * all, each naming where the value came from and what was expected. Secret values
 * are carried in a `Secret`, which never prints, and never appear in a problem.
 *
 *   const problems = new ConfigProblems();
 *   const port = problems.read("HOP_X_PORT", env.HOP_X_PORT, 80, (v) => parseInteger(v, 1, 65535));
 *   problems.throwIfAny(); // ConfigError: "HOP_X_PORT: expected an integer from 1 to 65535, got "x""
 *
 * The value parsers (`parseBool`, `parseInteger`, `parseSeconds`, `parseAddress`)
 * throw an `Error` whose message says what was expected; `read` adds the name and
 * the value.
 */
import { type HostPort, type HostPortOptions, parseHostPort } from "./names.ts";

/** A value that never prints: `String`, JSON and inspection all give "***". */
export class Secret {
  readonly #value: string;
  /** Wraps `value`; only `reveal()` gives it back. */
  constructor(value: string) {
    this.#value = value;
  }
  /** The secret itself; call it only where it is used. */
  reveal(): string {
    return this.#value;
  }
  /** Never prints the value: "***". */
  toString(): string {
    return "***";
  }
  /** Never serializes the value: "***". */
  toJSON(): string {
    return "***";
  }
  /** Never shows the value in Deno's inspector: "***". */
  [Symbol.for("Deno.customInspect")](): string {
    return "***";
  }
  /** Never shows the value in Node's inspector: "***". */
  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return "***";
  }
}

/** Shows only that a secret is set, and its length: `****(32 chars)`. */
export function maskSecret(s: string | Secret): string {
  const n = (typeof s === "string" ? s : s.reveal()).length;
  return n === 0 ? "(empty)" : `****(${n} chars)`;
}

/** Every configuration problem found, one line each. */
export class ConfigError extends Error {
  override name = "ConfigError";
  readonly code = "CONFIG_INVALID";
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
}

/** Collects problems while values are read; `throwIfAny` reports them all at once. */
export class ConfigProblems {
  readonly list: string[] = [];

  /** Records a problem in its final words (`LABEL: what is wrong`). */
  add(problem: string): void {
    this.list.push(problem);
  }

  /**
   * `parse(value)` for a set value (trimmed); `fallback` when `raw` is undefined or
   * blank, or when `parse` throws, whose message is then recorded as
   * `label: message, got "value"` (the value left out when `secret`).
   */
  read<T>(
    label: string,
    raw: string | undefined,
    fallback: T,
    parse: (value: string) => T,
    options: { secret?: boolean } = {},
  ): T {
    const value = raw?.trim();
    if (value === undefined || value === "") return fallback;
    try {
      return parse(value);
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      this.add(options.secret ? `${label}: ${why}` : `${label}: ${why}, got "${clip(value)}"`);
      return fallback;
    }
  }

  /** Throws a `ConfigError` listing every problem recorded, if there is one. */
  throwIfAny(): void {
    if (this.list.length > 0) throw new ConfigError([...this.list]);
  }
}

const TRUE = new Set(["1", "true", "yes", "on"]);
const FALSE = new Set(["0", "false", "no", "off"]);

/** `1 true yes on` / `0 false no off`, any case. */
export function parseBool(v: string): boolean {
  const s = v.trim().toLowerCase();
  if (TRUE.has(s)) return true;
  if (FALSE.has(s)) return false;
  throw new Error("expected true or false");
}

/** Decimal digits only, from `min` to `max`. */
export function parseInteger(v: string, min: number, max: number): number {
  if (!/^\d+$/.test(v)) throw new Error(`expected an integer from ${min} to ${max}`);
  const n = Number(v);
  if (n < min || n > max) throw new Error(`expected an integer from ${min} to ${max}`);
  return n;
}

/** A number of seconds such as `10` or `0.5`, from `min` to `max`. */
export function parseSeconds(v: string, min: number, max: number): number {
  if (!/^\d+(?:\.\d+)?$/.test(v)) throw new Error(`expected a number from ${min} to ${max}`);
  const n = Number(v);
  if (n < min || n > max) throw new Error(`expected a number from ${min} to ${max}`);
  return n;
}

/**
 * A `host:port` address (`parseHostPort` in `shared/names.ts` has the forms);
 * `expected` names the forms in the message for a malformed one.
 */
export function parseAddress(v: string, options: HostPortOptions & { expected: string }): HostPort {
  const r = parseHostPort(v, options);
  if (!("problem" in r)) return r;
  if (r.problem === "form") throw new Error(`expected ${options.expected}`);
  throw new Error(`port must be ${options.minPort ?? 1}..65535`);
}

/** A comma-separated list, each item trimmed, empty items dropped. */
export function splitList(v: string): string[] {
  return v.split(",").map((s) => s.trim()).filter((s) => s !== "");
}

function clip(s: string): string {
  return s.length > 60 ? s.slice(0, 57) + "..." : s;
}
