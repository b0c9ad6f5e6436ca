/**
 * Builds and runs a whole server from a config: storage, the tunnel listener,
 * the public HTTP listener with the admin API. `main.ts` calls it with the
 * environment's config; tests call it in-process (rathole's `run(args, shutdown)`).
 */
import { ADMIN_BASE_PATH, createAdminHandler, isAdminRequest } from "./admin/app.ts";
import type { ServerConfig } from "./config.ts";
import {
  type CertificateManager,
  type CertificateTuning,
  createCertificateManager,
  withHttpFront,
} from "./certs/mod.ts";
import { ErrorPages } from "./error_pages.ts";
import { createIngressHandler, type IngressOptions } from "./ingress.ts";
import { type FrontLimits, FrontServer } from "./front/http1.ts";
import { type ClientInfo, type FetchHandler, serveFetch } from "./front/fetch.ts";
import { TlsAcceptor } from "./front/tls.ts";
import { H2Bridge } from "./front/h2.ts";
import { ipInRanges } from "./admin/cidr.ts";
import { healthResponse, Readiness } from "./health.ts";
import { openWithRetry, withinDeadline } from "./lifecycle.ts";
import { createJsonLogger, type Logger } from "./log.ts";
import { createMetricsHandler, ServerMetrics } from "./metrics.ts";
import { createPskLookup } from "./psk_store.ts";
import { TunnelRegistry } from "./registry.ts";
import { type Cluster, startCluster } from "./cluster/mod.ts";
import { SERVER_VERSION, type Tunnel, TunnelHub, type TunnelHubOptions } from "./tunnels.ts";
import { openStorage, type Storage } from "../db/mod.ts";
import { receiveBufferWarning } from "../shared/udp_buffer.ts";
import { defaultMaxDatagramSize, isLoopbackAddress } from "../shared/dtls/mod.ts";
import {
  isTunnelUpgrade,
  MAX_TUNNEL_WS_DATAGRAM,
  WsTunnelEndpoint,
  type WsTunnelOptions,
} from "./tunnel_ws.ts";

/** HKDF info for the DTLS stateless reset key (a key of its own, derived from the secret). */
const STATELESS_RESET_KEY_INFO = "hopgate/dtls-stateless-reset/v1";

export interface RunningServer {
  readonly httpAddr: Deno.NetAddr;
  readonly httpsAddr: Deno.NetAddr;
  readonly certificates: CertificateManager;
  readonly dtlsAddr: { hostname: string; port: number };
  readonly registry: TunnelRegistry<Tunnel>;
  readonly hub: TunnelHub;
  /** The tunnel's TCP/TLS way in (WebSocket), unless HOP_SERVER_TCP_TUNNEL=false. */
  readonly wsTunnel: WsTunnelEndpoint | undefined;
  readonly storage: Storage;
  readonly metrics: ServerMetrics;
  readonly readiness: Readiness;
  /** The separate metrics listener (`HOP_METRICS_LISTEN`), if any. */
  readonly metricsAddr: Deno.NetAddr | undefined;
  /** Cluster mode (`HOP_CLUSTER_LISTEN`): this node's membership and relay; else undefined. */
  readonly cluster: Cluster | undefined;
  /**
   * Graceful shutdown: /readyz turns 503, the listeners stop accepting, clients
   * get GOAWAY, in-flight requests finish (up to `HOP_SHUTDOWN_TIMEOUT_SECONDS`,
   * then they are cut), then the tunnels, certificates and database close.
   * Upgraded connections (WebSockets) drain like requests.
   */
  close(): Promise<void>;
}

export interface RunOptions {
  logger?: Logger;
  /** Extra tunnel options (mux params, DTLS limits), mostly for tests. */
  tunnel?: Partial<Pick<TunnelHubOptions, "muxParams" | "dtls" | "helloTimeoutMs">>;
  /** The WebSocket tunnel endpoint's timeouts and queue, mostly for tests. */
  tunnelWs?: Omit<WsTunnelOptions, "logger">;
  /** Certificate timing (clock, check interval, retry delays), mostly for tests. */
  certificates?: CertificateTuning;
  /** Aborts start-up (e.g. SIGTERM while the database is still being retried). */
  signal?: AbortSignal;
  /** Cluster heartbeat and staleness, mostly for tests. */
  cluster?: { heartbeatMs?: number; staleMs?: number };
  /** Database check interval for /readyz (default 5 s) and start-up retry delays. */
  health?: { intervalMs?: number; retryMinMs?: number; retryMaxMs?: number };
}

