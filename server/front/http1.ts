/**
 * The public HTTP/1.1 front: our own server over raw connections, because
 * `Deno.serve` (Deno 2.9.6) has no timeouts and buffers early-answered uploads
 * without bound. docs/edge.md describes the limits from an operator's side.
 *
 *   accept ──► caps (total, per address) ──► Connection ──► RequestParser
 *                                              │  one request at a time, in order
 *                                              ▼
 *                               handler(FrontRequest, Responder)
 *
 * With `proxyProtocol`, a trusted load balancer's connection starts with a PROXY
 * protocol header (`proxy_protocol.ts`, read under the header timeout): the
 * address it names is the peer, and the per-address cap is checked on it then.
 *
 * Every socket an outsider can hold is bounded in time:
 *
 * | phase                                  | deadline                     | cut reason       |
 * |----------------------------------------|------------------------------|------------------|
 * | connection open, no complete head yet  | header timeout (10 s)        | `header_timeout` |
 * | kept alive between requests            | idle timeout (60 s)          | `idle_timeout`   |
 * | request body, no byte for              | body timeout (60 s)          | `body_timeout`   |
 * | a response write making no progress    | write timeout (60 s)         | `write_timeout`  |
 *
 * and in memory: the head is at most `maxHeadBytes` (431), the body is read off
 * the socket only when the handler asks for more (`readBody`), a pipelined
 * request waits in at most one head's worth of bytes, and a response is written
 * chunk by chunk, each awaited. One interval timer checks every connection's
 * deadlines (`resolutionMs`), so a deadline costs no timer per request.
 */
import type { HeaderList } from "../../shared/protocol/mod.ts";
import { isToken } from "../../shared/protocol/field_text.ts";
import { ProxyHeaderError, ProxyHeaderParser } from "./proxy_protocol.ts";
import {
  DEFAULT_MAX_HEAD_BYTES,
  RequestError,
  type RequestHead,
  RequestParser,
} from "./request_parser.ts";

/** A byte connection: a `Deno.Conn`, a `Deno.TlsConn`, or our TLS acceptor's. */
export interface ByteConn {
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  close(): void;
  closeWrite?(): Promise<void>;
  readonly remoteAddr: Deno.Addr;
}

/** Why the front closed or refused a connection (the metrics label). */
export type CutReason =
  | "header_timeout"
  | "idle_timeout"
  | "body_timeout"
  | "write_timeout"
  | "bad_request"
  | "head_too_large"
  | "max_connections"
  | "max_connections_per_address"
  | "shutdown";

export interface FrontLimits {
  /** From a connection's first byte (or accept) to a complete request head. */
  headerTimeoutMs: number;
  /** A kept-alive connection with no request. */
  idleTimeoutMs: number;
  /** A request body with no byte received. */
  bodyTimeoutMs: number;
  /** A response write that makes no progress (the caller stopped reading). */
  writeTimeoutMs: number;
  /** Request line + headers, bytes (431 beyond). */
  maxHeadBytes: number;
  /** Header fields per request (431 beyond). */
  maxHeaders: number;
  /** Open connections in total; beyond, new ones are closed at once. */
  maxConnections: number;
  /** Open connections per remote address; beyond, new ones are closed at once. */
  maxConnectionsPerAddress: number;
}

export const DEFAULT_LIMITS: FrontLimits = {
  headerTimeoutMs: 10_000,
  idleTimeoutMs: 60_000,
  bodyTimeoutMs: 60_000,
  writeTimeoutMs: 60_000,
  maxHeadBytes: DEFAULT_MAX_HEAD_BYTES,
  maxHeaders: 100,
  maxConnections: 16_384,
  maxConnectionsPerAddress: 1_024,
};

/** One request, as the handler sees it. */
export interface FrontRequest {
  readonly method: string;
  /** Path and query (origin-form; an absolute-form target's path). */
  readonly path: string;
  /** Names lowercased, in order, repeats kept. */
  readonly headers: HeaderList;
  /** Host value as sent (or an absolute-form target's authority); "" when absent. */
  readonly host: string;
  /** The listener's scheme; never the request's. */
  readonly scheme: "http" | "https";
  /** The TCP peer's address (the one its PROXY protocol header names, if it must send one). */
  readonly peer: Deno.NetAddr;
  /** Whether the request has a body (Content-Length > 0 or chunked). */
  readonly hasBody: boolean;
  /** The Upgrade value when the Connection field lists `upgrade`. */
  readonly upgrade: string | null;
  /** Field names the Connection field lists, lowercased. */
  readonly connection: ReadonlySet<string>;
  /** Aborts when the caller goes away (or the connection is cut) before the exchange ends. */
  readonly signal: AbortSignal;
  /**
   * The next piece of the body, read off the socket only now (backpressure);
   * null at its end. The view is valid until the next call. Throws
   * `BodyError` when the body cannot be read whole.
   */
  readBody(): Promise<Uint8Array | null>;
}

/** The request body could not be read whole (caller left, bad framing, timeout). */
export class BodyError extends Error {
  override name = "BodyError";
}

/** The caller's connection is gone (or was cut) while we wrote to it. */
export class WriteError extends Error {
  override name = "WriteError";
}

