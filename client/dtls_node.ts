/**
 * `npm:node-dtls-client` as a `DatagramConn` (an alternative client engine; the project's own
 * `shared/dtls` client is the default; README.md says how to choose it).
 *
 * It speaks DTLS 1.2 with `TLS_PSK_WITH_AES_128_GCM_SHA256` only here (its AES-CCM suites fail
 * under Deno with `Unknown cipher`; it has no ECDHE-PSK). Each `send` is exactly one record in
 * one UDP datagram.
 *
 * Measured limits of node-dtls-client 2.0.3 (Deno 2.9.6, loopback), which the layers above must
 * live with when this engine is chosen:
 * - It never retransmits a handshake flight: one lost handshake datagram in either direction
 *   fails the handshake (after `timeoutMs`, "The DTLS handshake timed out"). Retry at a higher
 *   level.
 * - Its anti-replay window never slides past a gap: after more than 64 consecutive lost records
 *   from the server it silently accepts nothing more, for good. Nothing reports it; the mux's
 *   idle timeout has to catch it and reconnect.
 * - About 50 µs of CPU per 1200-byte record (~19 MB/s), roughly 3x our own record layer.
 * - Permissions: `--allow-net`, and an unscoped `--allow-env` (its `debug` dependency reads the
 *   whole environment when it loads; narrow with `--deny-env=...`).
 * - It needs the `node-aead-crypto` override in package.json to resolve under Deno.
 * - Its UDP socket closes asynchronously after `close()` (it sends close_notify first); await
 *   `whenClosed` before ending a test, or Deno's resource sanitizer may see the socket.
 */
import { Buffer } from "node:buffer";
import { dtls } from "node-dtls-client";
import type { DatagramConn, DatagramHandler } from "../shared/datagram.ts";
import { AlertDescription, DtlsError, type DtlsErrorCode } from "../shared/dtls/mod.ts";
import { isResolveError } from "../shared/names.ts";

/** The only suite this adapter offers (see the module comment). */
export const NODE_DTLS_SUITE = "TLS_PSK_WITH_AES_128_GCM_SHA256";

/** Datagrams queued before `attach`; more are dropped, as UDP would. */
const MAX_QUEUED = 1024;
/** The DTLS 1.2 plaintext limit per record. */
const MAX_RECORD_PLAINTEXT = 16_384;

export interface NodeDtlsConnectOptions {
  hostname: string;
  port: number;
  /** PSK identity (the domain, lowercase ASCII). */
  identity: string;
  /** The raw PSK bytes (32 bytes from `derivePsk`). */
  psk: Uint8Array;
  /** Handshake timeout in ms (node-dtls-client's minimum is 100). Default 5000. */
  timeoutMs?: number;
  /** Largest payload `send` accepts. Default 1200, at most 16,384. */
  maxDatagramSize?: number;
  /** Aborting rejects the pending handshake and closes the socket. */
  signal?: AbortSignal;
}

export interface NodeDtlsConn extends DatagramConn {
  readonly suite: string;
  readonly identity: string;
  readonly remoteAddr: { hostname: string; port: number };
  /** Resolves once the UDP socket is really closed (after `close()` or any failure). */
  readonly whenClosed: Promise<void>;
}

/**
 * Thrown when the handshake does not complete: a `DtlsError` with the code (and
 * alert) our own engine would give, so callers tell failures apart the same way
 * whichever engine runs (see `nodeDtlsFailure`).
 */
export class NodeDtlsError extends DtlsError {
  override name = "NodeDtlsError";
  constructor(code: DtlsErrorCode, message: string, alert?: number, options?: ErrorOptions) {
    super(code, message, alert);
    if (options?.cause !== undefined) this.cause = options.cause;
  }
}

/** node-dtls-client's text for a fatal alert from the peer (2.0.3: "received fatal alert: x"). */
const LIBRARY_ALERT = /received fatal alert: ([a-z_]+)/;
/** Its texts for "no answer in time": no UDP socket, or no handshake. */
const LIBRARY_TIMEOUTS = new Set(["The connection timed out", "The DTLS handshake timed out"]);
/** Our alert numbers by the RFC's names, which the library uses (`decrypt_error`). */
const ALERT_BY_NAME: ReadonlyMap<string, number> = new Map(
  Object.entries(AlertDescription).map(([name, code]) => [snakeCase(name), code]),
);

