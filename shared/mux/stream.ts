/**
 * One bidirectional stream: its send half (SendBuffer, peer's flow-control
 * limit, FIN/RESET) and receive half (RecvBuffer, our window, STOP_SENDING),
 * exposed as Web Streams with backpressure:
 * - `writable.write()` resolves once the bytes are in the send buffer; the
 *   buffer holds at most `streamSendBufferBytes` unacknowledged bytes.
 * - `readable` has highWaterMark 0: data moves to the reader only on a read,
 *   and flow-control credit returns to the peer only then.
 */
import { MuxStreamError, StreamErrorCode } from "./errors.ts";
import { ReceiveWindow } from "./flow.ts";
import { RecvBuffer } from "./recv_buffer.ts";
import { SendBuffer } from "./send_buffer.ts";

/** What a stream needs from its session. */
export interface StreamHost {
  readonly sendBufferLimit: number;
  /** The stream has data, FIN or retransmissions to send. */
  streamSendable(s: Stream): void;
  /** The stream has a control frame (RESET, STOP_SENDING, MAX_STREAM_DATA) to send. */
  streamControl(s: Stream): void;
  /** The reader consumed `n` bytes (or they were discarded): return session credit. */
  streamConsumed(s: Stream, n: number): void;
  /** Both halves may be finished: free the stream if so. */
  streamMaybeDone(s: Stream): void;
}

/** The public face of a stream (see mod.ts). */
export interface MuxStream {
  /** Stream id: client-opened streams are even, server-opened odd. */
  readonly id: number;
  /** True if this side opened the stream. */
  readonly local: boolean;
  readonly readable: ReadableStream<Uint8Array>;
  readonly writable: WritableStream<Uint8Array>;
  /** Abandons the send half: RESET_STREAM with `code`; the peer's reader fails with it. */
  reset(code: number): void;
  /** Abandons the receive half: STOP_SENDING with `code`; the peer resets its send half. */
  stopSending(code: number): void;
  /** Abandons both halves (reset + stopSending): what a caller that gives up does. */
  abort(code: number): void;
  /** Bytes held by this stream (send buffer + receive buffer). */
  readonly bufferedBytes: number;
}

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

export class Stream implements MuxStream {
  readonly id: number;
  readonly local: boolean;
  readonly readable: ReadableStream<Uint8Array>;
  readonly writable: WritableStream<Uint8Array>;
  readonly host: StreamHost;

  // Send half.
  readonly send = new SendBuffer();
  /** Peer's MAX_STREAM_DATA. */
  sendMax: number;
  /** "open" → "fin" (writer closed) or "reset"; done when everything is acked. */
  sendState: "open" | "fin" | "reset" = "open";
  resetCode = 0;
  resetFinalSize = 0;
  resetPending = false;
  resetAcked = false;
  sendError: unknown = null;
  pendingWrite: PendingWrite | null = null;
  /** In the session's round-robin send queue. */
  inSendQueue = false;

  // Receive half.
  readonly recv = new RecvBuffer();
  readonly window: ReceiveWindow;
  /** "open", "stopped" (we sent STOP_SENDING), "reset" (peer reset), "closed" (readable closed). */
  recvState: "open" | "stopped" | "reset" | "closed" = "open";
  stopCode = 0;
  stopPending = false;
  maxStreamDataPending = false;
  inControlSet = false;
  #rc!: ReadableStreamDefaultController<Uint8Array>;
  #wc!: WritableStreamDefaultController;
  #pullWanted = false;
  /** Freed by the session. */
  done = false;

  constructor(
    host: StreamHost,
    id: number,
    local: boolean,
    peerInitialWindow: number,
    window: ReceiveWindow,
  ) {
    this.host = host;
    this.id = id;
    this.local = local;
    this.sendMax = peerInitialWindow;
    this.window = window;
    this.readable = new ReadableStream<Uint8Array>({
      start: (c) => {
        this.#rc = c;
      },
      pull: () => {
        this.#pullWanted = true;
        this.deliver();
      },
      cancel: (reason) => {
        this.stopSending(codeOf(reason));
      },
    }, { highWaterMark: 0 });
    this.writable = new WritableStream<Uint8Array>({
      start: (c) => {
        this.#wc = c;
      },
      write: (chunk) => this.#write(chunk),
      close: () => this.#closeWrite(),
      abort: (reason) => this.reset(codeOf(reason)),
    }, { highWaterMark: 1 });
  }

