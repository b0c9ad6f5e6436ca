/**
 * How the client reaches the server: a `TunnelDialer` opens one tunnel transport
 * (an established, authenticated datagram connection the mux session runs on).
 * The connector only asks a dialer for connections; which implementation (our
 * DTLS, node-dtls-client, an in-memory network in tests) is decided where the
 * dialer is made. See docs/architecture.md, "Layers".
 */
import type { DatagramConn } from "../shared/datagram.ts";
import { type Clock, realClock } from "../shared/clock.ts";
import {
  derivePsk,
  dtlsConnect,
  isLoopbackHost,
  type PacketSocketFactory,
  pskIdentity,
} from "../shared/dtls/mod.ts";

/** One dialled tunnel transport. */
export interface DialedTunnel {
  readonly conn: DatagramConn;
  /**
   * Over UDP to a server off loopback: the path's rate is worth learning before the first
   * request (the warm-up, tunnel.ts). Unset: TCP, or loopback.
   */
  readonly udpPath?: boolean;
  /** Resolves once the transport's socket is really closed (after `conn.close()`). */
  closed(): Promise<void>;
  /**
   * Arms the stateless reset the server's welcome announced (`Welcome.reset`): a reset
   * carrying `token` then closes the connection at once. DTLS over UDP only.
   */
  expectStatelessReset?(token: Uint8Array): void;
}

/** Opens tunnel transports to one server. */
export interface TunnelDialer {
  /** The transport's name for the status line and logs, e.g. "dtls". */
  readonly transport: string;
  /**
   * Dials once: resolves with an established transport, or rejects with an error
   * the connector classifies (`DtlsError` codes). Aborting `signal` abandons it.
   */
  dial(signal: AbortSignal): Promise<DialedTunnel>;
}

/** DTLS client implementations the CLI offers. */
export type DtlsEngine = "hopgate" | "node-dtls-client";
/** Every DtlsEngine, for the CLI's choices. */
export const DTLS_ENGINES: readonly DtlsEngine[] = ["hopgate", "node-dtls-client"];

/** What a DTLS dialer needs. */
export interface DtlsDialerOptions {
  server: { hostname: string; port: number };
  /** The domain (its canonical form is the PSK identity). */
  domain: string;
  /** The domain's client API key; only its derived PSK is used. */
  apiKey: string;
  /** Handshake deadline per attempt. Default 10 000 ms. */
  handshakeTimeoutMs?: number;
  /** Timers run on this (tests pass a fake clock). Default realClock. Ours only. */
  clock?: Clock;
  /**
   * Largest record payload (one tunnel packet) toward the server. Default: 16 KiB on
   * loopback, else what a 1280-byte MTU carries (shared/dtls/path.ts).
   */
  maxDatagramSize?: number;
  /** Socket factory (tests pass a simulated network's). Default real UDP. Ours only. */
  socket?: PacketSocketFactory;
}

/** Our DTLS 1.2 client. */
export function dtlsDialer(o: DtlsDialerOptions): TunnelDialer {
  const identity = pskIdentity(o.domain);
  const psk = derivePsk(o.apiKey);
  return {
    transport: "dtls",
    async dial(signal) {
      const conn = await dtlsConnect({
        hostname: o.server.hostname,
        port: o.server.port,
        identity,
        psk,
        handshakeTimeoutMs: o.handshakeTimeoutMs ?? 10_000,
        // A server that answered the first hello is up: when it is busy letting a crowd
        // of clients in (its restart), waiting for a turn beats starting over later.
        answeredTimeoutMs: 30_000,
        // But once our last flight is out, a server that has not answered it in 6 s has
        // given our slot away (it does so 5 s into a handshake when a crowd waits):
        // start over now rather than at 30 s.
        lastFlightTimeoutMs: 6000,
        // Short retransmission ceiling: a restarted server is found within ~2 s.
        initialRtoMs: 500,
        maxRtoMs: 2000,
        signal,
        clock: o.clock ?? realClock,
        ...(o.maxDatagramSize ? { maxDatagramSize: o.maxDatagramSize } : {}),
        ...(o.socket ? { socket: o.socket } : {}),
      });
      return {
        conn,
        closed: () => Promise.resolve(),
        expectStatelessReset: (token) => conn.expectStatelessReset?.(token),
        udpPath: !isLoopbackHost(o.server.hostname),
      };
    },
  };
}

/** node-dtls-client (PSK with AES-128-GCM only), for interop checks. */
export function nodeDtlsDialer(o: DtlsDialerOptions): TunnelDialer {
  const identity = pskIdentity(o.domain);
  const psk = derivePsk(o.apiKey);
  return {
    transport: "dtls (node-dtls-client)",
    async dial(signal) {
      // Loaded only when chosen: its `debug` dependency reads the whole environment on
      // load, which needs an unscoped --allow-env (see main.ts).
      const { connectNodeDtls } = await import("./dtls_node.ts");
      const conn = await connectNodeDtls({
        hostname: o.server.hostname,
        port: o.server.port,
        identity,
        psk,
        timeoutMs: o.handshakeTimeoutMs ?? 10_000,
        signal,
        ...(o.maxDatagramSize ? { maxDatagramSize: o.maxDatagramSize } : {}),
      });
      return { conn, closed: () => conn.whenClosed, udpPath: !isLoopbackHost(o.server.hostname) };
    },
  };
}

/** How the client reaches the server (the CLI's `--transport`). */
export type Transport = "dtls" | "tcp" | "auto";
/** Every Transport, for the CLI's choices. */
export const TRANSPORTS: readonly Transport[] = ["dtls", "tcp", "auto"];

/** The dialer for a DTLS engine name (the CLI's `--dtls-engine`). */
export function dialerFor(engine: DtlsEngine, o: DtlsDialerOptions): TunnelDialer {
  return engine === "node-dtls-client" ? nodeDtlsDialer(o) : dtlsDialer(o);
}
