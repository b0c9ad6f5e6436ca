/**
 * What both sides' handshakes share: reassembly of fragmented messages in
 * message_seq order, the transcript, and flights with retransmission.
 *
 * RFC 6347 4.2.4 state machine, driven by the subclasses:
 *
 *   PREPARING --send flight--> SENDING --> WAITING --timer--> (resend, backoff x2)
 *                                            |  peer retransmits its last flight -> resend ours
 *                                            v  next flight arrives
 *                                         PREPARING ... -> FINISHED
 *
 * The last flight of a handshake is not resent on a timer, only when the peer
 * resends its own (which says ours was lost).
 */
import {
  AlertDescription,
  ContentType,
  HANDSHAKE_HEADER_SIZE,
  MAX_HANDSHAKE_MESSAGE,
} from "./constants.ts";
import type { RecordCipher } from "./cipher.ts";
import { DtlsError } from "./errors.ts";
import { decodeFragments, encodeHandshake, fragmentOf } from "./messages.ts";
import { finishedVerifyData, sha256 } from "./prf.ts";
import { equalBytes } from "./bytes.ts";
import { type Clock, realClock } from "../clock.ts";

/** The connection IDs a handshake negotiated (RFC 9146 3). */
export interface ConnectionIds {
  /** The peer's CID: every record we protect carries it (empty: records without one). */
  send: Uint8Array;
  /** Our CID: every record the peer protects carries it (empty: records without one). */
  receive: Uint8Array;
  /** Both ends speak the return routability check (RFC 9853), so an address change is followed. */
  rrc: boolean;
}

/** What the handshake needs from the connection's record layer. */
export interface RecordIO {
  /** Encodes one record in `epoch` (sealed with `cipher` if given), next sequence number. */
  encodeRecord(
    type: number,
    epoch: number,
    cipher: RecordCipher | undefined,
    payload: Uint8Array,
  ): Uint8Array;
  /** Sends one datagram to the peer. */
  transmit(datagram: Uint8Array): void;
  /** Largest UDP payload to send during the handshake. */
  readonly handshakeMtu: number;
  /** Per-record bytes added on top of the payload, for a cipher (or none). */
  overhead(cipher: RecordCipher | undefined): number;
  /** Keys for the next epoch: read side becomes usable at once (implicit CCS), write side on our CCS. */
  installPendingKeys(read: RecordCipher, write: RecordCipher): void;
  /** Our CCS was sent: later records go out in the next epoch. */
  switchWriteEpoch(): void;
  readonly writeEpoch: number;
  readonly writeCipher: RecordCipher | undefined;
  /**
   * Called before a flight is sent again (`bytes`: its size on the wire). False
   * withholds it: a timer retransmission then stops until the peer sends again.
   */
  onRetransmit(bytes: number): boolean;
  /** Forgets the anti-replay state of an epoch (after a stateless HelloVerifyRequest). */
  resetReadWindow(epoch: number): void;
  /** Connection IDs for the protected records (from the next epoch on). */
  useConnectionIds(ids: ConnectionIds): void;
}

export interface HandshakeMessage {
  type: number;
  messageSeq: number;
  body: Uint8Array;
  /** Normalized whole message (header with offset 0, length = whole), for the transcript. */
  raw: Uint8Array;
  epoch: number;
}

/** One entry of a flight: a handshake message or a ChangeCipherSpec. */
type FlightEntry =
  | { kind: "handshake"; message: Uint8Array; epoch: number; cipher: RecordCipher | undefined }
  | { kind: "ccs"; epoch: number; cipher: RecordCipher | undefined };

interface PartialMessage {
  type: number;
  length: number;
  body: Uint8Array;
  have: Uint8Array; // one byte per body byte: received?
  missing: number;
  epoch: number;
}

export interface HandshakeTimers {
  initialRtoMs: number;
  maxRtoMs: number;
  /** Retransmission timers and the duplicate-flight rate limit run on this. Default realClock. */
  clock?: Clock;
}

/** How far ahead of the next expected message_seq we buffer fragments. */
const MAX_SEQ_AHEAD = 8;

export abstract class Handshake {
  #nextReceiveSeq = 0;
  protected nextSendSeq = 0;
  readonly #partials = new Map<number, PartialMessage>();
  #transcript: Uint8Array[] = [];
  #flight: FlightEntry[] = [];
  #flightIsFinal = false;
  /** The peer's next message_seq when we sent our current flight. */
  #peerSeqAtFlight = 0;
  #timer: unknown;
  #rto: number;
  #lastResendAt = -Infinity;
  /** Bytes the current flight took on the wire when last sent. */
  #flightBytes = 0;
  finished = false;
  failed: DtlsError | undefined;

