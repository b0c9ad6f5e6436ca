/**
 * One bidirectional stream: its send half (SendBuffer, peer's flow-control
 * limit, FIN/RESET) and receive half (RecvBuffer, our window, STOP_SENDING),
 * with backpressure both ways:
 * - `write()` resolves once the bytes are in the send buffer; the buffer holds
 *   at most `streamSendBufferBytes` bytes not yet sent, and what was sent until
 *   its ACK: at most the peer's window for the stream beyond that, and never more
 *   than `maxStreamWindowBytes` above the acknowledged prefix. Counting sent
 *   bytes too held a stream to 1 MiB per round trip, and a loss, whose bytes stay
 *   until their resend is acked, stopped the writer for a round trip or two.
 * - `read()` hands over data only when asked, and flow-control credit returns
 *   to the peer only then.
 *
 * `read`/`write`/`close` are the direct API (one reader and one writer at a
 * time); `readable` and `writable` are Web Streams over it, made on first use:
 * use one or the other for each direction. Per-request code uses the direct
 * API: two Web Streams per stream cost more than the rest of a small request.
 */
import { EMPTY_BYTES } from "../bytes.ts";
import { MuxStreamError, StreamErrorCode } from "./errors.ts";
import { ReceiveWindow } from "./flow.ts";
import { RecvBuffer } from "./recv_buffer.ts";
import { SendBuffer } from "./send_buffer.ts";
import { FrameKind, type SentStreamData, type StreamControlKind } from "./sent_frame.ts";
import type { MuxStream } from "./types.ts";
import type { Writer } from "./wire.ts";

export type { MuxStream };

/**
 * What a stream needs from its session: an object the session hands to each stream
 * it makes (not part of the session's public API).
 */
export interface StreamHost {
  readonly sendBufferLimit: number;
  /**
   * Most bytes sent beyond the acknowledged prefix (`maxStreamWindowBytes`), whatever the
   * peer's MAX_STREAM_DATA: it may run ahead of the ACKs we have (the ACK of a resent
   * packet still on its way), and the send buffer holds every byte above the prefix.
   */
  readonly sentUnackedLimit: number;
  /** The stream has data, FIN or retransmissions to send. */
  sendable(s: Stream): void;
  /** Queues a RESET_STREAM, STOP_SENDING or MAX_STREAM_DATA for s (control_frames.ts). */
  queueControl(s: Stream, kind: StreamControlKind): void;
  /** The reader consumed `n` bytes (or they were discarded): return session credit. */
  consumed(s: Stream, n: number): void;
  /** Both halves may be finished: free the stream if so. */
  maybeDone(s: Stream): void;
  /** Data arrived for s's waiting reader: call `s.deliver()` once this I/O turn is over. */
  deliverLater(s: Stream): void;
}

const RESET_BIT = 1 << FrameKind.RESET_STREAM;
const STOP_BIT = 1 << FrameKind.STOP_SENDING;

const READ_COALESCE_BYTES = 256 * 1024;

function codeOf(reason: unknown): number {
  if (typeof reason === "number" && Number.isInteger(reason) && reason >= 0) return reason;
  if (reason instanceof MuxStreamError) return reason.code;
  return StreamErrorCode.CANCELLED;
}

interface PendingWrite {
  chunk: Uint8Array;
  pos: number;
  resolve: () => void;
  reject: (e: unknown) => void;
}

interface PendingRead {
  resolve: (chunk: Uint8Array | null) => void;
  reject: (e: unknown) => void;
}

export class Stream implements MuxStream {
  readonly id: number;
  readonly local: boolean;
  readonly #host: StreamHost;

  // Send half.
  readonly send = new SendBuffer();
  /** Peer's MAX_STREAM_DATA. */
  sendMax: number;
  /** "open" → "fin" (writer closed) or "reset"; done when everything is acked. */
  sendState: "open" | "fin" | "reset" = "open";
  resetCode = 0;
  resetFinalSize = 0;
  resetAcked = false;
  sendError: unknown = null;
  pendingWrite: PendingWrite | null = null;
  /** In the packer's round-robin send queue. */
  inSendQueue = false;
  /** Waiting in the session's delivery batch (`StreamHost.deliverLater`). */
  deliverQueued = false;

