/**
 * HTTP/2 on the public HTTPS listener. A TLS connection that agreed on `h2`
 * (ALPN) is decrypted by our acceptor (`tls.ts`) and its plaintext piped into an
 * internal `Deno.serve` on 127.0.0.1 (h2c, prior knowledge: hyper's HTTP/2). Its
 * handler turns each `Request` into a `FrontRequest` + `Responder` and calls the
 * same `FrontHandler` as the HTTP/1.1 front (`http1.ts`): the ingress does not
 * know which protocol the caller speaks.
 *
 *   TlsAcceptor ─► alpn "h2" ─► H2Bridge.handle ─► pipe ─► Deno.serve (h2c, loopback)
 *                 otherwise ─► FrontServer.handle              │ Request → FrontRequest
 *                                                              ▼ Responder → Response
 *                                                       FrontHandler (ingress)
 *
 * Why: Deno's HTTP/2 engine needs a Deno TLS resource, which our node:tls
 * socket is not, and node:http2 hangs on these sockets (see `tls.ts`). A page of
 * 61 resources at 50 ms RTT loads ~1.5x slower over HTTP/1.1 (bench/page_load.sh).
 *
 * The caller's address: the bridge connects to the internal listener and
 * remembers its own local port → the TLS peer; the handler finds the peer by
 * `info.remoteAddr.port`. A connection to the internal listener the bridge did
 * not make (another local process) is refused (421, nothing forwarded).
 *
 * Bounds (docs/edge.md lists what hyper bounds itself and what it does not):
 * - the pipe copies one read at a time in each direction, each write awaited;
 * - a connection with no byte either way for `idleTimeoutMs` and no stream in
 *   progress is closed (`idle_timeout`);
 * - a response write that the caller does not take for `writeTimeoutMs` (h2 flow
 *   control: the caller stopped reading) resets the stream (`write_timeout`), and
 *   a request body with no byte for `bodyTimeoutMs` fails (`body_timeout`);
 * - connections count toward `maxConnections` / `maxConnectionsPerAddress`
 *   (their own count, beside the HTTP/1.1 front's); at most 256 exchanges in
 *   progress per connection (503 beyond); `maxHeaders` / `maxHeadBytes` apply to
 *   the decoded fields (431), after hyper's own header-list cap (~16 KiB: 431);
 * - `shutdown()` stops taking connections and sends GOAWAY (Deno.serve's
 *   graceful shutdown): streams in progress finish; `abortAll()` cuts them.
 * Each h2 connection holds 4 descriptors: the TLS socket's two and both ends of
 * the loopback connection.
 */
import type { HeaderList } from "../../shared/protocol/mod.ts";
import {
  BodyError,
  type CutReason,
  DEFAULT_LIMITS,
  type FrontEvents,
  type FrontHandler,
  type FrontLimits,
  type FrontRequest,
  type FrontServer,
  type Responder,
  type UpgradedConn,
  WriteError,
} from "./http1.ts";
import type { TlsByteConn } from "./tls.ts";

export interface H2BridgeOptions {
  handler: FrontHandler;
  limits?: Partial<FrontLimits>;
  events?: FrontEvents;
  /** How often deadlines are checked. Default min(1 s, smallest timeout / 4). */
  resolutionMs?: number;
}

/** Bytes per read in each direction of the pipe (a TLS record's worth). */
const PIPE_READ_BYTES = 16 * 1024;
const ACCEPT_BACKOFF_MS = 100;
/** Exchanges in progress on one connection; beyond, new streams get a 503. */
export const MAX_STREAMS_PER_CONNECTION = 256;

/** Response fields h2 forbids (RFC 9113 §8.2.2), and the length (Deno sets it). */
const DROPPED = new Set([
  "connection",
  "keep-alive",
  "transfer-encoding",
  "upgrade",
  "proxy-connection",
  "te",
  "trailer",
  "content-length",
]);

const enc = new TextEncoder();

