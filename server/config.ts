/**
 * Server configuration from the environment (names kept from the original Go
 * HopGate). `loadServerConfig` checks every variable and throws one `ConfigError`
 * listing every problem, each naming its variable and what it expected. Secret
 * values never appear in errors or output. The reading itself (problems, secrets,
 * value parsers) is `shared/config.ts`, shared with the client.
 *
 * | Variable                          | Default                                  |
 * |-----------------------------------|------------------------------------------|
 * | HOP_SERVER_DEBUG                  | false                                    |
 * | HOP_SERVER_HTTP_LISTEN            | `:80` (debug: `127.0.0.1:8080`)          |
 * | HOP_SERVER_HTTPS_LISTEN           | `:443` (debug: `127.0.0.1:8443`)         |
 * | HOP_SERVER_DTLS_LISTEN (UDP)      | `:443` (debug: `127.0.0.1:8443`)         |
 * | HOP_SERVER_DOMAIN                 | required (debug: `localhost`)            |
 * | HOP_SERVER_PROXY_DOMAINS          | none (comma-separated domains)           |
 * | HOP_SERVER_PROXY_TIMEOUT_SECONDS  | 60                                       |
 * | HOP_SERVER_HTTPS_REDIRECT         | true (debug: false): 308 to HTTPS        |
 * | HOP_SERVER_ERROR_PAGES_DIR        | none (built-in error pages)              |
 * | HOP_ADMIN_API_KEY                 | unset: admin API off (≥ 16 characters)   |
 * | HOP_ADMIN_ALLOWED_IPS             | any (comma-separated CIDRs or addresses) |
 * | HOP_DB_DSN                        | unset: embedded PGlite in HOP_DATA_DIR   |
 * | HOP_DB_MAX_OPEN_CONNS             | 10                                       |
 * | HOP_DB_TIMEOUT_SECONDS            | 5 (one query for a request or handshake) |
 * | HOP_PSK_OUTAGE_CACHE_SECONDS      | 3600 (PSKs usable while the DB fails; 0) |
 * | HOP_DATA_DIR                      | `./data`                                 |
 * | HOP_SECRET_KEY                    | unset: key file in HOP_DATA_DIR (≥ 32)   |
 * | HOP_LOG_LEVEL                     | `info` (debug, info, warn, error)        |
 * | HOP_ACME_EMAIL                    | none                                     |
 * | HOP_ACME_USE_STAGING              | false                                    |
 * | HOP_ACME_CA_DIR                   | Let's Encrypt (staging if USE_STAGING)   |
 * | HOP_ACME_CA_CERT                  | none (PEM file: CA trusted for CA_DIR)   |
 * | HOP_METRICS_LISTEN                | unset: `/metrics` on the server domain   |
 * | HOP_METRICS_TOKEN                 | unset: no bearer token (≥ 16 characters) |
 * | HOP_METRICS_DOMAIN_LABELS         | false (per-domain metric labels)         |
 * | HOP_SHUTDOWN_TIMEOUT_SECONDS      | 30 (in-flight requests' grace period)    |
 * | HOP_SERVER_HEADER_TIMEOUT_SECONDS | 10 (connection to complete request head) |
 * | HOP_SERVER_IDLE_TIMEOUT_SECONDS   | 60 (kept-alive connection, no request)   |
 * | HOP_SERVER_BODY_TIMEOUT_SECONDS   | 60 (request body: no byte for this long) |
 * | HOP_SERVER_WRITE_TIMEOUT_SECONDS  | 60 (response write: no progress)         |
 * | HOP_SERVER_TLS_HANDSHAKE_TIMEOUT_SECONDS | 10                                |
 * | HOP_SERVER_MAX_CONNECTIONS        | 16384 (HTTP + HTTPS, open at once)       |
 * | HOP_SERVER_MAX_CONNECTIONS_PER_IP | 1024                                     |
 * | HOP_SERVER_MAX_HEADER_BYTES       | 65536 (request line + headers; 431)      |
 * | HOP_SERVER_MAX_HEADERS            | 100 (header fields per request; 431)     |
 * | HOP_SERVER_MAX_TUNNELS_PER_DOMAIN | 8 (client sessions per domain at once)   |
 * | HOP_TRUSTED_PROXIES               | none (CIDRs whose X-Forwarded-For counts)|
 * | HOP_PROXY_PROTOCOL                | false (trusted peers send PROXY headers)  |
 * | HOP_SERVER_TCP_TUNNEL             | true (tunnels over WebSocket on HTTP(S))  |
 * | HOP_TUNNEL_MAX_DATAGRAM_BYTES     | what a 1280-byte MTU carries (1215 IPv4)  |
 * | HOP_TUNNEL_WARM_UP                | true (learn new tunnels' paths, 4 at once)|
 * | HOP_CLUSTER_LISTEN                | unset: single node (relay listener, TCP)  |
 * | HOP_CLUSTER_ADVERTISE             | the LISTEN address (what other nodes dial)|
 * | HOP_CLUSTER_MAX_RELAYS            | 1024 (relay connections per direction)    |
 *
 * HTTPS redirect: plain HTTP to a host that has a certificate gets a 308 to HTTPS
 * (ACME challenge paths never). HOP_ACME_CA_CERT: a CA that signs the ACME
 * directory's own HTTPS certificate (a private CA such as pebble), read at start-up.
 *
 * A listen address is `host:port`, `:port` (all IPv4 interfaces) or `[v6]:port`.
 */
