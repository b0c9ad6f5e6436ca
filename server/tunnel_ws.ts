/**
 * The tunnel's TCP/TLS way in (docs/tcp-fallback.md): WebSocket connections to
 * `GET /.well-known/hopgate/tunnel` on the server's own domain, each binary
 * message one DTLS datagram. All of them together are one virtual
 * `PacketSocket` for a `DtlsServer`: each connection gets a synthetic peer
 * address, hostname = the caller's IP (so the DTLS server's per-address caps
 * count it as they count a UDP peer), port = a number unique to the connection.
 *
 * Bounds: a connection with no established DTLS session after
 * `handshakeTimeoutMs` is closed; one whose DTLS session ended is closed; what
 * waits to be written to a connection is capped (`maxQueueBytes`) and datagrams
 * beyond it are dropped and counted, as a full UDP buffer would drop them (the
 * mux above recovers); the front's write timeout cuts a peer that reads nothing.
 */
import type {
  DtlsConn,
  PacketSocket,
  PacketSocketFactory,
  UdpHandler,
} from "../shared/dtls/mod.ts";
import { type Clock, realClock } from "../shared/clock.ts";
import {
  acceptKeyFor,
  checkUpgradeRequest,
  CloseCode,
  TUNNEL_WS_MAX_MESSAGE,
  TUNNEL_WS_PATH,
  TUNNEL_WS_PROTOCOL,
  WsConn,
} from "../shared/ws/mod.ts";
import type { FrontRequest, Responder } from "./front/http1.ts";
import type { Logger } from "./log.ts";
import { hostHeaderName } from "../shared/names.ts";

/**
 * Whether a request is for the tunnel's WebSocket: an upgrade to websocket at
 * `TUNNEL_WS_PATH` with the server's domain as Host (the ingress hook's test).
 */
export function isTunnelUpgrade(
  req: Pick<FrontRequest, "upgrade" | "path" | "host">,
  serverDomain: string,
): boolean {
  return req.upgrade !== null && req.path === TUNNEL_WS_PATH &&
    req.upgrade.toLowerCase() === "websocket" && hostHeaderName(req.host) === serverDomain;
}

/** The datagram ceiling on the WebSocket way in: TCP carries whole 16 KiB DTLS records. */
export const MAX_TUNNEL_WS_DATAGRAM = 16 * 1024;

export interface WsTunnelOptions {
  /** A connection without an established DTLS session this long is closed. Default 10 000 ms. */
  handshakeTimeoutMs?: number;
  /** Bytes waiting to be written per connection; datagrams beyond are dropped. Default 128 KiB. */
  maxQueueBytes?: number;
  /** How often the timeouts are checked. Default 1000 ms. */
  sweepMs?: number;
  clock?: Clock;
  logger?: Logger;
}

/** Counters of the WebSocket way in (metrics read them). */
export interface WsTunnelStats {
  /** Upgrades accepted (101 sent). */
  accepted: number;
  /** Requests to the tunnel path refused (not a valid WebSocket upgrade, shutting down). */
  refused: number;
  /** Datagrams (messages) received and sent. */
  datagramsIn: number;
  datagramsOut: number;
  /** Datagrams not sent, by reason. */
  dropped: {
    /** The connection's send queue was full: its peer reads slower than we send. */
    queueFull: number;
    /** The connection is gone or closing. */
    noConnection: number;
  };
  /** Connections closed, by reason. */
  closed: {
    /** No DTLS session within `handshakeTimeoutMs`. */
    handshakeTimeout: number;
    /** Its DTLS session ended. */
    sessionEnded: number;
    /** The peer closed it, or the TCP connection failed. */
    peer: number;
    /** The peer broke the WebSocket protocol. */
    protocolError: number;
    /** The server shut down. */
    shutdown: number;
  };
}

