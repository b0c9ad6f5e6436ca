/**
 * The public HTTPS acceptor: TCP accept, our own bounded ClientHello read, the
 * certificate looked up by SNI, then node:tls (rustls inside Deno) for the real
 * handshake on the same socket. It yields byte connections for the HTTP/1.1 front.
 *
 *   Deno.listen ─► accept ─► read ClientHello (≤ 16 KiB + record headers, any
 *   (EMFILE: back off)       number of TCP segments) ─► parse SNI ─► lookup(name)
 *                                     │ bad → bad_client_hello      │ none → no_certificate
 *                                     ▼                             ▼
 *         the socket's fd moves to a node TCP handle ─► tls.TLSSocket(isServer, the
 *         certificate's SecureContext, bytes already read put back) ─► "secure"
 *                                                                     ▼
 *                                                              TlsByteConn → accept()
 *   one deadline (handshakeTimeoutMs, 10 s) over all of it: at the deadline the
 *   socket is closed and both its descriptors released (reason: timeout).
 *   With `proxyProtocol`, a trusted peer's PROXY header is read before the
 *   ClientHello, under the same deadline (bad or missing → bad_proxy_header).
 *
 * Why this way (Deno 2.9.6, 2 shared cores, measured):
 * - `Deno.listenTls` with the per-SNI resolver (the previous listener) fails a
 *   ClientHello that comes in more than one TCP segment. Through a relay that
 *   splits it: 40/40 whole, 21/40 at 2 pieces 0.2 ms apart, 26/40 at 1 ms, 0/40
 *   at 3 pieces 10 ms apart and at 5 pieces 50 ms apart; the server side fails
 *   "WouldBlock". With a static certificate all of these pass (40/40 each), so
 *   the bug is in the resolver path, which is the only way to pick a
 *   certificate per name there.
 * - A `Deno.TlsConn` whose handshake is pending cannot be timed out: after
 *   `handshake()` lost a race with a 300 ms timer and `close()` was called, the
 *   server's 21 descriptors (21 silent clients) stayed open until the clients
 *   left; the pending handshake op keeps the socket.
 * - `node:tls.createServer` (`SNICallback`, `handshakeTimeout`) handles split
 *   ClientHellos (200/200) and times out (with `destroy()` in tlsClientError),
 *   but its listener, like every node:net server in Deno 2.9.6, stops accepting
 *   for good after one EMFILE, silently (no 'error'; under a 60-fd limit it took
 *   36 connections, freed them by timeout, and never accepted again). `Deno.listen`
 *   reports EMFILE on accept and recovers, so it accepts here.
 * - A loopback hop into `Deno.listenTls` (our pre-read ClientHello in one write)
 *   works, but costs ~1.45x CPU per handshake, ~2.5x per byte received from the
 *   server and ~2.1x per byte sent to it, and 3 fds per connection.
 * - node:tls over a JS Duplex on the Deno.Conn works: ~1.6–2x per handshake,
 *   3–4.5x per byte down.
 * - Moving the socket to a node TCP handle (`openFromRid`, which dups the fd)
 *   keeps node's native TLS path. bench/tls_accept_bench.ts, same run, server
 *   CPU against `Deno.listenTls` + resolver: per handshake 848 vs 487 µs (1.74x;
 *   1.4–2x per round), per MiB downloaded 649 vs 502 µs (1.29x), per MiB
 *   uploaded 1875 vs 766 µs (2.45x; 2.2–2.5x per round: node's TLS record
 *   decryption, `readBuffer`, is 68 % of that profile, our JS ~5 %).
 * Each connection holds two fds (the Deno resource's and node's dup) until it
 * closes; the Deno resource is closed last (its close shuts the socket's write
 * side, so it must outlive node's use).
 *
 * HTTP/2: Deno's engine (`serveHttpOnConnection`) serves h2 on a `Deno.TlsConn`
 * (curl --http2: HTTP/2 200) but needs a Deno resource id, which a node TLS
 * socket has not ("expected i32"); node:http2 handed our TLS socket hangs (curl
 * timed out). So ALPN offers http/1.1 by default; the server passes
 * `["h2", "http/1.1"]` and hands h2 connections to `h2.ts` (a loopback hop into
 * Deno's engine). Each connection reports what was agreed.
 *
 * Internals used (checked by `tlsAcceptorSupported()`): `process.binding("tcp_wrap")`
 * (node's TCP handle, with Deno's `openFromRid`) and Deno's internal resource-id
 * symbol of a `Deno.Conn`.
 */
