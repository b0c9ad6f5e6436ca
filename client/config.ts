/**
 * Client configuration: CLI flags over the real environment over a `.env` file,
 * validated at start-up. Every problem names the flag and the variable it came
 * from. Pure but for the API key file: `client/main.ts` reads argv, env and the
 * `.env` file and passes them in; a key file (`--api-key-file`) is read through
 * `ConfigSources.readFile`.
 * The reading itself (problems, secrets, value parsers) is `shared/config.ts`,
 * shared with the server; names and addresses are `shared/names.ts`.
 */
import { ConfigError, ConfigProblems, parseBool, parseInteger, Secret } from "../shared/config.ts";
import { formatHostPort, type HostPort, normalizeDomain, parseHostPort } from "../shared/names.ts";
import { DTLS_ENGINES, type DtlsEngine, type Transport, TRANSPORTS } from "./dialer.ts";
import { parseProxyUrl } from "./tcp_dialer.ts";

/** The environment variables the client reads (and nothing else). */
export const CLIENT_ENV = {
  serverAddr: "HOP_CLIENT_SERVER_ADDR",
  domain: "HOP_CLIENT_DOMAIN",
  apiKey: "HOP_CLIENT_API_KEY",
  apiKeyFile: "HOP_CLIENT_API_KEY_FILE",
  localTarget: "HOP_CLIENT_LOCAL_TARGET",
  debug: "HOP_CLIENT_DEBUG",
  dtlsEngine: "HOP_CLIENT_DTLS_ENGINE",
  metricsListen: "HOP_CLIENT_METRICS_LISTEN",
  transport: "HOP_CLIENT_TRANSPORT",
  serverTcpAddr: "HOP_CLIENT_SERVER_TCP_ADDR",
  serverName: "HOP_CLIENT_SERVER_NAME",
  tcpCaFile: "HOP_CLIENT_TCP_CA_FILE",
  proxy: "HOP_CLIENT_PROXY",
  maxDatagramBytes: "HOP_CLIENT_MAX_DATAGRAM_BYTES",
  reprobeSeconds: "HOP_CLIENT_REPROBE_SECONDS",
  serverRedundancy: "HOP_CLIENT_SERVER_REDUNDANCY",
  warmUp: "HOP_CLIENT_WARM_UP",
} as const;
/** The range `--max-datagram-bytes` accepts: an old IPv4 minimum MTU's worth up to a whole record. */
const MIN_DATAGRAM_BYTES = 512;
const MAX_DATAGRAM_BYTES = 16_384;
/** The conventional proxy variables, read when HOP_CLIENT_PROXY / --proxy is not set. */
export const PROXY_ENV_NAMES: readonly string[] = ["HTTPS_PROXY", "https_proxy"];
export type ConfigKey = keyof typeof CLIENT_ENV;
export const CLIENT_ENV_NAMES: readonly string[] = Object.values(CLIENT_ENV);

/** Each key's CLI flag. */
export const CLIENT_FLAGS: Record<ConfigKey, string> = {
  serverAddr: "--server-addr",
  domain: "--domain",
  apiKey: "--api-key",
  apiKeyFile: "--api-key-file",
  localTarget: "--local-target",
  debug: "--debug",
  dtlsEngine: "--dtls-engine",
  metricsListen: "--metrics-listen",
  transport: "--transport",
  serverTcpAddr: "--server-tcp-addr",
  serverName: "--server-name",
  tcpCaFile: "--tcp-ca-file",
  proxy: "--proxy",
  maxDatagramBytes: "--max-datagram-bytes",
  reprobeSeconds: "--reprobe-seconds",
  serverRedundancy: "--server-redundancy",
  warmUp: "--warm-up",
};

/** At most this many `--server-addr` entries (each may be a name with several addresses). */
const MAX_SERVER_ENTRIES = 16;
/**
 * `--server-redundancy` range: tunnels kept at once to distinct nodes. The server
 * allows 8 tunnels per domain by default (HOP_SERVER_MAX_TUNNELS_PER_DOMAIN).
 */
const MAX_SERVER_REDUNDANCY = 8;
/** Tunnels kept at once when more than one node is known: losing one loses no new request. */
const DEFAULT_SERVER_REDUNDANCY = 2;

