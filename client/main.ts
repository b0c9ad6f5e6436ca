/**
 * hopgate-client: the only file that reads argv, the environment and `.env`.
 * Everything else takes options (see connector.ts `runClient`).
 *
 *   HOP_CLIENT_API_KEY=... deno task client --server-addr hop.example.com:443 \
 *     --domain app.example.com --local-target 127.0.0.1:3000
 */
import { Command, CommanderError, Option } from "commander";
import {
  CLIENT_ENV,
  CLIENT_ENV_NAMES,
  type ClientConfig,
  ConfigError,
  type ConfigKey,
  maskSecret,
  PROXY_ENV_NAMES,
  resolveConfig,
} from "./config.ts";
import { CLIENT_VERSION, runClient } from "./connector.ts";
import { dialerFor, DTLS_ENGINES, TRANSPORTS, type TunnelDialer } from "./dialer.ts";
import { racingDialer } from "./race.ts";
import type { ServerNode } from "./nodes.ts";
import { redactProxy, tcpDialer } from "./tcp_dialer.ts";
import { ClientMetrics, serveClientMetrics } from "./metrics.ts";
import { createStatusReporter } from "./status.ts";
import { readDotEnv } from "../shared/dotenv.ts";
import { receiveBufferWarning } from "../shared/udp_buffer.ts";
import { isLoopbackHost, useWasmChaCha } from "../shared/dtls/mod.ts";
import { formatHostPort } from "../shared/names.ts";

const HELP_AFTER = `
Each option overrides its environment variable, which overrides a .env file in
the working directory (read, never overriding the real environment).

  --server-addr   ${CLIENT_ENV.serverAddr} (host:port[,host:port...])
  --server-redundancy ${CLIENT_ENV.serverRedundancy} (1-8; default 2)
  --domain        ${CLIENT_ENV.domain}
  --api-key       ${CLIENT_ENV.apiKey}     (never printed; prefer the variable,
                                         .env or a key file to the flag, which
                                         ps and deno task show)
  --api-key-file  ${CLIENT_ENV.apiKeyFile} (a file holding the key alone;
                                         a trailing newline is ignored; Deno
                                         needs --allow-read for its path)
  --local-target  ${CLIENT_ENV.localTarget}
  --dtls-engine   ${CLIENT_ENV.dtlsEngine}
  --transport     ${CLIENT_ENV.transport}
  --server-tcp-addr ${CLIENT_ENV.serverTcpAddr}
  --server-name   ${CLIENT_ENV.serverName}
  --tcp-ca-file   ${CLIENT_ENV.tcpCaFile} (Deno needs --allow-read for it)
  --proxy         ${CLIENT_ENV.proxy}, else HTTPS_PROXY (Deno needs
                                         --allow-env=HTTPS_PROXY to see it)
  --debug         ${CLIENT_ENV.debug}       (true/false)
  --metrics-listen ${CLIENT_ENV.metricsListen} (host:port or a port on
                                         127.0.0.1; off by default)
  --max-datagram-bytes ${CLIENT_ENV.maxDatagramBytes} (default: what a
                                         1280-byte MTU carries, 1215 over IPv4)
  --reprobe-seconds ${CLIENT_ENV.reprobeSeconds} (auto transport: DTLS
                                         retried this often while on TCP; 300)
  --warm-up       ${CLIENT_ENV.warmUp}    (true/false; default true)

DTLS engines:
  hopgate           HopGate's own DTLS 1.2 client (default): ECDHE-PSK with
                    ChaCha20-Poly1305 (forward secrecy) or PSK AES-128-GCM,
                    handshake retransmission, sliding replay window.
  node-dtls-client  npm node-dtls-client, PSK AES-128-GCM only. Known limits:
                    it never retransmits a handshake flight (one lost datagram
                    fails the attempt; the client retries later); it stops
                    accepting records for good after a gap of more than 64 lost
                    records (the tunnel then idles out and reconnects); about
                    50 µs of CPU per 1200-byte record (~19 MB/s). It reads the
                    whole environment when it loads, so it needs an unscoped
                    --allow-env permission.

Transports (docs/tcp-fallback.md):
  dtls  DTLS over UDP to --server-addr (default).
  tcp   TCP + TLS to --server-tcp-addr (default: the --server-addr host, port
        443), a WebSocket to /.well-known/hopgate/tunnel, and the same DTLS
        over it: for networks that drop UDP. Works through an HTTP proxy
        (--proxy http://[user:pass@]host:port, CONNECT). The server's
        certificate is verified (Deno's roots, or --tcp-ca-file); DTLS-PSK
        still authenticates both ends. --server-tcp-addr http://host:port
        speaks plain HTTP (a TLS-terminating proxy in front of the server).
  auto  DTLS and TCP raced: DTLS starts, TCP 1.5 s later (at once if DTLS
        fails unanswered); the first to connect carries the tunnel. While on
        TCP, DTLS is tried again every 5 minutes and the tunnel moves back.

Local service: HTTP/1.1 over kept-alive connections (closed after 4 s idle).
An https:// target's certificate is checked against Deno's trust store; for a
private CA set DENO_CERT=/path/ca.pem (read by Deno itself, no extra permission).

Several servers (docs/client-failover.md): --server-addr takes a comma-separated
list, and a name stands for all its addresses (A and AAAA records, resolved again
before each reconnect). With two or more nodes the client keeps tunnels to
--server-redundancy of them at once (default 2): when one is lost, the other
serves on while the client replaces it. With 1 it holds one tunnel and moves to
the next node when it is lost. --server-tcp-addr then lists one address per
--server-addr entry, in the same order.

On failure the client says why in one line (server unreachable, bad API key,
domain not registered, version mismatch, ...) and retries with exponential
backoff and jitter: the first wait is 0.25-0.5 s, each next one twice that
range, up to 15-30 s (a session that lasted over 30 s starts again at the
first); a rejected key or an unregistered domain waits 15-30 s at once.
Ctrl-C stops it.

--check resolves the configuration exactly as a run would (flags, variables,
.env), prints it with the API key masked and exits without connecting.

Exit codes: 0 stopped (or --check passed), 2 invalid configuration.`;