  // Receive half.
  readonly recv = new RecvBuffer();
  readonly window: ReceiveWindow;
  /** "open", "stopped" (we sent STOP_SENDING), "reset" (peer reset), "closed" (readable closed). */
  recvState: "open" | "stopped" | "reset" | "closed" = "open";
  stopCode = 0;
  /** What the peer may still send on the receive half (the session sums these: flow.ts). */
  credit = 0;
  /** Credit above the wire default announced with our stream that its reader has not taken yet (conn_flow.ts). */
  openCredit = 0;
  /**
   * Control frames queued for this stream: bit `1 << kind` per StreamControlKind. Only
   * control_frames.ts sets them; the stream clears one that is no longer needed.
   */
  controlPending = 0;
  #readable: ReadableStream<Uint8Array> | null = null;
  #writable: WritableStream<Uint8Array> | null = null;
  #wc: WritableStreamDefaultController | null = null;
  #pendingRead: PendingRead | null = null;
  /** Why reads fail (reset, stop, session end); null while readable. */
  #readError: unknown = null;
  /** close() came while a write was waiting: FIN once it is in. */
  #closeAfterWrite = false;
  #sendClosed: Promise<void> | null = null;
  #settleSendClosed: ((e?: unknown) => void) | null = null;
  /** Freed by the session. */
  done = false;

  constructor(
    host: StreamHost,
    id: number,
    local: boolean,
    peerInitialWindow: number,
    window: ReceiveWindow,
  ) {
    this.#host = host;
    this.id = id;
    this.local = local;
    this.sendMax = peerInitialWindow;
    this.window = window;
  }