/** A raw byte stream after a 101: the upgraded connection. */
export interface UpgradedConn {
  /** Bytes the caller sent after its request head, not yet read. */
  readonly head: Uint8Array;
  read(p: Uint8Array): Promise<number | null>;
  /** Queues `p`, which the front owns from then on (see `Responder.write`; write timeout applies). */
  write(p: Uint8Array): Promise<void>;
  closeWrite(): Promise<void>;
  close(): void;
}

/** How the handler answers one request. */
export interface Responder {
  /**
   * Sets the status and headers (hop-by-hop ones are the front's business and
   * are dropped; an invalid field is dropped). `length`: the body's exact size,
   * or -1 when unknown (chunked on HTTP/1.1, until close on HTTP/1.0). Written
   * with the first body bytes or at `end()`.
   */
  head(status: number, headers: HeaderList, length: number): void;
  /**
   * Writes body bytes. The front owns `chunk` from the call on (do not change
   * it); resolves once it is queued (at most 64 KiB wait per connection) or
   * written. Throws `WriteError` when the caller's connection failed.
   */
  write(chunk: Uint8Array): Promise<void>;
  /** Ends the response (with optional last bytes, written with the head if not sent). */
  end(chunk?: Uint8Array): Promise<void>;
  /** After `head(101, …)`: writes the head and hands over the raw connection. */
  upgrade(): Promise<UpgradedConn>;
  /** Cuts the connection: the caller sees it end without a complete response. */
  abort(): void;
  /** Whether the head was written (a gateway error can no longer be sent). */
  readonly headSent: boolean;
}

export type FrontHandler = (req: FrontRequest, res: Responder) => Promise<void>;

export interface FrontEvents {
  /** A connection was cut or refused, by reason. */
  cut?(reason: CutReason): void;
  /** An accept failed (EMFILE, ENFILE…): the server backs off and retries. */
  acceptError?(error: unknown): void;
  /** Open connections changed. */
  connections?(delta: 1 | -1): void;
  /** A handler failed with an error of its own (answered 500 when still possible). */
  error?(error: unknown): void;
}

export interface FrontServerOptions {
  scheme: "http" | "https";
  handler: FrontHandler;
  limits?: Partial<FrontLimits>;
  events?: FrontEvents;
  /** How often deadlines are checked. Default min(1 s, smallest timeout / 4). */
  resolutionMs?: number;
  /**
   * TCP peers (by address) that must start each connection with a PROXY protocol
   * header, v1 or v2 (`proxy_protocol.ts`), within the header timeout: the address
   * it names becomes the connection's peer, and the per-address cap counts that
   * address. No valid header: closed, `bad_request`. Others are never parsed for one.
   */
  proxyProtocol?: (peer: string) => boolean;
}

/** Something that accepts byte connections (a `Deno.Listener`, our TLS acceptor). */
export interface Acceptor {
  accept(): Promise<ByteConn>;
  close(): void;
  readonly addr: Deno.Addr;
}

/**
 * Read sizes. A request head is read 4 KiB at a time (the parser keeps a partial
 * head itself), so a connection that never sends a whole head costs ~20 KiB, not
 * 80; a body gets a 64 KiB buffer, allocated when the first body read needs it.
 */
const HEAD_READ_BYTES = 4 * 1024;
const BODY_READ_BYTES = 64 * 1024;
const ACCEPT_BACKOFF_MS = 100;
/** Response bytes queued per connection before `write` waits for the socket. */
const WRITE_QUEUE_BYTES = 64 * 1024;
/** Bytes of an unread request body we read and drop to keep a connection alive. */
const DRAIN_LIMIT = 64 * 1024;
/**
 * What one flush joins (a head, a small body, chunk framing) is copied into a buffer
 * from this pool instead of a new one per response: one allocation less per request,
 * and off-heap ones cost a malloc and GC bookkeeping each. A buffer is back in the
 * pool once its socket write completed.
 */
const JOIN_BUFFER_BYTES = 16 * 1024;
const JOIN_POOL_MAX = 64;
const joinPool: Uint8Array[] = [];

const enc = new TextEncoder();

/** Serves HTTP/1.1 on the connections an acceptor yields. */
export class FrontServer {
  readonly limits: FrontLimits;
  readonly #opts: FrontServerOptions;
  readonly #acceptors = new Set<Acceptor>();
  readonly #connections = new Set<Connection>();
  readonly #perAddress = new Map<string, number>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #closing = false;
  #drained: (() => void) | undefined;
  /** Cached `Date` header value, refreshed by the deadline timer. */
  date = new Date().toUTCString();

  constructor(opts: FrontServerOptions) {
    this.#opts = opts;
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
    const l = this.limits;
    const smallest = Math.min(
      l.headerTimeoutMs,
      l.idleTimeoutMs,
      l.bodyTimeoutMs,
      l.writeTimeoutMs,
    );
    const resolution = opts.resolutionMs ?? Math.max(10, Math.min(1000, smallest / 4));
    this.#timer = setInterval(() => this.#sweep(), resolution);
  }

  get scheme(): "http" | "https" {
    return this.#opts.scheme;
  }

  /** Open connections. */
  get size(): number {
    return this.#connections.size;
  }

