/**
 * The public HTTPS listener: one certificate per connection, chosen by SNI.
 *
 * `Deno.serve` takes a single certificate. Deno 2.9's `Deno.listenTls` accepts a
 * per-SNI resolver under `Symbol.for("unstableSniResolver")` (the hook node:tls's
 * `SNICallback` is built on), and `Deno.serve`'s own HTTP engine is reachable as
 * `serveHttpOnListener` among Deno's internals. Together they serve HTTPS at
 * `Deno.serve` speed (bench/https_bench.ts) with a certificate per name; node:https
 * with `SNICallback` reached about a third of that.
 *
 *   ClientHello(SNI) --> rustls --> resolver(name) --> cert | error (handshake fails)
 *                                       |
 *                         cached per listener, per name (errors too)
 *
 * Deno caches each name's answer for the listener's life, failures included. So
 * the server runs in *generations*: `refresh()` binds a new listener on the same
 * port (`SO_REUSEPORT`) with an empty cache and gracefully shuts the previous one
 * down. Callers refresh when a certificate is issued or renewed; the server itself
 * refreshes after `maxNamesPerGeneration` distinct names, so random SNIs cannot
 * grow the cache without bound. A connection that sits in the old listener's accept
 * queue at the moment it closes is reset (the kernel does not migrate it); Deno
 * accepts eagerly, so the queue is almost always empty.
 */
import type { Logger } from "./log.ts";

/** Certificate chain and private key, PEM. */
export interface CertifiedKey {
  cert: string;
  key: string;
}

/** Finds the certificate for a lowercase server name; undefined fails the handshake. */
export type CertificateLookup = (serverName: string) => Promise<CertifiedKey | undefined>;

export type HttpsHandler = (
  req: Request,
  info: Deno.ServeHandlerInfo<Deno.NetAddr>,
) => Response | Promise<Response>;

export interface SniHttpsOptions {
  hostname: string;
  port: number;
  lookup: CertificateLookup;
  handler: HttpsHandler;
  onError?: (error: unknown) => Response | Promise<Response>;
  logger?: Logger;
  /** Distinct names a listener resolves before the server refreshes itself. Default 4096. */
  maxNamesPerGeneration?: number;
}

interface ServeInternals {
  serveHttpOnListener(
    listener: Deno.Listener,
    signal: AbortSignal | undefined,
    handler: HttpsHandler,
    onError: (error: unknown) => Response | Promise<Response>,
    onListen: () => void,
  ): { finished: Promise<void>; shutdown(): Promise<void> };
}

const SNI_RESOLVER = Symbol.for("unstableSniResolver");
const DEFAULT_MAX_NAMES = 4096;

/** Deno's internal HTTP engine, or undefined if this Deno does not expose it. */
function serveInternals(): ServeInternals | undefined {
  const d = Deno as unknown as Record<symbol, unknown> & { internal?: symbol };
  const internal = d.internal ? d[d.internal] as Partial<ServeInternals> | undefined : undefined;
  return typeof internal?.serveHttpOnListener === "function"
    ? internal as ServeInternals
    : undefined;
}

/** Whether this Deno can run `SniHttpsServer` (true on 2.9). */
export function sniServingSupported(): boolean {
  return serveInternals() !== undefined;
}

/** Normalizes an SNI value: lowercase, no trailing dot; "" when absent. */
export function normalizeServerName(sni: string): string {
  const n = sni.trim().toLowerCase();
  return n.endsWith(".") ? n.slice(0, -1) : n;
}

interface Generation {
  listener: Deno.TlsListener;
  server: { finished: Promise<void>; shutdown(): Promise<void> };
  names: number;
}

/** An HTTPS server whose certificate is looked up per connection by SNI. */
export class SniHttpsServer {
  readonly #opts: SniHttpsOptions;
  readonly #internals: ServeInternals;
  readonly #maxNames: number;
  readonly #retired = new Set<Promise<void>>();
  #current: Generation;
  #port: number;
  #closed = false;
  #refreshTimer: ReturnType<typeof setTimeout> | undefined;
  /** How many listeners this server has bound (1 + refreshes), for tests and logs. */
  generations = 0;

  constructor(opts: SniHttpsOptions) {
    const internals = serveInternals();
    if (!internals) {
      throw new Error(
        `Cannot serve HTTPS by SNI: Deno ${Deno.version.deno} does not expose serveHttpOnListener`,
      );
    }
    this.#opts = opts;
    this.#internals = internals;
    this.#maxNames = opts.maxNamesPerGeneration ?? DEFAULT_MAX_NAMES;
    this.#port = opts.port;
    this.#current = this.#bind();
    this.#port = (this.#current.listener.addr as Deno.NetAddr).port;
  }

  get addr(): Deno.NetAddr {
    return this.#current.listener.addr as Deno.NetAddr;
  }

  /**
   * Starts a new generation (fresh resolver cache) and retires the current one;
   * its open connections finish their requests, except WebSockets: the engine's
   * shutdown closes those at once (1005 here, 1001 at the caller; Deno 2.9.6).
   * Call after certificates changed.
   */
  refresh(): void {
    if (this.#closed) return;
    const next = this.#bind();
    const old = this.#current;
    this.#current = next;
    this.#retire(old);
  }

  /** Stops accepting and waits for in-flight requests on every generation. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#refreshTimer);
    this.#retire(this.#current);
    await Promise.all([...this.#retired]);
  }

  #retire(g: Generation): void {
    const done = g.server.shutdown().then(() => g.server.finished).catch(() => {});
    this.#retired.add(done);
    done.then(() => this.#retired.delete(done));
  }

  #bind(): Generation {
    const opts = this.#opts;
    const generation = { names: 0 } as Generation;
    const resolve = async (sni: string): Promise<CertifiedKey> => {
      if (++generation.names === this.#maxNames) this.#queueRefresh();
      const name = normalizeServerName(sni);
      const pair = name === "" ? undefined : await opts.lookup(name);
      if (!pair) throw new Error(`no certificate for "${name}"`);
      return pair;
    };
    const listener = Deno.listenTls(
      {
        hostname: opts.hostname,
        port: this.#port,
        reusePort: true,
        alpnProtocols: ["h2", "http/1.1"],
        [SNI_RESOLVER]: resolve,
      } as unknown as Deno.ListenTlsOptions & Deno.TlsCertifiedKeyPem,
    );
    generation.listener = listener;
    const onError = opts.onError ?? ((e: unknown) => {
      opts.logger?.error("https handler failed", { component: "https", error: String(e) });
      return new Response("Internal Server Error\n", { status: 500 });
    });
    generation.server = this.#internals.serveHttpOnListener(
      listener,
      undefined,
      withHostHeader(opts.handler),
      onError,
      () => {},
    );
    this.generations++;
    return generation;
  }

  #queueRefresh(): void {
    if (this.#refreshTimer !== undefined) return;
    this.#refreshTimer = setTimeout(() => {
      this.#refreshTimer = undefined;
      this.#opts.logger?.debug("https listener refreshed", {
        component: "https",
        reason: "name cache full",
      });
      this.refresh();
    }, 0);
  }
}

/**
 * HTTP/2 requests carry `:authority` and no `Host` header; the gateway routes
 * and authorizes by `Host`, so give them one (from the URL Deno built from it).
 */
function withHostHeader(handler: HttpsHandler): HttpsHandler {
  return (req, info) => {
    if (req.headers.has("host")) return handler(req, info);
    const headers = new Headers(req.headers);
    headers.set("host", new URL(req.url).host);
    return handler(new Request(req, { headers }), info);
  };
}