  get readable(): ReadableStream<Uint8Array> {
    return this.#readable ??= new ReadableStream<Uint8Array>({
      pull: async (c) => {
        const chunk = await this.read();
        if (chunk === null) c.close();
        else c.enqueue(chunk);
      },
      cancel: (reason) => this.stopSending(codeOf(reason)),
    }, { highWaterMark: 0 });
  }

  get writable(): WritableStream<Uint8Array> {
    return this.#writable ??= new WritableStream<Uint8Array>({
      start: (c) => {
        this.#wc = c;
        if (this.sendState === "reset") c.error(this.sendError);
      },
      write: (chunk) => this.write(chunk),
      close: () => {
        if (this.sendError !== null) throw this.sendError;
        this.close();
      },
      abort: (reason) => this.reset(codeOf(reason)),
    }, { highWaterMark: 1 });
  }

  get bufferedBytes(): number {
    return this.send.buffered + this.recv.buffered;
  }
  get sendBufferedBytes(): number {
    return this.send.buffered;
  }
  get recvBufferedBytes(): number {
    return this.recv.buffered;
  }

  // ---- send half ----

  write(chunk: Uint8Array): Promise<void> {
    if (!(chunk instanceof Uint8Array)) {
      return Promise.reject(
        new TypeError(`Cannot write to stream ${this.id}: chunk is not a Uint8Array`),
      );
    }
    if (this.sendState !== "open" || this.#closeAfterWrite) {
      return Promise.reject(
        this.sendError ?? new TypeError(`Cannot write to stream ${this.id}: it is closed`),
      );
    }
    if (this.pendingWrite !== null) {
      return Promise.reject(
        new TypeError(`Cannot write to stream ${this.id}: a write is already waiting`),
      );
    }
    const n = this.send.write(chunk, 0, this.#host.sendBufferLimit);
    if (n > 0) this.#host.sendable(this);
    if (n === chunk.length) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.pendingWrite = { chunk, pos: n, resolve, reject };
    });
  }

  close(): void {
    if (this.sendState !== "open") return;
    if (this.pendingWrite !== null) {
      this.#closeAfterWrite = true;
      return;
    }
    this.sendState = "fin";
    this.send.finQueued = true;
    this.send.finPending = true;
    this.#host.sendable(this);
    this.#settleSendClosed?.();
  }

  get sendClosed(): Promise<void> {
    if (this.#sendClosed === null) {
      if (this.sendState === "fin") this.#sendClosed = Promise.resolve();
      else if (this.sendState === "reset") {
        this.#sendClosed = Promise.reject(this.sendError);
        this.#sendClosed.catch(() => {});
      } else {
        this.#sendClosed = new Promise<void>((resolve, reject) => {
          this.#settleSendClosed = (e?: unknown) => {
            this.#settleSendClosed = null;
            if (e === undefined) resolve();
            else reject(e);
          };
        });
        this.#sendClosed.catch(() => {});
      }
    }
    return this.#sendClosed;
  }

  /** Sending freed send-buffer room (or acks ended the send half): move a waiting write in. */
  onSendProgress(): void {
    const pw = this.pendingWrite;
    if (pw !== null) {
      const n = this.send.write(pw.chunk, pw.pos, this.#host.sendBufferLimit);
      if (n > 0) {
        pw.pos += n;
        this.#host.sendable(this);
      }
      if (pw.pos === pw.chunk.length) {
        this.pendingWrite = null;
        pw.resolve();
        if (this.#closeAfterWrite) {
          this.#closeAfterWrite = false;
          this.close();
        }
      }
    }
    if (this.sendDone) this.#host.maybeDone(this);
  }

  /** The send half has nothing more to do. */
  get sendDone(): boolean {
    if (this.sendState === "reset") return this.resetAcked;
    return this.sendState === "fin" && this.send.finAcked && this.send.buffered === 0;
  }

  /** All written (data, FIN, a RESET) was sent and acknowledged: what a graceful close awaits. */
  get sendSettled(): boolean {
    if (this.pendingWrite !== null || this.send.buffered > 0) return false;
    if ((this.controlPending & RESET_BIT) !== 0) return false;
    return this.sendState !== "fin" || this.send.finAcked;
  }

  /** Lost data waits to be sent again (it goes before new data). */
  get retransmitting(): boolean {
    return this.send.retransmitting;
  }

  /** Something to send: lost data, the FIN, or new data the flow-control limits allow. */
  hasSendWork(connCredit: number): boolean {
    if (this.done || this.sendState === "reset") return false;
    return this.send.hasWork(this.#sendLimit(connCredit));
  }

  /**
   * Writes the next STREAM frame into w (SendBuffer.writeFrame), within this stream's
   * and the session's (`connCredit`) flow-control limits; null if nothing fit.
   */
  writeFrame(w: Writer, connCredit: number): SentStreamData | null {
    const f = this.send.writeFrame(w, this, this.#sendLimit(connCredit));
    // Sending made room: a waiting write moves in once half the limit is free (in
    // pieces of that size, not one per packet).
    if (
      f !== null && this.pendingWrite !== null &&
      this.send.unsent <= this.#host.sendBufferLimit / 2
    ) {
      this.onSendProgress();
    }
    return f;
  }

  /**
   * How far new data may go: the peer's MAX_STREAM_DATA, or less if the session allows
   * less or the acknowledged prefix lags (StreamHost.sentUnackedLimit).
   */
  #sendLimit(connCredit: number): number {
    return Math.min(this.sendMax, this.send.nextNew + connCredit, this.#unackedLimit());
  }

  /** The offset new data stops at while the acknowledged prefix lags (sentUnackedLimit). */
  #unackedLimit(): number {
    return this.send.ackedPrefix + this.#host.sentUnackedLimit;
  }

  /** A packet carrying [offset, offset + length) (and the FIN if `fin`) was acknowledged. */
  onDataAcked(offset: number, length: number, fin: boolean): void {
    if (this.sendState === "reset") return;
    const held = this.send.nextNew >= this.#unackedLimit();
    this.send.onAcked(offset, length, fin);
    // The prefix moved past what held new data back: there is room to send again.
    if (held && this.send.nextNew < this.#unackedLimit()) this.#host.sendable(this);
    this.onSendProgress();
  }

  /** ... or declared lost: send it again. */
  onDataLost(offset: number, length: number, fin: boolean): void {
    if (this.done || this.sendState === "reset") return;
    this.send.onLost(offset, length, fin);
    this.#host.sendable(this);
  }

  /** The peer's MAX_STREAM_DATA. */
  onMaxStreamData(max: number): void {
    if (max <= this.sendMax) return;
    this.sendMax = max;
    this.#host.sendable(this);
  }

  onResetAcked(): void {
    this.resetAcked = true;
    this.#host.maybeDone(this);
  }

  abort(code: number): void {
    this.reset(code);
    this.stopSending(code);
  }

  reset(code: number): void {
    this.#resetWith(code, new MuxStreamError(this.id, code, false, "reset"));
  }

  /** Peer sent STOP_SENDING: reset our send half with its code. */
  onStopSending(code: number): void {
    this.#resetWith(code, new MuxStreamError(this.id, code, true, "stopped"));
  }

  #resetWith(code: number, err: MuxStreamError): void {
    if (this.done || this.sendState === "reset" || this.sendDone) return;
    this.sendState = "reset";
    this.sendError = err;
    this.resetCode = code;
    this.resetFinalSize = this.send.nextNew;
    this.send.clear();
    this.#failWrite(err);
    this.#host.queueControl(this, FrameKind.RESET_STREAM);
  }

  #failWrite(err: unknown): void {
    this.#closeAfterWrite = false;
    const pw = this.pendingWrite;
    this.pendingWrite = null;
    pw?.reject(err);
    this.#wc?.error(err);
    this.#settleSendClosed?.(err);
  }

  // ---- receive half ----

  read(): Promise<Uint8Array | null> {
    if (this.#pendingRead !== null) {
      return Promise.reject(new TypeError(`Cannot read stream ${this.id}: a read is waiting`));
    }
    if (this.#readError !== null) return Promise.reject(this.#readError);
    const chunk = this.#take();
    if (chunk !== undefined) return Promise.resolve(chunk);
    return new Promise((resolve, reject) => {
      this.#pendingRead = { resolve, reject };
    });
  }

  readRest(): Uint8Array | null {
    if (this.#pendingRead !== null || this.#readError !== null) return null;
    if (this.recvState === "closed") return EMPTY_BYTES;
    const r = this.recv;
    if (this.recvState !== "open" || r.finalSize < 0 || r.contiguousEnd !== r.finalSize) {
      return null;
    }
    const rest = r.take(Infinity) ?? EMPTY_BYTES;
    if (rest.length > 0) this.#host.consumed(this, rest.length);
    this.#finishRead();
    return rest;
  }

  /** Ready data, null at the end, undefined if the reader must wait. */
  #take(): Uint8Array | null | undefined {
    if (this.recvState === "closed") return null;
    if (this.recvState !== "open") return undefined;
    const chunk = this.recv.take(READ_COALESCE_BYTES);
    if (chunk !== null) this.#host.consumed(this, chunk.length);
    if (this.recv.finished) {
      // Everything handed over: finish now, so the stream can be freed at once.
      this.#finishRead();
      return chunk;
    }
    return chunk ?? undefined;
  }

  #finishRead(): void {
    this.recvState = "closed";
    this.#host.maybeDone(this);
  }

  /** New data or FIN arrived: hand it to a waiting reader. */
  deliver(): void {
    const pr = this.#pendingRead;
    if (pr === null) {
      // Nobody is reading: still finish a receive half with nothing left to hand over.
      if (this.recvState === "open" && this.recv.finished) this.#finishRead();
      return;
    }
    const chunk = this.#take();
    if (chunk === undefined) return;
    this.#pendingRead = null;
    pr.resolve(chunk);
  }

  /**
   * Data at `offset` arrived (checked against flow control and the final size). A waiting
   * reader gets a stream's first bytes (a request's or a response's head) at once, later
   * ones after the datagrams that arrived together were all read
   * (`StreamHost.deliverLater`): one chunk and one write downstream, not one per datagram.
   */
  onData(offset: number, data: Uint8Array): void {
    this.recv.insert(offset, data);
    if (this.#pendingRead !== null && this.recv.readOffset > 0) this.#host.deliverLater(this);
    else this.deliver();
  }

  /**
   * Data arrived after STOP_SENDING: dropped, but its `newBytes` of credit return;
   * with the FIN the receive half is finished (no STOP_SENDING needed any more).
   */
  onDataAfterStop(newBytes: number, fin: boolean): void {
    if (newBytes > 0) this.#host.consumed(this, newBytes);
    this.recv.readOffset = this.recv.highest;
    if (fin) {
      this.controlPending &= ~STOP_BIT;
      this.#host.maybeDone(this);
    }
  }

  /** The peer may send more on the receive half: window updates are worth sending. */
  get recvOpen(): boolean {
    return this.recvState === "open" && this.recv.finalSize < 0;
  }

  /** We stopped reading and the final size is not known yet: STOP_SENDING is still wanted. */
  get stopWanted(): boolean {
    return this.recvState === "stopped" && this.recv.finalSize < 0;
  }

  /** What the peer may still send on the receive half: up to its window or final size. */
  get receivable(): number {
    if (this.recvState !== "open" || this.done) return 0;
    const r = this.recv;
    return (r.finalSize >= 0 ? r.finalSize : this.window.limit) - r.readOffset;
  }

  #failRead(err: unknown): void {
    this.#readError = err;
    const pr = this.#pendingRead;
    this.#pendingRead = null;
    pr?.reject(err);
  }

  get recvDone(): boolean {
    return this.recvState === "closed" || this.recvState === "reset" ||
      (this.recvState === "stopped" && this.recv.finalSize >= 0);
  }

  /** Both halves finished and no RESET or STOP_SENDING left to send: the session may free it. */
  get finished(): boolean {
    return !this.done && this.sendDone && this.recvDone &&
      (this.controlPending & (RESET_BIT | STOP_BIT)) === 0;
  }

  stopSending(code: number): void {
    if (this.done || this.recvState !== "open") return;
    this.recvState = "stopped";
    this.stopCode = code;
    const dropped = this.recv.highest - this.recv.readOffset;
    this.recv.clear();
    this.#failRead(new MuxStreamError(this.id, code, false, "stopped"));
    // Even with nothing dropped: the session stops counting this stream's credit.
    this.#host.consumed(this, dropped);
    this.recv.readOffset = this.recv.highest;
    if (this.recv.finalSize < 0) this.#host.queueControl(this, FrameKind.STOP_SENDING);
    else this.#host.maybeDone(this);
  }

  /** Peer sent RESET_STREAM (final size already validated). */
  onReset(code: number, finalSize: number): void {
    if (this.recvState === "closed" || this.recvState === "reset") return;
    const wasStopped = this.recvState === "stopped";
    this.recvState = "reset";
    this.recv.finalSize = finalSize;
    const unread = finalSize - this.recv.readOffset;
    this.recv.clear();
    this.recv.readOffset = finalSize;
    if (!wasStopped) this.#failRead(new MuxStreamError(this.id, code, true, "reset"));
    if (unread > 0) this.#host.consumed(this, unread);
    this.controlPending &= ~STOP_BIT;
    this.#host.maybeDone(this);
  }

  /** The session ended: fail whatever is unfinished. */
  onSessionClosed(err: unknown, graceful: boolean): void {
    this.done = true;
    if (this.sendState === "open" || (this.sendState === "fin" && !this.sendDone)) {
      this.sendError = err;
      this.sendState = "reset";
      this.#failWrite(err);
    }
    if (this.recvState === "open") {
      // A stream whose data all arrived keeps delivering after a graceful close.
      if (graceful && this.recv.finalSize >= 0 && this.recv.contiguousEnd === this.recv.finalSize) {
        return;
      }
      this.recvState = "reset";
      this.recv.clear();
      this.#failRead(err);
    }
  }
}
