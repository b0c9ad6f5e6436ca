/**
 * The DTLS server: one UDP socket, many peers demultiplexed by address.
 *
 * Before a ClientHello carries a valid cookie the server keeps no state for a
 * peer (it answers with a HelloVerifyRequest computed from the packet alone), so
 * spoofed floods cost it no memory. Concurrent handshakes are capped.
 */
import { AlertLevel, ContentType, HandshakeType, RECORD_HEADER_SIZE } from "./constants.ts";
import { CookieJar } from "./cookie.ts";
import { Connection, type DtlsConn, type PeerAddr } from "./connection.ts";
import { DtlsError } from "./errors.ts";
import {
  decodeClientHello,
  decodeFragments,
  encodeHandshake,
  encodeHelloVerifyRequest,
} from "./messages.ts";
import { type PskLookup, ServerHandshake } from "./server_handshake.ts";
import { type DtlsStats, newStats } from "./stats.ts";
import { bindUdp, netAddr, type PacketSocket, type PacketSocketFactory } from "./udp.ts";
import { type Clock, realClock } from "../clock.ts";
import { Writer } from "./bytes.ts";
import { recordOverhead } from "./cipher.ts";
import { checkDatagramSize, defaultMaxDatagramSize } from "./path.ts";

/** How `DtlsServer.listen` binds its socket and treats peers. */
export interface DtlsServerOptions {
  /** Address to bind the UDP socket to. */
  hostname: string;
  /** UDP port to bind; 0 picks a free one (see `addr`). */
  port: number;
  /** Returns the PSK for an identity (a domain), or undefined if unknown. */
  lookupPsk: PskLookup;
  /** Called for each connection once its handshake completes. */
  onConnection: (conn: DtlsConn) => void;
  /** Handshakes in progress at once; more are dropped until some finish. Default 1000. */
  maxHandshakes?: number;
  /** A handshake not finished in this time is abandoned. Default 30 000 ms. */
  handshakeTimeoutMs?: number;
  /**
   * Largest application payload per datagram, per peer (the mux probes up to it).
   * Default `defaultMaxDatagramSize(peer)`: 16 KiB on loopback, 1400 elsewhere.
   */
  maxDatagramSize?: number | ((peer: PeerAddr) => number);
  /** First handshake retransmission timeout; doubles up to `maxRtoMs`. Default 500 ms. */
  initialRtoMs?: number;
  /** Ceiling for the doubling retransmission timeout. Default 8000 ms. */
  maxRtoMs?: number;
  /** Called when a handshake fails, with the peer and the reason (for logs). */
  onHandshakeError?: (peer: PeerAddr, error: DtlsError) => void;
  /** UDP payload limit for handshake flights (they fragment to fit). Default maxDatagramSize + 37, at least 1237. */
  handshakeMtu?: number;
  /** Socket to use; default a real UDP socket. */
  socket?: PacketSocketFactory;
  /** Handshake timers and cookie-secret rotation run on this. Default realClock. */
  clock?: Clock;
}

/** A DTLS 1.2 PSK server: one UDP socket, many peers, stateless cookies before any per-peer state. */
export class DtlsServer {
  /** Counters over every peer (datagrams, handshakes, drops by reason). */
  readonly stats: DtlsStats = newStats();
  readonly #opts:
    & Required<Omit<DtlsServerOptions, "onHandshakeError" | "handshakeMtu">>
    & Pick<DtlsServerOptions, "onHandshakeError" | "handshakeMtu">;
  readonly #socket: PacketSocket;
  readonly #conns = new Map<string, Connection>();
  readonly #cookies: CookieJar;
  #handshaking = 0;
  #closed = false;

