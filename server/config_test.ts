import assert from "node:assert/strict";
import { inspect } from "node:util";
import {
  ConfigError,
  LETS_ENCRYPT_DIRECTORY,
  LETS_ENCRYPT_STAGING_DIRECTORY,
  loadServerConfig,
  parseListen,
  Secret,
  SERVER_ENV_NAMES,
} from "./config.ts";

const PROD = { HOP_SERVER_DOMAIN: "gw.example.com" };

function problemsOf(env: Record<string, string>): string[] {
  try {
    loadServerConfig(env);
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    return err.problems;
  }
  assert.fail("expected a ConfigError");
}

Deno.test("loadServerConfig: production defaults", () => {
  const c = loadServerConfig(PROD);
  assert.equal(c.debug, false);
  assert.deepEqual(c.httpListen, { hostname: "0.0.0.0", port: 80 });
  assert.deepEqual(c.httpsListen, { hostname: "0.0.0.0", port: 443 });
  assert.deepEqual(c.dtlsListen, { hostname: "0.0.0.0", port: 443 });
  assert.equal(c.serverDomain, "gw.example.com");
  assert.deepEqual(c.proxyDomains, []);
  assert.equal(c.proxyTimeoutSeconds, 60);
  assert.equal(c.adminApiKey, undefined);
  assert.deepEqual(c.adminAllowedIps, []);
  assert.equal(c.dbDsn, undefined);
  assert.equal(c.dbMaxOpenConns, 10);
  assert.equal(c.dataDir, "./data");
  assert.equal(c.secretKey, undefined);
  assert.equal(c.logLevel, "info");
  assert.deepEqual(c.acme, {
    email: undefined,
    caDirectoryUrl: LETS_ENCRYPT_DIRECTORY,
    useStaging: false,
    caCert: undefined,
  });
});

Deno.test("loadServerConfig: debug defaults to loopback ports and localhost", () => {
  const c = loadServerConfig({ HOP_SERVER_DEBUG: "true" });
  assert.equal(c.debug, true);
  assert.equal(c.serverDomain, "localhost");
  assert.deepEqual(c.httpListen, { hostname: "127.0.0.1", port: 8080 });
  assert.deepEqual(c.httpsListen, { hostname: "127.0.0.1", port: 8443 });
});

Deno.test("loadServerConfig: every variable parsed", () => {
  const c = loadServerConfig({
    HOP_SERVER_HTTP_LISTEN: "127.0.0.1:8000",
    HOP_SERVER_HTTPS_LISTEN: "[::]:8443",
    HOP_SERVER_DTLS_LISTEN: ":9443",
    HOP_SERVER_DOMAIN: "GW.Example.com",
    HOP_SERVER_PROXY_DOMAINS: "a.example.com, Bücher.example",
    HOP_SERVER_DEBUG: "0",
    HOP_SERVER_PROXY_TIMEOUT_SECONDS: "15",
    HOP_ADMIN_API_KEY: "0123456789abcdef",
    HOP_ADMIN_ALLOWED_IPS: "10.0.0.0/8,2001:db8::/32, 192.0.2.7",
    HOP_DB_DSN: "postgres://u:pw@db:5432/hop",
    HOP_DB_MAX_OPEN_CONNS: "25",
    HOP_DATA_DIR: "/var/lib/hopgate",
    HOP_SECRET_KEY: "s".repeat(32),
    HOP_LOG_LEVEL: "WARN",
    HOP_ACME_EMAIL: "ops@example.com",
    HOP_ACME_USE_STAGING: "yes",
  });
  assert.deepEqual(c.httpListen, { hostname: "127.0.0.1", port: 8000 });
  assert.deepEqual(c.httpsListen, { hostname: "::", port: 8443 });
  assert.deepEqual(c.dtlsListen, { hostname: "0.0.0.0", port: 9443 });
  assert.equal(c.serverDomain, "gw.example.com");
  assert.deepEqual(c.proxyDomains, ["a.example.com", "xn--bcher-kva.example"]);
  assert.equal(c.proxyTimeoutSeconds, 15);
  assert.equal(c.adminApiKey?.reveal(), "0123456789abcdef");
  assert.deepEqual(c.adminAllowedIps.map((r) => r.text), [
    "10.0.0.0/8",
    "2001:db8::/32",
    "192.0.2.7/32",
  ]);
  assert.equal(c.dbDsn?.reveal(), "postgres://u:pw@db:5432/hop");
  assert.equal(c.dbMaxOpenConns, 25);
  assert.equal(c.dataDir, "/var/lib/hopgate");
  assert.equal(c.secretKey?.reveal(), "s".repeat(32));
  assert.equal(c.logLevel, "warn");
  assert.deepEqual(c.acme, {
    email: "ops@example.com",
    caDirectoryUrl: LETS_ENCRYPT_STAGING_DIRECTORY,
    useStaging: true,
    caCert: undefined,
  });
  // Secrets never print, whichever way the config is shown.
  for (const shown of [JSON.stringify(c), Deno.inspect(c), inspect(c), `${c.adminApiKey}`]) {
    assert.ok(!shown.includes("0123456789abcdef"), shown);
    assert.ok(!shown.includes("pw@db"), shown);
    assert.ok(!shown.includes("s".repeat(32)), shown);
  }
});