  readonly #clock: Clock;

  constructor(protected readonly io: RecordIO, protected readonly timers: HandshakeTimers) {
    this.#rto = timers.initialRtoMs;
    this.#clock = timers.clock ?? realClock;
  }

  /** Handles a complete, in-order handshake message. */
  protected abstract onMessage(msg: HandshakeMessage): void | Promise<void>;
  /** Called once: undefined on success, the error on failure. */
  protected abstract readonly onDone: (error: DtlsError | undefined) => void;

  /** Aborts the handshake; the owner sends the alert the error names. */
  fail(error: DtlsError): void {
    if (this.finished || this.failed) return;
    this.failed = error;
    this.dispose();
    this.onDone(error);
  }

  /**
   * A record of the new epoch did not authenticate before the handshake finished:
   * with a PSK that means the two sides derived different keys (a wrong API key).
   * Failing at once lets the peer be told why (decrypt_error) instead of timing out.
   */
  keysDiffer(): void {
    this.fail(
      new DtlsError(
        "HANDSHAKE_FAILED",
        "The peer's Finished does not decrypt: the pre-shared keys differ",
        AlertDescription.DecryptError,
      ),
    );
  }

  /** Marks the handshake done (after the peer's Finished verified, or ours was sent last). */
  protected succeed(): void {
    this.finished = true;
    this.onDone(undefined);
  }

  /** Checks the peer's Finished against the transcript so far (RFC 5246 7.4.9). */
  protected peerFinishedVerifies(
    body: Uint8Array,
    master: Uint8Array,
    peer: "client" | "server",
  ): boolean {
    return equalBytes(body, finishedVerifyData(master, peer, this.transcriptHash()));
  }

  protected set receiveSeq(seq: number) {
    this.#nextReceiveSeq = seq;
  }

