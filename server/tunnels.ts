/**
 * The tunnel hub: DTLS sessions from its listeners -> one mux session per client
 * -> hello on the control stream -> a live `Tunnel` in the registry, until the
 * session ends.
 *
 * A `TunnelListener` is one way in: a `DtlsServer` on a packet socket. The hub
 * always has the UDP one (`hostname`/`port`); `listeners` adds more, e.g. the
 * WebSocket endpoint of the TCP/TLS path (`server/tunnel_ws.ts`, a virtual packet
 * socket over many WebSocket connections; docs/tcp-fallback.md). Every listener
 * feeds the same hub: the same PSK lookup, caps, hello and registry.
 *
 * Several clients of one domain may be connected at once: `pick(domain)` spreads
 * requests across them (round robin), skipping any that is closing. At most
 * `maxTunnelsPerDomain` of them (`HOP_SERVER_MAX_TUNNELS_PER_DOMAIN`): each session
 * costs memory (mux buffers, streams), and a key is all it takes to open one, so
 * one more is refused at its hello with `server_busy` and a message saying why.
 * Sessions still waiting for their hello are bounded per domain as well.
 */
import {
  bindUdpBatching,
  DtlsServer,
  type DtlsServerOptions,
  type DtlsStats,
  isLoopbackAddress,
  newStats,
  type PacketSocketFactory,
  type PeerAddr,
  type PskLookup,
} from "../shared/dtls/mod.ts";
import { type Clock, realClock } from "../shared/clock.ts";
import type { DtlsConn } from "../shared/dtls/mod.ts";
import { awaitHello, HelloRejectedError, watchControl } from "../shared/handshake/mod.ts";
import { type MuxParams, MuxSession, StreamErrorCode } from "../shared/mux/mod.ts";
import {
  FEATURE_ACK_TIMESTAMPS,
  FEATURE_COMPACT_HEADS,
  FEATURE_DRAIN,
  FEATURE_SPLICE,
  FEATURE_WARM_UP,
  PROTOCOL_VERSION,
} from "../shared/protocol/mod.ts";
import { TUNNEL_SERVER_MUX_PARAMS } from "../shared/tunnel_params.ts";
import { canonicalDomain, formatHostPort } from "../shared/names.ts";
import type { Logger } from "./log.ts";
import { Buffer } from "node:buffer";
import type { TunnelRegistry, TunnelSession } from "./registry.ts";
import {
  type WarmUpCounts,
  type WarmUpGrant,
  WarmUpGrants,
  type WarmUpGrantsOptions,
} from "./warm_ups.ts";

export const SERVER_VERSION = "hopgate-server/0.1.0";

/** A connected, greeted client. */
export class Tunnel implements TunnelSession {
  readonly connectedAt = new Date();
  /** Requests forwarded through this tunnel now, and in all. */
  inFlight = 0;
  served = 0;
  /** The client asked for this session to be drained: no new requests go to it. */
  draining = false;
  /**
   * A PING asks whether the client is still there (`TunnelHub` sends one when the domain
   * gets a new tunnel): `pick` passes over it meanwhile if another tunnel can serve.
   */
  verifying = false;

  constructor(
    readonly id: string,
    readonly domain: string,
    readonly session: MuxSession,
    /** The client's address; a DTLS session with a connection ID may move (NAT rebinding). */
    readonly peer: { readonly remoteAddr: PeerAddr },
    readonly clientVersion: string,
    /**
     * The client announced FEATURE_SPLICE: send it HTTP/1.1 upgrades as
     * RequestHead.upgrade (raw bytes), never RequestHead.ws (WebSocket messages).
     */
    readonly splice: boolean = false,
    /** The listener it came through: "udp", or "ws" for the TCP/TLS path. */
    readonly transport: string = "udp",
    /** The client announced FEATURE_COMPACT_HEADS: request heads go to it compact. */
    readonly compactHeads: boolean = false,
  ) {}

  get remoteAddr(): string {
    return formatHostPort(this.peer.remoteAddr);
  }

  get usable(): boolean {
    return !this.session.isClosed && !this.draining;
  }

  close(reason: string): void {
    if (!this.session.isClosed) this.session.close(reason).catch(() => {});
  }
}