  get bufferedBytes(): number {
    return this.send.buffered + this.recv.buffered;
  }

  // ---- send half ----

  #write(chunk: Uint8Array): void | Promise<void> {
    if (!(chunk instanceof Uint8Array)) {
      throw new TypeError(`Cannot write to stream ${this.id}: chunk is not a Uint8Array`);
    }
    if (this.sendState !== "open") throw this.sendError ?? new TypeError("stream closed");
    const n = this.send.write(chunk, 0, this.host.sendBufferLimit);
    if (n > 0) this.host.streamSendable(this);
    if (n === chunk.length) return;
    return new Promise<void>((resolve, reject) => {
      this.pendingWrite = { chunk, pos: n, resolve, reject };
    });
  }

  #closeWrite(): void {
    if (this.sendState !== "open") {
      if (this.sendError !== null) throw this.sendError;
      return;
    }
    this.sendState = "fin";
    this.send.finQueued = true;
    this.send.finPending = true;
    this.host.streamSendable(this);
  }

  /** Acks freed send-buffer room: move a waiting write in. */
  onSendProgress(): void {
    const pw = this.pendingWrite;
    if (pw !== null) {
      const n = this.send.write(pw.chunk, pw.pos, this.host.sendBufferLimit);
      if (n > 0) {
        pw.pos += n;
        this.host.streamSendable(this);
      }
      if (pw.pos === pw.chunk.length) {
        this.pendingWrite = null;
        pw.resolve();
      }
    }
    if (this.sendDone) this.host.streamMaybeDone(this);
  }

  /** The send half has nothing more to do. */
  get sendDone(): boolean {
    if (this.sendState === "reset") return this.resetAcked;
    return this.sendState === "fin" && this.send.finAcked && this.send.buffered === 0;
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
    this.resetPending = true;
    const pw = this.pendingWrite;
    this.pendingWrite = null;
    pw?.reject(err);
    this.#wc.error(err);
    this.host.streamControl(this);
  }

  // ---- receive half ----

  /** Hands ready data to a waiting reader; closes the readable at the end. */
  deliver(): void {
    if (this.recvState !== "open") return;
    if (this.#pullWanted) {
      const chunk = this.recv.take(READ_COALESCE_BYTES);
      if (chunk !== null) {
        this.#pullWanted = false;
        this.#rc.enqueue(chunk);
        this.host.streamConsumed(this, chunk.length);
      }
    }
    if (this.recv.finished) {
      this.recvState = "closed";
      this.#rc.close();
      this.host.streamMaybeDone(this);
    }
  }

  get recvDone(): boolean {
    return this.recvState === "closed" || this.recvState === "reset" ||
      (this.recvState === "stopped" && this.recv.finalSize >= 0);
  }

  stopSending(code: number): void {
    if (this.done || this.recvState !== "open") return;
    this.recvState = "stopped";
    this.stopCode = code;
    const dropped = this.recv.highest - this.recv.readOffset;
    this.recv.clear();
    this.#rc.error(new MuxStreamError(this.id, code, false, "stopped"));
    if (dropped > 0) this.host.streamConsumed(this, dropped);
    this.recv.readOffset = this.recv.highest;
    if (this.recv.finalSize < 0) {
      this.stopPending = true;
      this.host.streamControl(this);
    } else this.host.streamMaybeDone(this);
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
    if (!wasStopped) this.#rc.error(new MuxStreamError(this.id, code, true, "reset"));
    if (unread > 0) this.host.streamConsumed(this, unread);
    this.stopPending = false;
    this.host.streamMaybeDone(this);
  }

  /** The session ended: fail whatever is unfinished. */
  onSessionClosed(err: unknown, graceful: boolean): void {
    this.done = true;
    if (this.sendState === "open" || (this.sendState === "fin" && !this.sendDone)) {
      this.sendError = err;
      this.sendState = "reset";
      const pw = this.pendingWrite;
      this.pendingWrite = null;
      pw?.reject(err);
      this.#wc.error(err);
    }
    if (this.recvState === "open") {
      // A stream whose data all arrived keeps delivering after a graceful close.
      if (graceful && this.recv.finalSize >= 0 && this.recv.contiguousEnd === this.recv.finalSize) {
        return;
      }
      this.recvState = "reset";
      this.recv.clear();
      this.#rc.error(err);
    }
  }
}
