/**
 * The DTLS server: one UDP socket, many peers demultiplexed by address.
 *
 * Before a ClientHello carries a valid cookie the server keeps no state for a
 * peer (it answers with a HelloVerifyRequest computed from the packet alone), so
 * spoofed floods cost it no memory. A valid cookie only proves the peer receives
 * at its address: half-open handshakes (cookie checked, not finished) are bounded
 * per source address and in all. A full address cap evicts that address's oldest;
 * a full global cap gives a newcomer from a quieter address the busiest address's
 * oldest slot, or a stale handshake's slot, and otherwise drops its hello (its
 * client retransmits): a peer that opens handshakes and falls silent holds slots
 * only until they are stale, and a crowd of real clients (a restart) is let in at
 * the pace the server finishes handshakes, instead of each newcomer evicting a
 * handshake about to finish. Toward a
 * half-open peer the server sends at most `handshakeAmplificationLimit` times the
 * bytes it received from it; retransmissions beyond that wait for the peer.
 *
 * A client that offers a connection ID and the return routability check gets a
 * CID of 8 random bytes (RFC 9146, RFC 9853): its records are then found by CID,
 * not by address, so the session survives the client's NAT rebinding its port;
 * connection.ts says how the new address is validated. A record whose CID names
 * no session costs a map lookup.
 *
 * Every datagram shares one socket, so a flood of ClientHellos must not take the
 * time established sessions need: ClientHellos are budgeted per source address
 * (`helloRatePerAddress`) before anything is decoded, and HelloVerifyRequests in
 * all (`helloVerifyRate`, for floods from spoofed addresses); what is over budget
 * is dropped and counted (`dropped.helloRateLimited`).
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
import { bindUdp, type PacketSocket, type PacketSocketFactory } from "./udp.ts";
import { type Clock, realClock } from "../clock.ts";
import { equalBytes, Writer } from "./bytes.ts";
import { randomBytes } from "node:crypto";
import { KeyedTokenBuckets, TokenBucket } from "../rate_limit.ts";
import { checkDatagramSize, defaultMaxDatagramSize } from "./path.ts";
import {
  encodeStatelessReset,
  STATELESS_RESET_LENGTH,
  statelessResetToken,
} from "./stateless_reset.ts";

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
  /**
   * Half-open handshakes (cookie checked, not finished) at once: the server's work in
   * progress, which a crowd of clients (a restart) must not push past what it finishes
   * before their retransmission timers fire. When full, a newcomer takes the slot of
   * the oldest handshake of the address holding the most, if that address holds more
   * than the newcomer's would (a flood from a few addresses cannot lock others out);
   * else of the oldest handshake if it is older than `staleHandshakeMs`; else the
   * newcomer's ClientHello is dropped (`dropped.handshakesBusy`) and its client comes
   * back at its retransmission timeout. Default 128.
   */
  maxHandshakes?: number;
  /**
   * A half-open handshake this old gives its slot to a newcomer when `maxHandshakes`
   * is full (a real one takes a few round trips). Default 5000 ms.
   */
  staleHandshakeMs?: number;
  /**
   * Half-open handshakes per source address (an IPv4 address, an IPv6 /64; the
   * port does not count). When full, a new one from that address evicts that
   * address's oldest. Default 16.
   */
  maxHandshakesPerAddress?: number;
  /**
   * A half-open handshake sends its peer at most this many times the UDP bytes it
   * received from it (the first flight always goes out): retransmissions beyond
   * that are withheld until the peer sends again. The factor is QUIC's for
   * unvalidated addresses (RFC 9000 8.1). Default 3.
   */
  handshakeAmplificationLimit?: number;
  /** A handshake not finished in this time is abandoned. Default 30 000 ms. */
  handshakeTimeoutMs?: number;
  /**
   * Largest application payload per datagram, per peer (the mux probes up to it).
   * Default `defaultMaxDatagramSize(peer)`: 16 KiB on loopback, else what fits a 1280-byte MTU (path.ts).
   * Counted under the suite with the most overhead: UDP payloads stay within it +
   * `MAX_RECORD_OVERHEAD` (37), so a ChaCha20 record carries 8 bytes more and a record
   * with a connection ID 9 fewer (the connection's `maxDatagramSize` after the handshake).
   */
  maxDatagramSize?: number | ((peer: PeerAddr) => number);
  /** First handshake retransmission timeout; doubles up to `maxRtoMs`. Default 500 ms. */
  initialRtoMs?: number;
  /** Ceiling for the doubling retransmission timeout. Default 8000 ms. */
  maxRtoMs?: number;
  /**
   * Called when a handshake fails, with the peer and the reason (for logs). Not
   * called for evictions, which a flood causes by the thousand: those are counted
   * in `stats.handshakesEvicted`.
   */
  onHandshakeError?: (peer: PeerAddr, error: DtlsError) => void;
  /** UDP payload limit for handshake flights (they fragment to fit). Default maxDatagramSize + 37, at least 1237. */
  handshakeMtu?: number;
  /** Socket to use; default a real UDP socket. */
  socket?: PacketSocketFactory;
  /** Handshake timers, path challenges and cookie-secret rotation run on this. Default realClock. */
  clock?: Clock;
  /**
   * Negotiate connection IDs with clients that offer them and the return
   * routability check, and follow their address changes. Default true.
   */
  connectionIds?: boolean;
  /**
   * ClientHellos handled per source address (an IPv4 address, an IPv6 /64):
   * `burst`, then `perSecond`. A real client sends two or three per handshake.
   * Default { burst: 64, perSecond: 32 }.
   */
  helloRatePerAddress?: { burst: number; perSecond: number };
  /** HelloVerifyRequests sent in all. Default { burst: 4000, perSecond: 4000 }. */
  helloVerifyRate?: { burst: number; perSecond: number };
  /** Called when an established peer moved to a new address and it answered a path_challenge. */
  onPathValidated?: (conn: DtlsConn, from: PeerAddr) => void;
  /**
   * Stateless resets (stateless_reset.ts): with a `key` (the same after a restart),
   * each connection with a CID gets `statelessResetToken`, and a record naming a CID
   * this server does not know is answered with that CID's reset, at most `rate`
   * (default { burst: 1000, perSecond: 1000 }; over it, counted and not sent) and at
   * most once per CID every 500 ms (a client that was sending fast has many records in
   * flight; one reset ends its connection, and the rest would spend the budget other
   * clients need during a restart). Without a key, no resets.
   */
  statelessReset?: { key: Uint8Array; rate?: { burst: number; perSecond: number } };
}

