/**
 * Public ingress: routes each HTTP request by Host to a tunnel and streams it
 * through one mux stream (docs/protocol.md has the stream format, docs/edge.md the front).
 *
 *   caller --HTTP--> ingress --stream: RequestHead + body--> client --> local service
 *   caller <--HTTP-- ingress <--stream: ResponseHead + body-- client <--
 *
 * Each request is one `Exchange`, a small state machine:
 *
 *   Opening ──► Uploading ──► AwaitingHead ──► Streaming ──► Done
 *      │            │  (the body is pumped in      │  (or Spliced, after a 101)
 *      └────────────┴──── the background) ─────────┴──► Done (gateway error / cut)
 *
 * with one `finish()` that ends the tunnel's bookkeeping and writes the log line
 * and metrics record exactly once. Nothing is buffered whole: the request body
 * is read off the caller's socket only as fast as the stream takes it, the
 * response is written as fast as the caller reads it (the front's write timeout
 * cuts a caller that stops). Gateway errors: 404 no tunnel, 502 local service
 * failed, 504 no response head in time, 503 tunnel lost before the response head.
 */
import { concatBytes } from "../shared/bytes.ts";
// The Host header's name without port, lowercase; "" if missing or malformed.
import { hostHeaderName as routingHost } from "../shared/names.ts";
import { MuxSessionError, type MuxStream, StreamErrorCode } from "../shared/mux/mod.ts";
import {
  encodeHead,
  type ForwardError,
  type HeaderList,
  HOP_BY_HOP,
  readHeadFrom,
  type RequestHead,
  type ResponseHead,
} from "../shared/protocol/mod.ts";
import { Deadlines } from "./deadlines.ts";
import { isTunnelUpgrade } from "./tunnel_ws.ts";
import type { ErrorPages, GatewayErrorKind } from "./error_pages.ts";
import {
  type FrontHandler,
  type FrontRequest,
  type Responder,
  type UpgradedConn,
  WriteError,
} from "./front/http1.ts";
import { type FetchHandler, serveFetch } from "./front/fetch.ts";
import type { Logger } from "./log.ts";
import { RelayError } from "./cluster/relay_client.ts";

/**
 * The byte stream one request runs on: a mux stream on a local tunnel, or a relay
 * to the node that holds the tunnel (server/cluster/relay_client.ts).
 */
export type TunnelStream = Pick<
  MuxStream,
  "read" | "readRest" | "write" | "close" | "reset" | "stopSending"
>;

/** Where a request goes: a local `Tunnel`, or a relay to another node (the same shape). */
export interface Route {
  readonly session: { openStream(): TunnelStream; readonly isClosed: boolean };
  /** Upgrades are spliced as raw bytes. */
  readonly splice: boolean;
  /**
   * Request heads may go compact (the client announced FEATURE_COMPACT_HEADS); a relay to
   * another node's tunnel does not know that client, so it sends JSON.
   */
  readonly compactHeads?: boolean;
  inFlight: number;
  served: number;
}

export interface IngressOptions {
  /** Finds a route per request: `TunnelHub.pick`, or that and the cluster's relays. */
  hub: { pick(domain: string, exclude?: Set<Route>): Route | undefined };
  /**
   * Whether a domain with no route had its tunnel on a cluster node that died
   * lately: answered 503 (the client is reconnecting) instead of 404.
   */
  recentlyLost?: (domain: string) => boolean;
  serverDomain: string;
  /** Time to wait for the response head; a streaming body is never cut. */
  proxyTimeoutMs: number;
  pages: ErrorPages;
  logger: Logger;
  /** Requests for the server domain itself (admin API, health); default 404. */
  serverHandler?: FetchHandler;
  /**
   * The tunnel's TCP/TLS way in (server/tunnel_ws.ts): called instead of
   * `serverHandler` for a WebSocket upgrade to `/.well-known/hopgate/tunnel` on the
   * server domain (`isTunnelUpgrade`), with the caller's address; resolves when the
   * connection is over.
   */
  tunnelUpgrade?: (req: FrontRequest, res: Responder, client: string) => Promise<void>;
  /** Whether a peer is a proxy whose X-Forwarded-* headers are believed. Default: none. */
  trustedProxy?: (ip: string) => boolean;
  /** Called once per answered request, with what its log line says (metrics). */
  onRequest?: (r: RequestRecord) => void;
}