  /** Feeds one handshake record's plaintext. Returns an error string if malformed. */
  onRecord(data: Uint8Array, epoch: number): string | undefined {
    const frags = decodeFragments(data);
    if (frags.error !== undefined) return frags.error;
    for (const f of frags.value) {
      if (f.length > MAX_HANDSHAKE_MESSAGE) {
        return `Cannot accept handshake message of ${f.length} bytes`;
      }
      if (f.messageSeq < this.#nextReceiveSeq) {
        // A message we already have. If it belongs to the peer flight that our current
        // flight answers, the peer resent it: ours was lost (RFC 6347 4.2.4). Copies of
        // messages that arrived after we sent ours are plain duplicates.
        if (f.messageSeq < this.#peerSeqAtFlight) this.#resendOnPeerRetransmit();
        continue;
      }
      if (f.messageSeq >= this.#nextReceiveSeq + MAX_SEQ_AHEAD) continue;
      let p = this.#partials.get(f.messageSeq);
      if (!p) {
        p = {
          type: f.type,
          length: f.length,
          body: new Uint8Array(f.length),
          have: new Uint8Array(f.length),
          missing: f.length,
          epoch,
        };
        this.#partials.set(f.messageSeq, p);
      } else if (p.type !== f.type || p.length !== f.length) {
        return `Cannot reassemble handshake message ${f.messageSeq}: fragments disagree on type or length`;
      }
      p.body.set(f.body, f.fragmentOffset);
      for (let i = f.fragmentOffset; i < f.fragmentOffset + f.fragmentLength; i++) {
        if (p.have[i] === 0) {
          p.have[i] = 1;
          p.missing--;
        }
      }
    }
    this.#drain();
    return undefined;
  }

  #processing: Promise<void> = Promise.resolve();

  /** Delivers complete messages in order; async handlers (PSK lookup) run one at a time. */
  #drain(): void {
    for (;;) {
      const seq = this.#nextReceiveSeq;
      const p = this.#partials.get(seq);
      if (!p || p.missing > 0) return;
      this.#partials.delete(seq);
      this.#nextReceiveSeq = seq + 1;
      const msg: HandshakeMessage = {
        type: p.type,
        messageSeq: seq,
        body: p.body,
        raw: encodeHandshake(p.type, seq, p.body),
        epoch: p.epoch,
      };
      this.#processing = this.#processing.then(() => {
        if (this.finished || this.failed) return;
        return this.onMessage(msg);
      }).catch((e) =>
        this.fail(e instanceof DtlsError ? e : new DtlsError("HANDSHAKE_FAILED", String(e)))
      );
    }
  }

  /** Waits until queued messages have been handled. */
  idle(): Promise<void> {
    return this.#processing;
  }

  protected addToTranscript(raw: Uint8Array): void {
    this.#transcript.push(raw);
  }
  protected resetTranscript(): void {
    this.#transcript = [];
  }
  protected transcriptHash(): Uint8Array {
    return sha256(...this.#transcript);
  }

  /** Builds a handshake message with our next message_seq and adds it to the transcript. */
  protected message(type: number, body: Uint8Array): Uint8Array {
    const m = encodeHandshake(type, this.nextSendSeq++, body);
    this.addToTranscript(m);
    return m;
  }

  /** Starts a new flight: the previous one is acknowledged by the peer's reply. */
  protected sendFlight(entries: Array<Uint8Array | "ccs">, final: boolean): void {
    this.#flight = [];
    for (const e of entries) {
      if (e === "ccs") {
        this.#flight.push({ kind: "ccs", epoch: this.io.writeEpoch, cipher: this.io.writeCipher });
        this.io.switchWriteEpoch();
      } else {
        this.#flight.push({
          kind: "handshake",
          message: e,
          epoch: this.io.writeEpoch,
          cipher: this.io.writeCipher,
        });
      }
    }
    this.#flightIsFinal = final;
    this.#peerSeqAtFlight = this.#nextReceiveSeq;
    this.#rto = this.timers.initialRtoMs;
    this.#transmitFlight();
    this.#arm();
  }

  #transmitFlight(): void {
    const mtu = this.io.handshakeMtu;
    const datagram: Uint8Array[] = [];
    let size = 0;
    this.#flightBytes = 0;
    const push = (record: Uint8Array) => {
      this.#flightBytes += record.length;
      if (size + record.length > mtu && datagram.length) {
        this.io.transmit(joinRecords(datagram, size));
        datagram.length = 0;
        size = 0;
      }
      datagram.push(record);
      size += record.length;
    };
    for (const e of this.#flight) {
      if (e.kind === "ccs") {
        push(this.io.encodeRecord(ContentType.ChangeCipherSpec, e.epoch, e.cipher, CCS_BODY));
        continue;
      }
      const bodyLen = e.message.length - HANDSHAKE_HEADER_SIZE;
      const room = Math.max(16, mtu - this.io.overhead(e.cipher) - HANDSHAKE_HEADER_SIZE);
      for (let off = 0; off < bodyLen || (off === 0 && bodyLen === 0); off += room) {
        const frag = off === 0 && bodyLen <= room
          ? e.message
          : fragmentOf(e.message, off, Math.min(room, bodyLen - off));
        push(this.io.encodeRecord(ContentType.Handshake, e.epoch, e.cipher, frag));
        if (bodyLen === 0) break;
      }
    }
    if (datagram.length) this.io.transmit(joinRecords(datagram, size));
  }

  #arm(): void {
    this.#clearTimer();
    if (this.#flightIsFinal || this.finished || this.failed) return;
    this.#timer = this.#clock.setTimer(() => {
      this.#timer = undefined;
      if (this.finished || this.failed) return;
      if (!this.io.onRetransmit(this.#flightBytes)) return; // withheld: wait for the peer
      this.#transmitFlight();
      this.#rto = Math.min(this.#rto * 2, this.timers.maxRtoMs);
      this.#arm();
    }, this.#rto);
  }

  #resendOnPeerRetransmit(): void {
    if (this.#flight.length === 0) return;
    const now = this.#clock.now();
    if (now - this.#lastResendAt < 100) return; // one answer per burst of duplicates
    if (!this.io.onRetransmit(this.#flightBytes)) return;
    this.#lastResendAt = now;
    this.#transmitFlight();
  }

  /** Resends the last flight because the peer resent its own (used after completion). */
  resendFinalFlight(): void {
    if (this.#flightIsFinal) this.#resendOnPeerRetransmit();
  }

  /** The peer's reply arrived: stop resending the current flight. */
  protected flightAcknowledged(): void {
    this.#clearTimer();
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) this.#clock.clearTimer(this.#timer);
    this.#timer = undefined;
  }

  /** Stops timers; called on success, failure and close. */
  dispose(): void {
    this.#clearTimer();
    this.#partials.clear();
  }
}

const CCS_BODY = new Uint8Array([1]);

function joinRecords(records: Uint8Array[], size: number): Uint8Array {
  if (records.length === 1) return records[0]!;
  const out = new Uint8Array(size);
  let o = 0;
  for (const r of records) {
    out.set(r, o);
    o += r.length;
  }
  return out;
}
