/**
 * One DTLS association: the record layer (epochs, sequence numbers, AEAD, the
 * anti-replay window), alerts, connection IDs and path validation, and the
 * established connection as a DatagramConn.
 *
 *  Record header (13 bytes, RFC 6347 4.1)
 *  +--------+------------+----------+--------------------------+-----------+
 *  | type 1 | version 2  | epoch 2  |   sequence_number 6      | length 2  |
 *  +--------+------------+----------+--------------------------+-----------+
 *
 *  With a connection ID (RFC 9146 4): type 25 (tls12_cid), the CID between the
 *  sequence number and the length, and the real type inside the ciphertext.
 *  +--------+-----------+---------+-------------------+-------+----------+
 *  | 25     | version 2 | epoch 2 | sequence_number 6 | cid n | length 2 |
 *  +--------+-----------+---------+-------------------+-------+----------+
 *
 * A server whose client negotiated a CID and the return routability check
 * (RFC 9853) follows the client to a new address: an authentic record that is the
 * newest so far, arriving from another address, moves the sending address there at
 * once (a NAT that rebinds has already dropped the old mapping), but until the
 * client answers a path_challenge sent to the new address, at most
 * `PATH_AMPLIFICATION_LIMIT` times the bytes received from it go there. An on-path
 * attacker that replays a record from a victim's address therefore gets the victim
 * a few packets at most, and the real client's next record moves the path back to
 * its validated address.
 */
import type { DatagramConn, DatagramHandler } from "../datagram.ts";
import { type CipherSuite, MAX_RECORD_OVERHEAD, RecordCipher, recordOverhead } from "./cipher.ts";
import { randomBytes } from "node:crypto";
import {
  AlertDescription,
  AlertLevel,
  alertName,
  ContentType,
  DTLS_1_0,
  DTLS_1_2,
  MAX_PLAINTEXT,
  RECORD_HEADER_SIZE,
} from "./constants.ts";
import { DtlsError } from "./errors.ts";
import type { ConnectionIds, Handshake, RecordIO } from "./handshake.ts";
import { ReplayWindow } from "./replay.ts";
import type { DtlsStats } from "./stats.ts";
import { type Clock, realClock } from "../clock.ts";
import { equalBytes } from "./bytes.ts";
import {
  isStatelessReset,
  looksLikeStatelessReset,
  STATELESS_RESET_TOKEN_LENGTH,
} from "./stateless_reset.ts";

/** A UDP peer: IP address (or host name) and port. */
export interface PeerAddr {
  /** IP address or host name. */
  hostname: string;
  /** UDP port. */
  port: number;
}

/** An established DTLS connection. */
export interface DtlsConn extends DatagramConn {
  /** The PSK identity (the domain) the handshake authenticated. */
  readonly identity: string;
  /** The negotiated cipher suite's IANA name. */
  readonly suite: string;
  /** The peer's UDP address. */
  readonly remoteAddr: PeerAddr;
  /**
   * Server side: the stateless reset token of this connection (stateless_reset.ts),
   * when the server has a reset key and a CID was negotiated. Only the peer may see it.
   */
  readonly statelessResetToken?: Uint8Array | undefined;
  /**
   * Client side: from now on, a datagram that is a stateless reset carrying `token`
   * closes this connection ("the server no longer knows it").
   */
  expectStatelessReset?(token: Uint8Array): void;
}

/** Datagrams queued for a handler that is not attached yet. */
const MAX_EARLY_DATAGRAMS = 256;
/** Records of the next epoch kept while the keys are being computed (async PSK lookup). */
const MAX_DEFERRED_RECORDS = 16;
/**
 * Toward an address not yet validated, at most this many times the bytes received
 * from it are sent (the factor QUIC uses, RFC 9000 8.1).
 */
export const PATH_AMPLIFICATION_LIMIT = 3;
/** First path_challenge retransmission timeout (doubles). */
const PATH_CHALLENGE_RTO_MS = 250;
/** path_challenges sent for one address before it is given up. */
const PATH_CHALLENGE_TRIES = 3;
/** RFC 9853 5: return_routability_check message types. */
const RrcType = { PathChallenge: 0, PathResponse: 1, PathDrop: 2 } as const;
const NO_CID = new Uint8Array(0);