import { Buffer } from "node:buffer";
import { Socket } from "node:net";
import process from "node:process";
import { createSecureContext, type SecureContext, TLSSocket } from "node:tls";
import { MAX_CLIENT_HELLO_READ, parseClientHello } from "./tls_client_hello.ts";
import { ProxyHeaderError, ProxyHeaderParser } from "./proxy_protocol.ts";
import { noDelay, resetBeforeAccept } from "./http1.ts";

/** Certificate chain and private key, PEM. */
export interface CertifiedKey {
  /** Certificate chain, PEM, leaf first. */
  cert: string;
  /** Private key, PEM. */
  key: string;
}

/** Finds the certificate for a lowercase server name; undefined fails the handshake. */
export type CertificateLookup = (serverName: string) => Promise<CertifiedKey | undefined>;

/** Why a handshake failed (the metrics label). */
export type TlsFailureReason =
  | "timeout"
  | "no_certificate"
  | "bad_client_hello"
  | "bad_proxy_header"
  | "too_many_handshakes"
  | "too_many_handshakes_per_address"
  | "other";

/** A TLS connection after its handshake: what the HTTP/1.1 front reads and writes. */
export interface TlsByteConn {
  read(p: Uint8Array): Promise<number | null>;
  /** Resolves once the bytes are handed to the socket (p may be reused then). */
  write(p: Uint8Array): Promise<number>;
  /** Sends close_notify and FIN; reads go on. */
  closeWrite(): Promise<void>;
  close(): void;
  readonly remoteAddr: Deno.NetAddr;
  readonly localAddr: Deno.NetAddr;
  /** The agreed ALPN protocol, or null if the client offered none. */
  readonly alpn: string | null;
  /** Lowercase SNI without trailing dot (the certificate's lookup key). */
  readonly serverName: string;
}

export interface TlsAcceptorOptions {
  hostname: string;
  port: number;
  lookup: CertificateLookup;
  /** From accept to a finished handshake (ClientHello, lookup, TLS). Default 10 s. */
  handshakeTimeoutMs?: number;
  /** ALPN protocols, in preference order. Default ["http/1.1"] (see the header on h2). */
  alpn?: string[];
  /** Handshakes in progress at once; beyond, new connections are closed. Default 4096. */
  maxHandshakes?: number;
  /**
   * Handshakes in progress at once from one TCP peer address (not counted for peers
   * `proxyProtocol` names: a load balancer carries everyone); beyond, closed. Default 256,
   * so one address cannot take every slot of `maxHandshakes`.
   */
  maxHandshakesPerAddress?: number;
  /** Every failed handshake, by reason; `detail` is for debug logs. */
  onFailure?(reason: TlsFailureReason, detail: string): void;
  /** An accept that failed (EMFILE, ENFILE…); the acceptor backs off 100 ms. */
  onAcceptError?(error: unknown): void;
  /**
   * TCP peers (by address) that must send a PROXY protocol header (v1 or v2,
   * `proxy_protocol.ts`) before the ClientHello, within the handshake timeout:
   * the address it names becomes `remoteAddr`. No valid header: `bad_proxy_header`.
   */
  proxyProtocol?: (peer: string) => boolean;
}

export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
const DEFAULT_MAX_HANDSHAKES = 4096;
const DEFAULT_MAX_HANDSHAKES_PER_ADDRESS = 256;
/** Finished handshakes waiting for `accept()`; beyond, the acceptor stops accepting. */
const MAX_READY = 256;
const ACCEPT_BACKOFF_MS = 100;
const FIRST_READ_BYTES = 4096;
/** Distinct names whose SecureContext is kept. */
const MAX_CONTEXTS = 4096;
/**
 * Plaintext buffered per connection before the socket is paused. node delivers
 * 64 KiB chunks, so a 64 KiB mark would stop and restart reading on every chunk.
 */