/** DTLS server options a listener may set (the hub sets the rest). */
export type ListenerDtlsOptions = Partial<
  Omit<DtlsServerOptions, "hostname" | "port" | "lookupPsk" | "onConnection" | "socket">
>;

/** One more way in for tunnel sessions, besides the UDP socket. */
export interface TunnelListenerSpec {
  /** Its name in logs, metrics and `Tunnel.transport`, e.g. "ws". */
  name: string;
  /** The packet socket the listener's DtlsServer runs on. */
  socket: PacketSocketFactory;
  /** Passed to `socket` (a virtual socket may ignore them). Default "0.0.0.0", 0. */
  hostname?: string;
  port?: number;
  /** DTLS options for this listener; the hub's `dtls` apply first. */
  dtls?: ListenerDtlsOptions;
  /** Called with each established connection before the hub takes it. */
  onConnection?: (conn: DtlsConn) => void;
}

/** A running listener: one DtlsServer and what it counts. */
export interface TunnelListener {
  readonly name: string;
  readonly addr: PeerAddr;
  readonly stats: DtlsStats;
  /** Established connections and handshakes in progress. */
  readonly connectionCount: number;
  close(): Promise<void>;
}

/**
 * The quiet-time batching interval of the tunnel socket: a keepalive's answer waits
 * at most this long on an idle node; nothing waits on a node with traffic.
 */
export const DEFAULT_QUIET_BATCH_MS = 20;

export interface TunnelHubOptions {
  /** The UDP listener's address. */
  hostname: string;
  port: number;
  /** More listeners (the WebSocket endpoint). */
  listeners?: TunnelListenerSpec[];
  lookupPsk: PskLookup;
  registry: TunnelRegistry<Tunnel>;
  logger: Logger;
  muxParams?: Partial<MuxParams>;
  /** Passed through to the DTLS server (handshake cap, datagram size...). */
  dtls?: Partial<Omit<DtlsServerOptions, "hostname" | "port" | "lookupPsk" | "onConnection">>;
  /**
   * While no tunnel on the UDP listener has a request, data in flight or a handshake
   * going, its socket reads in batches this far apart (shared/dtls/udp.ts): an idle
   * node then wakes once per interval for many keepalives instead of once for each.
   * 0: read every datagram as it arrives. Default `DEFAULT_QUIET_BATCH_MS`.
   */
  quietBatchMs?: number;
  /** Time allowed for the hello after the DTLS handshake, in all. Default 10 s. */
  helloTimeoutMs?: number;
  /**
   * Greeted tunnels per domain; a session beyond it is refused at its hello
   * (`server_busy`). Also the bound on a domain's sessions waiting for their hello.
   * Default 8 (`DEFAULT_MAX_TUNNELS_PER_DOMAIN`).
   */
  maxTunnelsPerDomain?: number;
  /**
   * A tunnel the client asked to drain closes once idle, or after this long at
   * most. Default 300 000 ms.
   */
  drainTimeoutMs?: number;
  /**
   * Warm-ups of new tunnels, both ways (server/warm_ups.ts), for clients that ask
   * (FEATURE_WARM_UP) over UDP from off loopback, a few at a time; false: none, and no
   * welcome offers them (`HOP_TUNNEL_WARM_UP=false`). Default: 4 at a time.
   */
  warmUps?: Omit<WarmUpGrantsOptions, "clock"> | false;
  /** Called for every mux session as it starts, greeted or not (metrics). */
  onSession?: (session: MuxSession) => void;
  /** DTLS, mux and hello timers run on this (tests pass a fake one). Default realClock. */
  clock?: Clock;
}

/** A domain's older tunnels are verified at most this often when new ones arrive. */
const VERIFY_EVERY_MS = 5_000;

/** The default of `TunnelHubOptions.maxTunnelsPerDomain` (and `HOP_SERVER_MAX_TUNNELS_PER_DOMAIN`). */
export const DEFAULT_MAX_TUNNELS_PER_DOMAIN = 8;

/** Sessions the hub turned away (after their DTLS handshake), by reason. */
export interface TunnelRefusals {
  /** The domain already had `maxTunnelsPerDomain` tunnels: refused at the hello (server_busy). */
  tunnelsPerDomain: number;
  /** The domain already had `maxTunnelsPerDomain` sessions waiting for their hello: closed at once. */
  pendingPerDomain: number;
  /** No hello within `helloTimeoutMs`. */
  helloTimeout: number;
  /** Refused at the hello: version_mismatch. */
  versionMismatch: number;
  /** Refused at the hello: domain_mismatch. */
  domainMismatch: number;
  /** A malformed or missing hello, or the session ended before it. */
  badHello: number;
}