/** An address that sent the newest authentic record but has not answered a path_challenge yet. */
interface PathProbe {
  readonly to: Deno.NetAddr;
  readonly cookie: Uint8Array;
  /** Authentic bytes received from `to` since it became the sending address. */
  received: number;
  /** Bytes sent to `to` since then. */
  sent: number;
  tries: number;
  timer: unknown;
}

function sameAddr(a: PeerAddr, b: PeerAddr): boolean {
  return a.port === b.port && a.hostname === b.hostname;
}

/** A reusable send address (a `Deno.NetAddr` is also a `PeerAddr`). */
function udpAddr(a: PeerAddr): Deno.NetAddr {
  return { transport: "udp", hostname: a.hostname, port: a.port };
}

export interface ConnectionOptions {
  role: "client" | "server";
  remoteAddr: PeerAddr;
  /** Sends one UDP datagram to `to` (the peer's address; reused, do not keep it changed). */
  transmit: (datagram: Uint8Array, to: Deno.NetAddr) => void;
  /**
   * Application payload bytes per datagram: the ceiling, counted under the suite that adds
   * most (`setSuite` gives each suite what is left of ceiling + MAX_RECORD_OVERHEAD).
   */
  maxDatagramSize: number;
  /** UDP payload limit for handshake flights. Default the ceiling (at least 1200) + 37. */
  handshakeMtu?: number | undefined;
  stats: DtlsStats;
  /** Called once when the connection closes, for the owner's bookkeeping. */
  onClosed?: (conn: Connection) => void;
  /**
   * Asked before a handshake flight of `bytes` is sent again; false withholds it
   * (the server's anti-amplification budget). Default: always allowed.
   */
  retransmitAllowed?: (bytes: number) => boolean;
  /** The socket's `hold` (PacketSocket): prompt delivery until released. */
  hold?: (() => () => void) | undefined;
  /**
   * Called when the peer's address changed and the new one answered a
   * path_challenge (only with a negotiated CID and return routability check).
   */
  onPathValidated?: (conn: Connection, from: PeerAddr) => void;
  /** Path-challenge timers run on this. Default realClock. */
  clock?: Clock;
}

export class Connection implements DtlsConn, RecordIO {
  readonly role: "client" | "server";
  readonly handshakeMtu: number;
  readonly stats: DtlsStats;
  readonly #transmit: (d: Uint8Array, to: Deno.NetAddr) => void;
  readonly #onClosed: ((c: Connection) => void) | undefined;
  readonly #retransmitAllowed: ((bytes: number) => boolean) | undefined;
  readonly #onPathValidated: ((c: Connection, from: PeerAddr) => void) | undefined;
  readonly #clock: Clock;
  #maxDatagramSize: number;
  /** The UDP payload a record may make: the ceiling + MAX_RECORD_OVERHEAD. */
  readonly #udpPayloadLimit: number;

  // paths: the last validated address, where records go now, and its probe if unvalidated
  #validated: Deno.NetAddr;
  #to: Deno.NetAddr;
  #probe: PathProbe | undefined;
  /** epoch * 2^48 + sequence of the newest authentic record. */
  #newest = -1;

  // connection IDs (RFC 9146), set during the handshake
  #sendCid: Uint8Array = NO_CID;
  #receiveCid: Uint8Array = NO_CID;
  #rrc = false;

  /** `send` seals the datagram into a record of its own: the caller may reuse its buffer. */
  readonly sendCopies = true;
  handshake: Handshake | undefined;
  /** The server's key for this connection's address in its address map ("ip|port"). */
  key = "";
  identity = "";
  suite = "";
  established = false;
  /** See DtlsConn.statelessResetToken (the server sets it). */
  statelessResetToken: Uint8Array | undefined;
  /** The token a reset from the peer must carry (client). */
  #resetToken: Uint8Array | undefined;
  #closed = false;

