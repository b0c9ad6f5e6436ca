/**
 * Client configuration: CLI flags over the real environment over a `.env` file,
 * validated at start-up. Every problem names the flag and the variable it came
 * from. Pure: `client/main.ts` reads argv, env and the file and passes them in.
 */
import { DTLS_ENGINES, type DtlsEngine } from "./connector.ts";

/** The environment variables the client reads (and nothing else). */
export const CLIENT_ENV = {
  serverAddr: "HOP_CLIENT_SERVER_ADDR",
  domain: "HOP_CLIENT_DOMAIN",
  apiKey: "HOP_CLIENT_API_KEY",
  localTarget: "HOP_CLIENT_LOCAL_TARGET",
  debug: "HOP_CLIENT_DEBUG",
  dtlsEngine: "HOP_CLIENT_DTLS_ENGINE",
  metricsListen: "HOP_CLIENT_METRICS_LISTEN",
} as const;
export type ConfigKey = keyof typeof CLIENT_ENV;
export const CLIENT_ENV_NAMES: readonly string[] = Object.values(CLIENT_ENV);

/** Each key's CLI flag. */
export const CLIENT_FLAGS: Record<ConfigKey, string> = {
  serverAddr: "--server-addr",
  domain: "--domain",
  apiKey: "--api-key",
  localTarget: "--local-target",
  debug: "--debug",
  dtlsEngine: "--dtls-engine",
  metricsListen: "--metrics-listen",
};

export interface ClientConfig {
  server: { hostname: string; port: number };
  domain: string;
  /** Never print it: use `maskSecret`. */
  apiKey: string;
  target: URL;
  engine: DtlsEngine;
  debug: boolean;
  /** Where to serve Prometheus metrics (opt-in); a bare port means 127.0.0.1. */
  metricsListen?: { hostname: string; port: number };
}

export class ConfigError extends Error {
  override name = "ConfigError";
  constructor(readonly problems: string[]) {
    super(problems.join("\n"));
  }
}

/** Shows only that a secret is set, and its length class: `****(32 chars)`. */
export function maskSecret(s: string): string {
  return s.length === 0 ? "(empty)" : `****(${s.length} chars)`;
}

export { parseDotEnv } from "../shared/dotenv.ts";

/** `host:port`, `[v6]:port`. */
export function parseServerAddr(s: string): { hostname: string; port: number } | string {
  const m = /^(?:\[([^\]]+)\]|([^:\s/]+)):(\d{1,5})$/.exec(s.trim());
  if (!m) return `expected host:port (e.g. hop.example.com:443), got "${s}"`;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return `port must be 1..65535, got ${port}`;
  return { hostname: (m[1] ?? m[2])!, port };
}

/** `host:port`, `:port`, a bare port, or an http(s) URL; default scheme http, host 127.0.0.1. */
export function parseLocalTarget(s: string): URL | string {
  let v = s.trim();
  if (/^\d+$/.test(v)) v = `127.0.0.1:${v}`;
  if (v.startsWith(":")) v = `127.0.0.1${v}`;
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(v)) v = `http://${v}`;
  let url: URL;
  try {
    url = new URL(v);
  } catch {
    return `expected host:port or an http(s) URL, got "${s}"`;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return `scheme must be http or https, got "${url.protocol.replace(/:$/, "")}"`;
  }
  if (url.username || url.password) return "credentials in the URL are not supported";
  if (url.search || url.hash) return "a query or fragment is not allowed";
  return url;
}

function parseBool(s: string): boolean | undefined {
  const v = s.trim().toLowerCase();
  if (["1", "true", "yes", "on"].includes(v)) return true;
  if (["0", "false", "no", "off", ""].includes(v)) return false;
  return undefined;
}

/** A domain: lowercase letters, digits, hyphens and dots (IDNs in punycode). */
const DOMAIN_RE = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$/;

export interface ConfigSources {
  /** Parsed CLI flags (commander's opts()), by key. */
  flags: Partial<Record<ConfigKey, string | boolean>>;
  /** The real environment's HOP_CLIENT_* values. */
  env: Record<string, string | undefined>;
  /** The `.env` file's values. */
  dotenv: Record<string, string>;
}

/** Flags over env over `.env`; throws ConfigError listing every problem. */
export function resolveConfig(src: ConfigSources): ClientConfig {
  const problems: string[] = [];
  const where = (k: ConfigKey) => `${CLIENT_FLAGS[k]} / ${CLIENT_ENV[k]}`;
  const get = (k: ConfigKey): string | boolean | undefined => {
    const f = src.flags[k];
    if (f !== undefined) return f;
    return src.env[CLIENT_ENV[k]] ?? src.dotenv[CLIENT_ENV[k]];
  };
  const required = (k: ConfigKey): string | undefined => {
    const v = get(k);
    if (typeof v !== "string" || v.trim() === "") {
      problems.push(`Missing ${where(k)}`);
      return undefined;
    }
    return v.trim();
  };

  const addr = required("serverAddr");
  let server: ClientConfig["server"] | undefined;
  if (addr !== undefined) {
    const r = parseServerAddr(addr);
    if (typeof r === "string") problems.push(`Invalid ${where("serverAddr")}: ${r}`);
    else server = r;
  }

  const rawDomain = required("domain");
  let domain: string | undefined;
  if (rawDomain !== undefined) {
    domain = rawDomain.toLowerCase().replace(/\.$/, "");
    if (!DOMAIN_RE.test(domain)) {
      problems.push(`Invalid ${where("domain")}: expected a domain name, got "${rawDomain}"`);
    }
  }

  const apiKey = required("apiKey");

  const rawTarget = required("localTarget");
  let target: URL | undefined;
  if (rawTarget !== undefined) {
    const r = parseLocalTarget(rawTarget);
    if (typeof r === "string") problems.push(`Invalid ${where("localTarget")}: ${r}`);
    else target = r;
  }

  const rawEngine = get("dtlsEngine") ?? "hopgate";
  const engine = String(rawEngine).trim() as DtlsEngine;
  if (!DTLS_ENGINES.includes(engine)) {
    problems.push(
      `Invalid ${where("dtlsEngine")}: expected ${DTLS_ENGINES.join(" or ")}, got "${rawEngine}"`,
    );
  }

  const rawDebug = get("debug") ?? false;
  let debug = false;
  if (typeof rawDebug === "boolean") debug = rawDebug;
  else {
    const b = parseBool(rawDebug);
    if (b === undefined) {
      problems.push(`Invalid ${CLIENT_ENV.debug}: expected true or false, got "${rawDebug}"`);
    } else debug = b;
  }

  const rawMetrics = get("metricsListen");
  let metricsListen: ClientConfig["metricsListen"];
  if (typeof rawMetrics === "string" && rawMetrics.trim() !== "") {
    const v = rawMetrics.trim();
    const r = parseServerAddr(/^\d+$/.test(v) ? `127.0.0.1:${v}` : v);
    if (typeof r === "string") problems.push(`Invalid ${where("metricsListen")}: ${r}`);
    else metricsListen = r;
  }

  if (problems.length > 0 || !server || !domain || !apiKey || !target) {
    throw new ConfigError(problems);
  }
  return {
    server,
    domain,
    apiKey,
    target,
    engine,
    debug,
    ...(metricsListen ? { metricsListen } : {}),
  };
}