/** One node's TCP/TLS endpoint (paired by position with a `--server-addr` entry). */
export interface TcpTarget {
  /** The server's HTTPS listener (or HTTP with `tls: false`). */
  server: HostPort;
  tls: boolean;
  /** TLS SNI and Host: the server's own domain. */
  serverName: string;
}

/** Where the TCP/TLS path (docs/tcp-fallback.md) connects, and how. */
export interface TcpPathConfig {
  /**
   * One per `--server-addr` entry, in the same order: the TCP path of the node
   * that entry names (default: its host, port 443, TLS).
   */
  targets: TcpTarget[];
  /** PEM read from `--tcp-ca-file`, trusted besides Deno's roots. */
  caCerts?: string[];
  caFile?: string;
  /** HTTP CONNECT proxy (may hold credentials: never print it whole). */
  proxy?: URL;
}

export interface ClientConfig {
  /**
   * The servers' DTLS addresses as given (`--server-addr a:443,b:443`): IP
   * addresses or names, which the connector resolves to every address they have.
   */
  servers: HostPort[];
  /** Tunnels kept at once to distinct nodes (`--server-redundancy`, default 2; 1 = single-homed). */
  redundancy: number;
  /** The canonical form (`normalizeDomain`): lowercase ASCII, IDNs in punycode. */
  domain: string;
  /** Never printed; `maskSecret` shows its length. */
  apiKey: Secret;
  /**
   * Where the key came from: the `--api-key` flag (which `ps` shows: main.ts
   * warns), a key file (`--api-key-file` / `HOP_CLIENT_API_KEY_FILE`), the
   * environment or `.env`.
   */
  apiKeySource: { kind: "flag" | "env" | "dotenv" } | { kind: "file"; path: string };
  target: URL;
  engine: DtlsEngine;
  /** dtls (UDP), tcp (TLS + WebSocket), auto (DTLS first, then TCP). Default dtls. */
  transport: Transport;
  tcp: TcpPathConfig;
  debug: boolean;
  /** Where to serve Prometheus metrics (opt-in); a bare port means 127.0.0.1. */
  metricsListen?: HostPort;
  /**
   * Largest DTLS record payload toward a non-loopback server; the default fits a
   * 1280-byte MTU (shared/dtls/path.ts). Raise it only for a path known to carry it.
   */
  maxDatagramBytes?: number;
  /** With `--transport auto`, on the TCP path: DTLS is tried again this often. Default 300. */
  reprobeSeconds: number;
  /** Warm each tunnel's path up while it waits for its first request. Default true. */
  warmUp: boolean;
}

export { ConfigError, maskSecret, Secret } from "../shared/config.ts";
export { parseDotEnv } from "../shared/dotenv.ts";

/** `host:port`, `[v6]:port` (`parseHostPort` in `shared/names.ts`). */
export function parseServerAddr(s: string): HostPort | string {
  const r = parseHostPort(s);
  if (!("problem" in r)) return r;
  return r.problem === "form"
    ? `expected host:port (e.g. hop.example.com:443), got "${s}"`
    : `port must be 1..65535, got ${r.port}`;
}

/**
 * A comma-separated list of `host:port` entries (`parseServerAddr` each): no
 * empty entry, no entry twice (names compared without case), at most
 * `MAX_SERVER_ENTRIES`. Returns a problem naming the entry.
 */