interface Peer {
  readonly id: number;
  readonly ws: WsConn;
  readonly addr: Deno.NetAddr;
  readonly openedAt: number;
  dtls: DtlsConn | undefined;
  /** Why we closed it (for the counters); undefined: the peer did. */
  closing: keyof WsTunnelStats["closed"] | undefined;
}

/** WebSocket connections as one virtual packet socket for a DtlsServer; see the module comment. */
export class WsTunnelEndpoint {
  readonly stats: WsTunnelStats = {
    accepted: 0,
    refused: 0,
    datagramsIn: 0,
    datagramsOut: 0,
    dropped: { queueFull: 0, noConnection: 0 },
    closed: { handshakeTimeout: 0, sessionEnded: 0, peer: 0, protocolError: 0, shutdown: 0 },
  };
  readonly #peers = new Map<number, Peer>();
  readonly #handshakeTimeoutMs: number;
  readonly #maxQueue: number;
  readonly #sweepMs: number;
  readonly #clock: Clock;
  readonly #log: Logger | undefined;
  #handler: UdpHandler | undefined;
  #nextId = 1;
  #timer: unknown;
  #closing = false;
  #drained: (() => void) | undefined;

  constructor(opts: WsTunnelOptions = {}) {
    this.#handshakeTimeoutMs = opts.handshakeTimeoutMs ?? 10_000;
    this.#maxQueue = opts.maxQueueBytes ?? 128 * 1024;
    this.#sweepMs = opts.sweepMs ?? 1000;
    this.#clock = opts.clock ?? realClock;
    this.#log = opts.logger;
  }

  /** Open WebSocket tunnel connections. */
  get size(): number {
    return this.#peers.size;
  }

  /** Bytes waiting to be written, over all connections. */
  get queuedBytes(): number {
    let n = 0;
    for (const p of this.#peers.values()) n += p.ws.queuedBytes;
    return n;
  }

  /** The packet socket factory for the DtlsServer behind this endpoint (one socket). */
  readonly socket: PacketSocketFactory = (_hostname, _port, handler) => {
    this.#handler = handler;
    let resolveDone!: () => void;
    const done = new Promise<void>((r) => resolveDone = r);
    const socket: PacketSocket = {
      addr: { hostname: "websocket", port: 0 },
      send: (datagram, to) => this.#send(datagram, to),
      close: () => {
        this.#handler = undefined;
        this.shutdown().then(resolveDone);
      },
      done,
    };
    this.#armSweep();
    return socket;
  };

  /** A DTLS session came up on one of our connections (the hub's listener calls this). */
  established(conn: DtlsConn): void {
    const p = this.#peers.get(conn.remoteAddr.port);
    if (p && p.addr.hostname === conn.remoteAddr.hostname) p.dtls = conn;
  }

  /**
   * The ingress hook for `GET /.well-known/hopgate/tunnel` with a WebSocket
   * upgrade on the server's domain. `client` is the caller's address (the TCP
   * peer, or what a trusted proxy says). Resolves when the connection is over.
   */
  upgrade = async (req: FrontRequest, res: Responder, client: string): Promise<void> => {
    const checked = checkUpgradeRequest(req.method, req.upgrade, req.headers, req.hasBody);
    if ("status" in checked || this.#closing || !this.#handler) {
      this.stats.refused++;
      const [status, message, headers] = "status" in checked
        ? [checked.status, checked.message, checked.headers]
        : [503, "the server is shutting down", []];
      res.head(status, [...headers, ["content-type", "text/plain"]], -1);
      await res.end(new TextEncoder().encode(message + "\n"));
      return;
    }
    const headers: [string, string][] = [
      ["upgrade", "websocket"],
      ["sec-websocket-accept", acceptKeyFor(checked.key)],
    ];
    if (checked.protocols.includes(TUNNEL_WS_PROTOCOL)) {
      headers.push(["sec-websocket-protocol", TUNNEL_WS_PROTOCOL]);
    }
    res.head(101, headers, -1);
    const raw = await res.upgrade();
    // A number no open connection has (after wrapping, one may still be in use).
    let id = this.#nextId;
    while (this.#peers.has(id)) id = id >= 0x7fff_ffff ? 1 : id + 1;
    this.#nextId = id >= 0x7fff_ffff ? 1 : id + 1;
    const addr: Deno.NetAddr = { transport: "udp", hostname: client, port: id };
    const handler = (d: Uint8Array) => {
      this.stats.datagramsIn++;
      this.#handler?.(d, addr);
    };
    const ws = new WsConn({
      read: (p) => raw.read(p),
      write: (p) => raw.write(p),
      close: () => raw.close(),
    }, {
      role: "server",
      initial: raw.head,
      maxMessage: TUNNEL_WS_MAX_MESSAGE,
      maxQueueBytes: this.#maxQueue,
      onMessage: handler,
    });
    const peer: Peer = {
      id,
      ws,
      addr,
      openedAt: this.#clock.now(),
      dtls: undefined,
      closing: undefined,
    };
    this.#peers.set(id, peer);
    this.stats.accepted++;
    this.#log?.debug("tunnel websocket opened", { component: "tunnel", peer: client, ws_id: id });
    const info = await ws.done;
    this.#peers.delete(id);
    // What we closed was counted when we decided to.
    const why = peer.closing ?? this.#count(
      info.code === CloseCode.ProtocolError || info.code === CloseCode.TooBig ||
        info.code === CloseCode.UnsupportedData
        ? "protocolError"
        : "peer",
    );
    // The DTLS session cannot outlive its connection: end it now, not at its idle timeout.
    if (peer.dtls && !peer.dtls.closed) peer.dtls.close("tunnel websocket closed");
    this.#log?.debug("tunnel websocket closed", {
      component: "tunnel",
      peer: client,
      ws_id: id,
      reason: why,
    });
    if (this.#closing && this.#peers.size === 0) this.#drained?.();
  };