/** Serves HTTP/2 connections (after TLS) through an internal h2c `Deno.serve`. */
export class H2Bridge {
  readonly limits: FrontLimits;
  readonly #opts: H2BridgeOptions;
  readonly #server: Deno.HttpServer<Deno.NetAddr>;
  readonly #port: number;
  /** Open connections by the local port of their loopback leg. */
  readonly #pipes = new Map<number, Pipe>();
  /** Connections being set up (loopback connect in progress). */
  #starting = 0;
  readonly #perAddress = new Map<string, number>();
  readonly #acceptors = new Set<{ close(): void }>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #closing = false;
  #drained: (() => void) | undefined;
  #stopped: Promise<void> | undefined;

  constructor(opts: H2BridgeOptions) {
    this.#opts = opts;
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
    const l = this.limits;
    const smallest = Math.min(l.idleTimeoutMs, l.bodyTimeoutMs, l.writeTimeoutMs);
    const resolution = opts.resolutionMs ?? Math.max(10, Math.min(1000, smallest / 4));
    this.#server = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      onListen: () => {},
      onError: (e) => {
        this.#opts.events?.error?.(e);
        return new Response("Internal Server Error\n", { status: 500 });
      },
    }, (req, info) => this.#serve(req, info));
    this.#port = this.#server.addr.port;
    this.#timer = setInterval(() => this.#sweep(), resolution);
  }

  /** Open HTTP/2 connections. */
  get size(): number {
    return this.#pipes.size + this.#starting;
  }

  get closing(): boolean {
    return this.#closing;
  }

  /**
   * Accepts from a TLS acceptor until it or the bridge closes: `h2` connections
   * here, the others to `front` (HTTP/1.1). `shutdown()` closes the acceptor.
   */
  async serve(
    acceptor: { accept(): Promise<TlsByteConn>; close(): void },
    front: Pick<FrontServer, "handle" | "closing">,
  ): Promise<void> {
    this.#acceptors.add(acceptor);
    try {
      while (!this.#closing && !front.closing) {
        let conn: TlsByteConn;
        try {
          conn = await acceptor.accept();
        } catch (e) {
          if (this.#closing || front.closing || e instanceof Deno.errors.BadResource) return;
          this.#opts.events?.acceptError?.(e);
          await new Promise((r) => setTimeout(r, ACCEPT_BACKOFF_MS));
          continue;
        }
        if (conn.alpn === "h2") this.handle(conn);
        else front.handle(conn);
      }
    } finally {
      this.#acceptors.delete(acceptor);
      safeClose(acceptor);
    }
  }

  /** Serves one TLS connection that agreed on h2. */
  handle(conn: TlsByteConn): void {
    if (this.#closing) return safeClose(conn);
    const l = this.limits;
    if (this.size >= l.maxConnections) return this.#refuse(conn, "max_connections");
    const key = conn.remoteAddr.hostname;
    const n = this.#perAddress.get(key) ?? 0;
    if (n >= l.maxConnectionsPerAddress) return this.#refuse(conn, "max_connections_per_address");
    this.#perAddress.set(key, n + 1);
    this.#starting++;
    this.#opts.events?.connections?.(1);
    this.#run(conn, key);
  }

  async #run(conn: TlsByteConn, key: string): Promise<void> {
    let pipe: Pipe | undefined;
    try {
      let local: Deno.TcpConn;
      try {
        local = await Deno.connect({ hostname: "127.0.0.1", port: this.#port });
      } catch (e) {
        this.#opts.events?.error?.(e);
        return;
      } finally {
        this.#starting--;
      }
      if (this.#closing) {
        safeClose(local);
        this.#cut("shutdown");
        return;
      }
      local.setNoDelay(true);
      pipe = new Pipe(conn, local, (r) => this.#cut(r));
      this.#pipes.set(pipe.port, pipe);
      await pipe.run();
      if (pipe.cutReason) this.#cut(pipe.cutReason);
    } finally {
      if (pipe) this.#pipes.delete(pipe.port);
      safeClose(conn);
      const left = (this.#perAddress.get(key) ?? 1) - 1;
      if (left <= 0) this.#perAddress.delete(key);
      else this.#perAddress.set(key, left);
      this.#opts.events?.connections?.(-1);
      if (this.#closing && this.size === 0) this.#drained?.();
    }
  }

  /**
   * Stops taking connections; clients get GOAWAY, streams in progress finish.
   * Resolves when every connection is closed and the internal listener stopped.
   */
  shutdown(): Promise<void> {
    if (!this.#closing) {
      this.#closing = true;
      for (const a of this.#acceptors) safeClose(a);
      // Deno.serve: GOAWAY to every connection; hyper closes each once its streams
      // are done (responses streamed to the end; Deno's shutdown() itself resolves
      // before that, so the pipes are not cut then), and the pipes see EOF.
      this.#stopped = this.#server.shutdown();
    }
    const drained = this.size === 0 ? Promise.resolve() : new Promise<void>((resolve) => {
      const prev = this.#drained;
      this.#drained = () => {
        prev?.();
        resolve();
      };
    });
    return Promise.all([drained, this.#stopped]).then(() => {
      clearInterval(this.#timer);
      this.#timer = undefined;
    });
  }

  /** Cuts every connection now (a shutdown deadline passed). */
  abortAll(): void {
    for (const p of this.#pipes.values()) p.cut("shutdown");
  }

  #refuse(conn: TlsByteConn, reason: CutReason): void {
    this.#cut(reason);
    safeClose(conn);
  }

  #cut(reason: CutReason): void {
    this.#opts.events?.cut?.(reason);
  }

  #sweep(): void {
    const now = Date.now();
    const l = this.limits;
    for (const p of this.#pipes.values()) p.check(now, l);
  }

  /** The internal listener's handler: one h2 stream. */
  #serve(req: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>): Promise<Response> | Response {
    const pipe = this.#pipes.get(info.remoteAddr.port);
    if (!pipe || info.remoteAddr.hostname !== "127.0.0.1") {
      return new Response("unknown connection\n", { status: 421 });
    }
    if (pipe.streams.size >= MAX_STREAMS_PER_CONNECTION) {
      return new Response("Too many streams on this connection\n", {
        status: 503,
        headers: { "retry-after": "1" },
      });
    }
    // The front's head limits, on the decoded fields (hyper's own cap comes first).
    let fields = 0;
    let bytes = req.method.length + req.url.length;
    for (const [k, v] of req.headers) {
      fields++;
      bytes += k.length + v.length + 4;
    }
    if (fields > this.limits.maxHeaders || bytes > this.limits.maxHeadBytes) {
      return new Response("Request Header Fields Too Large\n", { status: 431 });
    }
    const stream = new H2Stream(pipe, req, this.limits);
    pipe.streams.add(stream);
    const front = stream.request;
    const res = stream.responder;
    (async () => {
      try {
        await this.#opts.handler(front, res);
        if (!res.finished && !res.aborted) await res.end();
      } catch (e) {
        if (!(e instanceof WriteError) && !(e instanceof BodyError)) this.#opts.events?.error?.(e);
        if (res.headSent || res.aborted || e instanceof WriteError) res.abort();
        else {
          res.head(500, [["content-type", "text/plain"]], -1);
          await res.end(enc.encode("Internal Server Error\n")).catch(() => res.abort());
        }
      }
    })().finally(() => stream.handlerDone());
    return res.response;
  }
}

/** One h2 connection: the TLS socket piped to the loopback connection. */
class Pipe {
  readonly #tls: TlsByteConn;
  readonly #local: Deno.TcpConn;
  readonly port: number;
  readonly peer: Deno.NetAddr;
  /** Streams whose exchange is in progress. */
  readonly streams = new Set<H2Stream>();
  /** The last byte either way (ms). */
  last = Date.now();
  cutReason: CutReason | undefined;
  #closed = false;

  constructor(tls: TlsByteConn, local: Deno.TcpConn, readonly onCut: (r: CutReason) => void) {
    this.#tls = tls;
    this.#local = local;
    this.port = (local.localAddr as Deno.NetAddr).port;
    this.peer = tls.remoteAddr;
  }

  /** Copies both ways until either side ends or fails; then both are closed. */
  async run(): Promise<void> {
    const up = this.#copy(this.#tls, this.#local, true);
    const down = this.#copy(this.#local, this.#tls, false);
    await Promise.race([up, down]);
    // The caller's side ended first: let hyper answer what it has (it closes
    // then); the loopback side ending closes everything at once.
    await down;
    this.#close();
    await up;
  }

  async #copy(
    from: { read(p: Uint8Array): Promise<number | null> },
    to: { write(p: Uint8Array): Promise<number>; closeWrite?(): Promise<void> },
    upstream: boolean,
  ): Promise<void> {
    const buf = new Uint8Array(PIPE_READ_BYTES);
    try {
      for (;;) {
        const n = await from.read(buf);
        if (n === null) break;
        this.last = Date.now();
        let off = 0;
        while (off < n) off += await to.write(buf.subarray(off, n));
        this.last = Date.now();
      }
      if (upstream) await this.#local.closeWrite().catch(() => this.#close());
      else this.#close();
    } catch {
      this.#close();
    }
  }

  check(now: number, l: FrontLimits): void {
    if (this.#closed) return;
    if (this.streams.size === 0) {
      if (now - this.last >= l.idleTimeoutMs) this.cut("idle_timeout");
      return;
    }
    for (const s of this.streams) s.check(now, l);
  }

  cut(reason: CutReason): void {
    if (this.#closed) return;
    this.cutReason ??= reason;
    this.#close();
  }

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    safeClose(this.#local);
    safeClose(this.#tls);
  }
}

/** One request/response on an h2 connection. */
class H2Stream {
  readonly #pipe: Pipe;
  readonly request: H2Request;
  readonly responder: H2Responder;
  #handlerDone = false;

  constructor(pipe: Pipe, req: Request, limits: FrontLimits) {
    this.#pipe = pipe;
    const ac = new AbortController();
    this.request = new H2Request(req, pipe.peer, ac);
    this.responder = new H2Responder(req.method, () => this.#maybeDone(), ac, limits);
    // The caller reset the stream or the connection went: abort the exchange.
    req.signal.addEventListener("abort", () => {
      if (!this.responder.complete) {
        ac.abort();
        this.responder.callerGone();
      }
    }, { once: true });
  }

  handlerDone(): void {
    this.#handlerDone = true;
    this.#maybeDone();
  }

  #maybeDone(): void {
    if (this.#handlerDone && (this.responder.complete || this.responder.aborted)) {
      this.#pipe.streams.delete(this);
      this.#pipe.last = Date.now();
    }
  }

  check(now: number, l: FrontLimits): void {
    if (this.request.waitingSince && now - this.request.waitingSince >= l.bodyTimeoutMs) {
      this.#pipe.onCut("body_timeout");
      this.request.timeout();
    }
    const w = this.responder.waitingSince;
    if (w && now - w >= l.writeTimeoutMs) {
      this.#pipe.onCut("write_timeout");
      this.responder.timeout();
    }
  }
}

class H2Request implements FrontRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: HeaderList;
  readonly host: string;
  readonly scheme = "https" as const;
  readonly peer: Deno.NetAddr;
  readonly hasBody: boolean;
  readonly upgrade = null;
  readonly connection: ReadonlySet<string> = new Set();
  readonly signal: AbortSignal;
  /** When the pending body read started (0: none). */
  waitingSince = 0;
  readonly #req: Request;
  readonly #ac: AbortController;
  #reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  #done = false;

  constructor(req: Request, peer: Deno.NetAddr, ac: AbortController) {
    this.#req = req;
    this.#ac = ac;
    this.signal = ac.signal;
    this.peer = peer;
    this.method = req.method;
    const url = new URL(req.url);
    this.host = url.host;
    this.path = url.pathname + url.search;
    const headers: HeaderList = [["host", this.host]];
    let length = -1;
    for (const [k, v] of req.headers) {
      if (k === "host") continue;
      if (k === "content-length" && /^\d{1,15}$/.test(v)) length = Number(v);
      headers.push([k, v]);
    }
    this.headers = headers;
    this.hasBody = req.body !== null && (length > 0 || (length < 0 && !NO_BODY.has(req.method)));
    if (!this.hasBody) this.#done = true;
  }

  async readBody(): Promise<Uint8Array | null> {
    if (this.#done) return null;
    this.#reader ??= this.#req.body!.getReader();
    this.waitingSince = Date.now();
    try {
      for (;;) {
        const r = await this.#reader.read();
        if (this.#ac.signal.aborted && this.#timedOut) throw new BodyError("body timeout");
        if (r.done) {
          this.#done = true;
          return null;
        }
        if (r.value.length > 0) return r.value;
      }
    } catch (e) {
      this.#done = true;
      throw e instanceof BodyError ? e : new BodyError(`request body: ${e}`);
    } finally {
      this.waitingSince = 0;
    }
  }

  #timedOut = false;

  /** No body byte for the body timeout: the read fails, the exchange aborts. */
  timeout(): void {
    this.#timedOut = true;
    this.waitingSince = 0;
    this.#reader?.cancel(new BodyError("body timeout")).catch(() => {});
    this.#ac.abort();
  }
}

const NO_BODY = new Set(["GET", "HEAD", "OPTIONS", "DELETE", "TRACE"]);

interface Offer {
  chunk: Uint8Array;
  resolve(): void;
  reject(e: unknown): void;
}

/** Builds the `Response` Deno.serve sends, from the front's Responder calls. */
class H2Responder implements Responder {
  /** What the Deno.serve handler returns. */
  readonly response: Promise<Response>;
  #resolve!: (r: Response) => void;
  readonly #method: string;
  readonly #onDone: () => void;
  readonly #ac: AbortController;
  #status = 200;
  #headers: HeaderList = [];
  #length = -1;
  #written = 0;
  #headSent = false;
  finished = false;
  aborted = false;
  /** The caller got the whole response (or it was cut): the exchange is over. */
  complete = false;
  #controller: ReadableStreamDefaultController<Uint8Array> | undefined;
  #offer: Offer | undefined;
  #wake: (() => void) | undefined;
  /** When the pending write was offered (0: none). */
  waitingSince = 0;

  constructor(method: string, onDone: () => void, ac: AbortController, _limits: FrontLimits) {
    this.#method = method;
    this.#onDone = onDone;
    this.#ac = ac;
    this.response = new Promise((r) => this.#resolve = r);
  }

  get headSent(): boolean {
    return this.#headSent;
  }

  head(status: number, headers: HeaderList, length: number): void {
    if (this.#headSent) throw new Error("head already sent");
    this.#status = status;
    this.#headers = headers;
    this.#length = length;
  }

  #noBody(): boolean {
    const s = this.#status;
    return this.#method === "HEAD" || s < 200 || s === 204 || s === 205 || s === 304;
  }

  #buildHeaders(): Headers {
    const h = new Headers();
    for (const [k, v] of this.#headers) {
      if (DROPPED.has(k)) continue;
      try {
        h.append(k, v);
      } catch { /* an invalid field: dropped */ }
    }
    // HEAD / 304 keep the representation's length.
    if (this.#noBody() && this.#status !== 204 && this.#length >= 0) {
      h.set("content-length", String(this.#length));
    }
    return h;
  }

  /** Hands the head (and a whole body, or the stream) to Deno.serve. */
  #send(body: Uint8Array | ReadableStream<Uint8Array> | null): void {
    this.#headSent = true;
    let status = this.#status;
    if (status < 200 || status > 599) status = 502;
    let r: Response;
    try {
      r = new Response(this.#noBody() ? null : body as BodyInit, {
        status,
        headers: this.#buildHeaders(),
      });
    } catch {
      r = new Response("Bad Gateway\n", { status: 502 });
    }
    this.#resolve(r);
  }

  write(chunk: Uint8Array): Promise<void> {
    if (this.finished || this.aborted) {
      return Promise.reject(new WriteError("response already ended"));
    }
    if (this.#length >= 0) {
      this.#written += chunk.length;
      if (this.#written > this.#length) {
        return Promise.reject(new WriteError("response body longer than its Content-Length"));
      }
    }
    if (!this.#headSent) {
      if (this.#noBody()) {
        this.#send(null);
        return Promise.resolve();
      }
      this.#send(
        new ReadableStream<Uint8Array>({
          start: (c) => {
            this.#controller = c;
          },
          pull: (c) => this.#pull(c),
          cancel: () => this.callerGone(),
        }, { highWaterMark: 0 }),
      );
    }
    if (!this.#controller || chunk.length === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.#offer = { chunk, resolve, reject };
      this.waitingSince = Date.now();
      this.#wakeUp();
    });
  }

  #wakeUp(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  async #pull(c: ReadableStreamDefaultController<Uint8Array>): Promise<void> {
    while (!this.#offer && !this.finished && !this.aborted) {
      await new Promise<void>((r) => this.#wake = r);
    }
    if (this.aborted) return;
    const o = this.#offer;
    if (o) {
      this.#offer = undefined;
      this.waitingSince = 0;
      c.enqueue(o.chunk);
      o.resolve();
      return;
    }
    // finished, nothing left
    c.close();
    this.#complete();
  }

  async end(chunk?: Uint8Array): Promise<void> {
    if (this.finished || this.aborted) return;
    if (!this.#headSent) {
      const body = chunk ?? new Uint8Array(0);
      if (this.#length >= 0 && body.length !== this.#length && !this.#noBody()) {
        this.abort();
        throw new WriteError("response body length differs from its Content-Length");
      }
      this.finished = true;
      this.#send(body);
      this.#complete();
      return;
    }
    if (chunk && chunk.length > 0) await this.write(chunk);
    if (this.#length >= 0 && !this.#noBody() && this.#written < this.#length) {
      this.abort();
      throw new WriteError("response body shorter than its Content-Length");
    }
    this.finished = true;
    if (!this.#controller) return this.#complete();
    this.#wakeUp();
  }

  upgrade(): Promise<UpgradedConn> {
    return Promise.reject(new Error("no upgrade over HTTP/2"));
  }

  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    this.#fail(new WriteError("response aborted"));
  }

  /** The caller went away (stream reset, connection gone, body cancelled). */
  callerGone(): void {
    if (this.complete) return;
    this.#ac.abort();
    if (this.aborted) return;
    this.aborted = true;
    this.#fail(new WriteError("caller gone"));
  }

  /** A write the caller did not take within the write timeout. */
  timeout(): void {
    this.waitingSince = 0;
    this.#ac.abort();
    this.abort();
  }

  #fail(e: WriteError): void {
    const o = this.#offer;
    this.#offer = undefined;
    this.waitingSince = 0;
    o?.reject(e);
    if (!this.#headSent) {
      // Nothing sent yet: the stream is reset (an erroring body, after a head).
      this.#send(new ReadableStream({ start: (c) => c.error(e) }));
    } else {
      try {
        this.#controller?.error(e);
      } catch { /* already closed */ }
    }
    this.#wakeUp();
    this.#complete();
  }

  #complete(): void {
    if (this.complete) return;
    this.complete = true;
    this.#onDone();
  }
}

function safeClose(c: { close(): void }): void {
  try {
    c.close();
  } catch { /* already closed */ }
}