const READ_HIGH_WATER = 256 * 1024;

// TLS alerts (RFC 8446 6): record type 21, TLS 1.2 record version, fatal.
const ALERT_UNRECOGNIZED_NAME = new Uint8Array([21, 3, 3, 0, 2, 2, 112]);
const ALERT_DECODE_ERROR = new Uint8Array([21, 3, 3, 0, 2, 2, 50]);

interface TcpHandle {
  openFromRid(rid: number): number;
}
interface Internals {
  TCP: new (type: number) => TcpHandle;
  socketType: number;
  ridSymbol: symbol;
}

let internals: Internals | null | undefined;

function getInternals(): Internals | null {
  if (internals !== undefined) return internals;
  internals = null;
  try {
    const binding = (process as unknown as { binding(name: string): unknown }).binding(
      "tcp_wrap",
    ) as { TCP?: Internals["TCP"]; constants?: { SOCKET?: number } };
    const d = Deno as unknown as Record<symbol, { core?: { internalRidSymbol?: unknown } }> & {
      internal?: symbol;
    };
    const ridSymbol = d.internal ? d[d.internal]?.core?.internalRidSymbol : undefined;
    const TCP = binding.TCP;
    if (
      typeof TCP === "function" && typeof TCP.prototype.openFromRid === "function" &&
      typeof binding.constants?.SOCKET === "number" && typeof ridSymbol === "symbol"
    ) {
      internals = { TCP, socketType: binding.constants.SOCKET, ridSymbol };
    }
  } catch { /* not this Deno */ }
  return internals;
}

/** Whether this Deno has what `TlsAcceptor` needs (true on 2.9.6). */
export function tlsAcceptorSupported(): boolean {
  return getInternals() !== null;
}

class HandshakeFailure extends Error {
  constructor(readonly reason: TlsFailureReason, detail: string) {
    super(detail);
  }
}

/** One connection between accept and a finished handshake. */
interface Pending {
  conn: Deno.Conn;
  tls?: TLSSocket;
  done: boolean;
  abort(reason: HandshakeFailure): void;
}

/** Accepts TLS connections with a certificate per SNI name. */
export class TlsAcceptor {
  readonly #opts: TlsAcceptorOptions;
  readonly #internals: Internals;
  readonly #listener: Deno.Listener;
  readonly #timeoutMs: number;
  readonly #alpn: string[];
  readonly #maxHandshakes: number;
  readonly #pending = new Set<Pending>();
  readonly #maxPerAddress: number;
  /** Handshakes in progress by TCP peer address (peers that send a PROXY header excepted). */
  readonly #perAddress = new Map<string, number>();
  readonly #ready: TlsConnection[] = [];
  readonly #waiters: { resolve(c: TlsByteConn): void; reject(e: unknown): void }[] = [];
  readonly #contexts = new Map<string, { pair: CertifiedKey; ctx: SecureContext }>();
  #slot: (() => void) | undefined;
  #closed = false;
  /** Resolves once the listener is closed and its port free (after `close()`). */
  readonly finished: Promise<void>;
  /** Failed handshakes by reason since start. */
  readonly failures: Record<TlsFailureReason, number> = {
    timeout: 0,
    no_certificate: 0,
    bad_client_hello: 0,
    bad_proxy_header: 0,
    too_many_handshakes: 0,
    too_many_handshakes_per_address: 0,
    other: 0,
  };
  /** Failed accepts (EMFILE…) since start. */
  acceptErrors = 0;
  /** Completed handshakes since start. */
  handshakes = 0;