  #count(why: keyof WsTunnelStats["closed"]): keyof WsTunnelStats["closed"] {
    this.stats.closed[why]++;
    return why;
  }

  #send(datagram: Uint8Array, to: Deno.NetAddr): void {
    const p = this.#peers.get(to.port);
    if (!p || p.ws.closed) {
      this.stats.dropped.noConnection++;
      return;
    }
    if (p.ws.sendBinary(datagram)) this.stats.datagramsOut++;
    else this.stats.dropped.queueFull++;
  }

  #armSweep(): void {
    if (this.#timer !== undefined || this.#closing) return;
    this.#timer = this.#clock.setTimer(() => {
      this.#timer = undefined;
      this.#sweep();
      this.#armSweep();
    }, this.#sweepMs);
  }

  #sweep(): void {
    const now = this.#clock.now();
    for (const p of this.#peers.values()) {
      if (p.closing) continue;
      if (p.dtls === undefined) {
        if (now - p.openedAt >= this.#handshakeTimeoutMs) {
          p.closing = this.#count("handshakeTimeout");
          p.ws.close(CloseCode.PolicyViolation, "no DTLS handshake in time");
        }
      } else if (p.dtls.closed) {
        p.closing = this.#count("sessionEnded");
        p.ws.close(CloseCode.Normal, "tunnel session ended");
      }
    }
  }

  /** Closes every connection (1001 going away); resolves when all are gone. */
  shutdown(): Promise<void> {
    this.#closing = true;
    if (this.#timer !== undefined) this.#clock.clearTimer(this.#timer);
    this.#timer = undefined;
    for (const p of this.#peers.values()) {
      p.closing ??= this.#count("shutdown");
      p.ws.close(CloseCode.GoingAway, "server shutting down");
    }
    if (this.#peers.size === 0) return Promise.resolve();
    return new Promise((r) => {
      const prev = this.#drained;
      this.#drained = () => {
        prev?.();
        r();
      };
    });
  }
}
