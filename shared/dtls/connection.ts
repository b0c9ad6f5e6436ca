/**
 * One DTLS association: the record layer (epochs, sequence numbers, AEAD, the
 * anti-replay window), alerts, and the established connection as a DatagramConn.
 *
 *  Record header (13 bytes, RFC 6347 4.1)
 *  +--------+------------+----------+--------------------------+-----------+
 *  | type 1 | version 2  | epoch 2  |   sequence_number 6      | length 2  |
 *  +--------+------------+----------+--------------------------+-----------+
 */
import type { DatagramConn, DatagramHandler } from "../datagram.ts";
import { type CipherSuite, RecordCipher, recordOverhead } from "./cipher.ts";
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
import type { Handshake, RecordIO } from "./handshake.ts";
import { ReplayWindow } from "./replay.ts";
import type { DtlsStats } from "./stats.ts";

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
}

/** Datagrams queued for a handler that is not attached yet. */
const MAX_EARLY_DATAGRAMS = 256;
/** Records of the next epoch kept while the keys are being computed (async PSK lookup). */
const MAX_DEFERRED_RECORDS = 16;

export interface ConnectionOptions {
  role: "client" | "server";
  remoteAddr: PeerAddr;
  /** Sends one UDP datagram to the peer. */
  transmit: (datagram: Uint8Array) => void;
  /** Application payload bytes per datagram. */
  maxDatagramSize: number;
  handshakeMtu: number;
  stats: DtlsStats;
  /** Called once when the connection closes, for the owner's bookkeeping. */
  onClosed?: (conn: Connection) => void;
  /**
   * Asked before a handshake flight of `bytes` is sent again; false withholds it
   * (the server's anti-amplification budget). Default: always allowed.
   */
  retransmitAllowed?: (bytes: number) => boolean;
}

export class Connection implements DtlsConn, RecordIO {
  readonly role: "client" | "server";
  readonly remoteAddr: PeerAddr;
  readonly handshakeMtu: number;
  readonly stats: DtlsStats;
  readonly #transmit: (d: Uint8Array) => void;
  readonly #onClosed: ((c: Connection) => void) | undefined;
  readonly #retransmitAllowed: ((bytes: number) => boolean) | undefined;
  #maxDatagramSize: number;

  /** `send` seals the datagram into a record of its own: the caller may reuse its buffer. */
  readonly sendCopies = true;
  handshake: Handshake | undefined;
  identity = "";
  suite = "";
  established = false;
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
    this.remoteAddr = opts.remoteAddr;
    this.#transmit = opts.transmit;
    this.#maxDatagramSize = opts.maxDatagramSize;
    this.handshakeMtu = opts.handshakeMtu;
    this.stats = opts.stats;
    this.#onClosed = opts.onClosed;
    this.#retransmitAllowed = opts.retransmitAllowed;
  }

  get maxDatagramSize(): number {
    return this.#maxDatagramSize;
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
    if (this.#closed) return;
    this.stats.datagramsSent++;
    this.stats.bytesSent += datagram.length;
    this.#transmit(datagram);
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
    h[0] = type;
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
    for (const rec of deferred) this.#onRecordBytes(rec);
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

  /** Sets the payload size after the handshake (it depends on the suite's overhead). */
  setSuite(suite: CipherSuite, udpPayloadLimit: number): void {
    this.suite = suite.name;
    this.#maxDatagramSize = Math.min(
      this.#maxDatagramSize,
      udpPayloadLimit - recordOverhead(suite),
      MAX_PLAINTEXT,
    );
  }

  // ---- inbound ----

  /** Handles one UDP datagram from the peer: one or more records. */
  handleDatagram(datagram: Uint8Array): void {
    if (this.#closed) return;
    let off = 0;
    while (off < datagram.length) {
      if (datagram.length - off < RECORD_HEADER_SIZE) {
        this.stats.dropped.malformed++;
        return;
      }
      const len = (datagram[off + 11]! << 8) | datagram[off + 12]!;
      const end = off + RECORD_HEADER_SIZE + len;
      if (end > datagram.length) {
        this.stats.dropped.malformed++;
        return;
      }
      // Usually one record per datagram: no view needed for it.
      this.#onRecordBytes(
        off === 0 && end === datagram.length ? datagram : datagram.subarray(off, end),
      );
      off = end;
    }
  }

  #onRecordBytes(rec: Uint8Array): void {
    const type = rec[0]!;
    const version = (rec[1]! << 8) | rec[2]!;
    const epoch = (rec[3]! << 8) | rec[4]!;
    if (
      (version !== DTLS_1_2 && !(version === DTLS_1_0 && epoch === 0)) || type < 20 || type > 23
    ) {
      this.stats.dropped.malformed++;
      return;
    }
    const seq = ((rec[5]! << 8) | rec[6]!) * 0x1_0000_0000 +
      ((rec[7]! << 24) >>> 0) + ((rec[8]! << 16) | (rec[9]! << 8) | rec[10]!);
    const fragment = rec.subarray(RECORD_HEADER_SIZE);

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
      const pt = cipher.open(rec, fragment); // reads the header from rec's first bytes
      if (!pt) {
        this.stats.dropped.badMac++;
        if (epoch === 1 && !this.established) this.handshake?.keysDiffer();
        return;
      }
      plaintext = pt;
    } else {
      plaintext = fragment;
    }
    window.accept(seq);
    if (epoch === 1 && this.#readEpoch === 0) {
      // First authentic record of the new epoch: switch (an implicit ChangeCipherSpec,
      // so a lost CCS never wedges the handshake).
      this.#readEpoch = 1;
      this.#readCipher = cipher;
      this.#pendingRead = undefined;
    }
    this.#onRecord(type, epoch, plaintext);
  }

  #onRecord(type: number, epoch: number, data: Uint8Array): void {
    switch (type) {
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
    this.handshake?.dispose();
    this.#deferred = [];
    this.#onClosed?.(this);
    this.#handler?.onClose(reason);
  }
}