  // write side
  #writeEpoch = 0;
  #writeCipher: RecordCipher | undefined;
  #pendingWrite: RecordCipher | undefined;
  readonly #writeSeq = [0, 0];
  readonly #header = new Uint8Array(RECORD_HEADER_SIZE);

  // read side
  #readEpoch = 0;
  #readCipher: RecordCipher | undefined;
  #pendingRead: RecordCipher | undefined;
  readonly #windows = [new ReplayWindow(), new ReplayWindow()];
  #deferred: Uint8Array[] = [];

  #handler: DatagramHandler | undefined;
  #early: Uint8Array[] = [];
  #closeReason = "";

  constructor(opts: ConnectionOptions) {
    this.role = opts.role;
    this.#validated = this.#to = udpAddr(opts.remoteAddr);
    this.#transmit = opts.transmit;
    this.#onPathValidated = opts.onPathValidated;
    this.#clock = opts.clock ?? realClock;
    this.#maxDatagramSize = opts.maxDatagramSize;
    this.#udpPayloadLimit = opts.maxDatagramSize + MAX_RECORD_OVERHEAD;
    this.handshakeMtu = opts.handshakeMtu ??
      Math.max(opts.maxDatagramSize, 1200) + MAX_RECORD_OVERHEAD;
    this.stats = opts.stats;
    this.#onClosed = opts.onClosed;
    this.#retransmitAllowed = opts.retransmitAllowed;
    if (opts.hold) this.hold = opts.hold;
  }

  /** See DatagramConn.hold; absent when the socket always delivers at once. */
  hold?: () => () => void;

  get maxDatagramSize(): number {
    return this.#maxDatagramSize;
  }
  /** The peer's address: where it was last validated (the handshake, or a path_response). */
  get remoteAddr(): PeerAddr {
    const v = this.#validated;
    return { hostname: v.hostname, port: v.port };
  }
  /** The CID the peer puts in its records to us (empty: none negotiated). */
  get receiveCid(): Uint8Array {
    return this.#receiveCid;
  }
  get closed(): boolean {
    return this.#closed;
  }
  get writeEpoch(): number {
    return this.#writeEpoch;
  }
  get writeCipher(): RecordCipher | undefined {
    return this.#writeCipher;
  }

  // ---- RecordIO (used by the handshake) ----

  transmit(datagram: Uint8Array): void {
    this.#sendTo(datagram, this.#to);
  }

  /** Sends to `to`; toward the address being probed, only within its budget. */
  #sendTo(datagram: Uint8Array, to: Deno.NetAddr): void {
    if (this.#closed) return;
    const p = this.#probe;
    if (p && to === p.to) {
      if (p.sent + datagram.length > PATH_AMPLIFICATION_LIMIT * p.received) {
        this.stats.path.sendsWithheld++;
        return;
      }
      p.sent += datagram.length;
    }
    this.stats.datagramsSent++;
    this.stats.bytesSent += datagram.length;
    this.#transmit(datagram, to);
  }

  useConnectionIds(ids: ConnectionIds): void {
    this.#sendCid = ids.send;
    this.#receiveCid = ids.receive;
    this.#rrc = ids.rrc;
  }

  overhead(cipher: RecordCipher | undefined): number {
    return recordOverhead(cipher?.suite);
  }

