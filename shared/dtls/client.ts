/**
 * The DTLS client: `dtlsConnect` binds its own UDP socket, runs the handshake
 * (offering both suites, ECDHE_PSK first) and resolves with the connection.
 */
import { isIP } from "node:net";
import { lookup } from "node:dns/promises";
import { suiteByName, type SuiteName, SUITES } from "./cipher.ts";
import { ClientHandshake } from "./client_handshake.ts";
import { AlertLevel } from "./constants.ts";
import { Connection, type DtlsConn } from "./connection.ts";
import { DtlsError } from "./errors.ts";
import { type DtlsStats, newStats } from "./stats.ts";
import { bindUdp, type PacketSocketFactory } from "./udp.ts";
import { type Clock, realClock } from "../clock.ts";
import { checkDatagramSize, defaultMaxDatagramSize, isLoopbackAddress } from "./path.ts";

/** Where `dtlsConnect` connects, with which credentials and timers. */
export interface DtlsClientOptions {
  /** The server's host name or IP address (resolved once). */
  hostname: string;
  /** The server's UDP port. */
  port: number;
  /** PSK identity: the domain, lowercase. */
  identity: string;
  /** The 32-byte PSK for `identity` (`derivePsk` of the client API key). */
  psk: Uint8Array;
  /** Suites to offer, in order. Default: both, ECDHE_PSK_CHACHA20 first. */
  suites?: SuiteName[];
  /** Give up after this long. Default 30 000 ms. */
  handshakeTimeoutMs?: number;
  /**
   * Once the server has answered (its HelloVerifyRequest: it is up and reachable), the
   * handshake may take this long in all: a server with a crowd of handshakes (a
   * restart) drops the excess hellos and lets their clients in as it finishes others,
   * so a client that gives up at `handshakeTimeoutMs` only starts over at the back.
   * Default `handshakeTimeoutMs`.
   */
  answeredTimeoutMs?: number;
  /**
   * Once this side has sent its last flight (ClientKeyExchange to Finished), fail with
   * HANDSHAKE_STALLED if the server's Finished has not come within this long. A busy
   * server gives the slot of a handshake whose client is slow (5 s after it started,
   * when others wait) to another client and forgets it: the last flight then arrives
   * at a server that drops it, and retransmitting it until `answeredTimeoutMs` only
   * delays starting over. Default: no such limit.
   */
  lastFlightTimeoutMs?: number;
  /** First retransmission timeout, doubling up to `maxRtoMs`. Default 500 ms. */
  initialRtoMs?: number;
  /** Ceiling for the doubling retransmission timeout. Default 8000 ms. */
  maxRtoMs?: number;
  /**
   * Largest application payload per datagram (the mux probes up to it). Default
   * `defaultMaxDatagramSize(server ip)`: 16 KiB on loopback, else what fits a 1280-byte MTU (path.ts).
   * Counted under the suite with the most overhead: UDP payloads stay within it +
   * `MAX_RECORD_OVERHEAD` (37), so a ChaCha20 record carries 8 bytes more and a record
   * with a connection ID 9 fewer (the connection's `maxDatagramSize` after the handshake).
   */
  maxDatagramSize?: number;
  /** Aborts the handshake (rejects with code ABORTED). */
  signal?: AbortSignal;
  /** Counters to update (a fresh set by default). */
  stats?: DtlsStats;
  /** UDP payload limit for handshake flights. Default maxDatagramSize + 37, at least 1237. */
  handshakeMtu?: number;
  /** Socket to use; default a real UDP socket on an ephemeral port. */
  socket?: PacketSocketFactory;
  /** Handshake timers run on this. Default realClock. */
  clock?: Clock;
  /**
   * Offer a connection ID and the return routability check (RFC 9146, RFC 9853),
   * so a server that supports them keeps the session when this side's address or
   * port changes (a NAT rebinding). Default true.
   */
  connectionId?: boolean;
}

/** An established client connection, with its own socket and counters. */
export interface DtlsClientConn extends DtlsConn {
  /** This connection's counters. */
  readonly stats: DtlsStats;
  /** The local UDP address the client bound. */
  readonly localAddr: { hostname: string; port: number };
}

async function resolve(hostname: string): Promise<string> {
  const bare = hostname.replace(/^\[|\]$/g, "");
  if (isIP(bare)) return bare;
  try {
    return (await lookup(bare)).address;
  } catch (e) {
    throw new DtlsError("RESOLVE_FAILED", `Cannot resolve ${hostname}: ${(e as Error).message}`);
  }
}