export async function runServer(
  config: ServerConfig,
  options: RunOptions = {},
): Promise<RunningServer> {
  const logger = options.logger ?? createJsonLogger({ level: config.logLevel });
  const metrics = new ServerMetrics({
    domainLabels: config.metrics.domainLabels,
    version: SERVER_VERSION,
  });
  /** Set once storage is open: a query that finds the database gone re-checks it for /readyz. */
  let checkDatabase: Readiness | undefined;
  // Measured while the database opens (~0.1-0.3 s); a loopback listener is a test or a trial.
  const rmemCheck = isLoopbackAddress(config.dtlsListen.hostname)
    ? Promise.resolve(null)
    : receiveBufferWarning();
  // The database may come up after us (a container started first): retry.
  let storage: Storage;
  try {
    storage = await openWithRetry(() =>
      openStorage({
        dsn: config.dbDsn?.reveal(),
        maxConnections: config.dbMaxOpenConns,
        dataDir: config.dataDir,
        secretKey: config.secretKey?.reveal(),
        queryTimeoutMs: config.dbTimeoutMs,
        onFailure: ({ operation, kind }) => {
          metrics.databaseFailure(operation, kind);
          if (kind !== "error" && checkDatabase?.databaseUp) void checkDatabase.check();
        },
      }), {
      logger,
      signal: options.signal,
      // A PostgreSQL connect in flight is given up at once; an embedded database is not cut.
      abandonOnAbort: config.dbDsn !== undefined,
      ...(options.health?.retryMinMs ? { minDelayMs: options.health.retryMinMs } : {}),
      ...(options.health?.retryMaxMs ? { maxDelayMs: options.health.retryMaxMs } : {}),
    });
  } catch (e) {
    if (options.signal?.aborted) {
      const reason = e instanceof Error ? e.message : String(e);
      logger.info("server stopped", { component: "server", during: "start-up", reason });
    }
    throw e;
  }
  const cleanups: (() => Promise<void> | void)[] = [() => storage.close()];
  const closeAll = async () => {
    for (const c of cleanups.reverse()) await c();
  };
  try {
    const readiness = new Readiness({
      ping: () => storage.ping(),
      logger,
      ...(options.health?.intervalMs ? { intervalMs: options.health.intervalMs } : {}),
    });
    checkDatabase = readiness;
    metrics.bindDatabase(() => readiness.databaseUp);
    // A signal while start-up finishes: not ready from that moment (main.ts then closes).
    if (options.signal?.aborted) readiness.shuttingDown();
    options.signal?.addEventListener("abort", () => readiness.shuttingDown(), { once: true });
    cleanups.push(() => readiness.stop());
    const pskLookup = createPskLookup(storage.store, {
      logger,
      outageTtlMs: config.pskOutageCacheMs,
      onOutageHit: () => metrics.pskOutageCacheHit(),
      onLookup: (result) => metrics.pskLookup(result),
    });
    let cluster: Cluster | undefined;
    const registry = new TunnelRegistry<Tunnel>({ onChange: () => cluster?.ownChanged() });
    const wsTunnel = config.tcpTunnel
      ? new WsTunnelEndpoint({ logger, ...options.tunnelWs })
      : undefined;
    const hub = new TunnelHub({
      hostname: config.dtlsListen.hostname,
      port: config.dtlsListen.port,
      ...(wsTunnel
        ? {
          listeners: [{
            name: "ws",
            socket: wsTunnel.socket,
            dtls: {
              // TCP carries whole 16 KiB records: no path MTU to respect.
              maxDatagramSize: MAX_TUNNEL_WS_DATAGRAM,
              handshakeTimeoutMs: options.tunnelWs?.handshakeTimeoutMs ?? 10_000,
            },
            onConnection: (conn) => wsTunnel.established(conn),
          }],
        }
        : {}),
      lookupPsk: pskLookup.lookupPsk,
      registry,
      logger,
      maxTunnelsPerDomain: config.maxTunnelsPerDomain,
      ...(config.tunnelWarmUp ? {} : { warmUps: false as const }),
      dtls: {
        ...(config.tunnelMaxDatagramBytes
          ? { maxDatagramSize: datagramCeiling(config.tunnelMaxDatagramBytes) }
          : {}),
        // The same key after a restart (and on every node sharing the secret): a client
        // whose tunnel this process no longer knows is told so at once.
        statelessReset: { key: storage.secretBox.deriveKey(STATELESS_RESET_KEY_INFO) },
      },
      onSession: (session) => metrics.trackSession(session),
      ...options.tunnel,
    });
    cleanups.push(() => hub.close());
    readiness.listener("dtls", true);
    const rmem = await rmemCheck;
    if (rmem !== null) logger.warn(rmem, { component: "dtls" });
    if (config.cluster) {
      if (!storage.cluster) {
        throw new Error(
          "cluster mode (HOP_CLUSTER_LISTEN) needs PostgreSQL (HOP_DB_DSN): PGlite is single-node",
        );
      }
      cluster = await startCluster({
        config: config.cluster,
        store: storage.cluster,
        secretBox: storage.secretBox,
        registry,
        pickLocal: (domain, exclude) => hub.pick(domain, exclude),
        forgetPsk: (domain) => pskLookup.invalidate(domain),
        logger,
        metrics: metrics.registry,
        ...(options.cluster ? { timing: options.cluster } : {}),
      });
      const running = cluster;
      // The tunnel listener was open while the cluster started: a client that connected
      // meanwhile changed the registry when nobody wrote placements yet.
      running.ownChanged();
      cleanups.push(() => running.close());
      readiness.listener("relay", true);
      readiness.cluster(() => ({
        node_id: running.nodeId,
        live_nodes: running.membership.liveNodes,
        leader: running.membership.isLeader,
        remote_tunnels: running.membership.remoteTunnels().length,
        database: running.membership.databaseOk ? "ok" : "unreachable: serving from memory",
      }));
    }
    metrics.bindTunnels({
      get dtlsStats() {
        return hub.dtlsStats;
      },
      get sessionsRefused() {
        return hub.sessionsRefused;
      },
      get warmUps() {
        return hub.warmUps;
      },
      live: () => registry.live(),
    });
    if (wsTunnel) metrics.bindTunnelWs(wsTunnel);
    const serveMetrics = createMetricsHandler(() => metrics.render(), config.metrics.token);
    let refreshHttps = () => {}; // set once the HTTPS listener exists
    const certificates = createCertificateManager({
      config,
      certs: storage.certs,
      store: storage.store,
      logger,
      onChange: () => refreshHttps(),
      onOrder: (_name, kind, ok) => metrics.acmeResult(kind, ok ? "success" : "failure"),
      onExpiry: (name, notAfter) => metrics.certificateExpiry(name, notAfter),
      onChallengeLookupShed: () => metrics.challengeLookupShed(),
      isLeader: cluster ? () => cluster!.membership.isLeader : undefined,
      tuning: options.certificates,
    });
    cleanups.push(() => certificates.close());
    const adminApp = createAdminHandler({
      store: storage.store,
      registry: cluster?.tunnels ?? registry,
      pskLookup,
      config,
      logger,
      onDomainRegistered: (domain) => certificates.domainRegistered(domain),
    });
    const admin = async (req: Request, info: ClientInfo) => {
      const res = await adminApp(req, info);
      const path = new URL(req.url).pathname.slice(ADMIN_BASE_PATH.length) || "/";
      metrics.adminCall(req.method, path, res.status);
      return res;
    };
    const serverHandler: FetchHandler = (req, info) => {
      const path = new URL(req.url).pathname;
      if (isAdminRequest(req, config.serverDomain)) return admin(req, info);
      const health = healthResponse(req, readiness);
      if (health) return health;
      if (path === "/metrics" && !config.metrics.listen) return serveMetrics(req);
      return Response.json({ success: false, error: "not found" }, { status: 404 });
    };
    const pages = await ErrorPages.load(config.errorPagesDir);
    const trusted = config.trustedProxies;
    const ingress: IngressOptions = {
      hub: cluster ? { pick: cluster.route } : hub,
      ...(cluster ? { recentlyLost: (d: string) => cluster!.membership.recentlyLost(d) } : {}),
      serverDomain: config.serverDomain,
      proxyTimeoutMs: config.proxyTimeoutSeconds * 1000,
      pages,
      logger,
      serverHandler,
      ...(wsTunnel ? { tunnelUpgrade: wsTunnel.upgrade } : {}),
      ...(trusted.length ? { trustedProxy: (ip: string) => ipInRanges(ip, trusted) } : {}),
      onRequest: (r) => metrics.request(r),
    };
    const f = config.front;
    // HOP_PROXY_PROTOCOL: trusted peers start each connection with a PROXY header.
    const proxyProtocol = config.proxyProtocol
      ? { proxyProtocol: (ip: string) => ipInRanges(ip, trusted) }
      : {};
    const limits: Partial<FrontLimits> = {
      headerTimeoutMs: f.headerTimeoutMs,
      idleTimeoutMs: f.idleTimeoutMs,
      bodyTimeoutMs: f.bodyTimeoutMs,
      writeTimeoutMs: f.writeTimeoutMs,
      maxHeadBytes: f.maxHeadBytes,
      maxHeaders: f.maxHeaders,
      maxConnections: f.maxConnections,
      maxConnectionsPerAddress: f.maxConnectionsPerAddress,
    };
    const tunnelHandler = createIngressHandler(ingress);
    /** Set when the shutdown deadline cuts what is still in flight. */
    let cutting = false;
    /**
     * A listener's events: metrics, and a log line when a handler fails. Failures
     * once the shutdown deadline cuts requests are expected: a warning, not an error.
     */
    const frontEvents = (listener: "http" | "https" | "metrics") => ({
      ...metrics.front(listener),
      error: (e: unknown) =>
        cutting
          ? logger.warn("http handler failed", {
            component: listener,
            error: String(e),
            cause: "shutdown deadline",
          })
          : logger.error("http handler failed", { component: listener, error: String(e) }),
    });
    const httpsEvents = frontEvents("https");
    const httpsFront = new FrontServer({
      scheme: "https",
      handler: tunnelHandler,
      limits,
      events: httpsEvents,
    });
    const tls = new TlsAcceptor({
      hostname: config.httpsListen.hostname,
      port: config.httpsListen.port,
      lookup: (name) => certificates.lookup(name),
      handshakeTimeoutMs: f.tlsHandshakeTimeoutMs,
      onFailure: (reason, detail) => {
        metrics.tlsFailure(reason);
        logger.debug("tls handshake failed", { component: "https", reason, detail });
      },
      onAcceptError: () => httpsEvents.acceptError(),
      // h2 connections go to the bridge (h2c Deno.serve inside), the rest to the
      // HTTP/1.1 front (server/front/h2.ts).
      alpn: ["h2", "http/1.1"],
      ...proxyProtocol,
    });
    refreshHttps = () => tls.refresh();
    const h2 = new H2Bridge({ handler: tunnelHandler, limits, events: httpsEvents });
    const httpsServing = h2.serve(tls, httpsFront);
    cleanups.push(() => httpsFront.shutdown());
    cleanups.push(() => h2.shutdown());
    const httpHandler = withHttpFront(tunnelHandler, {
      challenge: (token) => certificates.challenge(token),
      ...(config.httpsRedirect
        ? {
          redirect: {
            hasCertificate: (host: string) => certificates.hasCertificate(host),
            httpsPort: tls.addr.port,
          },
        }
        : {}),
    });
    const httpFront = new FrontServer({
      scheme: "http",
      // The tunnel's WebSocket is not redirected to HTTPS: DTLS protects it either way,
      // and a TLS-terminating proxy in front forwards it as plain HTTP.
      handler: wsTunnel
        ? (req, res) =>
          isTunnelUpgrade(req, config.serverDomain)
            ? tunnelHandler(req, res)
            : httpHandler(req, res)
        : httpHandler,
      limits,
      events: frontEvents("http"),
      ...proxyProtocol,
    });
    const httpListener = Deno.listen({
      hostname: config.httpListen.hostname,
      port: config.httpListen.port,
    });
    const httpAddr = httpListener.addr as Deno.NetAddr;
    const httpServing = httpFront.serve(httpListener);
    cleanups.push(() => httpFront.shutdown());
    readiness.listener("http", true);
    readiness.listener("https", true);
    httpServing.then(() => readiness.listener("http", false));
    httpsServing.then(() => readiness.listener("https", false));
    let metricsAddr: Deno.NetAddr | undefined;
    if (config.metrics.listen) {
      // Health answers here too, whatever the Host: probes by IP reach it. The same
      // front as the public listeners, so running out of descriptors cannot stop it.
      const metricsFront = new FrontServer({
        scheme: "http",
        handler: (req, res) =>
          serveFetch(
            (r) => healthResponse(r, readiness) ?? serveMetrics(r),
            req,
            res,
            { remoteAddr: req.peer },
          ),
        limits,
        events: frontEvents("metrics"),
      });
      const listener = Deno.listen(config.metrics.listen);
      metricsAddr = listener.addr as Deno.NetAddr;
      const serving = metricsFront.serve(listener);
      cleanups.push(async () => {
        metricsFront.abortAll();
        await metricsFront.shutdown();
        await serving;
      });
      readiness.listener("metrics", true);
    }
    await readiness.start();
    await certificates.start();
    logger.info("server started", {
      component: "server",
      http: `${httpAddr.hostname}:${httpAddr.port}`,
      https: `${tls.addr.hostname}:${tls.addr.port}`,
      dtls: `${hub.addr.hostname}:${hub.addr.port}/udp`,
      tcp_tunnel: config.tcpTunnel,
      domain: config.serverDomain,
      ...(metricsAddr ? { metrics: `${metricsAddr.hostname}:${metricsAddr.port}` } : {}),
      database: storage.backend,
      debug: config.debug,
      ...(cluster ? { cluster_node: cluster.nodeId, relay: `${cluster.relayAddr.port}/tcp` } : {}),
    });
    let closing: Promise<void> | undefined;
    const shutdown = async () => {
      // First: /readyz answers 503 from this moment, no listener counted as open
      // for new work (the metrics listener stays, to answer probes until the end).
      readiness.shuttingDown();
      readiness.listener("http", false);
      readiness.listener("https", false);
      readiness.listener("dtls", false);
      logger.info("server stopping", {
        component: "server",
        in_flight: registry.live().reduce((n, t) => n + t.inFlight, 0),
        timeout_s: config.shutdownTimeoutSeconds,
      });
      // In a cluster, the other nodes stop relaying here before the tunnels go.
      if (cluster) await withinDeadline(cluster.withdraw(), 3000);
      // Stop accepting; idle connections close, requests in flight (streaming
      // bodies, upgraded connections too) continue until the deadline.
      const listenersDone = Promise.all([
        httpFront.shutdown(),
        httpsFront.shutdown(),
        h2.shutdown(),
      ]);
      hub.goAway();
      // Tunnel WebSockets are front connections too, but they carry the tunnels the
      // requests in flight need: wait for every other connection, then close the hub
      // (which closes the WebSockets).
      const requestsDone = wsTunnel
        ? Promise.all([
          h2.shutdown(),
          until(() => httpFront.size + httpsFront.size <= wsTunnel.size, listenersDone),
        ])
        : listenersDone;
      const drained = await withinDeadline(requestsDone, config.shutdownTimeoutSeconds * 1000);
      if (!drained) {
        logger.warn("shutdown deadline passed, cutting requests in flight", {
          component: "server",
          in_flight: registry.live().reduce((n, t) => n + t.inFlight, 0),
        });
        cutting = true;
        httpFront.abortAll();
        httpsFront.abortAll();
        h2.abortAll();
        await hub.close({ abort: true });
        await withinDeadline(listenersDone, 5000);
      } else if (wsTunnel) {
        await hub.close();
        await withinDeadline(listenersDone, 5000);
      }
      await closeAll();
      logger.info("server stopped", { component: "server", drained });
    };
    return {
      httpAddr,
      httpsAddr: tls.addr,
      certificates,
      dtlsAddr: hub.addr,
      registry,
      hub,
      wsTunnel,
      storage,
      metrics,
      readiness,
      metricsAddr,
      cluster,
      close: () => closing ??= shutdown(),
    };
  } catch (e) {
    await closeAll();
    throw e;
  }
}

/** Resolves once `done()` holds (checked every 50 ms) or `stop` settles. */
function until(done: () => boolean, stop: Promise<unknown>): Promise<void> {
  return new Promise((resolve) => {
    let over = false;
    stop.finally(() => {
      over = true;
      resolve();
    });
    const check = () => {
      if (over) return;
      if (done()) return resolve();
      setTimeout(check, 50);
    };
    check();
  });
}

/** The operator's ceiling for UDP peers off loopback; loopback keeps whole records. */
function datagramCeiling(bytes: number): (peer: { hostname: string }) => number {
  return (peer) => isLoopbackAddress(peer.hostname) ? defaultMaxDatagramSize(peer.hostname) : bytes;
}