/** A handshake past the cookie check and not finished: what eviction and the byte budget need. */
interface HalfOpen {
  /** The peer's "ip|port", the key of `#conns`. */
  readonly key: string;
  readonly conn: Connection;
  /** The source address group the per-address cap counts (`addressGroup`). */
  readonly group: string;
  /** UDP payload bytes received from the peer since (and with) its cookie-bearing ClientHello. */
  received: number;
  /** UDP payload bytes sent to the peer for this association. */
  sent: number;
  /** When its cookie-bearing ClientHello arrived (the clock's ms). */
  readonly startedAt: number;
}

/** A DTLS 1.2 PSK server: one UDP socket, many peers, stateless cookies before any per-peer state. */
export class DtlsServer {
  /** Counters over every peer (datagrams, handshakes, drops by reason). */
  readonly stats: DtlsStats = newStats();
  readonly #opts:
    & Required<
      Omit<
        DtlsServerOptions,
        "onHandshakeError" | "handshakeMtu" | "onPathValidated" | "statelessReset"
      >
    >
    & Pick<
      DtlsServerOptions,
      "onHandshakeError" | "handshakeMtu" | "onPathValidated" | "statelessReset"
    >;
  readonly #socket: PacketSocket;
  readonly #conns = new Map<string, Connection>();
  /** Connections with a CID, by the CID's first 4 bytes (unique among them). */
  readonly #byCid = new Map<number, Connection>();
  readonly #helloBudget: KeyedTokenBuckets;
  readonly #helloVerifyBudget: TokenBucket;
  readonly #resetBudget: TokenBucket | undefined;
  /** One reset per CID per `RESET_EVERY_MS` (the last 10,000 CIDs answered). */
  readonly #resetPerCid: KeyedTokenBuckets | undefined;
  readonly #cookies: CookieJar;
  /** Half-open handshakes by peer key, oldest first (Map keeps insertion order). */
  readonly #halfOpen = new Map<string, HalfOpen>();
  /** The socket's hold while any handshake is half-open. */
  #handshakesHold: (() => void) | undefined;
  /** The same, per address group, oldest first. */
  readonly #halfOpenByGroup = new Map<string, Set<HalfOpen>>();
  #closed = false;