function snakeCase(pascal: string): string {
  return pascal.replace(/[A-Z]/g, (c, i: number) => (i === 0 ? "" : "_") + c.toLowerCase());
}

/**
 * Translates an error node-dtls-client emitted during the handshake into a code:
 * the library gives resolve failures a system `code`, but alerts and timeouts only
 * as the texts above, so they are read here, at the boundary, and nowhere else.
 */
export function nodeDtlsFailure(err: Error, where: string): NodeDtlsError {
  const message = `node-dtls-client: handshake with ${where} failed: ${err.message}`;
  if (isResolveError(err)) {
    return new NodeDtlsError("RESOLVE_FAILED", message, undefined, { cause: err });
  }
  if (LIBRARY_TIMEOUTS.has(err.message)) {
    return new NodeDtlsError("HANDSHAKE_TIMEOUT", message, undefined, { cause: err });
  }
  const alert = LIBRARY_ALERT.exec(err.message);
  if (alert) {
    return new NodeDtlsError("ALERT_RECEIVED", message, ALERT_BY_NAME.get(alert[1]!), {
      cause: err,
    });
  }
  return new NodeDtlsError("HANDSHAKE_FAILED", message, undefined, { cause: err });
}

/** The private bits of dtls.Socket this adapter relies on (checked against 2.0.3). */
interface SocketInternals {
  killConnection(err?: Error): void;
  udp?: { close(cb?: () => void): void };
  _isClosed: boolean;
}

/** Connects with node-dtls-client; resolves once the handshake completed. */
export function connectNodeDtls(options: NodeDtlsConnectOptions): Promise<NodeDtlsConn> {
  const maxDatagramSize = options.maxDatagramSize ?? 1200;
  if (!Number.isInteger(maxDatagramSize) || maxDatagramSize < 1) {
    throw new RangeError(`maxDatagramSize must be a positive integer: ${maxDatagramSize}`);
  }
  if (maxDatagramSize > MAX_RECORD_PLAINTEXT) {
    throw new RangeError(`maxDatagramSize ${maxDatagramSize} exceeds ${MAX_RECORD_PLAINTEXT}`);
  }
  if (options.psk.length === 0) throw new RangeError("empty PSK");
  const where = `${options.hostname}:${options.port} as "${options.identity}"`;
  options.signal?.throwIfAborted();

  return new Promise<NodeDtlsConn>((resolve, reject) => {
    let socket: dtls.Socket;
    try {
      socket = dtls.createSocket({
        type: options.hostname.includes(":") ? "udp6" : "udp4",
        address: options.hostname,
        port: options.port,
        // A Buffer is used as the key as is; a string would be taken as ASCII.
        psk: { [options.identity]: Buffer.from(options.psk) },
        timeout: options.timeoutMs ?? 5000,
        ciphers: [NODE_DTLS_SUITE],
      });
    } catch (e) {
      reject(
        new NodeDtlsError(
          "HANDSHAKE_FAILED",
          `node-dtls-client: cannot start handshake with ${where}: ${e}`,
        ),
      );
      return;
    }
    const internals = socket as unknown as SocketInternals;

    let resolveClosed!: () => void;
    const whenClosed = new Promise<void>((r) => resolveClosed = r);
    // The UDP socket is created in the constructor; its "close" is the real end. The library
    // removes all "close" listeners before closing it on failure (killConnection), so hook
    // close() itself: a callback passed to dgram's close() is registered at that moment.
    let udpClosed = false;
    const udp = internals.udp;
    if (udp) {
      const close = udp.close.bind(udp);
      udp.close = (cb?: () => void) => {
        close(() => {
          udpClosed = true;
          resolveClosed();
          cb?.();
        });
      };
    } else resolveClosed();

    let conn: Conn | undefined;
    const onAbort = () => {
      if (conn) return;
      internals.killConnection();
      reject(new NodeDtlsError("ABORTED", `node-dtls-client: handshake with ${where} aborted`));
    };
    options.signal?.addEventListener("abort", onAbort, { once: true });

    socket.on("connected", () => {
      options.signal?.removeEventListener("abort", onAbort);
      conn = new Conn(socket, internals, options, maxDatagramSize, whenClosed, () => udpClosed);
      resolve(conn);
    });
    socket.on("message", (msg: Uint8Array) => conn?.deliver(msg));
    socket.on("close", () => conn?.closedBy("closed by peer (close_notify)"));
    socket.on("error", (err: Error) => {
      if (conn) {
        conn.closedBy(`node-dtls-client error: ${err.message}`);
        return;
      }
      options.signal?.removeEventListener("abort", onAbort);
      // killConnection already closed the UDP socket.
      reject(nodeDtlsFailure(err, where));
    });
  });
}