  encodeRecord(
    type: number,
    epoch: number,
    cipher: RecordCipher | undefined,
    payload: Uint8Array,
  ): Uint8Array {
    const seq = this.#writeSeq[epoch]!;
    if (seq >= 2 ** 48 - 1) throw new DtlsError("CLOSED", "Sequence numbers exhausted");
    this.#writeSeq[epoch] = seq + 1;
    const h = this.#header;
    const cid = cipher && epoch > 0 && this.#sendCid.length > 0;
    h[0] = cid ? ContentType.Tls12Cid : type;
    h[1] = DTLS_1_2 >>> 8;
    h[2] = DTLS_1_2 & 0xff;
    h[3] = epoch >>> 8;
    h[4] = epoch & 0xff;
    const hi = Math.floor(seq / 0x1_0000_0000), lo = seq >>> 0;
    h[5] = hi >>> 8;
    h[6] = hi & 0xff;
    h[7] = lo >>> 24;
    h[8] = (lo >>> 16) & 0xff;
    h[9] = (lo >>> 8) & 0xff;
    h[10] = lo & 0xff;
    if (cid) return cipher.sealCid(h, this.#sendCid, payload, type);
    if (cipher) return cipher.seal(h, payload);
    const out = new Uint8Array(RECORD_HEADER_SIZE + payload.length);
    out.set(h);
    out[11] = payload.length >>> 8;
    out[12] = payload.length & 0xff;
    out.set(payload, RECORD_HEADER_SIZE);
    return out;
  }

  installPendingKeys(read: RecordCipher, write: RecordCipher): void {
    this.#pendingRead = read;
    this.#pendingWrite = write;
    const deferred = this.#deferred;
    this.#deferred = [];
    for (const rec of deferred) this.#onRecordBytes(rec, undefined);
  }

  switchWriteEpoch(): void {
    this.#writeEpoch = 1;
    this.#writeCipher = this.#pendingWrite;
  }

  resetReadWindow(epoch: number): void {
    this.#windows[epoch]?.reset();
  }

  /** Continues epoch 0's numbering from the peer's (a stateless server has no count of its own). */
  setWriteSequence(epoch: number, seq: number): void {
    this.#writeSeq[epoch] = seq;
  }

  onRetransmit(bytes: number): boolean {
    if (this.#retransmitAllowed && !this.#retransmitAllowed(bytes)) {
      this.stats.handshakeRetransmitsWithheld++;
      return false;
    }
    this.stats.flightsRetransmitted++;
    return true;
  }

  /**
   * Sets the payload size after the handshake: what a record under `suite` can carry in
   * the ceiling's UDP payload (the header, the suite's nonce and tag, and a CID record's
   * CID and real type come off it).
   */
  setSuite(suite: CipherSuite): void {
    this.suite = suite.name;
    // A CID record carries the CID and, inside the ciphertext, the real type.
    const cid = this.#sendCid.length > 0 ? this.#sendCid.length + 1 : 0;
    this.#maxDatagramSize = Math.min(
      this.#udpPayloadLimit - recordOverhead(suite) - cid,
      MAX_PLAINTEXT - (cid ? 1 : 0),
    );
  }

  // ---- inbound ----