  private constructor(opts: DtlsServerOptions) {
    this.#opts = {
      maxHandshakes: 128,
      staleHandshakeMs: 5000,
      maxHandshakesPerAddress: 16,
      handshakeAmplificationLimit: 3,
      handshakeTimeoutMs: 30_000,
      maxDatagramSize: (peer: PeerAddr) => defaultMaxDatagramSize(peer.hostname),
      initialRtoMs: 500,
      maxRtoMs: 8000,
      socket: bindUdp,
      clock: realClock,
      connectionIds: true,
      helloRatePerAddress: { burst: 64, perSecond: 32 },
      helloVerifyRate: { burst: 4000, perSecond: 4000 },
      ...opts,
    };
    const clock = this.#opts.clock;
    const now = () => clock.now();
    this.#helloBudget = new KeyedTokenBuckets({ ...this.#opts.helloRatePerAddress, now });
    this.#helloVerifyBudget = new TokenBucket({ ...this.#opts.helloVerifyRate, now });
    const reset = this.#opts.statelessReset;
    if (reset) {
      if (reset.key.length < 16) {
        throw new RangeError(
          `statelessReset.key must have at least 16 bytes, got ${reset.key.length}`,
        );
      }
      this.#resetBudget = new TokenBucket({
        ...(reset.rate ?? { burst: 1000, perSecond: 1000 }),
        now,
      });
      this.#resetPerCid = new KeyedTokenBuckets({
        burst: 1,
        perSecond: 1000 / RESET_EVERY_MS,
        maxKeys: 10_000,
        now,
      });
    }
    this.#cookies = new CookieJar(undefined, () => clock.now());
    if (typeof this.#opts.maxDatagramSize === "number") {
      checkDatagramSize(this.#opts.maxDatagramSize);
    }
    for (const k of ["maxHandshakes", "maxHandshakesPerAddress"] as const) {
      const n = this.#opts[k];
      if (!Number.isInteger(n) || n < 1) {
        throw new RangeError(`${k} must be a positive integer, got ${n}`);
      }
    }
    const amp = this.#opts.handshakeAmplificationLimit;
    if (!(amp >= 1)) {
      throw new RangeError(`handshakeAmplificationLimit must be at least 1, got ${amp}`);
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
    return this.#halfOpen.size;
  }

  #onDatagram(data: Uint8Array, from: Deno.NetAddr): void {
    const stats = this.stats;
    stats.datagramsReceived++;
    stats.bytesReceived += data.length;
    if (data[0] === ContentType.Tls12Cid) {
      if (data.length < RECORD_HEADER_SIZE + CID_LENGTH) {
        stats.dropped.malformed++;
        return;
      }
      const conn = this.#byCid.get(readU32(data, 11));
      if (conn && equalBytes(data.subarray(11, 11 + CID_LENGTH), conn.receiveCid)) {
        const h = conn.established ? undefined : this.#halfOpen.get(conn.key);
        if (h) h.received += data.length;
        conn.handleDatagram(data, from);
      } else {
        stats.dropped.unknownCid++;
        this.#sendStatelessReset(data, from);
      }
      return;
    }
    const key = peerKey(from);
    const conn = this.#conns.get(key);
    if (conn && !(conn.established && isClientHello(data))) {
      if (!conn.established) {
        const h = this.#halfOpen.get(key);
        if (h) h.received += data.length;
      }
      conn.handleDatagram(data, from);
      return;
    }
    if (!isClientHello(data)) {
      if (data.length < RECORD_HEADER_SIZE) stats.dropped.malformed++;
      else stats.dropped.noSession++;
      return;
    }
    const group = addressGroup(from.hostname);
    if (!this.#helloBudget.take(group)) {
      stats.dropped.helloRateLimited++;
      return;
    }
    // A handshake is starting (or a crowd of them: a node's restart): the socket reads
    // as datagrams arrive from now on, for its linger at least, so the next flights do
    // not wait for a batch, nor overflow the socket's queue meanwhile.
    this.#socket.hold?.()();
    this.#onClientHello(data, from, key, conn, group);
  }

  /** Stateless ClientHello processing: cookie check, then a new association. */
  #onClientHello(
    data: Uint8Array,
    from: Deno.NetAddr,
    key: string,
    old: Connection | undefined,
    group: string,
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
      if (!this.#helloVerifyBudget.take()) {
        stats.dropped.helloRateLimited++;
        return;
      }
      this.#sendHelloVerify(data, from, f.messageSeq, this.#cookies.make(key, ch.value));
      return;
    }
    const o = this.#opts;
    if (!this.#makeRoom(group)) {
      this.stats.dropped.handshakesBusy++;
      return;
    }
    // A new valid handshake from the address of an established session: the client
    // restarted on the same port. The old session is gone for it.
    old?.close("replaced by a new handshake from the same address");
    const peer = { hostname: from.hostname, port: from.port };
    const maxDatagramSize = typeof o.maxDatagramSize === "number"
      ? o.maxDatagramSize
      : checkDatagramSize(o.maxDatagramSize(peer));
    const conn: Connection = new Connection({
      role: "server",
      remoteAddr: peer,
      transmit: (d, to) => {
        half.sent += d.length;
        this.#socket.send(d, to);
      },
      clock: o.clock,
      onPathValidated: (c, to) => this.#onPathValidated(c, to),
      maxDatagramSize,
      handshakeMtu: o.handshakeMtu,
      stats,
      onClosed: (c) => {
        if (this.#conns.get(c.key) === c) this.#conns.delete(c.key);
        const cid = c.receiveCid;
        if (cid.length === CID_LENGTH && this.#byCid.get(readU32(cid, 0)) === c) {
          this.#byCid.delete(readU32(cid, 0));
        }
        // Closed mid-handshake (close_notify, shutdown): end the handshake so its slot
        // and timer go now.
        if (!c.established) {
          c.handshake?.fail(new DtlsError("CLOSED", "Connection closed during the handshake"));
        }
      },
      hold: this.#socket.hold ? () => this.#socket.hold!() : undefined,
      retransmitAllowed: (bytes) =>
        conn.established || half.sent + bytes <= o.handshakeAmplificationLimit * half.received,
    });
    conn.key = key;
    const half: HalfOpen = {
      key,
      conn,
      group,
      received: data.length,
      sent: 0,
      startedAt: o.clock.now(),
    };
    this.#conns.set(key, conn);
    this.#halfOpen.set(key, half);
    // Handshakes are answered as their flights arrive (the socket may batch reads).
    this.#handshakesHold ??= this.#socket.hold?.();
    let mine = this.#halfOpenByGroup.get(group);
    if (!mine) this.#halfOpenByGroup.set(group, mine = new Set());
    mine.add(half);
    stats.handshakesStarted++;
    let settled = false;
    const timeout = o.clock.setTimer(() => {
      hs.fail(new DtlsError("HANDSHAKE_TIMEOUT", "Handshake did not complete in time"));
    }, o.handshakeTimeoutMs);
    const hs = new ServerHandshake(
      conn,
      { initialRtoMs: o.initialRtoMs, maxRtoMs: o.maxRtoMs, clock: o.clock },
      (identity) => o.lookupPsk(identity, peer),
      (err) => {
        if (settled) return;
        settled = true;
        o.clock.clearTimer(timeout);
        this.#forget(half);
        if (err) {
          stats.handshakesFailed++;
          if (err.alert !== undefined) conn.sendAlert(AlertLevel.Fatal, err.alert);
          conn.terminate(err.message);
          if (err.code !== "HANDSHAKE_EVICTED" && !this.#closed) {
            o.onHandshakeError?.(conn.remoteAddr, err);
          }
          return;
        }
        const suite = hs.suite!;
        conn.setSuite(suite);
        conn.identity = hs.identity;
        const reset = o.statelessReset;
        if (reset && conn.receiveCid.length > 0) {
          conn.statelessResetToken = statelessResetToken(reset.key, conn.receiveCid);
        }
        conn.established = true;
        stats.handshakesCompleted++;
        o.onConnection(conn);
      },
      o.connectionIds ? () => this.#allocateCid(conn) : undefined,
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

  /**
   * `record` names a CID no connection here has (its connection is gone: this process
   * restarted, or dropped it): tells its sender so with the CID's stateless reset,
   * when a key is set, the record is larger than the reset (no amplification) and the
   * budget allows.
   */
  #sendStatelessReset(record: Uint8Array, from: Deno.NetAddr): void {
    const reset = this.#opts.statelessReset;
    if (!reset || record.length <= STATELESS_RESET_LENGTH || this.#closed) return;
    const r = this.stats.statelessResets;
    const cid = record.subarray(11, 11 + CID_LENGTH);
    if (!this.#resetPerCid!.take(`${readU32(cid, 0)}.${readU32(cid, 4)}`)) {
      r.repeated++;
      return;
    }
    if (!this.#resetBudget!.take()) {
      r.limited++;
      return;
    }
    r.sent++;
    const token = statelessResetToken(reset.key, cid);
    const datagram = encodeStatelessReset(token);
    this.stats.datagramsSent++;
    this.stats.bytesSent += datagram.length;
    this.#socket.send(datagram, from);
  }

  /** A CID for `conn` whose first 4 bytes no other connection's CID starts with. */
  #allocateCid(conn: Connection): Uint8Array {
    for (;;) {
      const cid = new Uint8Array(randomBytes(CID_LENGTH));
      const k = readU32(cid, 0);
      if (this.#byCid.has(k)) continue;
      this.#byCid.set(k, conn);
      return cid;
    }
  }

  /** The peer of `conn` answered from `to`: non-CID datagrams from there are its now. */
  #onPathValidated(conn: Connection, to: PeerAddr): void {
    if (this.#conns.get(conn.key) === conn) this.#conns.delete(conn.key);
    const key = peerKey(to);
    // An address another session holds stays that session's: this one has its CID.
    if (!this.#conns.has(key)) this.#conns.set(key, conn);
    conn.key = key;
    this.#opts.onPathValidated?.(conn, to);
  }

  /**
   * Room for a new half-open handshake from `group`, by the rules of `maxHandshakes`
   * and `maxHandshakesPerAddress`; false: none (the newcomer is dropped).
   */
  #makeRoom(group: string): boolean {
    const o = this.#opts;
    const evicted = this.stats.handshakesEvicted;
    const mine = this.#halfOpenByGroup.get(group);
    while (mine && mine.size >= o.maxHandshakesPerAddress) {
      evicted.addressCap++;
      this.#evict(mine.values().next().value!, "its address has too many half-open handshakes");
    }
    if (this.#halfOpen.size < o.maxHandshakes) return true;
    let busiest: Set<HalfOpen> | undefined;
    for (const g of this.#halfOpenByGroup.values()) {
      if (!busiest || g.size > busiest.size) busiest = g;
    }
    const oldest = this.#halfOpen.values().next().value!;
    const victim = busiest && busiest.size > (mine?.size ?? 0) + 1
      ? busiest.values().next().value!
      : o.clock.now() - oldest.startedAt >= o.staleHandshakeMs
      ? oldest
      : undefined;
    if (!victim) return false;
    evicted.globalCap++;
    this.#evict(victim, "too many half-open handshakes");
    return true;
  }

  /** Ends a half-open handshake without a word to the peer (it may be the flood). */
  #evict(half: HalfOpen, why: string): void {
    half.conn.handshake?.fail(
      new DtlsError("HANDSHAKE_EVICTED", `Handshake evicted for a newer one: ${why}`),
    );
    this.#forget(half); // already done by the handshake's end; this guards the loops above
    half.conn.terminate("handshake evicted");
  }

  #forget(half: HalfOpen): void {
    if (this.#halfOpen.get(half.key) === half) this.#halfOpen.delete(half.key);
    if (this.#halfOpen.size === 0) {
      this.#handshakesHold?.();
      this.#handshakesHold = undefined;
    }
    const mine = this.#halfOpenByGroup.get(half.group);
    if (mine?.delete(half) && mine.size === 0) this.#halfOpenByGroup.delete(half.group);
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
    this.#handshakesHold?.();
    this.#handshakesHold = undefined;
    this.#socket.close();
    await this.#socket.done;
  }
}

/**
 * The source address the per-address cap counts: an IPv4 address as is (also when
 * IPv4-mapped), an IPv6 address by its /64, which one host usually holds whole.
 */
export function addressGroup(ip: string): string {
  const bare = ip.startsWith("[") && ip.endsWith("]") ? ip.slice(1, -1) : ip;
  if (!bare.includes(":")) return bare;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(bare);
  if (mapped) return mapped[1]!;
  const noZone = bare.split("%")[0]!.toLowerCase();
  const [head = "", tail] = noZone.split("::");
  const left = head === "" ? [] : head.split(":");
  const right = tail === undefined || tail === "" ? [] : tail.split(":");
  const zeros = tail === undefined ? 0 : Math.max(0, 8 - left.length - right.length);
  const words = [...left, ...Array<string>(zeros).fill("0"), ...right];
  return words.slice(0, 4).map((w) => (parseInt(w, 16) || 0).toString(16)).join(":") + "::/64";
}

/** Length of the CIDs this server hands out: 4 bytes to find the session, 4 more to check. */
const CID_LENGTH = 8;
/** A CID is answered with a stateless reset at most once in this long. */
const RESET_EVERY_MS = 500;

/** The key of `#conns`: "ip|port". */
function peerKey(a: PeerAddr): string {
  return a.hostname + "|" + a.port;
}

function readU32(d: Uint8Array, o: number): number {
  return ((d[o]! << 24) >>> 0) + ((d[o + 1]! << 16) | (d[o + 2]! << 8) | d[o + 3]!);
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