class Conn implements NodeDtlsConn {
  readonly suite = NODE_DTLS_SUITE;
  readonly identity: string;
  readonly remoteAddr: { hostname: string; port: number };
  readonly maxDatagramSize: number;
  readonly whenClosed: Promise<void>;
  #socket: dtls.Socket;
  #internals: SocketInternals;
  #udpClosed: () => boolean;
  #handler: DatagramHandler | undefined;
  #queue: Uint8Array[] = [];
  #closeReason: string | undefined;
  #closeReported = false;

  constructor(
    socket: dtls.Socket,
    internals: SocketInternals,
    options: NodeDtlsConnectOptions,
    maxDatagramSize: number,
    whenClosed: Promise<void>,
    udpClosed: () => boolean,
  ) {
    this.#socket = socket;
    this.#internals = internals;
    this.identity = options.identity;
    this.remoteAddr = { hostname: options.hostname, port: options.port };
    this.maxDatagramSize = maxDatagramSize;
    this.whenClosed = whenClosed;
    this.#udpClosed = udpClosed;
  }

  get closed(): boolean {
    return this.#closeReason !== undefined;
  }

  send(datagram: Uint8Array): void {
    if (datagram.length > this.maxDatagramSize) {
      throw new RangeError(
        `datagram of ${datagram.length} bytes exceeds maxDatagramSize ${this.maxDatagramSize}`,
      );
    }
    if (this.closed || this.#internals._isClosed) return; // dropped, as UDP would
    try {
      this.#socket.send(Buffer.from(datagram.buffer, datagram.byteOffset, datagram.byteLength));
    } catch {
      // a send on a socket that just died: dropped
    }
  }

  attach(handler: DatagramHandler): void {
    this.#handler = handler;
    const queued = this.#queue;
    this.#queue = [];
    for (const d of queued) handler.onDatagram(d);
    if (this.closed) this.#reportClose();
  }

  close(reason = "closed locally"): void {
    if (this.closed) return;
    this.#closeReason = reason;
    if (!this.#internals._isClosed && !this.#udpClosed()) {
      try {
        this.#socket.close(); // sends close_notify, then closes the UDP socket
      } catch {
        this.#internals.killConnection();
      }
    }
    this.#reportClose();
  }

  /** From the socket: one application_data record's plaintext. */
  deliver(msg: Uint8Array): void {
    if (this.closed) return;
    // Copy: the receiver owns the buffer, and Buffers may share a pool.
    const d = new Uint8Array(msg.byteLength);
    d.set(msg);
    if (this.#handler) this.#handler.onDatagram(d);
    else if (this.#queue.length < MAX_QUEUED) this.#queue.push(d);
  }

  /** From the socket: it closed or failed on its own. */
  closedBy(reason: string): void {
    if (this.closed) return;
    this.#closeReason = reason;
    if (!this.#udpClosed()) this.#internals.killConnection();
    this.#reportClose();
  }

  #reportClose(): void {
    if (this.#closeReported || !this.#handler) return;
    this.#closeReported = true;
    this.#handler.onClose(this.#closeReason ?? "closed");
  }
}