  constructor(opts: TlsAcceptorOptions) {
    const i = getInternals();
    if (!i) {
      throw new Error(`TlsAcceptor: Deno ${Deno.version.deno} lacks node's TCP handle openFromRid`);
    }
    this.#internals = i;
    this.#opts = opts;
    this.#timeoutMs = opts.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    this.#alpn = opts.alpn ?? ["http/1.1"];
    this.#maxHandshakes = opts.maxHandshakes ?? DEFAULT_MAX_HANDSHAKES;
    this.#maxPerAddress = opts.maxHandshakesPerAddress ?? DEFAULT_MAX_HANDSHAKES_PER_ADDRESS;
    this.#listener = Deno.listen({ hostname: opts.hostname, port: opts.port });
    this.finished = this.#acceptLoop();
  }

  get addr(): Deno.NetAddr {
    return this.#listener.addr as Deno.NetAddr;
  }

  /** Handshakes in progress. */
  get inProgress(): number {
    return this.#pending.size;
  }

  /** The next connection with a finished handshake; throws BadResource once closed. */
  accept(): Promise<TlsByteConn> {
    const c = this.#ready.shift();
    if (c) {
      this.#wakeLoop();
      return Promise.resolve(c);
    }
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("TLS acceptor closed"));
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /** Forgets every certificate's TLS context (call after certificates changed). */
  refresh(): void {
    this.#contexts.clear();
  }