/** One answered request: what the "request" log line and the metrics see. */
export interface RequestRecord {
  method: string;
  status: number;
  durationMs: number;
  /** Response body bytes relayed to the caller. */
  bytes: number;
  /** The domain whose tunnel took the request; undefined if none did. */
  domain: string | undefined;
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Headers we set ourselves: a caller's own are dropped (a trusted proxy's are used). */
const SET_BY_US = new Set([
  "x-forwarded-for",
  "x-forwarded-proto",
  "x-forwarded-host",
  "x-real-ip",
  "forwarded",
  "x-request-id",
]);

/** What one pass over a request's headers finds. */
interface RequestHeaders {
  /** End-to-end headers to forward, without the ones we set. */
  forward: HeaderList;
  accept: string;
  requestId: string | null;
  forwardedFor: string | null;
  forwardedProto: string | null;
  forwardedHost: string | null;
}

function readRequestHeaders(req: FrontRequest): RequestHeaders {
  const named = req.connection;
  const r: RequestHeaders = {
    forward: [],
    accept: "",
    requestId: null,
    forwardedFor: null,
    forwardedProto: null,
    forwardedHost: null,
  };
  for (const pair of req.headers) {
    const k = pair[0];
    if (HOP_BY_HOP.has(k) || named.has(k)) continue;
    if (SET_BY_US.has(k)) {
      const v = pair[1];
      if (k === "x-request-id") r.requestId = v;
      else if (k === "x-forwarded-for") {
        r.forwardedFor = r.forwardedFor === null ? v : `${r.forwardedFor}, ${v}`;
      } else if (k === "x-forwarded-proto") r.forwardedProto ??= v;
      else if (k === "x-forwarded-host") r.forwardedHost ??= v;
      continue;
    }
    if (k === "accept") r.accept = pair[1];
    r.forward.push(pair);
  }
  return r;
}

/**
 * The caller's address: the TCP peer, or, when the peer is a trusted proxy, the
 * right-most X-Forwarded-For entry that is not itself a trusted proxy.
 */
export function clientAddress(
  peer: string,
  forwardedFor: string | null,
  trusted: ((ip: string) => boolean) | undefined,
): string {
  if (!trusted || !forwardedFor || !trusted(peer)) return peer;
  const hops = forwardedFor.split(",");
  for (let i = hops.length - 1; i >= 0; i--) {
    const ip = hops[i]!.trim();
    if (!ip) continue;
    if (!trusted(ip) || i === 0) return ip;
  }
  return peer;
}

/** Quotes an address for the Forwarded header (RFC 7239 §6). */
function forwardedNode(ip: string): string {
  return ip.includes(":") ? `"[${ip}]"` : ip;
}

/** The tunnel's ingress: a front handler for every request the listeners accept. */
export function createIngressHandler(opts: IngressOptions): FrontHandler {
  const deadlines = new Deadlines();
  return (req, res) => new Exchange(opts, deadlines, req, res).run();
}

const enum State {
  Opening,
  Uploading,
  AwaitingHead,
  Streaming,
  Spliced,
  Done,
}

/** One request through the ingress (see the module comment). */
class Exchange {
  readonly #opts: IngressOptions;
  readonly #deadlines: Deadlines;
  readonly #req: FrontRequest;
  readonly #res: Responder;
  readonly #started = performance.now();
  readonly #h: RequestHeaders;
  readonly #host: string;
  readonly #requestId: string;
  readonly #client: string;
  /** The TCP peer is a trusted proxy: its forwarding headers count. */
  readonly #viaProxy: boolean;
  #state = State.Opening;
  #tunnel: Route | undefined;
  #stream: TunnelStream | undefined;
  /** Response body bytes relayed. */
  #bytes = 0;
  #pump: Promise<void> | undefined;
  #pumpDone = false;
  #uploadFailed = false;
  #timedOut = false;
  #cancelTimer: (() => void) | undefined;
  #reported = false;