  /**
   * Handles one UDP datagram from the peer: one or more records. `from` (the
   * server passes it) is where it came from, for following an address change.
   */
  handleDatagram(datagram: Uint8Array, from?: PeerAddr): void {
    if (this.#closed) return;
    if (this.#resetToken && looksLikeStatelessReset(datagram)) {
      const r = this.stats.statelessResets;
      if (isStatelessReset(datagram, this.#resetToken)) {
        r.received++;
        this.terminate(
          "stateless reset: the server no longer knows this connection (it restarted or lost it)",
        );
      } else r.wrongToken++;
      return;
    }
    const cidHeader = RECORD_HEADER_SIZE + this.#receiveCid.length;
    let off = 0;
    while (off < datagram.length) {
      const header = datagram[off] === ContentType.Tls12Cid ? cidHeader : RECORD_HEADER_SIZE;
      if (datagram.length - off < header) {
        this.stats.dropped.malformed++;
        return;
      }
      const len = (datagram[off + header - 2]! << 8) | datagram[off + header - 1]!;
      const end = off + header + len;
      if (end > datagram.length) {
        this.stats.dropped.malformed++;
        return;
      }
      // Usually one record per datagram: no view needed for it.
      this.#onRecordBytes(
        off === 0 && end === datagram.length ? datagram : datagram.subarray(off, end),
        from,
      );
      off = end;
    }
  }

  #onRecordBytes(rec: Uint8Array, from: PeerAddr | undefined): void {
    let type = rec[0]!;
    const version = (rec[1]! << 8) | rec[2]!;
    const epoch = (rec[3]! << 8) | rec[4]!;
    if (
      (version !== DTLS_1_2 && !(version === DTLS_1_0 && epoch === 0)) ||
      !(type >= ContentType.ChangeCipherSpec && type <= ContentType.ApplicationData ||
        type === ContentType.Tls12Cid || type === ContentType.ReturnRoutabilityCheck)
    ) {
      this.stats.dropped.malformed++;
      return;
    }
    // With a CID of ours negotiated, every protected record must carry it, and only then.
    const withCid = type === ContentType.Tls12Cid;
    if (withCid !== (epoch > 0 && this.#receiveCid.length > 0)) {
      this.stats.dropped.unexpected++;
      return;
    }
    const cidLength = this.#receiveCid.length;
    if (withCid && !equalBytes(rec.subarray(11, 11 + cidLength), this.#receiveCid)) {
      this.stats.dropped.unknownCid++;
      return;
    }
    const seq = ((rec[5]! << 8) | rec[6]!) * 0x1_0000_0000 +
      ((rec[7]! << 24) >>> 0) + ((rec[8]! << 16) | (rec[9]! << 8) | rec[10]!);
    const fragment = rec.subarray(withCid ? RECORD_HEADER_SIZE + cidLength : RECORD_HEADER_SIZE);

    let cipher: RecordCipher | undefined;
    if (epoch === this.#readEpoch) {
      cipher = this.#readCipher;
    } else if (epoch === this.#readEpoch + 1 && epoch === 1) {
      if (!this.#pendingRead) {
        // Keys not ready yet (PSK lookup in progress): keep a few, drop the rest.
        if (
          this.handshake && !this.handshake.finished && this.#deferred.length < MAX_DEFERRED_RECORDS
        ) {
          this.#deferred.push(rec.slice());
        } else this.stats.dropped.wrongEpoch++;
        return;
      }
      cipher = this.#pendingRead;
    } else if (epoch === 0 && this.#readEpoch === 1) {
      // The peer resent its epoch-0 flight: our last flight was lost.
      if (type === ContentType.Handshake || type === ContentType.ChangeCipherSpec) {
        this.handshake?.resendFinalFlight();
      }
      this.stats.dropped.wrongEpoch++;
      return;
    } else {
      this.stats.dropped.wrongEpoch++;
      return;
    }

    const window = this.#windows[epoch]!;
    if (!window.check(seq)) {
      this.stats.dropped.replayed++;
      return;
    }
    let plaintext: Uint8Array;
    if (cipher) {
      // Both read the header from rec's first bytes.
      const pt = withCid
        ? cipher.openCid(rec, this.#receiveCid, fragment)
        : cipher.open(rec, fragment);
      if (!pt) {
        this.stats.dropped.badMac++;
        if (epoch === 1 && !this.established) this.handshake?.keysDiffer();
        return;
      }
      plaintext = pt;
    } else {
      plaintext = fragment;
    }
    if (withCid) {
      // DTLSInnerPlaintext: content, real type, zeros.
      let i = plaintext.length - 1;
      while (i >= 0 && plaintext[i] === 0) i--;
      type = i >= 0 ? plaintext[i]! : 0;
      if (type === ContentType.Tls12Cid || type === ContentType.ChangeCipherSpec || type === 0) {
        window.accept(seq);
        this.stats.dropped.malformed++;
        return;
      }
      plaintext = plaintext.subarray(0, i);
    }
    window.accept(seq);
    if (from && this.established) this.#onAuthentic(epoch * 2 ** 48 + seq, rec.length, from);
    if (epoch === 1 && this.#readEpoch === 0) {
      // First authentic record of the new epoch: switch (an implicit ChangeCipherSpec,
      // so a lost CCS never wedges the handshake).
      this.#readEpoch = 1;
      this.#readCipher = cipher;
      this.#pendingRead = undefined;
    }
    this.#onRecord(type, epoch, plaintext, from);
  }

  // ---- paths (RFC 9146 6, RFC 9853) ----

  /** An authentic record (`number`: epoch and sequence) of `bytes` arrived from `from`. */
  #onAuthentic(number: number, bytes: number, from: PeerAddr): void {
    const newest = number > this.#newest;
    if (newest) this.#newest = number;
    const to = this.#to;
    if (sameAddr(from, to)) {
      const p = this.#probe;
      if (p && p.to === to) p.received += bytes;
      return;
    }
    // Older records from elsewhere are used but never move the path; without the
    // return routability check, nor does anything else.
    if (!newest || !this.#rrc) return;
    this.stats.path.changes++;
    this.#stopProbe();
    if (sameAddr(from, this.#validated)) {
      this.#to = this.#validated;
      this.#handler?.onPathChanged?.();
      return;
    }
    const p: PathProbe = {
      to: udpAddr(from),
      cookie: new Uint8Array(randomBytes(8)),
      received: bytes,
      sent: 0,
      tries: 0,
      timer: undefined,
    };
    this.#to = p.to;
    this.#probe = p;
    this.#challenge(p);
  }

  #challenge(p: PathProbe): void {
    if (this.#closed || this.#probe !== p) return;
    if (p.tries === PATH_CHALLENGE_TRIES) {
      // No answer: the address is not the peer's. Back to the validated one.
      this.stats.path.validationsFailed++;
      this.#probe = undefined;
      if (this.#to === p.to) {
        this.#to = this.#validated;
        this.#handler?.onPathChanged?.();
      }
      return;
    }
    const delay = PATH_CHALLENGE_RTO_MS * 2 ** p.tries;
    p.tries++;
    this.stats.path.challengesSent++;
    this.#sendTo(this.#rrcRecord(RrcType.PathChallenge, p.cookie), p.to);
    p.timer = this.#clock.setTimer(() => this.#challenge(p), delay);
  }

  /** A return_routability_check record: message type, then the 8-byte cookie. */
  #rrcRecord(type: number, cookie: Uint8Array): Uint8Array {
    const body = new Uint8Array(9);
    body[0] = type;
    body.set(cookie, 1);
    return this.encodeRecord(
      ContentType.ReturnRoutabilityCheck,
      this.#writeEpoch,
      this.#writeCipher,
      body,
    );
  }

  #stopProbe(): void {
    const p = this.#probe;
    if (!p) return;
    this.#clock.clearTimer(p.timer);
    this.#probe = undefined;
  }

  #onReturnRoutabilityCheck(data: Uint8Array, from: PeerAddr | undefined): void {
    if (data.length !== 9) {
      this.stats.dropped.malformed++;
      return;
    }
    const cookie = data.subarray(1);
    switch (data[0]) {
      case RrcType.PathChallenge: {
        // Answered to where it came from (RFC 9853 5); same size, so no amplification.
        this.#sendTo(
          this.#rrcRecord(RrcType.PathResponse, cookie),
          from ? udpAddr(from) : this.#to,
        );
        return;
      }
      case RrcType.PathResponse: {
        const p = this.#probe;
        if (!p || !from || !sameAddr(from, p.to) || !equalBytes(cookie, p.cookie)) {
          this.stats.dropped.unexpected++;
          return;
        }
        this.#stopProbe();
        this.#validated = p.to;
        this.stats.path.validated++;
        this.#onPathValidated?.(this, p.to);
        this.#handler?.onPathChanged?.();
        return;
      }
      case RrcType.PathDrop:
        return; // the peer will not use that path again: nothing of ours depends on it
      default:
        this.stats.dropped.malformed++;
    }
  }