  /** Starts accepting from `acceptor` until it or the server closes. */
  serve(acceptor: Acceptor): Promise<void> {
    this.#acceptors.add(acceptor);
    return this.#acceptLoop(acceptor).finally(() => this.#acceptors.delete(acceptor));
  }

  /** Serves one connection that was accepted elsewhere. */
  handle(conn: ByteConn): void {
    if (this.#closing) {
      safeClose(conn);
      return;
    }
    const addr = conn.remoteAddr as Deno.NetAddr;
    const key = addr.hostname ?? "";
    const l = this.limits;
    if (this.#connections.size >= l.maxConnections) return this.#refuse(conn, "max_connections");
    // A load balancer's connections are counted per address once its PROXY
    // header names the caller (`Connection.#readProxyHeader`), not under its own.
    const proxied = this.#opts.proxyProtocol?.(key) ?? false;
    if (!proxied && !this.admit(key)) return this.#refuse(conn, "max_connections_per_address");
    const c = new Connection(this, conn, this.#opts, proxied ? undefined : key);
    this.#connections.add(c);
    this.#opts.events?.connections?.(1);
    c.run().finally(() => {
      this.#connections.delete(c);
      if (c.addressKey !== undefined) {
        const left = (this.#perAddress.get(c.addressKey) ?? 1) - 1;
        if (left <= 0) this.#perAddress.delete(c.addressKey);
        else this.#perAddress.set(c.addressKey, left);
      }
      this.#opts.events?.connections?.(-1);
      if (this.#closing && this.#connections.size === 0) this.#drained?.();
    });
  }

  /**
   * Stops accepting; idle connections close now, requests in progress finish
   * (their connections close after the response) and upgraded connections keep
   * going until `abortAll()`. Resolves when every connection is closed.
   */
  shutdown(): Promise<void> {
    if (!this.#closing) {
      this.#closing = true;
      for (const a of this.#acceptors) safeClose(a);
      for (const c of this.#connections) c.closeIfIdle();
    }
    if (this.#connections.size === 0) {
      this.#stopTimer();
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      const prev = this.#drained;
      this.#drained = () => {
        prev?.();
        this.#stopTimer();
        resolve();
      };
    });
  }

  /** Cuts every connection now (a shutdown deadline passed). */
  abortAll(): void {
    for (const c of this.#connections) c.cut("shutdown");
  }

  get closing(): boolean {
    return this.#closing;
  }

  cut(reason: CutReason): void {
    this.#opts.events?.cut?.(reason);
  }

  /** Counts one more connection from `key` unless it is at the per-address cap. */
  admit(key: string): boolean {
    const n = this.#perAddress.get(key) ?? 0;
    if (n >= this.limits.maxConnectionsPerAddress) return false;
    this.#perAddress.set(key, n + 1);
    return true;
  }

  #refuse(conn: ByteConn, reason: CutReason): void {
    this.cut(reason);
    safeClose(conn);
  }

  async #acceptLoop(acceptor: Acceptor): Promise<void> {
    while (!this.#closing) {
      let conn: ByteConn;
      try {
        conn = await acceptor.accept();
        noDelay(conn);
      } catch (e) {
        if (this.#closing || e instanceof Deno.errors.BadResource) return;
        // A caller that reset before we took it (a load balancer's TCP health check,
        // or anyone's RST): Deno's accept fails on its address. Not ours: go on at once.
        if (resetBeforeAccept(e)) continue;
        // EMFILE and friends: the process is out of descriptors. Never crash;
        // wait for connections to close, and let the kernel queue hold the rest.
        this.#opts.events?.acceptError?.(e);
        await new Promise((r) => setTimeout(r, ACCEPT_BACKOFF_MS));
        continue;
      }
      this.handle(conn);
    }
  }

  #sweep(): void {
    const now = Date.now();
    this.date = new Date(now).toUTCString();
    for (const c of this.#connections) c.check(now);
  }

  #stopTimer(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }
}

/**
 * Turns Nagle's algorithm off on an accepted TCP connection (nginx's tcp_nodelay): a
 * response's last small write, an SSE event or a tunnel WebSocket's datagram must not
 * wait for the caller's delayed ACK (~40 ms). Over the TCP tunnel path with Nagle on, 50
 * callers at once got 1,276 req/s at a 47.8 ms median; see docs/tcp-fallback.md.
 */
export function noDelay(conn: unknown): void {
  try {
    (conn as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
  } catch { /* not TCP, or already closed */ }
}

/** Accept failed for one connection the caller already reset (Deno 2.9.6: NotConnected). */
export function resetBeforeAccept(e: unknown): boolean {
  return e instanceof Deno.errors.NotConnected || e instanceof Deno.errors.ConnectionReset ||
    e instanceof Deno.errors.ConnectionAborted;
}

function safeClose(c: { close(): void }): void {
  try {
    c.close();
  } catch { /* already closed */ }
}

const enum Phase {
  /** Waiting for (the rest of) a request head. */
  Head,
  /** Kept alive, no byte of the next request yet. */
  Idle,
  /** A request is being handled. */
  Busy,
  /** Upgraded: raw bytes both ways. */
  Upgraded,
  Closed,
}

const CONTINUE = enc.encode("HTTP/1.1 100 Continue\r\n\r\n");
const EMPTY = new Uint8Array(0);

/** One accepted connection: requests one after another, in order. */
class Connection {
  readonly #server: FrontServer;
  readonly #conn: ByteConn;
  readonly #opts: FrontServerOptions;
  #peer: Deno.NetAddr;
  /** Whether the connection starts with a PROXY protocol header. */
  readonly #proxied: boolean;
  /** The address this connection is counted under for the per-address cap, once admitted. */
  addressKey: string | undefined;
  /** Head reads, and the watcher's read while a request is handled (one read at a time). */
  readonly #buf = new Uint8Array(HEAD_READ_BYTES);
  #bodyBuf: Uint8Array | undefined;
  readonly #parser: RequestParser;
  /** Unconsumed bytes (after a message's end: the next request's). */
  #pending: Uint8Array = EMPTY;
  /** The one socket read in progress (the watcher's, taken over by whoever reads next). */
  #inflight: Promise<number | null> | undefined;
  #phase = Phase.Head;
  /** When the current read phase expires (0: none), and why. */
  #readDeadline = 0;
  #readReason: CutReason = "header_timeout";
  /** When the write in progress expires (0: none). */
  #writeDeadline = 0;
  /** Bytes waiting for the socket (see writeAll), and the loop writing them. */
  #queue: (Uint8Array | string)[] = [];
  #queued = 0;
  #flushing: Promise<void> | undefined;
  #writeError: WriteError | undefined;
  #cutReason: CutReason | undefined;

  // The current request.
  #head: RequestHead | undefined;
  #bodyQueue: Uint8Array[] = [];
  #ended = false;
  #continued = false;
  /** The watcher: stop flag, its wake-up, whether it saw the caller leave. */
  /** The exchange being watched (its abort controller); undefined: none. */
  #watched: AbortController | undefined;
  /** The read in flight has the watcher's callback attached (not yet run). */
  #inflightWatched = false;
  #callerGone = false;

  constructor(
    server: FrontServer,
    conn: ByteConn,
    opts: FrontServerOptions,
    addressKey: string | undefined,
  ) {
    this.#server = server;
    this.#conn = conn;
    this.#opts = opts;
    this.#peer = conn.remoteAddr as Deno.NetAddr;
    this.#proxied = addressKey === undefined;
    this.addressKey = addressKey;
    const l = server.limits;
    this.#parser = new RequestParser({
      head: (h) => this.#head = h,
      body: (v) => this.#bodyQueue.push(v),
      end: () => this.#ended = true,
    }, { maxHeadBytes: l.maxHeadBytes, maxHeaders: l.maxHeaders });
    this.#readDeadline = Date.now() + l.headerTimeoutMs;
  }

  get scheme(): "http" | "https" {
    return this.#server.scheme;
  }

  get peer(): Deno.NetAddr {
    return this.#peer;
  }

  /** Called by the server's timer. */
  check(now: number): void {
    if (this.#phase === Phase.Closed) return;
    if (this.#readDeadline !== 0 && now >= this.#readDeadline) this.cut(this.#readReason);
    else if (this.#writeDeadline !== 0 && now >= this.#writeDeadline) this.cut("write_timeout");
  }

  closeIfIdle(): void {
    if (this.#phase === Phase.Idle || (this.#phase === Phase.Head && this.#parser.idle)) {
      this.cut("shutdown");
    }
  }

  cut(reason: CutReason): void {
    if (this.#phase === Phase.Closed) return;
    this.#cutReason ??= reason;
    this.#close();
  }

  #close(): void {
    if (this.#phase === Phase.Closed) return;
    this.#phase = Phase.Closed;
    this.#readDeadline = 0;
    this.#writeDeadline = 0;
    this.#watched = undefined;
    safeClose(this.#conn);
  }

  async run(): Promise<void> {
    try {
      await this.#loop();
    } catch {
      // A read or write failed: the connection is gone.
    } finally {
      this.#close();
      if (this.#cutReason) this.#server.cut(this.#cutReason);
    }
  }

  async #loop(): Promise<void> {
    const l = this.#server.limits;
    if (this.#proxied && !await this.#readProxyHeader()) return;
    for (;;) {
      // Read until a whole head is parsed.
      while (!this.#head) {
        if (this.#pending.length === 0) {
          const got = await this.#read();
          if (got === null) return; // the caller closed between requests: fine
          if (this.#phase === Phase.Idle) {
            this.#phase = Phase.Head;
            this.#readDeadline = Date.now() + l.headerTimeoutMs;
            this.#readReason = "header_timeout";
          }
          this.#pending = got;
        }
        try {
          this.#pending = this.#pending.subarray(this.#parser.feed(this.#pending));
        } catch (e) {
          if (!(e instanceof RequestError)) throw e;
          await this.#refuse(e);
          return;
        }
      }
      this.#phase = Phase.Busy;
      this.#readDeadline = 0;
      const keepAlive = await this.#exchange(this.#head);
      if (!keepAlive || this.#phase !== Phase.Busy || this.#server.closing) return;
      // Next request.
      this.#head = undefined;
      this.#ended = false;
      this.#continued = false;
      this.#bodyQueue = [];
      this.#parser.next();
      const idle = this.#pending.length === 0;
      this.#phase = idle ? Phase.Idle : Phase.Head;
      this.#readDeadline = Date.now() + (idle ? l.idleTimeoutMs : l.headerTimeoutMs);
      this.#readReason = idle ? "idle_timeout" : "header_timeout";
    }
  }

  /**
   * The PROXY protocol header, before anything else (the header timeout runs):
   * its address becomes the peer, then the per-address cap is checked on it.
   * False: the connection is to be closed (a reason is set unless it closed
   * before sending a byte, as an unproxied one may).
   */
  async #readProxyHeader(): Promise<boolean> {
    const parser = new ProxyHeaderParser();
    for (;;) {
      const got = await this.#read();
      if (this.#phase === Phase.Closed) return false; // cut meanwhile (timeout, shutdown)
      if (got === null) {
        if (parser.received > 0) this.#cutReason ??= "bad_request";
        return false;
      }
      let r;
      try {
        r = parser.feed(got);
      } catch (e) {
        if (!(e instanceof ProxyHeaderError)) throw e;
        this.#cutReason ??= "bad_request";
        return false;
      }
      if (!r) continue;
      if (r.header.command === "proxy") this.#peer = r.header.source;
      this.#pending = got.subarray(r.consumed);
      break;
    }
    const key = this.#peer.hostname;
    if (!this.#server.admit(key)) {
      this.#cutReason = "max_connections_per_address";
      return false;
    }
    this.addressKey = key;
    return true;
  }

  /** Answers a request we refuse, then the loop closes the connection. */
  async #refuse(e: RequestError): Promise<void> {
    this.#cutReason = e.status === 431 || e.status === 414 ? "head_too_large" : "bad_request";
    const body = `${e.message}\n`;
    const bytes = latin1(
      `HTTP/1.1 ${e.status} ${reasonPhrase(e.status)}\r\nconnection: close\r\n` +
        `content-type: text/plain\r\ncontent-length: ${body.length}\r\n` +
        `date: ${this.#server.date}\r\n\r\n${body}`,
    );
    await this.#writeAll(bytes).catch(() => {});
  }

  /**
   * One socket read; null at EOF. Takes over the watcher's read if one is in
   * flight (its bytes are in the head buffer), else reads into the head or body buffer.
   * The returned view is valid until the next read.
   */
  async #read(body = false): Promise<Uint8Array | null> {
    const inflight = this.#inflight;
    if (inflight) {
      this.#inflight = undefined;
      const n = await inflight;
      return n === null ? null : this.#buf.subarray(0, n);
    }
    const buf = body ? (this.#bodyBuf ??= new Uint8Array(BODY_READ_BYTES)) : this.#buf;
    const n = await this.#conn.read(buf);
    return n === null ? null : buf.subarray(0, n);
  }

  /**
   * Runs the handler for one request. Resolves whether the connection may carry
   * another request.
   */
  async #exchange(head: RequestHead): Promise<boolean> {
    const ac = new AbortController();
    const req = new Request1(this, head, ac.signal);
    const res = new Responder1(this, head, this.#server);
    if (!req.hasBody) this.#watch(ac);
    else req.onBodyDone = () => this.#watch(ac);
    try {
      await this.#opts.handler(req, res);
      if (!res.finished && !res.aborted) await res.end();
    } catch (e) {
      // A handler's own failure (not the caller's): a 500 if nothing was sent yet.
      if (!(e instanceof WriteError) && !(e instanceof BodyError)) this.#opts.events?.error?.(e);
      if (res.headSent || res.aborted || e instanceof WriteError) res.abort();
      else {
        res.head(500, [["content-type", "text/plain"]], -1);
        await res.end(enc.encode("Internal Server Error\n")).catch(() => res.abort());
      }
    }
    if (res.upgraded || res.aborted || this.#phase !== Phase.Busy) return false;
    this.#watched = undefined;
    if (this.#callerGone || this.#phase !== Phase.Busy) return false;
    // A body the handler did not read: drain a little to keep the connection,
    // else close (the caller may still be sending a large upload).
    if (!this.#ended && !await this.#drain(DRAIN_LIMIT)) return false;
    return head.keepAlive && !res.closeAfter;
  }

  /**
   * Once the request body is read: watches the socket so that a caller who
   * leaves aborts the exchange, and keeps what a pipelining caller sends next
   * (up to one head's worth; beyond that TCP holds it back).
   */
  #watch(ac: AbortController): void {
    if (this.#watched) return;
    this.#watched = ac;
    this.#callerGone = false;
    // The watcher reads into the head buffer: keep what is pending out of its way.
    if (this.#pending.length > 0) this.#pending = this.#pending.slice();
    this.#watchNext();
  }

  /**
   * The watcher's next read (or the one in flight). No promise race and no closure
   * per request: one callback per connection looks at each read when it ends, and
   * leaves it alone if the exchange is over (the next `#read` takes it over).
   */
  #watchNext(): void {
    if (!this.#watched || this.#phase !== Phase.Busy) return;
    if (this.#pending.length >= this.#server.limits.maxHeadBytes) return;
    if (this.#inflightWatched) return;
    const p = this.#inflight ??= this.#conn.read(this.#buf).catch(() => null);
    this.#inflightWatched = true;
    p.then((n) => this.#onWatchedRead(p, n));
  }

  #onWatchedRead(p: Promise<number | null>, n: number | null): void {
    this.#inflightWatched = false;
    // Taken over by a reader, or nobody watches now (a later watch or read takes it).
    if (this.#inflight !== p || !this.#watched) return;
    this.#inflight = undefined;
    if (n === null) {
      this.#callerGone = true;
      this.#watched.abort();
      return;
    }
    const next = new Uint8Array(this.#pending.length + n);
    next.set(this.#pending);
    next.set(this.#buf.subarray(0, n), this.#pending.length);
    this.#pending = next;
    this.#watchNext();
  }

  /** Reads and drops the rest of a body, up to `limit` bytes; false if it did not end. */
  async #drain(limit: number): Promise<boolean> {
    let left = limit;
    this.#bodyQueue = [];
    while (!this.#ended) {
      const v = await this.readBodyChunk().catch(() => null);
      if (v === null) return false;
      left -= v.length;
      if (left < 0) return false;
    }
    return true;
  }

  /** The next body view (see FrontRequest.readBody). */
  async readBodyChunk(): Promise<Uint8Array | null> {
    for (;;) {
      const q = this.#bodyQueue.shift();
      if (q) return q;
      if (this.#ended) return null;
      if (this.#phase !== Phase.Busy) throw new BodyError("connection closed");
      if (this.#pending.length === 0) {
        if (this.#head?.expectContinue && !this.#continued) {
          this.#continued = true;
          await this.writeAll(CONTINUE).catch(() => {
            throw new BodyError("caller connection failed");
          });
        }
        const l = this.#server.limits;
        this.#readDeadline = Date.now() + l.bodyTimeoutMs;
        this.#readReason = "body_timeout";
        let got: Uint8Array | null;
        try {
          got = await this.#read(true);
        } catch {
          throw new BodyError("caller connection failed during the body");
        } finally {
          this.#readDeadline = 0;
        }
        if (got === null) throw new BodyError("caller closed the connection during the body");
        this.#pending = got;
      }
      try {
        this.#pending = this.#pending.subarray(this.#parser.feed(this.#pending));
      } catch (e) {
        this.#cutReason = "bad_request";
        this.#close();
        throw new BodyError(e instanceof Error ? e.message : String(e));
      }
    }
  }

  /**
   * Queues `parts` for the socket (strings: head text, one byte per code unit);
   * the front owns them from here on (the caller must not change them). Resolves at once while less than `WRITE_QUEUE_BYTES` wait,
   * else when they are written. What queues up while a socket write is in flight
   * goes out in one write: a tunnel stream delivers a response in pieces as small
   * as one datagram, and with a syscall each a 100 MiB tunnel download took 1.6 s
   * where Deno.serve took 1.1-1.3; queued, 1.3 s (bench/quick.sh, same run).
   * Throws `WriteError` once the connection failed.
   */
  async writeAll(...parts: (Uint8Array | string)[]): Promise<void> {
    if (this.#phase === Phase.Closed) throw new WriteError("connection closed");
    if (this.#writeError) throw this.#writeError;
    for (const p of parts) {
      if (p.length === 0) continue;
      this.#queue.push(p);
      this.#queued += p.length;
    }
    // Started a microtask later, so that what is written in the same turn (a head
    // and its body, a chunk and its framing) goes out in one write.
    if (this.#queue.length > 0) {
      this.#flushing ??= Promise.resolve().then(() => this.#flushLoop());
    }
    if (this.#queued > WRITE_QUEUE_BYTES) await this.flush();
  }

  /** Resolves when everything queued reached the socket; throws `WriteError` if it cannot. */
  async flush(): Promise<void> {
    while (this.#flushing) await this.#flushing;
    if (this.#writeError) throw this.#writeError;
  }

  async #flushLoop(): Promise<void> {
    let pooled: Uint8Array | undefined;
    try {
      while (this.#queue.length > 0) {
        const q = this.#queue;
        this.#queue = [];
        const n = this.#queued;
        this.#queued = 0;
        const only = q.length === 1 ? q[0]! : undefined;
        if (only !== undefined && typeof only !== "string") {
          await this.#writeAll(only);
          continue;
        }
        let out: Uint8Array;
        if (n <= JOIN_BUFFER_BYTES) {
          out = pooled ??= joinPool.pop() ?? new Uint8Array(JOIN_BUFFER_BYTES);
        } else out = new Uint8Array(n);
        let o = 0;
        for (const c of q) {
          if (typeof c === "string") latin1Into(c, out, o);
          else out.set(c, o);
          o += c.length;
        }
        await this.#writeAll(out.length === n ? out : out.subarray(0, n));
      }
    } catch {
      this.#writeError = new WriteError("caller connection failed");
      this.#queue = [];
      this.#queued = 0;
      this.#close();
    } finally {
      this.#flushing = undefined;
      // Its write is over (done or failed): the buffer may be reused.
      if (pooled && joinPool.length < JOIN_POOL_MAX) joinPool.push(pooled);
    }
  }

  async #writeAll(p: Uint8Array): Promise<void> {
    const timeout = this.#server.limits.writeTimeoutMs;
    let off = 0;
    try {
      while (off < p.length) {
        this.#writeDeadline = Date.now() + timeout;
        off += await this.#conn.write(off === 0 ? p : p.subarray(off));
      }
    } finally {
      this.#writeDeadline = 0;
    }
  }

  abort(): void {
    this.#close();
  }

  /** Stops watching for a next request (the connection closes after this response). */
  endWatch(): void {
    this.#watched = undefined;
  }

  /** Hands the raw connection over after a 101. */
  upgrade(): UpgradedConn {
    this.#phase = Phase.Upgraded;
    this.#readDeadline = 0;
    this.#watched = undefined;
    const head = this.#pending.slice();
    this.#pending = EMPTY;
    return {
      head,
      read: async (p: Uint8Array): Promise<number | null> => {
        if (this.#phase === Phase.Closed) return null;
        const inflight = this.#inflight;
        if (inflight) {
          // The watcher's read, taken over: its bytes are in the head buffer.
          this.#inflight = undefined;
          const n = await inflight;
          if (n === null) return null;
          if (n > p.length) throw new RangeError("read buffer smaller than 4 KiB");
          p.set(this.#buf.subarray(0, n));
          return n;
        }
        return await this.#conn.read(p);
      },
      write: (p) => this.writeAll(p),
      closeWrite: async () => {
        try {
          await this.flush();
          await this.#conn.closeWrite?.();
        } catch { /* already closed */ }
      },
      close: () => this.#close(),
    };
  }
}

class Request1 implements FrontRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: HeaderList;
  readonly host: string;
  readonly scheme: "http" | "https";
  readonly peer: Deno.NetAddr;
  readonly hasBody: boolean;
  readonly upgrade: string | null;
  readonly connection: ReadonlySet<string>;
  readonly signal: AbortSignal;
  onBodyDone: (() => void) | undefined;
  readonly #conn: Connection;

  constructor(conn: Connection, head: RequestHead, signal: AbortSignal) {
    this.#conn = conn;
    this.method = head.method;
    this.path = originPath(head.target);
    this.headers = head.headers;
    this.host = head.host ?? "";
    this.scheme = conn.scheme;
    this.peer = conn.peer;
    this.hasBody = head.body === "chunked" || (head.body === "length" && head.contentLength > 0);
    this.upgrade = head.upgrade;
    this.connection = head.connection;
    this.signal = signal;
  }

  async readBody(): Promise<Uint8Array | null> {
    const v = await this.#conn.readBodyChunk();
    if (v === null) this.onBodyDone?.();
    return v;
  }
}

/** The path and query of a request-target ("/" for `*` and authority-form). */
function originPath(target: string): string {
  if (target.charCodeAt(0) === 47 /* / */) return target;
  const scheme = target.indexOf("://");
  if (scheme < 0) return "/";
  const slash = target.indexOf("/", scheme + 3);
  const query = target.indexOf("?", scheme + 3);
  if (slash < 0) return query < 0 ? "/" : "/" + target.slice(query);
  if (query >= 0 && query < slash) return "/" + target.slice(query);
  return target.slice(slash);
}

// Header names the front writes itself or that belong to one connection.
const FRONT_OWNED = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
  "te",
  "trailer",
  "content-length",
  "date",
]);

// deno-lint-ignore no-control-regex
const BAD_VALUE = /[\x00-\x08\x0a-\x1f\x7f]|[^\x00-\xff]/;

class Responder1 implements Responder {
  readonly #conn: Connection;
  readonly #req: RequestHead;
  readonly #server: FrontServer;
  #status = 200;
  #headers: HeaderList = [];
  #length = -1;
  #hasHead = false;
  #headSent = false;
  #chunked = false;
  #noBody = false;
  #written = 0;
  #date: string | undefined;
  #upgradeValue: string | undefined;
  finished = false;
  aborted = false;
  upgraded = false;
  /** The connection closes after this response. */
  closeAfter = false;

  constructor(conn: Connection, req: RequestHead, server: FrontServer) {
    this.#conn = conn;
    this.#req = req;
    this.#server = server;
  }

  get headSent(): boolean {
    return this.#headSent;
  }

  head(status: number, headers: HeaderList, length: number): void {
    if (this.#headSent) throw new Error("head already sent");
    this.#status = status;
    this.#headers = headers;
    this.#length = length;
    this.#hasHead = true;
    for (const [k, v] of headers) {
      // The origin's Date is kept, if it is a valid field value (it skips the loop's check).
      if (k === "date") this.#date = BAD_VALUE.test(v) ? undefined : v;
      else if (k === "upgrade") this.#upgradeValue = v;
    }
  }

  /** The head as Latin-1 text (queued as is: the flush writes it into its buffer). */
  #encodeHead(): string {
    const status = this.#status;
    const req = this.#req;
    this.#noBody = req.method === "HEAD" || status < 200 || status === 204 || status === 304;
    const closing = this.#server.closing || !req.keepAlive;
    let s = `HTTP/1.1 ${status} ${reasonPhrase(status)}\r\n`;
    for (const [k, v] of this.#headers) {
      if (FRONT_OWNED.has(k)) {
        // A HEAD or 304 answer keeps the origin's Content-Length: it describes the
        // representation, not this (empty) body.
        if (!(k === "content-length" && this.#noBody && status !== 204 && status >= 200)) continue;
        if (!/^\d{1,15}$/.test(v)) continue;
      }
      if (!isToken(k) || BAD_VALUE.test(v)) continue;
      s += `${k}: ${v}\r\n`;
    }
    if (status === 101) {
      s += `connection: upgrade\r\nupgrade: ${
        this.#upgradeValue && !BAD_VALUE.test(this.#upgradeValue)
          ? this.#upgradeValue
          : (req.upgrade ?? "")
      }\r\n`;
    } else {
      if (!this.#noBody && status !== 204) {
        if (this.#length >= 0) s += `content-length: ${this.#length}\r\n`;
        else if (req.minor === 1) {
          this.#chunked = true;
          s += "transfer-encoding: chunked\r\n";
        } else this.closeAfter = true;
      }
      if (closing || this.closeAfter) {
        this.closeAfter = true;
        s += "connection: close\r\n";
      } else if (req.minor === 0) s += "connection: keep-alive\r\n";
    }
    s += `date: ${this.#date ?? this.#server.date}\r\n\r\n`;
    return s;
  }

  write(chunk: Uint8Array): Promise<void> {
    if (this.finished || this.aborted) {
      return Promise.reject(new WriteError("response already ended"));
    }
    // Head, size line, chunk and CRLF are queued as pieces: the connection joins
    // them into one write, so nothing here copies the body.
    const parts: (Uint8Array | string)[] = [];
    if (!this.#headSent) {
      if (!this.#hasHead) this.head(200, [], -1);
      parts.push(this.#encodeHead());
      this.#headSent = true;
    }
    if (!this.#noBody && chunk.length > 0) {
      if (this.#length >= 0) {
        this.#written += chunk.length;
        if (this.#written > this.#length) {
          return Promise.reject(new WriteError("response body longer than its Content-Length"));
        }
      }
      if (this.#chunked) parts.push(chunk.length.toString(16) + "\r\n", chunk, CRLF);
      else parts.push(chunk);
    }
    return parts.length === 0 ? Promise.resolve() : this.#conn.writeAll(...parts);
  }

  async end(chunk?: Uint8Array): Promise<void> {
    if (this.finished || this.aborted) return;
    if (!this.#headSent && this.#length < 0 && !this.#noBody) {
      // The whole body is known now: send a length, not chunks.
      this.#length = chunk?.length ?? 0;
    }
    if (chunk && chunk.length > 0) await this.write(chunk);
    else if (!this.#headSent) await this.write(new Uint8Array(0));
    this.finished = true;
    if (this.#chunked) await this.#conn.writeAll(LAST_CHUNK);
    else if (this.#length >= 0 && !this.#noBody && this.#written < this.#length) {
      // Shorter than promised: the caller must see a cut, not a complete answer.
      this.abort();
      throw new WriteError("response body shorter than its Content-Length");
    }
    await this.#conn.flush();
    if (this.closeAfter) this.#conn.endWatch();
  }

  async upgrade(): Promise<UpgradedConn> {
    if (this.#status !== 101) throw new Error("upgrade() needs head(101, …)");
    const h = latin1(this.#encodeHead());
    this.#headSent = true;
    this.upgraded = true;
    this.finished = true;
    const raw = this.#conn.upgrade();
    await raw.write(h);
    return raw;
  }

  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    this.#conn.abort();
  }
}

const LAST_CHUNK = enc.encode("0\r\n\r\n");
const CRLF = enc.encode("\r\n");

/** Encodes a head string byte per code unit (Latin-1). */
function latin1(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  latin1Into(s, out, 0);
  return out;
}

/** Writes `s` byte per code unit (Latin-1) into `out` at `at`; `out` has room. */
function latin1Into(s: string, out: Uint8Array, at: number): void {
  // Short strings (chunk sizes) by hand; longer ones natively when ASCII: encodeInto
  // writes UTF-8, which reads the whole string into as many bytes only for ASCII.
  if (s.length > 32) {
    const r = enc.encodeInto(s, at === 0 ? out : out.subarray(at, at + s.length));
    if (r.read === s.length && r.written === s.length) return;
  }
  for (let i = 0; i < s.length; i++) out[at + i] = s.charCodeAt(i);
}

const REASONS: Record<number, string> = {
  100: "Continue",
  101: "Switching Protocols",
  200: "OK",
  201: "Created",
  202: "Accepted",
  204: "No Content",
  206: "Partial Content",
  301: "Moved Permanently",
  302: "Found",
  303: "See Other",
  304: "Not Modified",
  307: "Temporary Redirect",
  308: "Permanent Redirect",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  411: "Length Required",
  413: "Content Too Large",
  414: "URI Too Long",
  417: "Expectation Failed",
  421: "Misdirected Request",
  426: "Upgrade Required",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  499: "Client Closed Request",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
};

/** The standard reason phrase, or a generic one. */
export function reasonPhrase(status: number): string {
  return REASONS[status] ?? (status < 400 ? "OK" : status < 500 ? "Error" : "Server Error");
}