/** Binds a UDP socket, runs the handshake (both suites offered, ECDHE_PSK first) and resolves with the connection. */
export async function dtlsConnect(opts: DtlsClientOptions): Promise<DtlsClientConn> {
  const suites = (opts.suites ?? SUITES.map((s) => s.name as SuiteName)).map((n) => {
    const s = suiteByName(n);
    if (!s) throw new RangeError(`Unknown cipher suite ${n}`);
    return s;
  });
  if (suites.length === 0) throw new RangeError("No cipher suites to offer");
  if (opts.maxDatagramSize !== undefined) checkDatagramSize(opts.maxDatagramSize);
  opts.signal?.throwIfAborted();
  const ip = await resolve(opts.hostname);
  const maxDatagramSize = opts.maxDatagramSize ?? defaultMaxDatagramSize(ip);
  const stats = opts.stats ?? newStats();
  const bindHost = isLoopbackAddress(ip) ? ip : ip.includes(":") ? "::" : "0.0.0.0";

  const socket = (opts.socket ?? bindUdp)(bindHost, 0, (d, from) => {
    stats.datagramsReceived++;
    stats.bytesReceived += d.length;
    if (from.port !== opts.port || from.hostname !== ip) {
      stats.dropped.noSession++;
      return;
    }
    conn.handleDatagram(d);
  });
  // The socket delivers nothing before its first await, so `conn` exists by then.
  const conn: Connection = new Connection({
    role: "client",
    remoteAddr: { hostname: ip, port: opts.port },
    transmit: (d, dest) => socket.send(d, dest),
    maxDatagramSize,
    handshakeMtu: opts.handshakeMtu,
    stats,
    onClosed: () => socket.close(),
  });

  const clock = opts.clock ?? realClock;
  return await new Promise<DtlsClientConn>((resolvePromise, reject) => {
    const timeoutMs = opts.handshakeTimeoutMs ?? 30_000;
    const finish = (err: DtlsError | undefined) => {
      clock.clearTimer(timer);
      opts.signal?.removeEventListener("abort", onAbort);
      if (err) {
        stats.handshakesFailed++;
        if (err.code === "HANDSHAKE_FAILED" && err.alert !== undefined) {
          conn.sendAlert(AlertLevel.Fatal, err.alert);
        }
        conn.terminate(err.message);
        socket.done.then(() => reject(err));
        return;
      }
      conn.setSuite(hs.suite!);
      conn.identity = opts.identity;
      conn.established = true;
      stats.handshakesCompleted++;
      const c = conn as Connection & { localAddr?: unknown };
      c.localAddr = socket.addr;
      resolvePromise(c as unknown as DtlsClientConn);
    };
    let lastFlightTimer: unknown;
    const lastFlightMs = opts.lastFlightTimeoutMs;
    // Called once: the handshake handles each message (ServerHelloDone) once.
    const onLastFlight = lastFlightMs === undefined ? undefined : () => {
      lastFlightTimer = clock.setTimer(() => {
        hs.fail(
          new DtlsError(
            "HANDSHAKE_STALLED",
            `DTLS handshake with ${opts.hostname}:${opts.port}: no answer to the last flight ` +
              `within ${lastFlightMs} ms (the server dropped the handshake: busy?)`,
          ),
        );
      }, lastFlightMs);
    };
    const hs = new ClientHandshake(
      conn,
      { initialRtoMs: opts.initialRtoMs ?? 500, maxRtoMs: opts.maxRtoMs ?? 8000, clock },
      opts.identity,
      opts.psk,
      suites,
      (err) => {
        if (lastFlightTimer !== undefined) clock.clearTimer(lastFlightTimer);
        finish(err);
      },
      opts.connectionId ?? true,
      onLastFlight,
    );
    const answeredMs = opts.answeredTimeoutMs ?? timeoutMs;
    const onTimeout = () => {
      if (hs.serverAnswered && answeredMs > timeoutMs) {
        timer = clock.setTimer(() => {
          hs.fail(
            new DtlsError(
              "HANDSHAKE_STALLED",
              `DTLS handshake with ${opts.hostname}:${opts.port} not finished within ` +
                `${answeredMs} ms: the server answered, then did not go on (busy?)`,
            ),
          );
        }, answeredMs - timeoutMs);
        return;
      }
      hs.fail(
        new DtlsError(
          "HANDSHAKE_TIMEOUT",
          `No DTLS handshake with ${opts.hostname}:${opts.port} within ${timeoutMs} ms`,
        ),
      );
    };
    let timer = clock.setTimer(onTimeout, timeoutMs);
    const onAbort = () => hs.fail(new DtlsError("ABORTED", "DTLS connect aborted"));
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    conn.handshake = hs;
    stats.handshakesStarted++;
    hs.start();
  });
}