Deno.test("loadServerConfig: one error names every bad variable", () => {
  const problems = problemsOf({
    HOP_SERVER_HTTP_LISTEN: "80",
    HOP_SERVER_HTTPS_LISTEN: "host:99999",
    HOP_SERVER_DTLS_LISTEN: "a:b:c",
    HOP_SERVER_PROXY_DOMAINS: "ok.example.com,bad_domain",
    HOP_SERVER_DEBUG: "maybe",
    HOP_SERVER_PROXY_TIMEOUT_SECONDS: "0",
    HOP_ADMIN_API_KEY: "short-secret",
    HOP_ADMIN_ALLOWED_IPS: "10.0.0.0/33",
    HOP_DB_DSN: "mysql://root:hunter2@db/x",
    HOP_DB_MAX_OPEN_CONNS: "many",
    HOP_SECRET_KEY: "tooshort-secret",
    HOP_LOG_LEVEL: "verbose",
    HOP_ACME_EMAIL: "not-an-email",
    HOP_ACME_USE_STAGING: "perhaps",
    HOP_ACME_CA_DIR: "ftp://x",
  });
  const names = problems.map((p) => p.split(":")[0]);
  assert.deepEqual(names.sort(), [
    "HOP_ACME_CA_DIR",
    "HOP_ACME_EMAIL",
    "HOP_ACME_USE_STAGING",
    "HOP_ADMIN_ALLOWED_IPS",
    "HOP_ADMIN_API_KEY",
    "HOP_DB_DSN",
    "HOP_DB_MAX_OPEN_CONNS",
    "HOP_LOG_LEVEL",
    "HOP_SECRET_KEY",
    "HOP_SERVER_DEBUG",
    "HOP_SERVER_DOMAIN",
    "HOP_SERVER_DTLS_LISTEN",
    "HOP_SERVER_HTTPS_LISTEN",
    "HOP_SERVER_HTTP_LISTEN",
    "HOP_SERVER_PROXY_DOMAINS",
    "HOP_SERVER_PROXY_TIMEOUT_SECONDS",
  ]);
  for (const name of names) assert.ok((SERVER_ENV_NAMES as readonly string[]).includes(name ?? ""));
  const text = problems.join("\n");
  for (const secret of ["short-secret", "hunter2", "tooshort-secret"]) {
    assert.ok(!text.includes(secret), text);
  }
  assert.match(text, /HOP_SERVER_HTTP_LISTEN: expected "host:port".*got "80"/);
  assert.match(text, /HOP_SERVER_DOMAIN: required/);
});

Deno.test("loadServerConfig: a single bad variable is named in the message", () => {
  assert.throws(
    () => loadServerConfig({ ...PROD, HOP_DB_MAX_OPEN_CONNS: "-3" }),
    (err: unknown) =>
      err instanceof ConfigError &&
      /HOP_DB_MAX_OPEN_CONNS: expected an integer/.test(err.message) &&
      err.problems.length === 1,
  );
});

Deno.test("parseListen forms", () => {
  assert.deepEqual(parseListen(":0"), { hostname: "0.0.0.0", port: 0 });
  assert.deepEqual(parseListen("[::1]:80"), { hostname: "::1", port: 80 });
  assert.deepEqual(parseListen("example.com:443"), { hostname: "example.com", port: 443 });
  for (const bad of ["", "80", "::1:80", "host:", "host:65536", "[::1]"]) {
    assert.throws(() => parseListen(bad), Error, bad);
  }
});

Deno.test("Secret prints as *** everywhere", () => {
  const s = new Secret("hunter2");
  assert.equal(String(s), "***");
  assert.equal(JSON.stringify({ s }), '{"s":"***"}');
  assert.equal(Deno.inspect(s), "***");
  assert.equal(inspect(s), "***");
  assert.equal(s.reveal(), "hunter2");
});