  /** Stops accepting, aborts handshakes in progress, closes unclaimed connections. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#listener.close();
    } catch { /* already closed */ }
    for (const p of this.#pending) p.abort(new HandshakeFailure("other", "acceptor closed"));
    for (const c of this.#ready.splice(0)) c.close();
    for (const w of this.#waiters.splice(0)) {
      w.reject(new Deno.errors.BadResource("TLS acceptor closed"));
    }
    this.#wakeLoop();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #wakeLoop(): void {
    const s = this.#slot;
    this.#slot = undefined;
    s?.();
  }

  async #acceptLoop(): Promise<void> {
    while (!this.#closed) {
      if (this.#ready.length >= MAX_READY) {
        await new Promise<void>((r) => this.#slot = r);
        continue;
      }
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
      } catch (e) {
        if (this.#closed || e instanceof Deno.errors.BadResource) return;
        // A caller that reset before we took it (a load balancer's TCP health check,
        // or anyone's RST): Deno's accept fails on its address. Not ours: go on at once.
        if (resetBeforeAccept(e)) continue;
        // EMFILE and friends: never crash; let connections close, the kernel queues the rest.
        this.acceptErrors++;
        try {
          this.#opts.onAcceptError?.(e);
        } catch { /* the caller's */ }
        await new Promise((r) => setTimeout(r, ACCEPT_BACKOFF_MS));
        continue;
      }
      noDelay(conn);
      if (this.#pending.size >= this.#maxHandshakes) {
        this.#fail(
          new HandshakeFailure("too_many_handshakes", `${this.#pending.size} in progress`),
        );
        closeQuietly(conn);
        continue;
      }
      const peer = (conn.remoteAddr as Deno.NetAddr).hostname;
      const key = this.#opts.proxyProtocol?.(peer) ? undefined : peer;
      if (key !== undefined) {
        const n = this.#perAddress.get(key) ?? 0;
        if (n >= this.#maxPerAddress) {
          this.#fail(
            new HandshakeFailure("too_many_handshakes_per_address", `${n} in progress from ${key}`),
          );
          closeQuietly(conn);
          continue;
        }
        this.#perAddress.set(key, n + 1);
      }
      this.#handshake(conn, key);
    }
  }

  #fail(f: HandshakeFailure): void {
    this.failures[f.reason]++;
    try {
      this.#opts.onFailure?.(f.reason, f.message);
    } catch { /* the caller's */ }
  }

  #handshake(conn: Deno.Conn, addressKey: string | undefined): void {
    const release = () => {
      if (addressKey === undefined) return;
      const n = (this.#perAddress.get(addressKey) ?? 1) - 1;
      if (n > 0) this.#perAddress.set(addressKey, n);
      else this.#perAddress.delete(addressKey);
    };
    const p: Pending = {
      conn,
      done: false,
      abort: (f) => {
        if (p.done) return;
        p.done = true;
        clearTimeout(timer);
        this.#pending.delete(p);
        release();
        if (!this.#closed) this.#fail(f);
        if (p.tls) p.tls.destroy();
        closeQuietly(conn);
      },
    };
    this.#pending.add(p);
    const timer = setTimeout(
      () => p.abort(new HandshakeFailure("timeout", `no handshake in ${this.#timeoutMs} ms`)),
      this.#timeoutMs,
    );
    this.#run(p).then(
      (c) => {
        if (p.done) return c?.close();
        p.done = true;
        clearTimeout(timer);
        this.#pending.delete(p);
        release();
        this.handshakes++;
        this.#deliver(c);
      },
      (e) => {
        p.abort(
          e instanceof HandshakeFailure ? e : new HandshakeFailure("other", errorText(e)),
        );
      },
    );
  }

  #deliver(c: TlsConnection): void {
    const w = this.#waiters.shift();
    if (w) w.resolve(c);
    else this.#ready.push(c);
  }

  /** PROXY header, ClientHello, lookup, handshake. Throws HandshakeFailure; returns after "secure". */
  async #run(p: Pending): Promise<TlsConnection> {
    const conn = p.conn;
    let remoteAddr = conn.remoteAddr as Deno.NetAddr;
    const localAddr = conn.localAddr as Deno.NetAddr;
    let buf = new Uint8Array(FIRST_READ_BYTES);
    let n = 0;
    // 0. From a trusted load balancer: the PROXY header; bytes after it start the ClientHello.
    if (this.#opts.proxyProtocol?.(remoteAddr.hostname)) {
      const r = await readProxyHeader(p, buf);
      if (r.source) remoteAddr = r.source;
      n = r.rest;
    }
    // 1. The ClientHello, over as many reads as it takes (the deadline bounds time).
    let need = 0; // parse again once this many bytes are in
    let hello;
    for (let first = true;; first = false) {
      if (!first || n === 0) {
        let k: number | null;
        try {
          k = await conn.read(buf.subarray(n));
        } catch (e) {
          if (p.done) throw new HandshakeFailure("timeout", "closed");
          throw new HandshakeFailure("bad_client_hello", `read: ${errorText(e)}`);
        }
        if (p.done) throw new HandshakeFailure("timeout", "closed");
        if (k === null) {
          throw new HandshakeFailure("bad_client_hello", `connection closed after ${n} bytes`);
        }
        n += k;
      }
      if (n < need) continue;
      const r = parseClientHello(buf.subarray(0, n));
      if (r.kind === "done") {
        hello = r.hello;
        break;
      }
      if (r.kind === "bad") {
        if (buf[0] === 0x16) await writeQuietly(conn, ALERT_DECODE_ERROR);
        throw new HandshakeFailure("bad_client_hello", r.why);
      }
      need = r.need;
      if (need > buf.length) {
        // Grow to what the parser needs next (never past MAX_CLIENT_HELLO_READ).
        const size = Math.min(MAX_CLIENT_HELLO_READ, Math.max(need, buf.length * 2));
        if (size < need) throw new HandshakeFailure("bad_client_hello", "too large");
        const next = new Uint8Array(size);
        next.set(buf);
        buf = next;
      }
    }
    // 2. The certificate.
    const name = hello.serverName;
    let ctx: SecureContext | undefined;
    if (name !== "") {
      let pair: CertifiedKey | undefined;
      try {
        pair = await this.#opts.lookup(name);
      } catch (e) {
        throw new HandshakeFailure("other", `lookup(${name}): ${errorText(e)}`);
      }
      if (p.done) throw new HandshakeFailure("timeout", "closed");
      if (pair) ctx = this.#context(name, pair);
    }
    if (!ctx) {
      await writeQuietly(conn, ALERT_UNRECOGNIZED_NAME);
      throw new HandshakeFailure(
        "no_certificate",
        name === "" ? "no SNI" : `no certificate for ${name}`,
      );
    }
    // 3. The handshake, by node:tls on the same socket, with the bytes read so far.
    const handle = new this.#internals.TCP(this.#internals.socketType);
    const rid = (conn as unknown as Record<symbol, number>)[this.#internals.ridSymbol];
    if (typeof rid !== "number" || handle.openFromRid(rid) !== 0) {
      throw new HandshakeFailure("other", "cannot move the socket to node");
    }
    const socket = new Socket(
      { handle, allowHalfOpen: true } as ConstructorParameters<
        typeof Socket
      >[0],
    );
    socket.setNoDelay(true);
    socket.unshift(Buffer.from(buf.buffer, 0, n));
    const tls = new TLSSocket(socket, {
      isServer: true,
      secureContext: ctx,
      ALPNProtocols: this.#alpn,
      requestCert: false,
      rejectUnauthorized: false,
    });
    p.tls = tls;
    await new Promise<void>((resolve, reject) => {
      const onError = (e: unknown) => {
        cleanup();
        reject(new HandshakeFailure("other", errorText(e)));
      };
      const onClose = () => {
        cleanup();
        reject(new HandshakeFailure("other", "closed during the handshake"));
      };
      const cleanup = () => {
        tls.off("error", onError);
        tls.off("close", onClose);
        tls.off("secure", onSecure);
      };
      const onSecure = () => {
        cleanup();
        resolve();
      };
      tls.on("error", onError);
      tls.on("close", onClose);
      tls.once("secure", onSecure);
    });
    if (p.done) throw new HandshakeFailure("timeout", "closed");
    const agreed = (tls as unknown as { alpnProtocol: string | false | null }).alpnProtocol;
    return new TlsConnection(tls, conn, {
      remoteAddr,
      localAddr,
      alpn: typeof agreed === "string" ? agreed : null,
      serverName: name,
    });
  }

  /** The SecureContext for a pair, reused while the lookup returns the same PEM. */
  #context(name: string, pair: CertifiedKey): SecureContext {
    const hit = this.#contexts.get(name);
    if (hit && (hit.pair === pair || (hit.pair.cert === pair.cert && hit.pair.key === pair.key))) {
      return hit.ctx;
    }
    let ctx: SecureContext;
    try {
      ctx = createSecureContext({ cert: pair.cert, key: pair.key });
    } catch (e) {
      throw new HandshakeFailure("other", `certificate of ${name}: ${errorText(e)}`);
    }
    this.#contexts.delete(name);
    if (this.#contexts.size >= MAX_CONTEXTS) {
      const oldest = this.#contexts.keys().next().value;
      if (oldest !== undefined) this.#contexts.delete(oldest);
    }
    this.#contexts.set(name, { pair, ctx });
    return ctx;
  }
}