  constructor(opts: IngressOptions, deadlines: Deadlines, req: FrontRequest, res: Responder) {
    this.#opts = opts;
    this.#deadlines = deadlines;
    this.#req = req;
    this.#res = res;
    this.#h = readRequestHeaders(req);
    const given = this.#h.requestId;
    this.#requestId = given && REQUEST_ID.test(given) ? given : crypto.randomUUID();
    this.#host = routingHost(req.host);
    // Once per request: the CIDR test parses the address.
    this.#viaProxy = opts.trustedProxy?.(req.peer.hostname) ?? false;
    this.#client = this.#viaProxy
      ? clientAddress(req.peer.hostname, this.#h.forwardedFor, opts.trustedProxy)
      : req.peer.hostname;
  }

  async run(): Promise<void> {
    const req = this.#req;
    const opts = this.#opts;
    const host = this.#host;
    if (!host) return this.#fail("bad_request", "The request has no valid Host header.");
    if (host === opts.serverDomain) {
      if (opts.tunnelUpgrade && isTunnelUpgrade(req, opts.serverDomain)) {
        this.#state = State.Done;
        return opts.tunnelUpgrade(req, this.#res, this.#client);
      }
      if (!opts.serverHandler) return this.#fail("no_tunnel", "Nothing is served here.");
      this.#state = State.Done;
      // Behind a trusted proxy that terminates TLS, its X-Forwarded-Proto says the scheme.
      const proto = this.#h.forwardedProto?.trim().toLowerCase();
      const scheme = this.#viaProxy && (proto === "https" || proto === "http") ? proto : req.scheme;
      return serveFetch(opts.serverHandler, req, this.#res, {
        remoteAddr: { transport: "tcp", hostname: this.#client, port: req.peer.port },
      }, scheme);
    }
    if (req.method === "CONNECT") {
      return this.#fail("bad_request", "CONNECT is not served here.");
    }

    // Another client of the domain is tried only when one fails to open a stream
    // (closing, or out of stream credit): the set is made only then.
    let tried: Set<Route> | undefined;
    let tunnel: Route | undefined;
    let stream: TunnelStream | undefined;
    while (!stream && (tunnel = opts.hub.pick(host, tried))) {
      try {
        stream = tunnel.session.openStream();
      } catch {
        (tried ??= new Set()).add(tunnel);
      }
    }
    if (!tunnel || !stream) {
      if (opts.recentlyLost?.(host)) {
        return this.#fail(
          "tunnel_lost",
          `The node that held the tunnel for ${host} is gone; its client is reconnecting.`,
        );
      }
      return this.#fail("no_tunnel", `No tunnel is connected for ${host}.`);
    }
    this.#tunnel = tunnel;
    this.#stream = stream;
    tunnel.inFlight++;

    // An upgrade (WebSocket…) is spliced as bytes when the client can; h2c is not ours to offer.
    const upgrade = req.upgrade && req.upgrade.toLowerCase() !== "h2c" && !req.hasBody
      ? req.upgrade
      : null;
    if (upgrade && !tunnel.splice) {
      // The stream was opened: reset it, or the client would wait for its head forever.
      this.#abandon();
      return this.#fail(
        "local_unreachable",
        `The client for ${host} is too old to relay upgraded connections; upgrade it.`,
      );
    }
    const head = this.#requestHead(upgrade);
    this.#state = State.Uploading;
    const s = stream;
    try {
      await s.write(encodeHead(head, tunnel.compactHeads));
    } catch (e) {
      return this.#tunnelFailed(e);
    }
    if (req.hasBody) {
      this.#pump = this.#pumpBody(s);
    } else {
      if (!upgrade) s.close();
      this.#startTimer();
    }
    this.#state = State.AwaitingHead;

    // The caller leaving, or the proxy timeout, resets the stream: the head read below fails.
    req.signal.addEventListener("abort", this, { once: true });
    let response: { head: ResponseHead | ForwardError; rest: Uint8Array | undefined };
    try {
      const r = await readHeadFrom(s);
      if (r.head.t !== "res" && r.head.t !== "err") throw new Error(`unexpected head ${r.head.t}`);
      response = r as typeof response;
    } catch (e) {
      this.#abandon();
      await this.#pump;
      if (req.signal.aborted || this.#uploadFailed) return this.#callerGone();
      if (this.#timedOut) {
        return this.#fail("local_timeout", `The service behind ${host} did not answer in time.`);
      }
      return this.#tunnelFailed(e);
    } finally {
      this.#cancelTimer?.();
      req.signal.removeEventListener("abort", this);
    }

    if (response.head.t === "err") {
      this.#abandon();
      await this.#pump;
      // The client's error and the caller's leaving crossed: the caller left first to us.
      if (req.signal.aborted) return this.#callerGone();
      const err = response.head;
      return this.#fail(
        err.code === "local_timeout" ? "local_timeout" : "local_unreachable",
        err.message,
        err.code,
      );
    }
    const res = response.head;
    if (upgrade && res.status === 101) return this.#splice(res, response.rest);
    return this.#stream_(res, response.rest);
  }