import {
  ConfigProblems,
  parseAddress,
  parseBool,
  parseInteger,
  parseSeconds,
  Secret,
  splitList,
} from "../shared/config.ts";
import { formatHostPort, type HostPort, normalizeDomain } from "../shared/names.ts";
import { type Cidr, parseCidrList } from "./admin/cidr.ts";
import { LOG_LEVELS, type LogLevel } from "./log.ts";

export { ConfigError, Secret } from "../shared/config.ts";

export type ListenAddress = HostPort;

export interface AcmeConfig {
  email: string | undefined;
  /** ACME directory URL. */
  caDirectoryUrl: string;
  useStaging: boolean;
  /** PEM read from `HOP_ACME_CA_CERT`: extra CA trusted for the directory's HTTPS. */
  caCert: string | undefined;
}

export interface ServerConfig {
  debug: boolean;
  httpListen: ListenAddress;
  httpsListen: ListenAddress;
  dtlsListen: ListenAddress;
  /** The server's own name: serves the admin API, gets a certificate. */
  serverDomain: string;
  proxyDomains: string[];
  proxyTimeoutSeconds: number;
  /** Plain HTTP gets a 308 to HTTPS for hosts that have a certificate. */
  httpsRedirect: boolean;
  /** Directory with `<status>.html` pages replacing the gateway's error pages. */
  errorPagesDir: string | undefined;
  /** Undefined: the admin API is off. */
  adminApiKey: Secret | undefined;
  /** Empty: any address (the bearer key still applies). */
  adminAllowedIps: Cidr[];
  /** Undefined: embedded PGlite in `dataDir`. A DSN may hold a password, hence Secret. */
  dbDsn: Secret | undefined;
  dbMaxOpenConns: number;
  /**
   * Bound on each database query made for a request, a handshake or certificate
   * work (`HOP_DB_TIMEOUT_SECONDS`), in ms: past it the caller gets "storage
   * unavailable" (admin 503, DTLS `internal_error`), never "not found".
   */
  dbTimeoutMs: number;
  /**
   * How long a PSK read from the database stays usable for handshakes while the
   * database fails (`HOP_PSK_OUTAGE_CACHE_SECONDS`), in ms; 0: not at all.
   */
  pskOutageCacheMs: number;
  dataDir: string;
  /** Undefined: the secret-box key comes from a key file in `dataDir`. */
  secretKey: Secret | undefined;
  logLevel: LogLevel;
  acme: AcmeConfig;
  metrics: MetricsConfig;
  /** How long shutdown waits for in-flight requests before closing anyway. */
  shutdownTimeoutSeconds: number;
  /** The public listeners' timeouts and caps. */
  front: FrontConfig;
  /** Peers whose X-Forwarded-For / -Proto / -Host are believed. */
  trustedProxies: Cidr[];
  /**
   * Connections from `trustedProxies` to the HTTP and HTTPS listeners start with a
   * PROXY protocol header (v1 or v2) naming the caller (docs/edge.md).
   */
  proxyProtocol: boolean;
  /**
   * Tunnels (client sessions) one domain may have at once; one more is refused at
   * its hello with `server_busy` (`HOP_SERVER_MAX_TUNNELS_PER_DOMAIN`).
   */
  maxTunnelsPerDomain: number;
  /**
   * Largest DTLS record payload (one tunnel packet) toward a non-loopback client,
   * counted under the suite that adds most (UDP payloads stay within it + 37);
   * undefined: what a 1280-byte MTU carries (shared/dtls/path.ts)
   * (`HOP_TUNNEL_MAX_DATAGRAM_BYTES`).
   */
  tunnelMaxDatagramBytes: number | undefined;
  /**
   * Warm new tunnels' paths up both ways while they wait for their first request, for
   * clients that ask, a few at a time (server/warm_ups.ts; `HOP_TUNNEL_WARM_UP`). Default true.
   */
  tunnelWarmUp: boolean;
  /**
   * Clients may reach the tunnel over TCP/TLS: a WebSocket to
   * `/.well-known/hopgate/tunnel` on `serverDomain` (docs/tcp-fallback.md). Default true.
   */
  tcpTunnel: boolean;
  /** Cluster mode (docs/cluster.md); undefined: a single node, as before. */
  cluster: ClusterConfig | undefined;
}