function buildProgram(): Command {
  return new Command()
    .name("hopgate-client")
    .description(
      "Expose a local HTTP service through a HopGate server: keeps one DTLS tunnel to the " +
        "server and forwards each request for your domain to the local service.",
    )
    .version(CLIENT_VERSION.split("/")[1] ?? CLIENT_VERSION, "-V, --version")
    .option(
      "--server-addr <host:port>",
      "the HopGate server's DTLS (UDP) address, e.g. hop.example.com:443; several " +
        "servers: a comma-separated list",
    )
    .option(
      "--server-redundancy <n>",
      "tunnels kept at once to distinct server nodes when several are known (default 2; " +
        "1 = one tunnel)",
    )
    .option("--domain <domain>", "the domain this client serves, as registered on the server")
    .option(
      "--api-key <key>",
      "the domain's client API key, shown once at registration (visible in ps: prefer " +
        "--api-key-file or HOP_CLIENT_API_KEY)",
    )
    .option("--api-key-file <path>", "read the API key from this file")
    .option(
      "--local-target <target>",
      "the local service: host:port, a port, or an http(s):// URL (default scheme http; " +
        "a path is prefixed to every request), e.g. 127.0.0.1:3000",
    )
    .addOption(
      new Option("--dtls-engine <engine>", "DTLS client implementation (see below)").choices(
        DTLS_ENGINES,
      ),
    )
    .addOption(
      new Option("--transport <transport>", "how to reach the server (see below)").choices(
        TRANSPORTS,
      ),
    )
    .option(
      "--server-tcp-addr <addr>",
      "the server's HTTPS address for --transport tcp: host:port, https://host:port or " +
        "http://host:port (default: the --server-addr host, port 443)",
    )
    .option(
      "--server-name <domain>",
      "the server's own domain for TLS and Host on the TCP path (default: the " +
        "--server-tcp-addr host)",
    )
    .option("--tcp-ca-file <path>", "PEM certificate(s) to trust for the TCP path's TLS")
    .option("--proxy <url>", "HTTP proxy for the TCP path (CONNECT): http://[user:pass@]host:port")
    .option("--debug", "log every request and connection attempt")
    .option(
      "--metrics-listen <host:port>",
      "serve Prometheus metrics at http://host:port/metrics (a bare port means 127.0.0.1)",
    )
    .option(
      "--max-datagram-bytes <n>",
      "largest tunnel packet toward a non-loopback server (default fits a 1280-byte MTU; " +
        "raise only for a path known to carry more, and on the server too)",
    )
    .option(
      "--warm-up <bool>",
      "learn each tunnel's path both ways while it waits for its first request: a few " +
        "round trips of padding, ~1-4 MB on a WAN path (default true; false on metered links)",
    )
    .option(
      "--reprobe-seconds <n>",
      "with --transport auto, while on the TCP path: try DTLS again this often (default 300)",
    )
    .option("--check", "validate the configuration, print it (API key masked) and exit")
    .addHelpText("after", HELP_AFTER)
    .showHelpAfterError("(run hopgate-client --help for usage)")
    .exitOverride();
}

