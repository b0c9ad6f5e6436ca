/**
 * The tunnel over TCP/TLS, for networks that drop UDP (docs/tcp-fallback.md):
 * TCP to the server's HTTPS listener (optionally through an HTTP CONNECT
 * proxy), TLS with the server's name as SNI, an HTTP/1.1 WebSocket upgrade to
 * `/.well-known/hopgate/tunnel`, then our DTLS client unchanged over it, one
 * datagram per binary message. DTLS-PSK still authenticates both ends; TLS is
 * the disguise (and verified all the same, against Deno's roots or `caCerts`).
 */
import type { TunnelDialer } from "./dialer.ts";
import { type Clock, realClock } from "../shared/clock.ts";
import {
  derivePsk,
  dtlsConnect,
  type PacketSocket,
  type PacketSocketFactory,
  pskIdentity,
  type UdpHandler,
} from "../shared/dtls/mod.ts";
import {
  checkUpgradeResponse,
  clientUpgradeRequest,
  connStream,
  HandshakeError,
  newClientKey,
  readResponseHead,
  TUNNEL_WS_MAX_MESSAGE,
  TUNNEL_WS_PATH,
  TUNNEL_WS_PROTOCOL,
  WsConn,
} from "../shared/ws/mod.ts";
import { formatHostPort, type HostPort } from "../shared/names.ts";

/** The datagram ceiling over TCP: whole 16 KiB DTLS records (no path MTU to respect). */
export const TCP_MAX_DATAGRAM = 16 * 1024;

/** What the TCP/TLS dialer needs. */
export interface TcpDialerOptions {
  /** The server's HTTPS (or, with `tls: false`, HTTP) listener. */
  server: HostPort;
  /** TLS SNI and the Host field: the server's own domain. Default `server.hostname`. */
  serverName?: string;
  /** TLS to the server (default true); false: plain HTTP (tests, a TLS-terminating proxy). */
  tls?: boolean;
  /** PEM certificates trusted besides Deno's roots (a debug server's certificate). */
  caCerts?: string[];
  /** An HTTP proxy reached with CONNECT: `http://[user:pass@]host:port`. */
  proxy?: URL;
  /** The domain (its canonical form is the PSK identity). */
  domain: string;
  /** The domain's client API key; only its derived PSK is used. */
  apiKey: string;
  /** TCP, proxy, TLS and WebSocket handshakes together. Default 10 000 ms. */
  connectTimeoutMs?: number;
  /** The DTLS handshake over the WebSocket. Default 10 000 ms. */
  handshakeTimeoutMs?: number;
  /** Bytes waiting for the TCP connection; datagrams beyond are dropped. Default 256 KiB. */
  maxQueueBytes?: number;
  clock?: Clock;
}

/** The TCP/TLS path failed before DTLS: the message says which step. */
export class TcpTunnelError extends Error {
  override name = "TcpTunnelError";
}

/** The proxy URL as logs may show it: scheme, host and port, never credentials. */
export function redactProxy(u: URL): string {
  return `${u.protocol}//${u.host}`;
}

/** Parses `--proxy` / HTTPS_PROXY: an http:// URL (https:// proxies are not supported). */
export function parseProxyUrl(s: string): URL | string {
  let u: URL;
  try {
    u = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(s) ? s : `http://${s}`);
  } catch {
    return "expected http://host:port";
  }
  if (u.protocol !== "http:") return `only http:// proxies are supported, got ${u.protocol}`;
  if (u.pathname !== "/" || u.search || u.hash) return "a proxy URL has no path or query";
  return u;
}

/** TCP/TLS + WebSocket + our DTLS: a `TunnelDialer` named "tcp". */
export function tcpDialer(o: TcpDialerOptions): TunnelDialer {
  const identity = pskIdentity(o.domain);
  const psk = derivePsk(o.apiKey);
  const useTls = o.tls ?? true;
  return {
    transport: useTls ? "tcp (tls+websocket)" : "tcp (websocket)",
    async dial(signal) {
      const ws = await openTunnelWebSocket(o, signal);
      let handler: UdpHandler | undefined;
      // What the DTLS client sees as its peer: the server's TCP address, one "socket".
      const peer: Deno.NetAddr = {
        transport: "udp",
        hostname: ws.remote.hostname,
        port: ws.remote.port,
      };
      const conn = new WsConn(connStream(ws.conn), {
        role: "client",
        initial: ws.rest,
        maxMessage: TUNNEL_WS_MAX_MESSAGE,
        maxQueueBytes: o.maxQueueBytes ?? 256 * 1024,
        onMessage: (d) => handler?.(d, peer),
      });
      const done = conn.done.then(() => {});
      const socket: PacketSocketFactory = (_h, _p, h) => {
        handler = h;
        const s: PacketSocket = {
          addr: { hostname: ws.local.hostname, port: ws.local.port },
          send: (d) => {
            conn.sendBinary(d);
          },
          close: () => conn.close(),
          done,
        };
        return s;
      };
      try {
        const dtls = await dtlsConnect({
          hostname: peer.hostname,
          port: peer.port,
          identity,
          psk,
          maxDatagramSize: TCP_MAX_DATAGRAM,
          handshakeTimeoutMs: o.handshakeTimeoutMs ?? 10_000,
          // TCP delivers what it was given: a flight is lost only if the queue dropped it.
          initialRtoMs: 1000,
          maxRtoMs: 4000,
          signal,
          clock: o.clock ?? realClock,
          socket,
        });
        // The WebSocket ended first (server gone, TCP reset): end the DTLS session now,
        // not at the mux's idle timeout.
        conn.done.then(() => {
          if (!dtls.closed) dtls.close("tunnel connection closed");
        });
        return { conn: dtls, closed: () => done };
      } catch (e) {
        conn.abort("dtls handshake failed");
        throw e;
      }
    },
  };
}