/** Cluster mode: several nodes on one PostgreSQL, any node serves any domain. */
export interface ClusterConfig {
  /** The private relay listener (`HOP_CLUSTER_LISTEN`, TCP). */
  listen: ListenAddress;
  /** `host:port` the other nodes dial to reach the relay listener (`HOP_CLUSTER_ADVERTISE`). */
  advertise: string;
  /** Relay connections open at once, in each direction (`HOP_CLUSTER_MAX_RELAYS`). */
  maxRelays: number;
}

export interface FrontConfig {
  headerTimeoutMs: number;
  idleTimeoutMs: number;
  bodyTimeoutMs: number;
  writeTimeoutMs: number;
  tlsHandshakeTimeoutMs: number;
  maxConnections: number;
  maxConnectionsPerAddress: number;
  maxHeadBytes: number;
  maxHeaders: number;
}

export interface MetricsConfig {
  /** Undefined: `/metrics` is served on the server domain's HTTP(S) listeners. */
  listen: ListenAddress | undefined;
  /** Bearer token required on `/metrics`; undefined: none. */
  token: Secret | undefined;
  /** Per-domain labels on tunnel and request metrics (cardinality grows with domains). */
  domainLabels: boolean;
}

export const LETS_ENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory";
export const LETS_ENCRYPT_STAGING_DIRECTORY =
  "https://acme-staging-v02.api.letsencrypt.org/directory";

/**
 * Every variable `loadServerConfig` reads. `server/main.ts` can build its env record
 * from these with `Deno.env.get` (which needs only `--allow-env=HOP_*`, where
 * `Deno.env.toObject()` needs the whole environment).
 */
export const SERVER_ENV_NAMES = [
  "HOP_SERVER_DEBUG",
  "HOP_SERVER_HTTP_LISTEN",
  "HOP_SERVER_HTTPS_LISTEN",
  "HOP_SERVER_DTLS_LISTEN",
  "HOP_SERVER_DOMAIN",
  "HOP_SERVER_PROXY_DOMAINS",
  "HOP_SERVER_PROXY_TIMEOUT_SECONDS",
  "HOP_SERVER_ERROR_PAGES_DIR",
  "HOP_ADMIN_API_KEY",
  "HOP_ADMIN_ALLOWED_IPS",
  "HOP_DB_DSN",
  "HOP_DB_MAX_OPEN_CONNS",
  "HOP_DB_TIMEOUT_SECONDS",
  "HOP_PSK_OUTAGE_CACHE_SECONDS",
  "HOP_DATA_DIR",
  "HOP_SECRET_KEY",
  "HOP_LOG_LEVEL",
  "HOP_ACME_EMAIL",
  "HOP_ACME_USE_STAGING",
  "HOP_ACME_CA_DIR",
  "HOP_ACME_CA_CERT",
  "HOP_SERVER_HTTPS_REDIRECT",
  "HOP_METRICS_LISTEN",
  "HOP_METRICS_TOKEN",
  "HOP_METRICS_DOMAIN_LABELS",
  "HOP_SHUTDOWN_TIMEOUT_SECONDS",
  "HOP_SERVER_HEADER_TIMEOUT_SECONDS",
  "HOP_SERVER_IDLE_TIMEOUT_SECONDS",
  "HOP_SERVER_BODY_TIMEOUT_SECONDS",
  "HOP_SERVER_WRITE_TIMEOUT_SECONDS",
  "HOP_SERVER_TLS_HANDSHAKE_TIMEOUT_SECONDS",
  "HOP_SERVER_MAX_CONNECTIONS",
  "HOP_SERVER_MAX_CONNECTIONS_PER_IP",
  "HOP_SERVER_MAX_HEADER_BYTES",
  "HOP_SERVER_MAX_HEADERS",
  "HOP_TRUSTED_PROXIES",
  "HOP_PROXY_PROTOCOL",
  "HOP_SERVER_MAX_TUNNELS_PER_DOMAIN",
  "HOP_SERVER_TCP_TUNNEL",
  "HOP_TUNNEL_MAX_DATAGRAM_BYTES",
  "HOP_TUNNEL_WARM_UP",
  "HOP_CLUSTER_LISTEN",
  "HOP_CLUSTER_ADVERTISE",
  "HOP_CLUSTER_MAX_RELAYS",
] as const;