/** A node TLS socket seen as a byte connection. */
class TlsConnection implements TlsByteConn {
  readonly remoteAddr: Deno.NetAddr;
  readonly localAddr: Deno.NetAddr;
  readonly alpn: string | null;
  readonly serverName: string;
  readonly #tls: TLSSocket;
  /** The Deno resource of the same socket, closed last. */
  readonly #raw: Deno.Conn;
  readonly #queue: Uint8Array[] = [];
  #queued = 0;
  #paused = false;
  #eof = false;
  #closed = false;
  #error: unknown;
  #readers: (() => void)[] = [];
  readonly #writes = new Set<(e: unknown) => void>();

  constructor(
    tls: TLSSocket,
    raw: Deno.Conn,
    info: {
      remoteAddr: Deno.NetAddr;
      localAddr: Deno.NetAddr;
      alpn: string | null;
      serverName: string;
    },
  ) {
    this.#tls = tls;
    this.#raw = raw;
    this.remoteAddr = info.remoteAddr;
    this.localAddr = info.localAddr;
    this.alpn = info.alpn;
    this.serverName = info.serverName;
    tls.on("data", (b: Uint8Array) => {
      this.#queue.push(b);
      this.#queued += b.length;
      if (this.#queued > READ_HIGH_WATER && !this.#paused) {
        this.#paused = true;
        tls.pause();
      }
      this.#wakeReaders();
    });
    tls.on("end", () => {
      this.#eof = true;
      this.#wakeReaders();
    });
    tls.on("error", (e: unknown) => {
      this.#error ??= e;
      this.#wakeReaders();
    });
    tls.on("close", () => this.#onClose());
  }

  #wakeReaders(): void {
    const r = this.#readers;
    if (r.length === 0) return;
    this.#readers = [];
    for (const f of r) f();
  }