  #requestHead(upgrade: string | null): RequestHead {
    const req = this.#req;
    const h = this.#h;
    const client = this.#client;
    const headers = h.forward;
    const peer = req.peer.hostname;
    const viaProxy = this.#viaProxy;
    const proto = viaProxy && h.forwardedProto ? h.forwardedProto : req.scheme;
    const fwdHost = viaProxy && h.forwardedHost ? h.forwardedHost : req.host;
    headers.push(
      // The chain is appended to as sent; only a trusted proxy's entries pick the client.
      ["x-forwarded-for", h.forwardedFor ? `${h.forwardedFor}, ${peer}` : peer],
      ["x-forwarded-proto", proto],
      ["x-forwarded-host", fwdHost],
      ["x-real-ip", client],
      ["forwarded", `for=${forwardedNode(client)};host="${fwdHost}";proto=${proto}`],
      ["x-request-id", this.#requestId],
    );
    const head: RequestHead = {
      t: "req",
      id: this.#requestId,
      method: req.method,
      url: req.path,
      headers,
      client,
      scheme: req.scheme,
    };
    if (upgrade) head.upgrade = upgrade;
    return head;
  }

  /**
   * Copies the request body into the stream as the stream takes it, then FIN and
   * the proxy timeout starts. The caller failing mid-body resets the stream (a head
   * read waiting ends too). The stream refusing more (the client's service answered
   * without reading it all: STOP_SENDING, which may arrive before that answer) only
   * stops the copy: the answer still comes through the head read, and the front
   * closes the caller's connection after it instead of reading the rest.
   */
  async #pumpBody(s: TunnelStream): Promise<void> {
    const req = this.#req;
    try {
      for (;;) {
        let v: Uint8Array | null;
        try {
          v = await req.readBody();
        } catch {
          this.#uploadFailed = true;
          this.#abandon();
          return;
        }
        if (v === null) break;
        try {
          await s.write(v);
        } catch {
          this.#startTimer();
          return;
        }
      }
      try {
        s.close();
      } catch { /* the stream was reset meanwhile: the head read says why */ }
      this.#startTimer();
    } finally {
      this.#pumpDone = true;
    }
  }

  /** Arms the proxy timeout while no response head came (once). */
  #startTimer(): void {
    if (this.#state !== State.AwaitingHead && this.#state !== State.Uploading) return;
    this.#cancelTimer ??= this.#deadlines.add(this.#opts.proxyTimeoutMs, () => {
      this.#timedOut = true;
      this.#abandon();
    });
  }

  /** The caller's abort signal (an EventListener object: no closure per request). */
  handleEvent(): void {
    this.#abandon();
  }

  /** The origin's response, streamed to the caller. */
  async #stream_(head: ResponseHead, first: Uint8Array | undefined): Promise<void> {
    this.#state = State.Streaming;
    const s = this.#stream!;
    const res = this.#res;
    const req = this.#req;
    const length = contentLength(head.headers);
    try {
      // The whole body already here (small responses): one write with the head.
      const rest = s.readRest();
      if (rest !== null) {
        const all = first ? (rest.length ? concatBytes(first, rest) : first) : rest;
        // The bytes decide the length (a wrong Content-Length from the tunnel is not trusted).
        res.head(head.status, head.headers, all.length);
        this.#bytes = all.length;
        await res.end(all);
        await this.#uploadDone();
        return this.#finish(head.status);
      }
      res.head(head.status, head.headers, length);
      if (first) {
        this.#bytes += first.length;
        await res.write(first);
      }
      req.signal.addEventListener("abort", this, { once: true });
      try {
        for (;;) {
          const v = await s.read();
          if (v === null) break;
          this.#bytes += v.length;
          await res.write(v);
        }
      } finally {
        req.signal.removeEventListener("abort", this);
      }
      await res.end();
      await this.#uploadDone();
      return this.#finish(head.status);
    } catch (e) {
      // Tunnel lost, the client reset mid-body, or the caller went away / stopped reading.
      this.#abandon();
      res.abort();
      await this.#pump;
      // A body that disagrees with its Content-Length is the tunnel's fault, not the caller's.
      const framing = e instanceof WriteError && /Content-Length/.test(e.message);
      const gone = req.signal.aborted || (e instanceof WriteError && !framing);
      return this.#finish(gone ? 499 : head.status, {
        error: gone ? "caller_gone" : "body_interrupted",
      });
    }
  }

  /** An upload still running once the response is complete: the origin answered early. */
  async #uploadDone(): Promise<void> {
    if (!this.#pump) return;
    if (!this.#pumpDone) {
      // The origin will not read the rest: stop sending it (the front then drains
      // a little or closes the caller's connection).
      try {
        this.#stream?.reset(StreamErrorCode.CANCELLED);
      } catch { /* already closed */ }
      await this.#pump;
    }
  }

  /** After a 101: raw bytes both ways until both sides end. */
  async #splice(head: ResponseHead, first: Uint8Array | undefined): Promise<void> {
    this.#state = State.Spliced;
    const s = this.#stream!;
    let conn: UpgradedConn;
    try {
      // The origin's choice among the offered protocols (its Upgrade is hop-by-hop).
      const headers: HeaderList = head.upgrade
        ? [...head.headers, ["upgrade", head.upgrade]]
        : head.headers;
      this.#res.head(101, headers, -1);
      conn = await this.#res.upgrade();
    } catch {
      this.#abandon();
      return this.#finish(499, { error: "caller_gone" });
    }
    const up = (async () => {
      if (conn.head.length) await s.write(conn.head);
      const buf = new Uint8Array(64 * 1024);
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        await s.write(buf.subarray(0, n));
      }
      s.close();
    })();
    const down = (async () => {
      if (first) await conn.write(first);
      for (;;) {
        const v = await s.read();
        if (v === null) break;
        this.#bytes += v.length;
        await conn.write(v);
      }
      await conn.closeWrite();
    })();
    // One direction failing ends the other: the tunnel stream is reset and the
    // caller's connection closed, instead of waiting for the caller's next bytes.
    const stop = () => {
      this.#abandon();
      conn.close();
    };
    up.catch(stop);
    down.catch(stop);
    const both = await Promise.allSettled([up, down]);
    const failed = both.some((r) => r.status === "rejected");
    if (failed) this.#abandon();
    conn.close();
    return this.#finish(101, failed ? { error: "upgrade_interrupted" } : {});
  }

  /** Resets both halves of the stream: the caller gave up, or we did. */
  #abandon(): void {
    const s = this.#stream;
    if (!s) return;
    try {
      s.reset(StreamErrorCode.CANCELLED);
      s.stopSending(StreamErrorCode.CANCELLED);
    } catch { /* already closed */ }
  }

  #tunnelFailed(e: unknown): Promise<void> {
    const t = this.#tunnel!;
    this.#abandon();
    // A relay to another node failed (unreachable, refused): the tunnel is not here to use.
    if (e instanceof RelayError) return this.#fail("tunnel_lost", e.message, `relay_${e.reason}`);
    if (e instanceof MuxSessionError || t.session.isClosed) {
      return this.#fail("tunnel_lost", `The tunnel for ${this.#host} was lost.`);
    }
    return this.#fail("local_unreachable", `The tunnel for ${this.#host} answered badly.`);
  }

  /** The caller left before its answer: nothing to send, a 499 to log. */
  #callerGone(): Promise<void> {
    this.#res.abort();
    this.#finish(499, { error: "caller_gone" });
    return Promise.resolve();
  }

  /** Answers with a gateway error page, then finishes. */
  async #fail(kind: GatewayErrorKind, message: string, error: string = kind): Promise<void> {
    const page = this.#opts.pages.render(kind, message, this.#h.accept, this.#requestId);
    const body = this.#req.method === "HEAD" ? new Uint8Array(0) : enc.encode(page.body);
    this.#finish(page.status, { error });
    const res = this.#res;
    if (res.headSent) return res.abort();
    res.head(page.status, page.headers, body.length);
    await res.end(body).catch(() => {});
  }

  /** Ends the exchange once: the tunnel's bookkeeping, the log line, the metrics record. */
  #finish(status: number, extra: Record<string, unknown> = {}): void {
    if (this.#reported) return;
    this.#reported = true;
    this.#state = State.Done;
    const t = this.#tunnel;
    if (t) {
      t.inFlight--;
      t.served++;
    }
    const durationMs = performance.now() - this.#started;
    const req = this.#req;
    const q = req.path.indexOf("?");
    this.#opts.logger.info("request", {
      component: "ingress",
      request_id: this.#requestId,
      domain: this.#host,
      method: req.method,
      path: q < 0 ? req.path : req.path.slice(0, q),
      status,
      duration_ms: Math.round(durationMs),
      bytes: this.#bytes,
      ...extra,
    });
    this.#opts.onRequest?.({
      method: req.method,
      status,
      durationMs,
      bytes: this.#bytes,
      domain: t ? this.#host : undefined,
    });
  }
}

const enc = new TextEncoder();

/** The origin's Content-Length when it is one valid value, else -1. */
function contentLength(headers: HeaderList): number {
  let found = -1;
  for (const [k, v] of headers) {
    if (k !== "content-length") continue;
    if (found >= 0 || !/^\d{1,15}$/.test(v)) return -1;
    found = Number(v);
  }
  return found;
}