const MIN_ADMIN_KEY_CHARS = 16;
const MIN_SECRET_KEY_CHARS = 32;

/** Reads the server configuration from `env`; throws `ConfigError` listing every problem. */
export function loadServerConfig(env: Record<string, string | undefined>): ServerConfig {
  const problems = new ConfigProblems();
  const get = (name: string): string | undefined => {
    const v = env[name]?.trim();
    return v === "" ? undefined : v;
  };
  /** Runs `parse` on a set variable; records its error (never the value of a secret). */
  const parse = <T>(name: string, fallback: T, fn: (v: string) => T, secret = false): T =>
    problems.read(name, env[name], fallback, fn, { secret });

  const debug = parse("HOP_SERVER_DEBUG", false, parseBool);
  const httpListen = parse(
    "HOP_SERVER_HTTP_LISTEN",
    debug ? { hostname: "127.0.0.1", port: 8080 } : { hostname: "0.0.0.0", port: 80 },
    parseListen,
  );
  const httpsListen = parse(
    "HOP_SERVER_HTTPS_LISTEN",
    debug ? { hostname: "127.0.0.1", port: 8443 } : { hostname: "0.0.0.0", port: 443 },
    parseListen,
  );
  const dtlsListen = parse(
    "HOP_SERVER_DTLS_LISTEN",
    debug ? { hostname: "127.0.0.1", port: 8443 } : { hostname: "0.0.0.0", port: 443 },
    parseListen,
  );
  const serverDomain = parse(
    "HOP_SERVER_DOMAIN",
    "localhost",
    (v) => normalizeDomain(v, { allowSingleLabel: debug }),
  );
  if (!debug && get("HOP_SERVER_DOMAIN") === undefined) {
    problems.add("HOP_SERVER_DOMAIN: required (the server's public name) unless HOP_SERVER_DEBUG");
  }
  const proxyDomains = parse(
    "HOP_SERVER_PROXY_DOMAINS",
    [],
    (v) => splitList(v).map((d) => normalizeDomain(d)),
  );
  const proxyTimeoutSeconds = parse(
    "HOP_SERVER_PROXY_TIMEOUT_SECONDS",
    60,
    (v) => parseInteger(v, 1, 86_400),
  );
  const adminApiKey = parse("HOP_ADMIN_API_KEY", undefined, (v) => {
    if (v.length < MIN_ADMIN_KEY_CHARS) {
      throw new Error(`must be at least ${MIN_ADMIN_KEY_CHARS} characters`);
    }
    return new Secret(v);
  }, true);
  const adminAllowedIps = parse("HOP_ADMIN_ALLOWED_IPS", [], (v) => {
    try {
      return parseCidrList(v);
    } catch (err) {
      throw new Error(`expected comma-separated IPs or CIDRs (${(err as Error).message})`);
    }
  });
  const dbDsn = parse("HOP_DB_DSN", undefined, (v) => {
    let url: URL;
    try {
      url = new URL(v);
    } catch {
      throw new Error("expected a postgres:// or postgresql:// URL");
    }
    if (url.protocol !== "postgres:" && url.protocol !== "postgresql:") {
      throw new Error("expected a postgres:// or postgresql:// URL");
    }
    return new Secret(v);
  }, true);
  const dbMaxOpenConns = parse("HOP_DB_MAX_OPEN_CONNS", 10, (v) => parseInteger(v, 1, 1000));
  const dbTimeoutMs = parse("HOP_DB_TIMEOUT_SECONDS", 5, (v) => parseSeconds(v, 0.1, 300)) * 1000;
  const pskOutageCacheMs = parse(
    "HOP_PSK_OUTAGE_CACHE_SECONDS",
    3600,
    (v) => parseInteger(v, 0, 7 * 86_400),
  ) * 1000;
  const dataDir = get("HOP_DATA_DIR") ?? "./data";
  const errorPagesDir = get("HOP_SERVER_ERROR_PAGES_DIR");
  const secretKey = parse("HOP_SECRET_KEY", undefined, (v) => {
    if (v.length < MIN_SECRET_KEY_CHARS) {
      throw new Error(`must be at least ${MIN_SECRET_KEY_CHARS} characters`);
    }
    return new Secret(v);
  }, true);
  const logLevel = parse("HOP_LOG_LEVEL", "info" as LogLevel, (v) => {
    const level = v.toLowerCase();
    if (!(LOG_LEVELS as readonly string[]).includes(level)) {
      throw new Error(`expected one of ${LOG_LEVELS.join(", ")}`);
    }
    return level as LogLevel;
  });
  const useStaging = parse("HOP_ACME_USE_STAGING", false, parseBool);
  const email = parse("HOP_ACME_EMAIL", undefined as string | undefined, (v) => {
    if (!/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(v)) throw new Error("expected an email address");
    return v;
  });
  const caDirectoryUrl = parse(
    "HOP_ACME_CA_DIR",
    useStaging ? LETS_ENCRYPT_STAGING_DIRECTORY : LETS_ENCRYPT_DIRECTORY,
    (v) => {
      let url: URL;
      try {
        url = new URL(v);
      } catch {
        throw new Error("expected an https:// URL");
      }
      if (url.protocol !== "https:" && !(debug && url.protocol === "http:")) {
        throw new Error("expected an https:// URL");
      }
      return url.href;
    },
  );
  const caCert = parse("HOP_ACME_CA_CERT", undefined as string | undefined, (v) => {
    let pem: string;
    try {
      pem = Deno.readTextFileSync(v);
    } catch (err) {
      throw new Error(`cannot read the file (${(err as Error).name})`);
    }
    if (!/-----BEGIN CERTIFICATE-----[\s\S]+-----END CERTIFICATE-----/.test(pem)) {
      throw new Error("expected a PEM file with at least one CERTIFICATE");
    }
    return pem;
  });
  const httpsRedirect = parse("HOP_SERVER_HTTPS_REDIRECT", !debug, parseBool);
  const metricsListen = parse(
    "HOP_METRICS_LISTEN",
    undefined as ListenAddress | undefined,
    parseListen,
  );
  const metricsToken = parse("HOP_METRICS_TOKEN", undefined, (v) => {
    if (v.length < MIN_ADMIN_KEY_CHARS) {
      throw new Error(`must be at least ${MIN_ADMIN_KEY_CHARS} characters`);
    }
    return new Secret(v);
  }, true);
  const metricsDomainLabels = parse("HOP_METRICS_DOMAIN_LABELS", false, parseBool);
  const shutdownTimeoutSeconds = parse(
    "HOP_SHUTDOWN_TIMEOUT_SECONDS",
    30,
    (v) => parseInteger(v, 0, 3600),
  );
  const seconds = (name: string, fallback: number) =>
    parse(name, fallback, (v) => parseSeconds(v, 0.05, 86_400)) * 1000;
  const front: FrontConfig = {
    headerTimeoutMs: seconds("HOP_SERVER_HEADER_TIMEOUT_SECONDS", 10),
    idleTimeoutMs: seconds("HOP_SERVER_IDLE_TIMEOUT_SECONDS", 60),
    bodyTimeoutMs: seconds("HOP_SERVER_BODY_TIMEOUT_SECONDS", 60),
    writeTimeoutMs: seconds("HOP_SERVER_WRITE_TIMEOUT_SECONDS", 60),
    tlsHandshakeTimeoutMs: seconds("HOP_SERVER_TLS_HANDSHAKE_TIMEOUT_SECONDS", 10),
    maxConnections: parse(
      "HOP_SERVER_MAX_CONNECTIONS",
      16_384,
      (v) => parseInteger(v, 1, 1_000_000),
    ),
    maxConnectionsPerAddress: parse(
      "HOP_SERVER_MAX_CONNECTIONS_PER_IP",
      1024,
      (v) => parseInteger(v, 1, 1_000_000),
    ),
    maxHeadBytes: parse(
      "HOP_SERVER_MAX_HEADER_BYTES",
      65_536,
      (v) => parseInteger(v, 1024, 1 << 20),
    ),
    maxHeaders: parse("HOP_SERVER_MAX_HEADERS", 100, (v) => parseInteger(v, 8, 10_000)),
  };
  const trustedProxies = parse("HOP_TRUSTED_PROXIES", [], (v) => {
    try {
      return parseCidrList(v);
    } catch (err) {
      throw new Error(`expected comma-separated IPs or CIDRs (${(err as Error).message})`);
    }
  });
  const proxyProtocol = parse("HOP_PROXY_PROTOCOL", false, parseBool);
  if (proxyProtocol && trustedProxies.length === 0) {
    problems.add(
      "HOP_PROXY_PROTOCOL: true needs HOP_TRUSTED_PROXIES (the load balancers that send the header)",
    );
  }

  const maxTunnelsPerDomain = parse(
    "HOP_SERVER_MAX_TUNNELS_PER_DOMAIN",
    8,
    (v) => parseInteger(v, 1, 10_000),
  );

  const tcpTunnel = parse("HOP_SERVER_TCP_TUNNEL", true, parseBool);
  const tunnelMaxDatagramBytes = parse<number | undefined>(
    "HOP_TUNNEL_MAX_DATAGRAM_BYTES",
    undefined,
    (v) => parseInteger(v, 512, 16_384),
  );
  const tunnelWarmUp = parse("HOP_TUNNEL_WARM_UP", true, parseBool);

  const cluster = readCluster(problems, parse, get, dbDsn !== undefined);

  problems.throwIfAny();
  return {
    debug,
    httpListen,
    httpsListen,
    dtlsListen,
    serverDomain,
    proxyDomains,
    proxyTimeoutSeconds,
    httpsRedirect,
    errorPagesDir,
    adminApiKey,
    adminAllowedIps,
    dbDsn,
    dbMaxOpenConns,
    dbTimeoutMs,
    pskOutageCacheMs,
    dataDir,
    secretKey,
    logLevel,
    acme: { email, caDirectoryUrl, useStaging, caCert },
    metrics: { listen: metricsListen, token: metricsToken, domainLabels: metricsDomainLabels },
    shutdownTimeoutSeconds,
    front,
    trustedProxies,
    proxyProtocol,
    maxTunnelsPerDomain,
    tunnelMaxDatagramBytes,
    tunnelWarmUp,
    tcpTunnel,
    cluster,
  };
}