  private constructor(opts: DtlsServerOptions) {
    this.#opts = {
      maxHandshakes: 1000,
      handshakeTimeoutMs: 30_000,
      maxDatagramSize: (peer: PeerAddr) => defaultMaxDatagramSize(peer.hostname),
      initialRtoMs: 500,
      maxRtoMs: 8000,
      socket: bindUdp,
      clock: realClock,
      ...opts,
    };
    const clock = this.#opts.clock;
    this.#cookies = new CookieJar(undefined, () => clock.now());
    if (typeof this.#opts.maxDatagramSize === "number") {
      checkDatagramSize(this.#opts.maxDatagramSize);
    }
    this.#socket = this.#opts.socket(
      opts.hostname,
      opts.port,
      (d, from) => this.#onDatagram(d, from),
    );
  }

  /** Binds the socket and starts answering handshakes. */
  static listen(opts: DtlsServerOptions): DtlsServer {
    return new DtlsServer(opts);
  }

  /** The address the socket is bound to. */
  get addr(): PeerAddr {
    return this.#socket.addr;
  }

  /** Established connections and handshakes in progress. */
  get connectionCount(): number {
    return this.#conns.size;
  }
  /** Handshakes started (cookie checked) and not yet finished or abandoned. */
  get handshakesInProgress(): number {
    return this.#handshaking;
  }

  #onDatagram(data: Uint8Array, from: Deno.NetAddr): void {
    const stats = this.stats;
    stats.datagramsReceived++;
    stats.bytesReceived += data.length;
    const key = from.hostname + "|" + from.port;
    const conn = this.#conns.get(key);
    if (conn && !(conn.established && isClientHello(data))) {
      conn.handleDatagram(data);
      return;
    }
    if (!isClientHello(data)) {
      if (data.length < RECORD_HEADER_SIZE) stats.dropped.malformed++;
      else stats.dropped.noSession++;
      return;
    }
    this.#onClientHello(data, from, key, conn);
  }

  /** Stateless ClientHello processing: cookie check, then a new association. */
  #onClientHello(
    data: Uint8Array,
    from: Deno.NetAddr,
    key: string,
    old: Connection | undefined,
  ): void {
    const stats = this.stats;
    const recLen = (data[11]! << 8) | data[12]!;
    if (RECORD_HEADER_SIZE + recLen > data.length) {
      stats.dropped.malformed++;
      return;
    }
    const frags = decodeFragments(data.slice(RECORD_HEADER_SIZE, RECORD_HEADER_SIZE + recLen));
    const f = frags.value?.[0];
    // A fragmented first ClientHello is not supported (ours and every real one fit).
    if (
      !f || f.type !== HandshakeType.ClientHello || f.fragmentOffset !== 0 ||
      f.fragmentLength !== f.length
    ) {
      stats.dropped.malformed++;
      return;
    }
    const ch = decodeClientHello(f.body);
    if (ch.error !== undefined) {
      stats.dropped.malformed++;
      return;
    }
    if (!this.#cookies.verify(key, ch.value)) {
      if (ch.value.cookie.length > 0) stats.dropped.badCookie++;
      this.#sendHelloVerify(data, from, f.messageSeq, this.#cookies.make(key, ch.value));
      return;
    }
    if (this.#handshaking >= this.#opts.maxHandshakes) {
      stats.dropped.handshakeCap++;
      return;
    }
    // A new valid handshake from the address of an established session: the client
    // restarted on the same port. The old session is gone for it.
    old?.close("replaced by a new handshake from the same address");

    const o = this.#opts;
    const to = netAddr(from);
    const peer = { hostname: from.hostname, port: from.port };
    const maxDatagramSize = typeof o.maxDatagramSize === "number"
      ? o.maxDatagramSize
      : checkDatagramSize(o.maxDatagramSize(peer));
    const conn = new Connection({
      role: "server",
      remoteAddr: peer,
      transmit: (d) => this.#socket.send(d, to),
      maxDatagramSize,
      handshakeMtu: o.handshakeMtu ?? Math.max(maxDatagramSize, 1200) + 37,
      stats,
      onClosed: (c) => {
        if (this.#conns.get(key) === c) this.#conns.delete(key);
      },
    });
    this.#conns.set(key, conn);
    this.#handshaking++;
    stats.handshakesStarted++;
    let settled = false;
    const timeout = o.clock.setTimer(() => {
      hs.fail(new DtlsError("HANDSHAKE_TIMEOUT", "Handshake did not complete in time"));
    }, o.handshakeTimeoutMs);
    const hs = new ServerHandshake(
      conn,
      { initialRtoMs: o.initialRtoMs, maxRtoMs: o.maxRtoMs, clock: o.clock },
      o.lookupPsk,
      (err) => {
        if (settled) return;
        settled = true;
        o.clock.clearTimer(timeout);
        this.#handshaking--;
        if (err) {
          stats.handshakesFailed++;
          if (err.alert !== undefined) conn.sendAlert(AlertLevel.Fatal, err.alert);
          conn.terminate(err.message);
          o.onHandshakeError?.(conn.remoteAddr, err);
          return;
        }
        const suite = hs.suite!;
        conn.setSuite(suite, maxDatagramSize + recordOverhead(suite));
        conn.identity = hs.identity;
        conn.established = true;
        stats.handshakesCompleted++;
        o.onConnection(conn);
      },
    );
    conn.handshake = hs;
    // Our first records continue from the ClientHello's sequence number, as the
    // stateless HelloVerifyRequest did (RFC 6347 4.2.1).
    conn.setWriteSequence(0, readU48(data, 5) + 1);
    hs.start(
      ch.value,
      encodeHandshake(HandshakeType.ClientHello, f.messageSeq, f.body),
      f.messageSeq,
    );
  }

  #sendHelloVerify(
    data: Uint8Array,
    from: Deno.NetAddr,
    messageSeq: number,
    cookie: Uint8Array,
  ): void {
    const body = encodeHelloVerifyRequest(cookie);
    const msg = encodeHandshake(HandshakeType.HelloVerifyRequest, messageSeq, body);
    // RFC 6347 4.2.1: the record copies the ClientHello's sequence number.
    const w = new Writer(RECORD_HEADER_SIZE + msg.length)
      .u8(ContentType.Handshake).u16(0xfefd).u16(0).bytes(data.subarray(5, 11)).u16(msg.length)
      .bytes(msg);
    this.stats.helloVerifyRequestsSent++;
    this.stats.datagramsSent++;
    this.#socket.send(w.finish(), { transport: "udp", hostname: from.hostname, port: from.port });
  }

  /** Closes every connection (close_notify) and the socket. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const c of [...this.#conns.values()]) c.close("server shutting down");
    this.#socket.close();
    await this.#socket.done;
  }
}

function readU48(d: Uint8Array, o: number): number {
  return ((d[o]! << 8) | d[o + 1]!) * 0x1_0000_0000 + ((d[o + 2]! << 24) >>> 0) +
    ((d[o + 3]! << 16) | (d[o + 4]! << 8) | d[o + 5]!);
}

/** Epoch 0 handshake record whose first message is a ClientHello. */
function isClientHello(d: Uint8Array): boolean {
  return d.length > RECORD_HEADER_SIZE && d[0] === ContentType.Handshake && d[3] === 0 &&
    d[4] === 0 &&
    d[RECORD_HEADER_SIZE] === HandshakeType.ClientHello;
}