function readEnv(): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = {};
  for (const name of [...CLIENT_ENV_NAMES, ...PROXY_ENV_NAMES]) {
    try {
      env[name] = Deno.env.get(name);
    } catch {
      env[name] = undefined; // no permission for it: as if unset
    }
  }
  return env;
}

/** `https://host:port (name N)` for each TCP target. */
function describeTcp(c: ClientConfig): string {
  return c.tcp.targets.map((t) =>
    `${t.tls ? "https" : "http"}://${formatHostPort(t.server)} (name ${t.serverName})`
  ).join(", ");
}

function describe(c: ClientConfig): string {
  return [
    `server-addr   ${c.servers.map(formatHostPort).join(", ")}`,
    `redundancy    ${c.redundancy}`,
    `domain        ${c.domain}`,
    `api-key       ${maskSecret(c.apiKey)}` +
    (c.apiKeySource.kind === "file" ? ` (from ${c.apiKeySource.path})` : ""),
    `local-target  ${c.target.href}`,
    `dtls-engine   ${c.engine}`,
    // Shown when not the default (dtls), so --check output stays as it was for UDP.
    ...(c.transport === "dtls" ? [] : [
      `transport     ${c.transport}`,
      `tcp-addr      ${describeTcp(c)}`,
      ...(c.tcp.caFile ? [`tcp-ca-file   ${c.tcp.caFile}`] : []),
      ...(c.tcp.proxy ? [`proxy         ${redactProxy(c.tcp.proxy)}`] : []),
    ]),
    `debug         ${c.debug}`,
    ...(c.metricsListen ? [`metrics       ${formatHostPort(c.metricsListen)}`] : []),
    ...(c.maxDatagramBytes ? [`max-datagram  ${c.maxDatagramBytes}`] : []),
    ...(c.warmUp ? [] : ["warm-up       false"]),
  ].join("\n");
}

/**
 * The dialer `--transport` asks for, to one node (default: the first
 * `--server-addr` entry as given). The TCP path goes to the same node: the
 * `--server-tcp-addr` entry paired with the node's, at the node's address when
 * both entries name the same host (by default they do), with that host's name
 * for TLS.
 */