export function parseServerAddrs(s: string): HostPort[] | string {
  const parts = s.split(",").map((p) => p.trim());
  if (parts.length > MAX_SERVER_ENTRIES) {
    return `at most ${MAX_SERVER_ENTRIES} addresses, got ${parts.length}`;
  }
  const out: HostPort[] = [];
  const seen = new Set<string>();
  for (const [i, part] of parts.entries()) {
    if (part === "") {
      return parts.length === 1
        ? `expected host:port (e.g. hop.example.com:443), got an empty value`
        : `entry ${i + 1} of ${parts.length} is empty (a stray comma?) in "${s.trim()}"`;
    }
    const r = parseServerAddr(part);
    if (typeof r === "string") {
      return parts.length === 1 ? r : `entry ${i + 1} of ${parts.length}: ${r}`;
    }
    const key = formatHostPort({ hostname: r.hostname.toLowerCase(), port: r.port });
    if (seen.has(key)) return `${key} is listed twice`;
    seen.add(key);
    out.push(r);
  }
  return out;
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

export interface ConfigSources {
  /** Parsed CLI flags (commander's opts()), by key. */
  flags: Partial<Record<ConfigKey, string | boolean>>;
  /** The real environment's HOP_CLIENT_* values (and HTTPS_PROXY). */
  env: Record<string, string | undefined>;
  /** The `.env` file's values. */
  dotenv: Record<string, string>;
  /** Reads the API key file (`--api-key-file`). Default `Deno.readTextFileSync`. */
  readFile?: (path: string) => string;
}

/**
 * The key in a key file: surrounding whitespace and the trailing newline trimmed.
 * Returns a problem (never the file's content) for a missing, unreadable or empty
 * file, or one with more than one line.
 */
export function readApiKeyFile(
  path: string,
  readFile: (path: string) => string = Deno.readTextFileSync,
): Secret | string {
  if (path.trim() === "") return "expected a file path, got an empty value";
  let text: string;
  try {
    text = readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return `no such file: ${path}`;
    if (e instanceof Deno.errors.NotCapable) {
      return `Deno may not read ${path}: add --allow-read=${path} to the deno run line ` +
        `(the client task allows only .env)`;
    }
    if (e instanceof Deno.errors.PermissionDenied) {
      return `cannot read ${path}: permission denied (the file must be readable by this user)`;
    }
    if (e instanceof Deno.errors.IsADirectory) return `${path} is a directory, not a file`;
    return `cannot read ${path}: ${e instanceof Error ? e.name : "error"}`;
  }
  const key = text.trim();
  if (key === "") return `${path} is empty (it must hold the domain's API key)`;
  if (/[\r\n]/.test(key)) {
    return `${path} has more than one line (it must hold the API key alone)`;
  }
  return new Secret(key);
}

/** Flags over env over `.env`; throws ConfigError listing every problem. */
export function resolveConfig(src: ConfigSources): ClientConfig {
  const problems = new ConfigProblems();
  const where = (k: ConfigKey) => `${CLIENT_FLAGS[k]} / ${CLIENT_ENV[k]}`;
  const get = (k: ConfigKey): string | boolean | undefined => {
    const f = src.flags[k];
    if (f !== undefined) return f;
    return src.env[CLIENT_ENV[k]] ?? src.dotenv[CLIENT_ENV[k]];
  };
  const required = (k: ConfigKey): string | undefined => {
    const v = get(k);
    if (typeof v !== "string" || v.trim() === "") {
      problems.add(`Missing ${where(k)}`);
      return undefined;
    }
    return v.trim();
  };
  /** A parser's own message, which already shows the value. */
  const checked = <T>(k: ConfigKey, r: T | string): T | undefined => {
    if (typeof r !== "string") return r;
    problems.add(`Invalid ${where(k)}: ${r}`);
    return undefined;
  };

  const addr = required("serverAddr");
  const servers = addr === undefined ? undefined : checked("serverAddr", parseServerAddrs(addr));

  const rawRedundancy = get("serverRedundancy");
  const redundancy = typeof rawRedundancy === "string" && rawRedundancy.trim() !== ""
    ? problems.read(
      `Invalid ${where("serverRedundancy")}`,
      rawRedundancy.trim(),
      DEFAULT_SERVER_REDUNDANCY,
      (v) => parseInteger(v, 1, MAX_SERVER_REDUNDANCY),
    )
    : DEFAULT_SERVER_REDUNDANCY;

  const rawDomain = required("domain");
  const domain = problems.read(`Invalid ${where("domain")}`, rawDomain, undefined, (v) => {
    try {
      return normalizeDomain(v);
    } catch {
      throw new Error("expected a domain name");
    }
  });

  // The key: --api-key or --api-key-file, else either variable, else either in .env.
  // Within one source, giving both is a mistake, not a precedence question.
  let apiKey: Secret | undefined;
  let apiKeySource: ClientConfig["apiKeySource"] | undefined;
  const keyLevels = [
    { kind: "flag", key: src.flags.apiKey, file: src.flags.apiKeyFile },
    { kind: "env", key: src.env[CLIENT_ENV.apiKey], file: src.env[CLIENT_ENV.apiKeyFile] },
    {
      kind: "dotenv",
      key: src.dotenv[CLIENT_ENV.apiKey],
      file: src.dotenv[CLIENT_ENV.apiKeyFile],
    },
  ] as const;
  const level = keyLevels.find((l) => l.key !== undefined || l.file !== undefined);
  if (level && level.key !== undefined && level.file !== undefined) {
    problems.add(
      level.kind === "flag"
        ? `Give either --api-key or --api-key-file, not both`
        : `Set either ${CLIENT_ENV.apiKey} or ${CLIENT_ENV.apiKeyFile}, not both` +
          (level.kind === "dotenv" ? " (in .env)" : ""),
    );
  } else if (level && level.file !== undefined) {
    const r = readApiKeyFile(String(level.file), src.readFile);
    if (typeof r === "string") problems.add(`Invalid ${where("apiKeyFile")}: ${r}`);
    else {
      apiKey = r;
      apiKeySource = { kind: "file", path: String(level.file) };
    }
  } else if (level && typeof level.key === "string" && level.key.trim() !== "") {
    apiKey = new Secret(level.key.trim());
    apiKeySource = { kind: level.kind };
  } else {
    problems.add(`Missing ${where("apiKey")} (or ${where("apiKeyFile")})`);
  }

  const rawTarget = required("localTarget");
  const target = rawTarget === undefined
    ? undefined
    : checked("localTarget", parseLocalTarget(rawTarget));

  const engine = problems.read(
    `Invalid ${where("dtlsEngine")}`,
    String(get("dtlsEngine") ?? ""),
    "hopgate" as DtlsEngine,
    (v) => {
      if (!(DTLS_ENGINES as readonly string[]).includes(v)) {
        throw new Error(`expected ${DTLS_ENGINES.join(" or ")}`);
      }
      return v as DtlsEngine;
    },
  );

  const transport = problems.read(
    `Invalid ${where("transport")}`,
    String(get("transport") ?? ""),
    "dtls" as Transport,
    (v) => {
      if (!(TRANSPORTS as readonly string[]).includes(v)) {
        throw new Error(`expected ${TRANSPORTS.join(", ")}`);
      }
      return v as Transport;
    },
  );
  let tcp: TcpPathConfig | undefined;
  if (servers) {
    const targets = tcpTargets(servers, get("serverTcpAddr"), (p) => problems.add(p));
    const name = get("serverName");
    const serverName = typeof name === "string" && name.trim() !== ""
      ? problems.read(`Invalid ${where("serverName")}`, name.trim(), "", (v) => {
        try {
          return normalizeDomain(v, { allowSingleLabel: true });
        } catch {
          throw new Error("expected a domain name");
        }
      })
      : undefined;
    let caCerts: string[] | undefined;
    const caFile = get("tcpCaFile");
    if (typeof caFile === "string" && caFile.trim() !== "") {
      try {
        const pem = (src.readFile ?? Deno.readTextFileSync)(caFile.trim());
        if (!pem.includes("-----BEGIN CERTIFICATE-----")) {
          throw new Error("no PEM certificate in it");
        }
        caCerts = [pem];
      } catch (e) {
        const why = e instanceof Deno.errors.NotCapable
          ? `Deno may not read ${caFile}: add --allow-read=${caFile} to the deno run line`
          : e instanceof Deno.errors.NotFound
          ? `no such file: ${caFile}`
          : `cannot read ${caFile}: ${e instanceof Error ? e.message : e}`;
        problems.add(`Invalid ${where("tcpCaFile")}: ${why}`);
      }
    }
    let proxy: URL | undefined;
    // HTTPS_PROXY is everyone's variable: it counts only when the TCP path may be used.
    const rawProxy = get("proxy") ??
      (transport === "dtls" ? undefined : PROXY_ENV_NAMES.map((n) => src.env[n]).find((v) => v));
    if (typeof rawProxy === "string" && rawProxy.trim() !== "") {
      const r = parseProxyUrl(rawProxy.trim());
      if (typeof r === "string") problems.add(`Invalid ${where("proxy")} (or HTTPS_PROXY): ${r}`);
      else proxy = r;
    }
    if (targets) {
      tcp = {
        targets: targets.map((t) => ({
          ...t,
          serverName: serverName ?? t.server.hostname.replace(/^\[|\]$/g, ""),
        })),
        ...(caCerts ? { caCerts, caFile: String(caFile).trim() } : {}),
        ...(proxy ? { proxy } : {}),
      };
    }
  }

  const rawDebug = get("debug");
  const debug = typeof rawDebug === "boolean"
    ? rawDebug
    : problems.read(`Invalid ${CLIENT_ENV.debug}`, rawDebug, false, parseBool);

  const rawMetrics = get("metricsListen");
  let metricsListen: HostPort | undefined;
  if (typeof rawMetrics === "string" && rawMetrics.trim() !== "") {
    const v = rawMetrics.trim();
    metricsListen = checked(
      "metricsListen",
      parseServerAddr(/^\d+$/.test(v) ? `127.0.0.1:${v}` : v),
    );
  }

  const rawDatagram = get("maxDatagramBytes");
  let maxDatagramBytes: number | undefined;
  if (typeof rawDatagram === "string" && rawDatagram.trim() !== "") {
    maxDatagramBytes = problems.read(
      `Invalid ${where("maxDatagramBytes")}`,
      rawDatagram.trim(),
      undefined,
      (v) => parseInteger(v, MIN_DATAGRAM_BYTES, MAX_DATAGRAM_BYTES),
    );
  }

  const rawReprobe = get("reprobeSeconds");
  const reprobeSeconds = typeof rawReprobe === "string" && rawReprobe.trim() !== ""
    ? problems.read(
      `Invalid ${where("reprobeSeconds")}`,
      rawReprobe.trim(),
      300,
      (v) => parseInteger(v, 1, 86_400),
    )
    : 300;

  const rawWarmUp = get("warmUp");
  const warmUp = typeof rawWarmUp === "boolean"
    ? rawWarmUp
    : problems.read(`Invalid ${where("warmUp")}`, rawWarmUp, true, parseBool);

  problems.throwIfAny();
  if (!servers || !domain || !apiKey || !apiKeySource || !target || !tcp) {
    throw new ConfigError(problems.list);
  }
  return {
    servers,
    redundancy,
    domain,
    apiKey,
    apiKeySource,
    target,
    engine,
    transport,
    tcp,
    debug,
    ...(metricsListen ? { metricsListen } : {}),
    ...(maxDatagramBytes !== undefined ? { maxDatagramBytes } : {}),
    reprobeSeconds,
    warmUp,
  };
}

/**
 * The TCP path's endpoint of each `--server-addr` entry: `raw` is unset (each
 * entry's host on port 443, TLS) or a comma-separated list of `host:port`,
 * `https://host:port` or `http://host:port`, one per entry in the same order.
 * Problems go to `problem`; returns undefined then.
 */
function tcpTargets(
  servers: HostPort[],
  raw: string | boolean | undefined,
  problem: (p: string) => void,
): Omit<TcpTarget, "serverName">[] | undefined {
  const where = `${CLIENT_FLAGS.serverTcpAddr} / ${CLIENT_ENV.serverTcpAddr}`;
  if (typeof raw !== "string" || raw.trim() === "") {
    return servers.map((s) => ({ server: { hostname: s.hostname, port: 443 }, tls: true }));
  }
  const parts = raw.split(",").map((p) => p.trim());
  if (parts.length !== servers.length) {
    problem(
      `Invalid ${where}: expected one address per ${CLIENT_FLAGS.serverAddr} entry ` +
        `(${servers.length}), in the same order; got ${parts.length}`,
    );
    return undefined;
  }
  const out: Omit<TcpTarget, "serverName">[] = [];
  for (const [i, v] of parts.entries()) {
    const label = parts.length === 1 ? `Invalid ${where}` : `Invalid ${where}, entry ${i + 1}`;
    if (/^https?:\/\//i.test(v)) {
      try {
        const u = new URL(v);
        const tls = u.protocol === "https:";
        if (u.pathname !== "/" || u.search || u.username) throw new Error();
        out.push({
          server: { hostname: u.hostname, port: Number(u.port || (tls ? 443 : 80)) },
          tls,
        });
      } catch {
        problem(`${label}: expected host:port or http(s)://host:port`);
        return undefined;
      }
      continue;
    }
    const r = v === "" ? "expected host:port, got an empty value" : parseServerAddr(v);
    if (typeof r === "string") {
      problem(`${label}: ${r}`);
      return undefined;
    }
    out.push({ server: r, tls: true });
  }
  return out;
}