  #onRecord(type: number, epoch: number, data: Uint8Array, from?: PeerAddr): void {
    switch (type) {
      case ContentType.ReturnRoutabilityCheck:
        if (!this.established || epoch === 0 || !this.#rrc) {
          this.stats.dropped.unexpected++;
          return;
        }
        this.#onReturnRoutabilityCheck(data, from);
        return;
      case ContentType.ApplicationData:
        if (!this.established || epoch === 0) {
          this.stats.dropped.unexpected++;
          return;
        }
        this.handshake?.dispose(); // the peer has our final flight: it sends data
        this.#deliver(data);
        return;
      case ContentType.Handshake: {
        if (!this.handshake) {
          this.stats.dropped.unexpected++;
          return;
        }
        if (this.established) {
          // Only a retransmitted final flight is legitimate now (no renegotiation).
          this.handshake.resendFinalFlight();
          return;
        }
        const err = this.handshake.onRecord(data.slice(), epoch);
        if (err !== undefined) {
          this.stats.dropped.malformed++;
          this.handshake.fail(new DtlsError("HANDSHAKE_FAILED", err, AlertDescription.DecodeError));
        }
        return;
      }
      case ContentType.ChangeCipherSpec:
        if (data.length !== 1 || data[0] !== 1) {
          this.stats.dropped.malformed++;
          return;
        }
        // Nothing to do: the read side switches epochs on the first authentic
        // epoch-1 record, so a lost or reordered CCS never wedges the handshake.
        return;
      case ContentType.Alert: {
        if (data.length !== 2) {
          this.stats.dropped.malformed++;
          return;
        }
        this.stats.alertsReceived++;
        const level = data[0]!, desc = data[1]!;
        if (desc === AlertDescription.CloseNotify) {
          this.#shutdown(`Peer closed the connection (close_notify)`, false);
        } else if (level === AlertLevel.Fatal) {
          if (this.handshake && !this.established) {
            this.handshake.fail(DtlsError.alertReceived(desc));
          } else this.#shutdown(`Peer sent fatal alert ${alertName(desc)}`, false);
        }
        return;
      }
    }
  }

  #deliver(data: Uint8Array): void {
    const h = this.#handler;
    if (h) {
      h.onDatagram(data);
      return;
    }
    if (this.#early.length < MAX_EARLY_DATAGRAMS) this.#early.push(data);
    else this.stats.dropped.undeliverable++;
  }

  // ---- DatagramConn ----

  send(datagram: Uint8Array): void {
    if (datagram.length > this.#maxDatagramSize) {
      throw new RangeError(
        `Cannot send datagram: ${datagram.length} bytes exceeds maxDatagramSize ${this.#maxDatagramSize}`,
      );
    }
    if (this.#closed || !this.established) return;
    this.transmit(
      this.encodeRecord(ContentType.ApplicationData, this.#writeEpoch, this.#writeCipher, datagram),
    );
  }

  expectStatelessReset(token: Uint8Array): void {
    if (token.length !== STATELESS_RESET_TOKEN_LENGTH) {
      throw new RangeError(
        `A stateless reset token has ${STATELESS_RESET_TOKEN_LENGTH} bytes, got ${token.length}`,
      );
    }
    this.#resetToken = token.slice();
  }

  attach(handler: DatagramHandler): void {
    this.#handler = handler;
    const early = this.#early;
    this.#early = [];
    for (const d of early) handler.onDatagram(d);
    if (this.#closed) handler.onClose(this.#closeReason);
  }

  /** Sends an alert in the current write epoch. */
  sendAlert(level: number, description: number): void {
    if (this.#closed) return;
    this.stats.alertsSent++;
    this.transmit(
      this.encodeRecord(
        ContentType.Alert,
        this.#writeEpoch,
        this.#writeCipher,
        new Uint8Array([level, description]),
      ),
    );
  }

  close(reason = "closed locally"): void {
    this.#shutdown(reason, true);
  }

  /** Closes without close_notify (after a fatal alert, or when the peer is gone). */
  terminate(reason: string): void {
    this.#shutdown(reason, false);
  }

  #shutdown(reason: string, notify: boolean): void {
    if (this.#closed) return;
    if (notify) this.sendAlert(AlertLevel.Warning, AlertDescription.CloseNotify);
    this.#closed = true;
    this.#closeReason = reason;
    this.#stopProbe();
    this.handshake?.dispose();
    this.#deferred = [];
    this.#onClosed?.(this);
    this.#handler?.onClose(reason);
  }
}
