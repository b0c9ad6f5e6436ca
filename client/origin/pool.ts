/**
 * The HTTP/1.1 client for the origin hop: kept-alive connections to the one local
 * service, one request at a time on each (no pipelining).
 *
 * Why not node:http: in Deno 2.9 it costs ~34 µs of CPU per request on a kept-alive
 * connection (agent bookkeeping, Node stream and event emulation, a socket write op
 * per head), half of all the client spends on a small request; this client costs
 * ~10. `fetch` cannot be used at all (it decompresses bodies it should pass through
 * and adds headers). The part that decides where a response ends is the strict
 * parser in `parser.ts`, which refuses any framing it cannot be sure of.
 *
 * A connection goes back to the pool only when its exchange ended cleanly: the
 * whole request sent, the response read to its framed end, nothing extra received,
 * HTTP/1.1 without `Connection: close`. Idle connections keep a read waiting, so
 * one the origin closes leaves the pool at once; they are also closed after
 * `idleTimeoutMs`. A request that finds its reused connection closed before any
 * byte of answer is sent again on a new connection when that is safe (an
 * idempotent method and a body still in hand).
 */
import { connectionOptions, type HeaderList } from "../../shared/protocol/mod.ts";
import { type ResponseHead, ResponseParser } from "./parser.ts";
import { isToken } from "../../shared/protocol/field_text.ts";
import { type Clock, realClock } from "../../shared/clock.ts";
import { transientBytes } from "../../shared/bytes.ts";

export type { ResponseHead } from "./parser.ts";

/** Where a request body comes from when it is not all in hand. */
export interface BodySource {
  /** The next piece, or null at the end. */
  read(): Promise<Uint8Array | null>;
}

export interface OriginRequest {
  method: string;
  /** Origin-form request target (path and query). */
  path: string;
  /**
   * Header lines to send as they are (names and values already checked, hop-by-hop
   * removed, Host included), without Content-Length or Transfer-Encoding: framing
   * is the client's. Built by `requestHeadLines`.
   */
  headerLines: string;
  /** The whole body (possibly empty), or a source and its declared length (-1: chunked). */
  body: Uint8Array | { source: BodySource; length: number };
}

/** Receives the response. Views are valid until the promise `body` returns settles. */
export interface ResponseSink {
  head(head: ResponseHead): void;
  body(view: Uint8Array): Promise<void> | void;
  end(): void;
}

/** Why an exchange failed; `code` is a Node-style errno where there is one. */
export class OriginError extends Error {
  override name = "OriginError";
  readonly code: string;
  /** The response head had already been handed to the sink. */
  readonly responded: boolean;
  constructor(code: string, message: string, responded: boolean) {
    super(message);
    this.code = code;
    this.responded = responded;
  }
}

export interface OriginPoolOptions {
  /** Give up connecting after this long (code LOCAL_CONNECT_TIMEOUT). */
  connectTimeoutMs?: number;
  /** Idle connections kept at most. */
  maxIdle?: number;
  /** Close connections idle this long (origins often close at 5 s). */
  idleTimeoutMs?: number;
  /** Largest response head (and chunk line, trailer section). */
  maxHeadBytes?: number;
  /** For tests: certificates to trust for an https target. */
  caCerts?: string[];
  /** Connect timeouts and idle expiry run on this. Default realClock. */
  clock?: Clock;
}

/** A request in flight: wait for `done`, or `abort()` it (closes its connection). */
export interface Exchange {
  readonly done: Promise<void>;
  abort(): void;
}