Deno.test("loadServerConfig: the public listeners' limits and trusted proxies", () => {
  const d = loadServerConfig(PROD);
  assert.deepEqual(d.front, {
    headerTimeoutMs: 10_000,
    idleTimeoutMs: 60_000,
    bodyTimeoutMs: 60_000,
    writeTimeoutMs: 60_000,
    tlsHandshakeTimeoutMs: 10_000,
    maxConnections: 16_384,
    maxConnectionsPerAddress: 1024,
    maxHeadBytes: 65_536,
    maxHeaders: 100,
  });
  assert.deepEqual(d.trustedProxies, []);
  const c = loadServerConfig({
    ...PROD,
    HOP_SERVER_HEADER_TIMEOUT_SECONDS: "2.5",
    HOP_SERVER_IDLE_TIMEOUT_SECONDS: "5",
    HOP_SERVER_BODY_TIMEOUT_SECONDS: "6",
    HOP_SERVER_WRITE_TIMEOUT_SECONDS: "7",
    HOP_SERVER_TLS_HANDSHAKE_TIMEOUT_SECONDS: "0.5",
    HOP_SERVER_MAX_CONNECTIONS: "500",
    HOP_SERVER_MAX_CONNECTIONS_PER_IP: "20",
    HOP_SERVER_MAX_HEADER_BYTES: "8192",
    HOP_SERVER_MAX_HEADERS: "50",
    HOP_TRUSTED_PROXIES: "10.0.0.0/8, 127.0.0.1",
  });
  assert.equal(c.front.headerTimeoutMs, 2500);
  assert.equal(c.front.tlsHandshakeTimeoutMs, 500);
  assert.equal(c.front.maxConnectionsPerAddress, 20);
  assert.equal(c.front.maxHeadBytes, 8192);
  assert.equal(c.trustedProxies.length, 2);
  const problems = problemsOf({
    ...PROD,
    HOP_SERVER_HEADER_TIMEOUT_SECONDS: "-1",
    HOP_SERVER_WRITE_TIMEOUT_SECONDS: "10s",
    HOP_SERVER_MAX_CONNECTIONS: "0",
    HOP_SERVER_MAX_HEADER_BYTES: "100",
    HOP_TRUSTED_PROXIES: "10.0.0.0/33",
  });
  for (
    const name of [
      "HOP_SERVER_HEADER_TIMEOUT_SECONDS",
      "HOP_SERVER_WRITE_TIMEOUT_SECONDS",
      "HOP_SERVER_MAX_CONNECTIONS",
      "HOP_SERVER_MAX_HEADER_BYTES",
      "HOP_TRUSTED_PROXIES",
    ]
  ) assert.ok(problems.some((p) => p.startsWith(`${name}:`)), `${name} in ${problems}`);
});

Deno.test("loadServerConfig: HOP_PROXY_PROTOCOL needs HOP_TRUSTED_PROXIES", () => {
  assert.equal(loadServerConfig(PROD).proxyProtocol, false);
  const c = loadServerConfig({
    ...PROD,
    HOP_PROXY_PROTOCOL: "true",
    HOP_TRUSTED_PROXIES: "10.0.0.0/8",
  });
  assert.equal(c.proxyProtocol, true);
  assert.equal(loadServerConfig({ ...PROD, HOP_PROXY_PROTOCOL: "false" }).proxyProtocol, false);
  for (const trusted of [undefined, " ", ","]) {
    const problems = problemsOf({
      ...PROD,
      HOP_PROXY_PROTOCOL: "on",
      ...(trusted === undefined ? {} : { HOP_TRUSTED_PROXIES: trusted }),
    });
    assert.equal(problems.length, 1, problems.join("\n"));
    assert.match(problems[0]!, /^HOP_PROXY_PROTOCOL: .*HOP_TRUSTED_PROXIES/);
  }
  assert.match(
    problemsOf({ ...PROD, HOP_PROXY_PROTOCOL: "maybe" }).join("\n"),
    /HOP_PROXY_PROTOCOL: expected true or false/,
  );
});

Deno.test("loadServerConfig: the database timeout and the PSK outage cache", () => {
  const base = { HOP_SERVER_DEBUG: "true" };
  const d = loadServerConfig(base);
  assert.equal(d.dbTimeoutMs, 5000);
  assert.equal(d.pskOutageCacheMs, 3_600_000);
  const c = loadServerConfig({
    ...base,
    HOP_DB_TIMEOUT_SECONDS: "1.5",
    HOP_PSK_OUTAGE_CACHE_SECONDS: "0",
  });
  assert.equal(c.dbTimeoutMs, 1500);
  assert.equal(c.pskOutageCacheMs, 0);
  assert.throws(
    () =>
      loadServerConfig({
        ...base,
        HOP_DB_TIMEOUT_SECONDS: "0",
        HOP_PSK_OUTAGE_CACHE_SECONDS: "-1",
      }),
    (e: Error) =>
      /HOP_DB_TIMEOUT_SECONDS/.test(e.message) && /HOP_PSK_OUTAGE_CACHE_SECONDS/.test(e.message),
  );
});