  async read(p: Uint8Array): Promise<number | null> {
    while (this.#queue.length === 0) {
      if (this.#error !== undefined) throw this.#error;
      if (this.#eof || this.#closed) return null;
      await new Promise<void>((r) => this.#readers.push(r));
    }
    let n = 0;
    while (n < p.length && this.#queue.length > 0) {
      const b = this.#queue[0]!;
      const k = Math.min(b.length, p.length - n);
      p.set(k === b.length ? b : b.subarray(0, k), n);
      n += k;
      if (k === b.length) this.#queue.shift();
      else this.#queue[0] = b.subarray(k);
    }
    this.#queued -= n;
    if (this.#paused && this.#queued < READ_HIGH_WATER / 2 && !this.#closed) {
      this.#paused = false;
      this.#tls.resume();
    }
    return n;
  }

  write(p: Uint8Array): Promise<number> {
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("connection closed"));
    if (this.#error !== undefined) return Promise.reject(this.#error);
    if (p.length === 0) return Promise.resolve(0);
    return new Promise<number>((resolve, reject) => {
      const fail = (e: unknown) => {
        this.#writes.delete(fail);
        reject(e);
      };
      this.#writes.add(fail);
      this.#tls.write(p, (e?: Error | null) => {
        this.#writes.delete(fail);
        if (e) reject(e);
        else resolve(p.length);
      });
    });
  }

  closeWrite(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return new Promise<void>((resolve) => this.#tls.end(() => resolve()));
  }

  close(): void {
    if (this.#closed) return;
    this.#tls.destroy();
    this.#onClose();
  }

  #onClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue.length = 0;
    this.#queued = 0;
    closeQuietly(this.#raw);
    this.#wakeReaders();
    if (this.#writes.size === 0) return;
    const err = new Deno.errors.BrokenPipe("connection closed");
    for (const f of [...this.#writes]) f(err);
  }
}

/**
 * Reads a PROXY header into `buf` (read by read, so nothing after it is consumed
 * but what a read brings along); the bytes after it are moved to `buf`'s start.
 */
async function readProxyHeader(
  p: Pending,
  buf: Uint8Array,
): Promise<{ source: Deno.NetAddr | undefined; rest: number }> {
  const parser = new ProxyHeaderParser();
  for (;;) {
    let k: number | null;
    try {
      k = await p.conn.read(buf);
    } catch (e) {
      if (p.done) throw new HandshakeFailure("timeout", "closed");
      throw new HandshakeFailure("bad_proxy_header", `read: ${errorText(e)}`);
    }
    if (p.done) throw new HandshakeFailure("timeout", "closed");
    if (k === null) {
      throw new HandshakeFailure(
        "bad_proxy_header",
        `connection closed after ${parser.received} bytes of the PROXY header`,
      );
    }
    let r;
    try {
      r = parser.feed(buf.subarray(0, k));
    } catch (e) {
      if (!(e instanceof ProxyHeaderError)) throw e;
      throw new HandshakeFailure("bad_proxy_header", e.message);
    }
    if (!r) continue;
    buf.copyWithin(0, r.consumed, k);
    return {
      source: r.header.command === "proxy" ? r.header.source : undefined,
      rest: k - r.consumed,
    };
  }
}

function closeQuietly(c: { close(): void }): void {
  try {
    c.close();
  } catch { /* already closed */ }
}

/** A few bytes (an alert) before closing; errors do not matter. */
async function writeQuietly(conn: Deno.Conn, p: Uint8Array): Promise<void> {
  try {
    await conn.write(p);
  } catch { /* gone */ }
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
