/**
 * Builds and runs a whole server from a config: storage, the tunnel listener,
 * the public HTTP listener with the admin API. `main.ts` calls it with the
 * environment's config; tests call it in-process (rathole's `run(args, shutdown)`).
 */
import { createAdminHandler, isAdminRequest } from "./admin/app.ts";
import type { ServerConfig } from "./config.ts";
import {
  type CertificateManager,
  type CertificateTuning,
  createCertificateManager,
  withHttpFront,
} from "./certs/mod.ts";
import { ErrorPages } from "./error_pages.ts";
import { createIngressHandler, type Handler, type IngressOptions } from "./ingress.ts";
import { createJsonLogger, type Logger } from "./log.ts";
import { createPskLookup } from "./psk_store.ts";
import { TunnelRegistry } from "./registry.ts";
import { SniHttpsServer } from "./tls_server.ts";
import { type Tunnel, TunnelHub, type TunnelHubOptions } from "./tunnels.ts";
import { openStorage, type Storage } from "../db/mod.ts";

export interface RunningServer {
  readonly httpAddr: Deno.NetAddr;
  readonly httpsAddr: Deno.NetAddr;
  readonly certificates: CertificateManager;
  readonly dtlsAddr: { hostname: string; port: number };
  readonly registry: TunnelRegistry<Tunnel>;
  readonly hub: TunnelHub;
  readonly storage: Storage;
  /** Stops accepting, sends GOAWAY to clients, closes listeners and the database. */
  close(): Promise<void>;
}

export interface RunOptions {
  logger?: Logger;
  /** Extra tunnel options (mux params, DTLS limits), mostly for tests. */
  tunnel?: Partial<Pick<TunnelHubOptions, "muxParams" | "dtls" | "helloTimeoutMs">>;
  /** Certificate timing (clock, check interval, retry delays), mostly for tests. */
  certificates?: CertificateTuning;
}

export async function runServer(
  config: ServerConfig,
  options: RunOptions = {},
): Promise<RunningServer> {
  const logger = options.logger ?? createJsonLogger({ level: config.logLevel });
  const storage = await openStorage({
    dsn: config.dbDsn?.reveal(),
    maxConnections: config.dbMaxOpenConns,
    dataDir: config.dataDir,
    secretKey: config.secretKey?.reveal(),
  });
  const cleanups: (() => Promise<void> | void)[] = [() => storage.close()];
  const closeAll = async () => {
    for (const c of cleanups.reverse()) await c();
  };
  try {
    const pskLookup = createPskLookup(storage.store, { logger });
    const registry = new TunnelRegistry<Tunnel>();
    const hub = new TunnelHub({
      hostname: config.dtlsListen.hostname,
      port: config.dtlsListen.port,
      lookupPsk: pskLookup.lookupPsk,
      registry,
      logger,
      ...options.tunnel,
    });
    cleanups.push(() => hub.close());
    let refreshHttps = () => {}; // set once the HTTPS listener exists
    const certificates = createCertificateManager({
      config,
      db: storage.db,
      secretBox: storage.secretBox,
      store: storage.store,
      logger,
      onChange: () => refreshHttps(),
      tuning: options.certificates,
    });
    cleanups.push(() => certificates.close());
    const admin = createAdminHandler({
      store: storage.store,
      registry,
      pskLookup,
      config,
      logger,
      onDomainRegistered: (domain) => certificates.domainRegistered(domain),
    });
    const serverHandler: Handler = (req, info) => {
      const path = new URL(req.url).pathname;
      if (isAdminRequest(req, config.serverDomain)) {
        return admin(req, info as Deno.ServeHandlerInfo<Deno.NetAddr>);
      }
      if (path === "/healthz") return Response.json({ status: "ok" });
      return Response.json({ success: false, error: "not found" }, { status: 404 });
    };
    const pages = await ErrorPages.load(config.errorPagesDir);
    const ingress: IngressOptions = {
      hub,
      serverDomain: config.serverDomain,
      scheme: "http",
      proxyTimeoutMs: config.proxyTimeoutSeconds * 1000,
      pages,
      logger,
      serverHandler,
    };
    const httpsServer = new SniHttpsServer({
      hostname: config.httpsListen.hostname,
      port: config.httpsListen.port,
      lookup: (name) => certificates.lookup(name),
      handler: createIngressHandler({ ...ingress, scheme: "https" }),
      logger,
    });
    refreshHttps = () => httpsServer.refresh();
    cleanups.push(() => httpsServer.close());
    const handler = withHttpFront(createIngressHandler(ingress), {
      challenge: (token) => certificates.challenge(token),
      ...(config.httpsRedirect
        ? {
          redirect: {
            hasCertificate: (host: string) => certificates.hasCertificate(host),
            httpsPort: httpsServer.addr.port,
          },
        }
        : {}),
    });
    const http = Deno.serve({
      hostname: config.httpListen.hostname,
      port: config.httpListen.port,
      onListen: () => {},
      onError: (e) => {
        logger.error("http handler failed", { component: "ingress", error: String(e) });
        return new Response("Internal Server Error\n", { status: 500 });
      },
    }, handler);
    cleanups.push(() => http.shutdown());
    await certificates.start();
    logger.info("server started", {
      component: "server",
      http: `${http.addr.hostname}:${http.addr.port}`,
      https: `${httpsServer.addr.hostname}:${httpsServer.addr.port}`,
      dtls: `${hub.addr.hostname}:${hub.addr.port}/udp`,
      domain: config.serverDomain,
      database: storage.backend,
      debug: config.debug,
    });
    return {
      httpAddr: http.addr,
      httpsAddr: httpsServer.addr,
      certificates,
      dtlsAddr: hub.addr,
      registry,
      hub,
      storage,
      close: async () => {
        logger.info("server stopping", { component: "server" });
        await closeAll();
      },
    };
  } catch (e) {
    await closeAll();
    throw e;
  }
}