export function makeDialer(c: ClientConfig, node?: ServerNode): TunnelDialer {
  const apiKey = c.apiKey.reveal();
  const entry = node?.entry ?? c.servers[0]!;
  const address = node?.address ?? entry;
  const target = c.tcp.targets[node?.index ?? 0]!;
  const sameHost = target.server.hostname.toLowerCase() === entry.hostname.toLowerCase();
  const tcpServer = sameHost
    ? { hostname: address.hostname, port: target.server.port }
    : target.server;
  const tcp = () =>
    tcpDialer({
      server: tcpServer,
      tls: target.tls,
      serverName: target.serverName,
      ...(c.tcp.caCerts ? { caCerts: c.tcp.caCerts } : {}),
      ...(c.tcp.proxy ? { proxy: c.tcp.proxy } : {}),
      domain: c.domain,
      apiKey,
    });
  const dtls = () =>
    dialerFor(c.engine, {
      server: address,
      domain: c.domain,
      apiKey,
      handshakeTimeoutMs: 10_000,
      ...(c.maxDatagramBytes ? { maxDatagramSize: c.maxDatagramBytes } : {}),
    });
  switch (c.transport) {
    case "tcp":
      return tcp();
    case "auto":
      return racingDialer({
        preferred: dtls(),
        fallback: tcp(),
        reprobeIntervalMs: c.reprobeSeconds * 1000,
      });
    default:
      return dtls();
  }
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  const err = (s: string) => Deno.stderr.writeSync(new TextEncoder().encode(s));
  program.configureOutput({
    writeOut: (s) => Deno.stdout.writeSync(new TextEncoder().encode(s)),
    writeErr: err,
  });
  try {
    program.parse(argv, { from: "user" });
  } catch (e) {
    if (e instanceof CommanderError) {
      return e.code === "commander.helpDisplayed" || e.code === "commander.version" ||
          e.code === "commander.help"
        ? 0
        : 2;
    }
    throw e;
  }
  const opts = program.opts<Partial<Record<ConfigKey | "check", string | boolean>>>();
  const { check, ...flags } = opts;

  let config: ClientConfig;
  try {
    config = resolveConfig({ flags, env: readEnv(), dotenv: await readDotEnv() });
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    for (const p of e.problems) err(`hopgate-client: ${p}\n`);
    err("(run hopgate-client --help for usage)\n");
    return 2;
  }
  if (config.apiKeySource.kind === "flag") {
    err(
      "hopgate-client: warning: --api-key puts the key on the command line, where ps, " +
        "shell history and deno task's echo of the command show it; use --api-key-file " +
        `PATH or ${CLIENT_ENV.apiKey} instead\n`,
    );
  }
  if (
    config.engine === "node-dtls-client" &&
    Deno.permissions.querySync({ name: "env" }).state !== "granted"
  ) {
    err(
      "hopgate-client: --dtls-engine node-dtls-client needs an unscoped --allow-env permission " +
        "(its debug dependency reads the whole environment); run with --allow-env, or use the " +
        "default engine\n",
    );
    return 2;
  }
  if (check) {
    Deno.stdout.writeSync(new TextEncoder().encode(describe(config) + "\n"));
    return 0;
  }
  if (
    config.transport !== "tcp" &&
    !config.servers.every((s) => isLoopbackHost(s.hostname))
  ) {
    const rmem = await receiveBufferWarning();
    if (rmem !== null) err(`hopgate-client: warning: ${rmem}\n`);
  }

  try {
    // ChaCha20-Poly1305 records through libsodium's wasm: ~3x less CPU each than node:crypto
    // in a process whose wasm runs optimized, as the client's does (shared/dtls/chacha_wasm.ts).
    await useWasmChaCha();
  } catch (e) {
    err(
      `hopgate-client: warning: libsodium's wasm did not load (${
        e instanceof Error ? e.message : e
      }); records are sealed with node:crypto, at more CPU each\n`,
    );
  }

  const terminal = Deno.stdout.isTerminal();
  const status = createStatusReporter({
    terminal,
    write: (s) => Deno.stdout.writeSync(new TextEncoder().encode(s)),
    domain: config.domain,
    target: config.target.href,
    debug: config.debug,
  });
  const several = config.servers.length > 1 ? `; up to ${config.redundancy} tunnels at once` : "";
  status.log(
    `${CLIENT_VERSION}: ${config.domain} → ${config.target.href} via ` +
      (config.transport === "tcp"
        ? `${
          config.tcp.targets.map((t) => `${t.tls ? "https" : "http"}://${formatHostPort(t.server)}`)
            .join(", ")
        } (TCP, `
        : `${config.servers.map(formatHostPort).join(", ")} (${
          config.transport === "auto" ? "DTLS, else TCP; " : ""
        }DTLS engine ${config.engine}, `) +
      `API key ${maskSecret(config.apiKey)}${several})`,
  );

  const ac = new AbortController();
  let signals = 0;
  const onSignal = () => {
    if (++signals > 1) Deno.exit(130); // a second Ctrl-C: do not wait
    status.log("stopping: draining the tunnels (Ctrl-C again to quit at once)...");
    ac.abort();
  };
  const names: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  for (const n of names) Deno.addSignalListener(n, onSignal);
  let onEvent = status.onEvent;
  let metricsServer: Deno.HttpServer<Deno.NetAddr> | undefined;
  if (config.metricsListen) {
    const metrics = new ClientMetrics();
    try {
      metricsServer = serveClientMetrics(metrics, config.metricsListen, ac.signal);
    } catch (e) {
      err(`hopgate-client: cannot serve metrics: ${e instanceof Error ? e.message : e}\n`);
      for (const n of names) Deno.removeSignalListener(n, onSignal);
      status.close();
      return 2;
    }
    status.log(
      `metrics on http://${metricsServer.addr.hostname}:${metricsServer.addr.port}/metrics`,
    );
    onEvent = (e) => {
      metrics.onEvent(e);
      status.onEvent(e);
    };
  }
  try {
    await runClient({
      servers: config.servers,
      redundancy: config.redundancy,
      domain: config.domain,
      apiKey: config.apiKey.reveal(),
      target: config.target,
      engine: config.engine,
      dialerForNode: (node) => makeDialer(config, node),
      // Through a proxy, the proxy resolves what the client cannot.
      keepUnresolved: config.transport !== "dtls" && config.tcp.proxy !== undefined,
      warmUp: config.warmUp,
      onEvent,
    }, ac.signal);
    await metricsServer?.finished;
  } finally {
    for (const n of names) Deno.removeSignalListener(n, onSignal);
    status.close();
  }
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