/** How long to wait for a TCP (and TLS) connection to the local service. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"]);
const READ_BUFFER_BYTES = 64 * 1024;
const encoder = new TextEncoder();

export class OriginPool {
  readonly #hostname: string;
  readonly #port: number;
  readonly #tls: boolean;
  readonly #connectTimeoutMs: number;
  readonly #maxIdle: number;
  readonly #idleTimeoutMs: number;
  readonly #maxHeadBytes: number | undefined;
  readonly #caCerts: string[] | undefined;
  readonly #idle: OriginConnection[] = [];
  readonly #all = new Set<OriginConnection>();
  #opened = 0;
  #sweeper: unknown;
  readonly #clock: Clock;
  #closed = false;

  constructor(target: URL, o: OriginPoolOptions = {}) {
    this.#tls = target.protocol === "https:";
    this.#hostname = target.hostname.replace(/^\[|\]$/g, "");
    this.#port = Number(target.port || (this.#tls ? 443 : 80));
    this.#connectTimeoutMs = o.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    this.#maxIdle = o.maxIdle ?? 64;
    this.#idleTimeoutMs = o.idleTimeoutMs ?? 4_000;
    this.#maxHeadBytes = o.maxHeadBytes;
    this.#caCerts = o.caCerts;
    this.#clock = o.clock ?? realClock;
  }

  /** Connections open now (idle or busy). */
  get size(): number {
    return this.#all.size;
  }

  /** Connections opened so far (a number rising with requests: the origin does not keep them alive). */
  get opened(): number {
    return this.#opened;
  }

  /** Idle connections ready for reuse. */
  get idleCount(): number {
    return this.#idle.length;
  }

  /** Sends `req` and feeds the answer to `sink`. `done` rejects with an OriginError. */
  request(req: OriginRequest, sink: ResponseSink): Exchange {
    let current: OriginConnection | null = null;
    let connecting: AbortController | null = null;
    let aborted = false;
    const run = async () => {
      const retryable = req.body instanceof Uint8Array && IDEMPOTENT.has(req.method);
      for (let attempt = 0;; attempt++) {
        if (aborted) throw new OriginError("ABORTED", "The request was abandoned", false);
        const conn = attempt === 0 ? this.#takeIdle() : null;
        if (conn !== null) current = conn;
        else {
          connecting = new AbortController();
          current = await this.#connect(connecting.signal)
            .finally(() => void (connecting = null));
        }
        if (aborted) {
          current.close();
          throw new OriginError("ABORTED", "The request was abandoned", false);
        }
        try {
          await current.exchange(req, sink);
          return;
        } catch (e) {
          // A kept-alive connection the origin closed just as we used it: the
          // request never reached the service, so send it again where that is safe.
          const stale = conn !== null && e instanceof OriginError && e.code === "STALE";
          if (stale && retryable && attempt === 0) continue;
          if (e instanceof OriginError && e.code === "STALE") {
            throw new OriginError(
              "ECONNRESET",
              "The local service closed the connection without a response",
              false,
            );
          }
          throw e;
        }
      }
    };
    return {
      done: run(),
      abort() {
        aborted = true;
        connecting?.abort();
        // Only while this request is the connection's: once it ended, the connection
        // may be idle in the pool or carrying another request.
        current?.cancel(sink);
      },
    };
  }

  /** Closes every connection; requests in flight fail. */
  close(): void {
    this.#closed = true;
    if (this.#sweeper !== undefined) this.#clock.clearTimer(this.#sweeper);
    this.#sweeper = undefined;
    for (const c of this.#all) c.close();
    this.#idle.length = 0;
  }

  #takeIdle(): OriginConnection | null {
    const now = this.#clock.now();
    for (;;) {
      const c = this.#idle.pop(); // most recently used first: the warmest
      if (c === undefined) return null;
      if (c.usable && now - c.idleSince < this.#idleTimeoutMs) return c;
      c.close();
    }
  }

  async #connect(cancel: AbortSignal): Promise<OriginConnection> {
    const conn = await this.connectRaw(cancel);
    const c = new OriginConnection(conn, this, this.#maxHeadBytes);
    this.#all.add(c);
    this.#opened++;
    return c;
  }

  /**
   * A new connection to the local service that the pool does not keep (an upgrade
   * takes it over): TCP with no delay, or TLS already handshaken, within the connect
   * timeout. Rejects with an OriginError (ABORTED when `cancel` fired).
   */
  async connectRaw(cancel?: AbortSignal): Promise<Deno.Conn> {
    if (this.#closed) throw new OriginError("ABORTED", "The client is stopping", false);
    const ac = new AbortController();
    const onCancel = () => ac.abort();
    if (cancel?.aborted) throw new OriginError("ABORTED", "The request was abandoned", false);
    cancel?.addEventListener("abort", onCancel, { once: true });
    let handshaking: Deno.TlsConn | undefined;
    const timer = this.#clock.setTimer(() => {
      ac.abort();
      handshaking?.close(); // the signal covers the TCP connect only
    }, this.#connectTimeoutMs);
    let conn: Deno.Conn;
    try {
      const opts = { hostname: this.#hostname, port: this.#port, signal: ac.signal };
      if (this.#tls) {
        const tls = await Deno.connectTls(
          this.#caCerts ? { ...opts, caCerts: this.#caCerts } : opts,
        );
        conn = handshaking = tls;
        // Handshake now, so a certificate problem is a connect error, not a cut response.
        await tls.handshake().catch((e) => {
          tls.close();
          throw e;
        });
      } else conn = await Deno.connect(opts);
    } catch (e) {
      if (cancel?.aborted) throw new OriginError("ABORTED", "The request was abandoned", false);
      if (ac.signal.aborted) {
        throw new OriginError(
          "LOCAL_CONNECT_TIMEOUT",
          "The local service did not accept the connection",
          false,
        );
      }
      throw connectError(e);
    } finally {
      this.#clock.clearTimer(timer);
      cancel?.removeEventListener("abort", onCancel);
    }
    if (!this.#tls) (conn as Deno.TcpConn).setNoDelay(true);
    return conn;
  }

  /** Called by a connection whose exchange ended cleanly. */
  release(c: OriginConnection): void {
    if (this.#closed || this.#idle.length >= this.#maxIdle) return c.close();
    c.idleSince = this.#clock.now();
    this.#idle.push(c);
    this.#sweeper ??= this.#armSweep();
  }

  /** Called by a connection when it closes. */
  forget(c: OriginConnection): void {
    this.#all.delete(c);
    const i = this.#idle.indexOf(c);
    if (i >= 0) this.#idle.splice(i, 1);
  }

  #sweep(): void {
    const now = this.#clock.now();
    for (const c of [...this.#idle]) {
      if (now - c.idleSince >= this.#idleTimeoutMs) c.close();
    }
    this.#sweeper = this.#idle.length === 0 ? undefined : this.#armSweep();
  }

  /** The next sweep; it never keeps the process alive by itself. */
  #armSweep(): unknown {
    const t = this.#clock.setTimer(() => this.#sweep(), Math.max(250, this.#idleTimeoutMs / 2));
    if (this.#clock === realClock) Deno.unrefTimer(t as number);
    return t;
  }
}

function connectError(e: unknown): OriginError {
  const err = e as { code?: unknown; message?: unknown };
  let code = typeof err?.code === "string" ? err.code : "";
  const message = String(err?.message ?? e);
  // Deno's failed lookup has no code or class of its own: its text is all there is.
  if (!code && /lookup address|Name or service not known|nodename nor servname/i.test(message)) {
    code = "ENOTFOUND";
  }
  if (!code && e instanceof Deno.errors.ConnectionRefused) code = "ECONNREFUSED";
  // Deno reports every TLS failure (untrusted certificate, wrong name, not TLS) as InvalidData.
  if (!code && e instanceof Deno.errors.InvalidData) code = "ETLS";
  return new OriginError(code || "ECONNECT", message, false);
}

/** The state of one exchange on a connection. */
interface Current {
  sink: ResponseSink;
  resolve: () => void;
  reject: (e: OriginError) => void;
  /** This connection carried an exchange before. */
  reused: boolean;
  responded: boolean;
  /** The whole request (head and body) has been written. */
  sent: boolean;
  /** Sink calls waiting, in order; the read buffer is theirs until they settle. */
  wait: Promise<void> | null;
  /** A sink call failed (the tunnel stream is gone). */
  sinkFailed: boolean;
}

const STALE = "STALE";
const NO_RESPONSE = "The local service closed the connection without a response";

export class OriginConnection {
  readonly #conn: Deno.Conn;
  readonly #pool: OriginPool;
  readonly #parser: ResponseParser;
  readonly #buf = new Uint8Array(READ_BUFFER_BYTES);
  #cur: Current | null = null;
  #closed = false;
  #used = false;
  /** Bytes came after the end of a response. */
  #extra = false;
  idleSince = 0;

  constructor(conn: Deno.Conn, pool: OriginPool, maxHeadBytes?: number) {
    this.#conn = conn;
    this.#pool = pool;
    this.#parser = new ResponseParser({
      head: (h) => {
        const cur = this.#cur!;
        cur.responded = true;
        this.#call(cur, () => cur.sink.head(h));
      },
      body: (view) => {
        const cur = this.#cur!;
        this.#call(cur, () => cur.sink.body(view));
      },
      end: () => {},
    }, maxHeadBytes);
    this.#readLoop();
  }

  /** Runs a sink call after those still waiting. */
  #call(cur: Current, fn: () => Promise<void> | void): void {
    const guarded = () => {
      try {
        const p = fn();
        return p ? p.catch(() => void (cur.sinkFailed = true)) : undefined;
      } catch {
        cur.sinkFailed = true;
      }
    };
    if (cur.wait === null) {
      const p = guarded();
      if (p) cur.wait = p;
    } else {
      cur.wait = cur.wait.then(() => cur.sinkFailed ? undefined : guarded());
    }
  }

  /** Closes the connection if it is still carrying the exchange that feeds `sink`. */
  cancel(sink: ResponseSink): void {
    if (this.#cur?.sink === sink) this.close();
  }

  /** Open, not busy, and not seen closing. */
  get usable(): boolean {
    return !this.#closed && this.#cur === null;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch { /* already closed */ }
    this.#pool.forget(this);
    this.#fail("ABORTED", "The connection to the local service closed");
  }

  /** Runs one request/response; resolves after the sink's `end`. */
  exchange(req: OriginRequest, sink: ResponseSink): Promise<void> {
    const reused = this.#used;
    this.#used = true;
    return new Promise<void>((resolve, reject) => {
      this.#cur = {
        sink,
        resolve,
        reject,
        reused,
        responded: false,
        sent: false,
        wait: null,
        sinkFailed: false,
      };
      this.#parser.start(req.method);
      this.#send(req);
    });
  }

  async #send(req: OriginRequest): Promise<void> {
    const cur = this.#cur!;
    const body = req.body;
    const line = `${req.method} ${req.path} HTTP/1.1\r\n${req.headerLines}`;
    try {
      if (body instanceof Uint8Array) {
        const framing = body.length > 0 || METHODS_WITH_BODY.has(req.method)
          ? `content-length: ${body.length}\r\n`
          : "";
        await this.#writeAll(encodeLatin1(`${line}${framing}\r\n`, body));
      } else {
        const { source, length } = body;
        const framing = length >= 0
          ? `content-length: ${length}\r\n`
          : "transfer-encoding: chunked\r\n";
        await this.#writeAll(encodeLatin1(`${line}${framing}\r\n`));
        let sent = 0;
        for (;;) {
          let piece: Uint8Array | null;
          try {
            piece = await source.read();
          } catch {
            throw new BodyError();
          }
          if (this.#cur !== cur) return; // answered (and released or closed) meanwhile
          if (piece === null) break;
          if (piece.length === 0) continue;
          sent += piece.length;
          if (length >= 0 && sent > length) throw new BodyError();
          await this.#writeAll(length >= 0 ? piece : chunkOf(piece));
        }
        if (length >= 0 && sent !== length) throw new BodyError();
        if (length < 0) await this.#writeAll(LAST_CHUNK);
      }
      if (this.#cur !== cur) return;
      cur.sent = true;
      this.#maybeDone();
    } catch (e) {
      if (this.#cur !== cur) return;
      if (e instanceof BodyError) {
        this.#fail("BODY_FAILED", "The request body did not arrive whole");
      } else if (cur.responded) {
        // The origin stopped reading but is answering: its answer decides.
        return;
      } else if (cur.reused && !this.#parser.started) {
        this.#fail(STALE, NO_RESPONSE);
      } else {
        this.#fail(errno(e, "EPIPE"), NO_RESPONSE);
      }
      this.close();
    }
  }

  async #writeAll(bytes: Uint8Array): Promise<void> {
    let off = 0;
    while (off < bytes.length) {
      off += await this.#conn.write(off === 0 ? bytes : bytes.subarray(off));
    }
  }

  async #readLoop(): Promise<void> {
    try {
      for (;;) {
        const n = await this.#conn.read(this.#buf);
        if (n === null) return await this.#onEof();
        const cur = this.#cur;
        if (cur === null) return this.close(); // an origin must not send unasked
        this.#onBytes(this.#buf.subarray(0, n));
        if (cur.wait !== null) {
          await cur.wait;
          cur.wait = null;
        }
        if (this.#closed) return;
        if (this.#cur !== cur) continue; // finished meanwhile: keep reading for the next one
        if (cur.sinkFailed) {
          this.#fail("SINK_FAILED", "The response could not be passed on");
          return this.close();
        }
        this.#maybeDone();
      }
    } catch (e) {
      if (this.#closed) return;
      const cur = this.#cur;
      if (cur !== null && cur.reused && cur.sent && !this.#parser.started) {
        this.#fail(STALE, NO_RESPONSE); // reset before any answer on a kept-alive connection
      } else {
        this.#fail(errno(e, "ECONNRESET"), cur?.responded ? ENDED_EARLY : NO_RESPONSE);
      }
      this.close();
    }
  }

  #onBytes(bytes: Uint8Array): void {
    try {
      const used = this.#parser.feed(bytes);
      if (used < bytes.length) this.#extra = true;
    } catch (e) {
      this.#fail(
        "BAD_RESPONSE",
        `The local service sent an invalid response: ${(e as Error).message}`,
      );
      this.close();
    }
  }

  async #onEof(): Promise<void> {
    const cur = this.#cur;
    if (cur === null) return this.close();
    if (cur.reused && !this.#parser.started) {
      // Closed by the origin (its keep-alive timeout) just as we sent on it.
      this.#fail(STALE, NO_RESPONSE);
      return this.close();
    }
    try {
      this.#parser.eof();
    } catch {
      this.#fail("ECONNRESET", cur.responded ? ENDED_EARLY : NO_RESPONSE);
      return this.close();
    }
    if (cur.wait !== null) await cur.wait;
    cur.wait = null;
    if (cur.sinkFailed) this.#fail("SINK_FAILED", "The response could not be passed on");
    // A body that ran until the close is complete.
    else this.#finish(cur, false);
    this.close();
  }

  /** Ends the exchange once the response is read, its sink calls are done and the request sent. */
  #maybeDone(): void {
    const cur = this.#cur;
    if (cur === null || !this.#parser.complete || cur.wait !== null) return;
    // Answered before the whole request was written (the origin may never read the
    // rest): the connection is not at a request boundary, so it is closed.
    this.#finish(cur, cur.sent && this.#parser.reusable && !this.#extra);
  }

  #finish(cur: Current, reuse: boolean): void {
    if (this.#cur !== cur) return;
    this.#cur = null;
    try {
      cur.sink.end();
    } catch {
      // The sink's own failure: the response was read, the exchange is over.
    }
    cur.resolve();
    if (reuse && !this.#closed) this.#pool.release(this);
    else this.close();
  }

  #fail(code: string, message: string): void {
    const cur = this.#cur;
    if (cur === null) return;
    this.#cur = null;
    cur.reject(new OriginError(code, message, cur.responded));
  }
}

const ENDED_EARLY = "local response ended early";

/** A request body that failed or did not match its declared length. */
class BodyError extends Error {}

function errno(e: unknown, fallback: string): string {
  const code = (e as { code?: unknown })?.code;
  return typeof code === "string" && code !== "" ? code : fallback;
}

const METHODS_WITH_BODY = new Set(["POST", "PUT", "PATCH"]);
const LAST_CHUNK = encoder.encode("0\r\n\r\n");

function chunkOf(piece: Uint8Array): Uint8Array {
  const size = encoder.encode(`${piece.length.toString(16)}\r\n`);
  const out = new Uint8Array(size.length + piece.length + 2);
  out.set(size, 0);
  out.set(piece, size.length);
  out[out.length - 2] = 0x0d;
  out[out.length - 1] = 0x0a;
  return out;
}

/** `text` as Latin-1 bytes (callers pass ByteStrings), then `tail` if given. */
export function encodeLatin1(text: string, tail?: Uint8Array): Uint8Array {
  const n = text.length;
  // Written to the origin's socket and then dropped: from the shared slab.
  const out = transientBytes(n + (tail?.length ?? 0));
  // ASCII (the usual case) encodes the same in UTF-8, natively. Anything wider
  // takes more bytes than characters there: then go byte by byte.
  const { read } = encoder.encodeInto(text, out.subarray(0, n));
  if (read !== n) { for (let i = 0; i < n; i++) out[i] = text.charCodeAt(i); }
  if (tail) out.set(tail, n);
  return out;
}

const BAD_VALUE = /[^\t\x20-\x7e\x80-\xff]/;
const BAD_TARGET = /[^\x21-\x7e\x80-\xff]/;

/** Checks a method and request target; returns an error message, or null when fine. */
export function checkRequestLine(method: string, path: string): string | null {
  if (!isToken(method)) return "Invalid method";
  if (path.length === 0 || BAD_TARGET.test(path)) return "Invalid request target";
  return null;
}

/**
 * Header lines for the origin from the tunnel's header list: hop-by-hop headers and
 * those named by Connection dropped, Content-Length and Transfer-Encoding left to
 * the client's framing, one Host (the first), Cookie lines joined (RFC 9113
 * §8.2.3). Headers with invalid names or values are dropped, never sent.
 * Returns the lines and the Content-Length the caller declared (-1: none or invalid).
 */
export function requestHeadLines(
  headers: HeaderList,
  hopByHop: ReadonlySet<string>,
  skip?: (name: string) => boolean,
): { lines: string; contentLength: number } {
  let connection: Set<string> | undefined;
  for (const [k, v] of headers) {
    if (k.length === 10 && k.toLowerCase() === "connection") {
      connection = connectionOptions(v, connection);
    }
  }
  let lines = "";
  let host = false;
  let cookie: string | null = null;
  let contentLength = -1;
  for (const [k, v] of headers) {
    const name = k.toLowerCase();
    if (hopByHop.has(name) || connection?.has(name) || skip?.(name)) continue;
    if (!isToken(name) || BAD_VALUE.test(v)) continue;
    if (name === "content-length") {
      contentLength = /^\d{1,15}$/.test(v) ? Number(v) : -1;
      continue;
    }
    if (name === "transfer-encoding") continue;
    if (name === "host") {
      if (host) continue; // a second Host is an attack; keep the first
      host = true;
    } else if (name === "cookie") {
      cookie = cookie === null ? v : `${cookie}; ${v}`;
      continue;
    }
    lines += `${name}: ${v}\r\n`;
  }
  if (cookie !== null) lines += `cookie: ${cookie}\r\n`;
  return { lines, contentLength };
}