/** The `HOP_CLUSTER_*` variables; undefined when cluster mode is off. */
function readCluster(
  problems: ConfigProblems,
  parse: <T>(name: string, fallback: T, fn: (v: string) => T) => T,
  get: (name: string) => string | undefined,
  postgres: boolean,
): ClusterConfig | undefined {
  const listen = parse("HOP_CLUSTER_LISTEN", undefined as ListenAddress | undefined, parseListen);
  const advertise = parse("HOP_CLUSTER_ADVERTISE", undefined as string | undefined, (v) => {
    const a = parseAddress(v, { emptyHost: "", minPort: 1, expected: '"host:port"' });
    if (a.hostname === "" || a.hostname === "0.0.0.0" || a.hostname === "::") {
      throw new Error("expected the address other nodes dial (not a wildcard)");
    }
    return formatHostPort(a);
  });
  const maxRelays = parse("HOP_CLUSTER_MAX_RELAYS", 1024, (v) => parseInteger(v, 1, 100_000));
  if (!listen) {
    if (get("HOP_CLUSTER_ADVERTISE") !== undefined) {
      problems.add("HOP_CLUSTER_ADVERTISE: needs HOP_CLUSTER_LISTEN (cluster mode)");
    }
    return undefined;
  }
  if (!postgres) {
    problems.add(
      "HOP_CLUSTER_LISTEN: cluster mode needs PostgreSQL (HOP_DB_DSN); the embedded PGlite " +
        "database is single-node",
    );
  }
  let adv = advertise;
  if (adv === undefined) {
    if (listen.hostname === "0.0.0.0" || listen.hostname === "::" || listen.port === 0) {
      problems.add(
        "HOP_CLUSTER_ADVERTISE: required when HOP_CLUSTER_LISTEN is a wildcard address or " +
          "port 0 (the host:port other nodes dial)",
      );
    } else adv = formatHostPort(listen);
  }
  return { listen, advertise: adv ?? "", maxRelays };
}

/** `host:port`, `:port` (all IPv4 interfaces) or `[v6]:port`; port 0 is any free port. */
export function parseListen(v: string): ListenAddress {
  return parseAddress(v, {
    emptyHost: "0.0.0.0",
    minPort: 0,
    expected: '"host:port", ":port" or "[ipv6]:port"',
  });
}