interface OpenedWebSocket {
  conn: Deno.Conn;
  /** Bytes after the 101 (the first frames). */
  rest: Uint8Array;
  remote: Deno.NetAddr;
  local: Deno.NetAddr;
}

/** TCP (through the proxy if any), TLS, the upgrade: an open tunnel WebSocket. */
async function openTunnelWebSocket(
  o: TcpDialerOptions,
  signal: AbortSignal,
): Promise<OpenedWebSocket> {
  signal.throwIfAborted();
  const timeoutMs = o.connectTimeoutMs ?? 10_000;
  const ac = new AbortController();
  const onAbort = () => ac.abort(signal.reason);
  signal.addEventListener("abort", onAbort, { once: true });
  const clock = o.clock ?? realClock;
  const timer = clock.setTimer(
    () => ac.abort(new TcpTunnelError(`no tunnel connection within ${timeoutMs} ms`)),
    timeoutMs,
  );
  const target = formatHostPort(o.server);
  const name = o.serverName ?? o.server.hostname.replace(/^\[|\]$/g, "");
  let conn: Deno.Conn | undefined;
  const closeOnAbort = () => {
    try {
      conn?.close();
    } catch { /* closed */ }
  };
  ac.signal.addEventListener("abort", closeOnAbort, { once: true });
  const step = async <T>(what: string, p: Promise<T>): Promise<T> => {
    try {
      return await p;
    } catch (e) {
      if (ac.signal.aborted) {
        const r = ac.signal.reason;
        throw r instanceof TcpTunnelError ? r : new TcpTunnelError(`${what}: aborted`);
      }
      if (e instanceof TcpTunnelError) throw e;
      const why = e instanceof HandshakeError || e instanceof Error ? e.message : String(e);
      throw new TcpTunnelError(`${what}: ${why}`);
    }
  };
  try {
    const hop = o.proxy
      ? { hostname: o.proxy.hostname.replace(/^\[|\]$/g, ""), port: Number(o.proxy.port || 80) }
      : { hostname: o.server.hostname.replace(/^\[|\]$/g, ""), port: o.server.port };
    const tcp = await step(
      o.proxy
        ? `cannot connect to proxy ${redactProxy(o.proxy)}`
        : `cannot connect to ${target} over TCP`,
      Deno.connect({ ...hop, signal: ac.signal }),
    );
    conn = tcp;
    // Datagrams go out as small writes: Nagle would hold each behind the peer's delayed ACK.
    tcp.setNoDelay(true);
    if (o.proxy) {
      await step(`proxy ${redactProxy(o.proxy)} refused CONNECT ${target}`, connectThrough(tcp, o));
    }
    const remote = tcp.remoteAddr as Deno.NetAddr;
    const local = tcp.localAddr as Deno.NetAddr;
    if (o.tls ?? true) {
      const tls = await step(
        `TLS with ${name} failed`,
        Deno.startTls(tcp, {
          hostname: name,
          alpnProtocols: ["http/1.1"],
          ...(o.caCerts?.length ? { caCerts: o.caCerts } : {}),
        }),
      );
      conn = tls;
      await step(`TLS with ${name} failed`, tls.handshake());
    }
    const c: Deno.Conn = conn;
    const key = newClientKey();
    const defaultPort = (o.tls ?? true) ? 443 : 80;
    const host = o.server.port === defaultPort ? name : formatHostPort({
      hostname: name,
      port: o.server.port,
    });
    const head = await step(
      `WebSocket upgrade at ${target} failed`,
      (async () => {
        await connStream(c).write(clientUpgradeRequest({
          host,
          path: TUNNEL_WS_PATH,
          key,
          protocol: TUNNEL_WS_PROTOCOL,
        }));
        const h = await readResponseHead((p) => c.read(p));
        checkUpgradeResponse(h, key, TUNNEL_WS_PROTOCOL);
        return h;
      })(),
    );
    return { conn: c, rest: head.rest, remote, local };
  } catch (e) {
    closeOnAbort();
    throw e;
  } finally {
    clock.clearTimer(timer);
    signal.removeEventListener("abort", onAbort);
    ac.signal.removeEventListener("abort", closeOnAbort);
  }
}

/** CONNECT through the proxy; resolves once it answered 2xx (the tunnel is open). */
async function connectThrough(tcp: Deno.Conn, o: TcpDialerOptions): Promise<void> {
  const proxy = o.proxy!;
  const target = formatHostPort(o.server);
  let req = `CONNECT ${target} HTTP/1.1\r\nhost: ${target}\r\n`;
  if (proxy.username || proxy.password) {
    const cred = `${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`;
    const b = new TextEncoder().encode(cred);
    req += `proxy-authorization: Basic ${btoa(String.fromCharCode(...b))}\r\n`;
  }
  await connStream(tcp).write(new TextEncoder().encode(req + "\r\n"));
  const head = await readResponseHead((p) => tcp.read(p));
  if (head.status < 200 || head.status > 299) {
    throw new TcpTunnelError(`${head.status} ${head.reason}`.trim());
  }
  if (head.rest.length > 0) throw new TcpTunnelError("proxy sent bytes before the TLS handshake");
}