export class TunnelHub {
  readonly #udp: DtlsServer;
  readonly #listeners: { name: string; server: DtlsServer }[] = [];
  readonly #registry: TunnelRegistry<Tunnel>;
  readonly #log: Logger;
  readonly #opts: TunnelHubOptions;
  readonly #pending = new Set<MuxSession>();
  /** Sessions waiting for their hello, per domain. */
  readonly #pendingByDomain = new Map<string, number>();
  /** Tunnels welcomed and not yet in the registry (the welcome is being written), per domain. */
  readonly #welcoming = new Map<string, number>();
  readonly #maxPerDomain: number;
  readonly #refused: TunnelRefusals = {
    tunnelsPerDomain: 0,
    pendingPerDomain: 0,
    helloTimeout: 0,
    versionMismatch: 0,
    domainMismatch: 0,
    badHello: 0,
  };
  #rr = 0;
  #closing = false;
  readonly #warmUps: WarmUpGrants | undefined;
  /** When each domain's older tunnels were last asked for a PING (`#verifyOthers`). */
  readonly #verifiedAt = new Map<string, number>();

  constructor(opts: TunnelHubOptions) {
    this.#opts = opts;
    this.#maxPerDomain = opts.maxTunnelsPerDomain ?? DEFAULT_MAX_TUNNELS_PER_DOMAIN;
    if (!Number.isInteger(this.#maxPerDomain) || this.#maxPerDomain < 1) {
      throw new RangeError(
        `maxTunnelsPerDomain must be a positive integer, got ${this.#maxPerDomain}`,
      );
    }
    this.#registry = opts.registry;
    this.#log = opts.logger;
    if (opts.warmUps !== false) {
      this.#warmUps = new WarmUpGrants({ ...opts.warmUps, clock: opts.clock ?? realClock });
    }
    const batchMs = opts.quietBatchMs ?? DEFAULT_QUIET_BATCH_MS;
    this.#udp = this.#listen("udp", {
      hostname: opts.hostname,
      port: opts.port,
      socket: opts.dtls?.socket ??
        (batchMs > 0 ? bindUdpBatching({ quietBatchMs: batchMs }) : undefined),
    });
    try {
      for (const l of opts.listeners ?? []) {
        this.#listen(l.name, {
          hostname: l.hostname ?? "0.0.0.0",
          port: l.port ?? 0,
          socket: l.socket,
          dtls: l.dtls,
          onConnection: l.onConnection,
        });
      }
    } catch (e) {
      for (const l of this.#listeners) void l.server.close();
      throw e;
    }
  }

  #listen(
    name: string,
    l: {
      hostname: string;
      port: number;
      socket: PacketSocketFactory | undefined;
      dtls?: ListenerDtlsOptions | undefined;
      onConnection?: ((conn: DtlsConn) => void) | undefined;
    },
  ): DtlsServer {
    const server = DtlsServer.listen({
      ...this.#opts.dtls,
      ...l.dtls,
      clock: this.#opts.clock ?? realClock,
      hostname: l.hostname,
      port: l.port,
      ...(l.socket ? { socket: l.socket } : {}),
      lookupPsk: this.#opts.lookupPsk,
      onConnection: (conn) => {
        l.onConnection?.(conn);
        this.#onConnection(conn, name);
      },
      onHandshakeError: (peer, err) =>
        this.#log.info("tunnel handshake failed", {
          component: "tunnel",
          transport: name,
          peer: formatHostPort(peer),
          error: err.message,
        }),
      onPathValidated: (conn, to) =>
        this.#log.info("tunnel client moved", {
          component: "tunnel",
          transport: name,
          domain: conn.identity,
          peer: formatHostPort(to),
        }),
    });
    this.#listeners.push({ name, server });
    return server;
  }

  /** The UDP listener's address. */
  get addr(): PeerAddr {
    return this.#udp.addr;
  }
  /** Every listener, UDP first. */
  get listeners(): readonly TunnelListener[] {
    return this.#listeners.map(({ name, server }) => ({
      name,
      get addr() {
        return server.addr;
      },
      get stats() {
        return server.stats;
      },
      get connectionCount() {
        return server.connectionCount;
      },
      close: () => server.close(),
    }));
  }
  /** DTLS counters summed over every listener. */
  get dtlsStats(): DtlsStats {
    if (this.#listeners.length === 1) return this.#udp.stats;
    const sum = newStats();
    for (const { server } of this.#listeners) addStats(sum, server.stats);
    return sum;
  }
  /** Warm-ups by how they ended, and their bytes (metrics read them); undefined when off. */
  get warmUps():
    | { readonly counts: Readonly<WarmUpCounts>; readonly bytesSent: number }
    | undefined {
    return this.#warmUps;
  }

  /** Sessions turned away after their DTLS handshake, by reason (metrics read it). */
  get sessionsRefused(): Readonly<TunnelRefusals> {
    return this.#refused;
  }

  /** A domain's tunnels: in the registry (closing ones too) or being welcomed. */
  #tunnelCount(domain: string): number {
    let n = this.#welcoming.get(domain) ?? 0;
    for (const _ of this.#registry.sessionsOf(domain)) n++;
    return n;
  }

  /**
   * The client moved to another tunnel (make-before-break): no new requests go
   * to this one, and it closes once its requests in flight are done (at most
   * `drainTimeoutMs`; a long WebSocket is cut then).
   */
  #drain(tunnel: Tunnel): void {
    if (tunnel.draining || tunnel.session.isClosed) return;
    tunnel.draining = true;
    const clock = this.#opts.clock ?? realClock;
    const until = clock.now() + (this.#opts.drainTimeoutMs ?? 300_000);
    this.#log.info("tunnel draining", {
      component: "tunnel",
      domain: tunnel.domain,
      session_id: tunnel.id,
      in_flight: tunnel.inFlight,
    });
    const check = () => {
      if (tunnel.session.isClosed) return;
      if (tunnel.inFlight > 0 && clock.now() < until) return void clock.setTimer(check, 100);
      tunnel.close("drained: the client moved to another tunnel");
    };
    check();
  }

  /**
   * `fresh` is a new tunnel of `domain`. Its client may be one that lost an older tunnel
   * here (a network change) without this server noticing yet: the server sends no
   * keepalives and notices a silent client only after 30 s (shared/tunnel_params.ts),
   * and requests sent to it meanwhile would fail. So each older tunnel silent for over a
   * second gets a PING: a live one answers within a round trip, a dead one is closed
   * once it goes unanswered (the server's `unansweredTimeoutMs`, 20 s), and `pick` passes
   * over it until then.
   */
  #verifyOthers(domain: string, fresh: Tunnel): void {
    // At most once per VERIFY_EVERY_MS per domain: a domain with many clients reconnecting
    // together (a restart) would otherwise PING n²/2 times.
    const now = (this.#opts.clock ?? realClock).now();
    if (now < (this.#verifiedAt.get(domain) ?? -Infinity) + VERIFY_EVERY_MS) return;
    this.#verifiedAt.set(domain, now);
    for (const t of this.#registry.sessionsOf(domain)) {
      if (t === fresh || t.verifying || !t.usable || t.session.silentForMs < 1000) continue;
      t.verifying = true;
      t.session.ping().then(() => t.verifying = false, () => {});
    }
  }

  /** The next usable tunnel for a domain, round robin; undefined if none. */
  pick(domain: string, exclude?: Set<Tunnel>): Tunnel | undefined {
    // Runs per request: count the candidates, then walk to the chosen one, no copies.
    // A tunnel being verified serves only when no other can.
    let verified = true;
    const ok = (t: Tunnel) => t.usable && !exclude?.has(t) && (!verified || !t.verifying);
    let n = 0;
    for (const t of this.#registry.sessionsOf(domain)) if (ok(t)) n++;
    if (n === 0) {
      verified = false;
      for (const t of this.#registry.sessionsOf(domain)) if (ok(t)) n++;
    }
    if (n === 0) return undefined;
    let k = this.#rr++ % n;
    for (const t of this.#registry.sessionsOf(domain)) if (ok(t) && k-- === 0) return t;
    return undefined;
  }

  #onConnection(conn: DtlsConn, transport: string): void {
    // The PSK lookup accepted the identity as a spelling of a registered domain;
    // the tunnel goes under that domain's canonical form, which requests route by.
    const domain = canonicalDomain(conn.identity);
    const clock = this.#opts.clock ?? realClock;
    const session = new MuxSession(conn, {
      role: "server",
      clock,
      params: { ...TUNNEL_SERVER_MUX_PARAMS, ...this.#opts.muxParams },
    });
    if (this.#closing) {
      session.abort(undefined, "server shutting down");
      return;
    }
    this.#opts.onSession?.(session);
    const max = this.#maxPerDomain;
    const waiting = this.#pendingByDomain.get(domain) ?? 0;
    if (waiting >= max) {
      this.#refused.pendingPerDomain++;
      const reason = `${domain} has ${waiting} sessions waiting for their hello, the most allowed`;
      this.#log.info("tunnel refused", {
        component: "tunnel",
        domain,
        peer: formatHostPort(conn.remoteAddr),
        error: reason,
      });
      session.abort(undefined, reason);
      return;
    }
    this.#pending.add(session);
    this.#pendingByDomain.set(domain, waiting + 1);
    let waitingDone = false;
    const doneWaiting = () => {
      if (waitingDone) return;
      waitingDone = true;
      this.#pending.delete(session);
      const n = (this.#pendingByDomain.get(domain) ?? 1) - 1;
      if (n > 0) this.#pendingByDomain.set(domain, n);
      else this.#pendingByDomain.delete(domain);
    };
    // A welcomed session holds a slot from the decision on, before it reaches the
    // registry (the welcome is written in between): concurrent hellos cannot overshoot.
    let reserved = false;
    // The client asked for a warm-up and got one of the node's grants (its welcome says so).
    let warmUp: WarmUpGrant | null = null;
    const unreserve = () => {
      if (!reserved) return;
      reserved = false;
      const n = (this.#welcoming.get(domain) ?? 1) - 1;
      if (n > 0) this.#welcoming.set(domain, n);
      else this.#welcoming.delete(domain);
    };
    // One deadline for the whole hello (control stream, then the hello on it).
    const helloMs = this.#opts.helloTimeoutMs ?? 10_000;
    let timedOut = false;
    const deadline = clock.setTimer(() => {
      timedOut = true;
      session.abort(undefined, `no hello within ${helloMs} ms`);
    }, helloMs);
    const id = crypto.randomUUID();
    awaitHello(
      session,
      (hello) => {
        if (hello.proto !== PROTOCOL_VERSION) {
          return {
            t: "reject",
            code: "version_mismatch",
            message:
              `server speaks protocol ${PROTOCOL_VERSION}, client ${hello.proto}; upgrade the older side`,
          };
        }
        if (canonicalDomain(hello.domain) !== domain) {
          return {
            t: "reject",
            code: "domain_mismatch",
            message: `key is for ${domain}, not ${hello.domain}`,
          };
        }
        const tunnels = this.#tunnelCount(domain);
        if (tunnels >= max) {
          return {
            t: "reject",
            code: "server_busy",
            message: `${domain} already has ${tunnels} tunnel${tunnels === 1 ? "" : "s"} ` +
              `connected, the most this server ` +
              `allows per domain (HOP_SERVER_MAX_TUNNELS_PER_DOMAIN=${max}); stop another ` +
              `client of ${domain} or ask the operator to raise the limit`,
          };
        }
        reserved = true;
        this.#welcoming.set(domain, (this.#welcoming.get(domain) ?? 0) + 1);
        // The client reads TIMESTAMP frames: ours may date the ACKs of the welcome's packet on.
        if (hello.features?.includes(FEATURE_ACK_TIMESTAMPS)) session.sendAckTimestamps();
        if (
          this.#warmUps && hello.features?.includes(FEATURE_WARM_UP) && transport === "udp" &&
          !isLoopbackAddress(conn.remoteAddr.hostname)
        ) {
          warmUp = this.#warmUps.tryGrant();
        }
        const reset = conn.statelessResetToken;
        return {
          t: "welcome",
          session: id,
          server: SERVER_VERSION,
          features: [FEATURE_DRAIN, FEATURE_ACK_TIMESTAMPS, ...(warmUp ? [FEATURE_WARM_UP] : [])],
          ...(reset ? { reset: Buffer.from(reset).toString("hex") } : {}),
        };
      },
      helloMs,
      clock,
    ).then(({ hello, after }) => {
      clock.clearTimer(deadline);
      doneWaiting();
      unreserve();
      if (this.#closing || session.isClosed) {
        warmUp?.drop();
        return;
      }
      const splice = hello.features?.includes(FEATURE_SPLICE) ?? false;
      const tunnel = new Tunnel(
        id,
        domain,
        session,
        conn,
        hello.client,
        splice,
        transport,
        hello.features?.includes(FEATURE_COMPACT_HEADS) ?? false,
      );
      const remove = this.#registry.add(domain, tunnel);
      this.#verifyOthers(domain, tunnel);
      warmUp?.start(session);
      void watchControl(after, () => this.#drain(tunnel));
      // The client opens only the control stream: any other stream it opens is refused
      // at once (left in the accept queue, each would hold up to a stream window of data
      // for the whole session).
      void (async () => {
        for (let s; (s = await session.acceptStream()) !== null;) {
          s.abort(StreamErrorCode.REFUSED);
        }
      })();
      this.#log.info("tunnel connected", {
        component: "tunnel",
        domain,
        session_id: id,
        peer: tunnel.remoteAddr,
        client_version: hello.client,
        suite: conn.suite,
        transport,
      });
      session.closed.then((info) => {
        remove();
        if (this.#tunnelCount(domain) === 0) this.#verifiedAt.delete(domain);
        this.#log.info("tunnel closed", {
          component: "tunnel",
          domain,
          session_id: id,
          reason: info.reason,
          by: info.remote ? "client" : "server",
          served: tunnel.served,
        });
      });
    }).catch((e) => {
      clock.clearTimer(deadline);
      doneWaiting();
      unreserve();
      warmUp?.drop();
      let reason = e instanceof HelloRejectedError ? `${e.code}: ${e.message}` : String(e);
      if (this.#closing) {
        // shutting down: not a refusal
      } else if (timedOut) {
        this.#refused.helloTimeout++;
        reason = `no hello within ${helloMs} ms`;
      } else if (e instanceof HelloRejectedError && e.code === "server_busy") {
        this.#refused.tunnelsPerDomain++;
      } else if (e instanceof HelloRejectedError && e.code === "version_mismatch") {
        this.#refused.versionMismatch++;
      } else if (e instanceof HelloRejectedError && e.code === "domain_mismatch") {
        this.#refused.domainMismatch++;
      } else this.#refused.badHello++;
      this.#log.info("tunnel hello refused", { component: "tunnel", domain, error: reason });
      // Give the reject a moment to reach the client before closing.
      clock.setTimer(() => session.abort(undefined, reason), 200);
    });
  }

  /**
   * GOAWAY to every live client: it opens no new streams; the streams in flight
   * (requests being answered) continue. The first step of a graceful shutdown.
   */
  goAway(): void {
    for (const t of this.#registry.live()) t.session.goAway();
  }

  /**
   * GOAWAY to every client, let sessions drain what they wrote, close the DTLS
   * socket. `abort`: reset every session at once instead (a shutdown deadline
   * passed; streams still in flight fail).
   */
  async close(options: { abort?: boolean } = {}): Promise<void> {
    const tunnels = this.#registry.live();
    if (options.abort) {
      for (const t of tunnels) t.session.abort(undefined, "server shutting down");
    }
    if (this.#closing) return;
    this.#closing = true;
    for (const s of this.#pending) s.abort(undefined, "server shutting down");
    await Promise.all(tunnels.map((t) => t.session.close("server shutting down").catch(() => {})));
    await Promise.all(this.#listeners.map((l) => l.server.close()));
  }
}

/** Adds `b`'s counters into `a`. */
function addStats(a: DtlsStats, b: DtlsStats): void {
  const add = (x: Record<string, unknown>, y: Record<string, unknown>) => {
    for (const k of Object.keys(y)) {
      const v = y[k];
      if (typeof v === "number") x[k] = (x[k] as number) + v;
      else if (v && typeof v === "object") {
        add(x[k] as Record<string, unknown>, v as Record<string, unknown>);
      }
    }
  };
  add(a as unknown as Record<string, unknown>, b as unknown as Record<string, unknown>);
}
