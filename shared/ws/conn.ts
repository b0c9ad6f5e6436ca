/**
 * One WebSocket connection after its opening handshake, either side, carrying
 * binary messages (docs/tcp-fallback.md): the read loop parses frames into one
 * reused buffer (a message is handed over as a view, valid until the handler
 * returns, as `shared/dtls/udp.ts` does for datagrams), answers pings, runs the
 * closing handshake; sends go through a bounded queue, and a message that would
 * overflow it is dropped and counted, as a full UDP socket buffer would drop it.
 */
import {
  applyMask,
  CloseCode,
  closePayload,
  encodeFrame,
  MAX_HEADER_BYTES,
  Opcode,
  parseClosePayload,
  parseFrameHeader,
  WsProtocolError,
} from "./frame.ts";

/** A byte stream: a TCP or TLS connection, or the front's upgraded connection. */
export interface ByteStream {
  /** Fills `p` (at least 4 KiB are offered); null at EOF. */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes (or queues) all of `p`; the stream owns it from then on. */
  write(p: Uint8Array): Promise<void>;
  /** Closes the stream (pending reads end). */
  close(): void;
}

/** A `Deno.Conn` (TCP or TLS) as a `ByteStream`. */
export function connStream(conn: Deno.Conn): ByteStream {
  return {
    read: (p) => conn.read(p),
    async write(p) {
      for (let off = 0; off < p.length;) off += await conn.write(off === 0 ? p : p.subarray(off));
    },
    close() {
      try {
        conn.close();
      } catch { /* already closed */ }
    },
  };
}

/** How a connection ended. */
export interface WsCloseInfo {
  /** The close code sent or received (1006: no close frame, the stream just ended). */
  code: number;
  /** The close reason sent or received. */
  reason: string;
  /** True if the peer started the close (or the stream failed under us). */
  remote: boolean;
}

/** How a `WsConn` behaves. */
export interface WsConnOptions {
  /** The client masks what it sends and expects nothing masked; the server the reverse. */
  role: "client" | "server";
  /** Largest message accepted, in bytes (fragments summed). Default 64 KiB. */
  maxMessage?: number;
  /**
   * Bytes of frames waiting for the stream; a binary message that does not fit is
   * dropped (`stats.dropped`). Default 256 KiB.
   */
  maxQueueBytes?: number;
  /** Bytes already read past the handshake. */
  initial?: Uint8Array;
  /** One binary message; the view is valid only until this returns. */
  onMessage(data: Uint8Array): void;
  /** Called once when the connection is over, whichever side ended it. */
  onClose?(info: WsCloseInfo): void;
  /** After our close frame, how long to wait for the peer's. Default 2000 ms. */
  closeTimeoutMs?: number;
}

/** Counters for one connection. */
export interface WsConnStats {
  /** Binary messages received. */
  messagesIn: number;
  /** Binary messages queued for sending. */
  messagesOut: number;
  /** Payload bytes received. */
  bytesIn: number;
  /** Payload bytes queued for sending. */
  bytesOut: number;
  /** Binary messages not sent: the queue was full (the peer reads slower than we send). */
  dropped: number;
  /** Pings received (each answered with a pong). */
  pingsIn: number;
}

const MIN_READ = 4096;
const INITIAL_BUFFER = 32 * 1024;
/** Control frames may exceed the queue cap by this much (pongs, close), no more. */
const CONTROL_ALLOWANCE = 4096;

/** A WebSocket connection carrying binary messages; see the module comment. */
export class WsConn {
  /** This connection's counters. */
  readonly stats: WsConnStats = {
    messagesIn: 0,
    messagesOut: 0,
    bytesIn: 0,
    bytesOut: 0,
    dropped: 0,
    pingsIn: 0,
  };
  /** Settles with how the connection ended. */
  readonly done: Promise<WsCloseInfo>;
  readonly #stream: ByteStream;
  readonly #opts: WsConnOptions;
  readonly #masked: boolean;
  readonly #maxMessage: number;
  readonly #maxQueue: number;
  #buf: Uint8Array;
  #start = 0;
  #end = 0;
  /** A fragmented message being reassembled. */
  #frag: Uint8Array | undefined;
  #fragLen = 0;
  #queue: Uint8Array[] = [];
  #queued = 0;
  #writing = false;
  /** We sent a close frame (nothing follows it). */
  #closeSent = false;
  #ended = false;
  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  #resolveDone!: (i: WsCloseInfo) => void;
  #info: WsCloseInfo | undefined;

  /** Starts reading `stream` at once (after the opening handshake). */
  constructor(stream: ByteStream, opts: WsConnOptions) {
    this.#stream = stream;
    this.#opts = opts;
    this.#masked = opts.role === "client";
    this.#maxMessage = opts.maxMessage ?? 64 * 1024;
    this.#maxQueue = opts.maxQueueBytes ?? 256 * 1024;
    const initial = opts.initial ?? new Uint8Array(0);
    this.#buf = new Uint8Array(Math.max(INITIAL_BUFFER, initial.length + MIN_READ));
    this.#buf.set(initial);
    this.#end = initial.length;
    this.done = new Promise((r) => this.#resolveDone = r);
    void this.#readLoop();
  }

  /** True once the connection ended or is closing (sends are refused). */
  get closed(): boolean {
    return this.#closeSent || this.#ended;
  }

  /** Bytes waiting for the stream. */
  get queuedBytes(): number {
    return this.#queued;
  }

  /**
   * Queues one binary message. False if it was dropped: the connection is closing,
   * or the queue is full.
   */
  sendBinary(data: Uint8Array): boolean {
    if (this.closed) return false;
    if (data.length > this.#maxMessage) throw new RangeError("message larger than maxMessage");
    if (this.#queued + data.length + MAX_HEADER_BYTES > this.#maxQueue) {
      this.stats.dropped++;
      return false;
    }
    this.stats.messagesOut++;
    this.stats.bytesOut += data.length;
    this.#enqueue(encodeFrame(Opcode.Binary, data, this.#masked));
    return true;
  }

  /** Sends a ping (the peer answers with a pong, which is ignored). */
  ping(payload: Uint8Array = new Uint8Array(0)): void {
    this.#control(Opcode.Ping, payload);
  }

  /**
   * Starts the closing handshake: our close frame, then the peer's is awaited (up
   * to `closeTimeoutMs`) before the stream closes.
   */
  close(code: number = CloseCode.Normal, reason = ""): void {
    if (this.#closeSent || this.#ended) return;
    this.#info ??= { code, reason, remote: false };
    this.#sendClose(code, reason);
    this.#closeTimer = setTimeout(() => this.#end_(), this.#opts.closeTimeoutMs ?? 2000);
  }

  /** Ends at once, without a closing handshake (the stream is closed). */
  abort(reason = "aborted"): void {
    this.#info ??= { code: CloseCode.Abnormal, reason, remote: false };
    this.#end_();
  }

  #sendClose(code: number, reason: string): void {
    this.#control(Opcode.Close, closePayload(code, reason));
    this.#closeSent = true;
  }

  #control(opcode: number, payload: Uint8Array): void {
    if (this.#closeSent || this.#ended) return;
    const f = encodeFrame(opcode, payload.subarray(0, 125), this.#masked);
    if (this.#queued + f.length > this.#maxQueue + CONTROL_ALLOWANCE) return; // a peer that never reads
    this.#enqueue(f);
  }

  #enqueue(frame: Uint8Array): void {
    this.#queue.push(frame);
    this.#queued += frame.length;
    if (!this.#writing) void this.#writeLoop();
  }

  async #writeLoop(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#queue.length > 0 && !this.#ended) {
        const q = this.#queue;
        this.#queue = [];
        let out: Uint8Array;
        if (q.length === 1) out = q[0]!;
        else {
          let n = 0;
          for (const f of q) n += f.length;
          out = new Uint8Array(n);
          let at = 0;
          for (const f of q) {
            out.set(f, at);
            at += f.length;
          }
        }
        await this.#stream.write(out);
        this.#queued -= out.length;
      }
    } catch {
      this.#info ??= { code: CloseCode.Abnormal, reason: "write failed", remote: true };
      this.#end_();
    } finally {
      this.#writing = false;
    }
    // Our close frame is out and the peer's came already: done.
    if (this.#closeSent && this.#info?.remote && !this.#ended && this.#queue.length === 0) {
      this.#end_();
    }
  }

  async #readLoop(): Promise<void> {
    try {
      for (;;) {
        this.#parse();
        if (this.#ended) return;
        this.#makeRoom();
        const n = await this.#stream.read(this.#buf.subarray(this.#end));
        if (n === null) {
          this.#info ??= {
            code: CloseCode.Abnormal,
            reason: "connection closed without a close frame",
            remote: true,
          };
          return;
        }
        this.#end += n;
      }
    } catch (e) {
      if (e instanceof WsProtocolError) {
        this.#info ??= { code: e.code, reason: e.message, remote: false };
        this.#sendClose(e.code, e.message);
        // Give the close frame a moment to leave, then end.
        this.#closeTimer = setTimeout(() => this.#end_(), 200);
        return;
      }
      this.#info ??= { code: CloseCode.Abnormal, reason: "read failed", remote: true };
    } finally {
      if (!this.#closeTimer) this.#end_();
    }
  }

  /** Compacts or grows the buffer so that a read has room (at least MIN_READ bytes). */
  #makeRoom(): void {
    const pending = this.#end - this.#start;
    if (pending === 0) this.#start = this.#end = 0;
    if (this.#buf.length - this.#end >= MIN_READ) return;
    let target = this.#buf;
    if (pending + MIN_READ > this.#buf.length) {
      target = new Uint8Array(Math.min(pending + MIN_READ + INITIAL_BUFFER, this.#bufferCap()));
      if (target.length < pending + MIN_READ) target = new Uint8Array(pending + MIN_READ);
    }
    target.set(this.#buf.subarray(this.#start, this.#end));
    this.#buf = target;
    this.#start = 0;
    this.#end = pending;
  }

  #bufferCap(): number {
    return this.#maxMessage + MAX_HEADER_BYTES + MIN_READ;
  }

  /** Handles every whole frame in the buffer. */
  #parse(): void {
    while (!this.#ended) {
      const buf = this.#buf;
      const h = parseFrameHeader(buf, this.#start, this.#end, !this.#masked, this.#maxMessage);
      if (!h) return;
      const total = h.headerLength + h.payloadLength;
      if (this.#end - this.#start < total) {
        // Not all here: make sure the buffer can hold the frame whole.
        if (buf.length - this.#start < total && buf.length < total + MIN_READ) {
          const bigger = new Uint8Array(total + MIN_READ);
          bigger.set(buf.subarray(this.#start, this.#end));
          this.#end -= this.#start;
          this.#start = 0;
          this.#buf = bigger;
        }
        return;
      }
      const p0 = this.#start + h.headerLength;
      const payload = buf.subarray(p0, p0 + h.payloadLength);
      if (h.mask) applyMask(payload, h.mask);
      this.#start += total;
      this.#frame(h.fin, h.opcode, payload);
    }
  }

  #frame(fin: boolean, opcode: number, payload: Uint8Array): void {
    switch (opcode) {
      case Opcode.Binary:
      case Opcode.Continuation: {
        if (opcode === Opcode.Binary && this.#frag) {
          throw new WsProtocolError(CloseCode.ProtocolError, "new message inside a fragmented one");
        }
        if (opcode === Opcode.Continuation && !this.#frag) {
          throw new WsProtocolError(CloseCode.ProtocolError, "continuation without a message");
        }
        if (fin && !this.#frag) return this.#deliver(payload);
        const frag = this.#frag ??= new Uint8Array(this.#maxMessage);
        if (this.#fragLen + payload.length > this.#maxMessage) {
          throw new WsProtocolError(CloseCode.TooBig, "message too long");
        }
        frag.set(payload, this.#fragLen);
        this.#fragLen += payload.length;
        if (fin) {
          const whole = frag.subarray(0, this.#fragLen);
          this.#frag = undefined;
          this.#fragLen = 0;
          this.#deliver(whole);
        }
        return;
      }
      case Opcode.Ping:
        this.stats.pingsIn++;
        this.#control(Opcode.Pong, payload);
        return;
      case Opcode.Pong:
        return;
      case Opcode.Close: {
        const { code, reason } = parseClosePayload(payload);
        if (this.#closeSent) return this.#end_(); // the answer to ours
        this.#info ??= { code, reason, remote: true };
        // Echo the code (1005 is never sent: an empty close answers an empty one).
        if (code === CloseCode.NoStatus) {
          this.#control(Opcode.Close, new Uint8Array(0));
          this.#closeSent = true;
        } else this.#sendClose(code, "");
        if (!this.#writing) this.#end_();
        return;
      }
    }
  }

  #deliver(data: Uint8Array): void {
    if (this.#closeSent) return; // after our close, data is discarded
    this.stats.messagesIn++;
    this.stats.bytesIn += data.length;
    this.#opts.onMessage(data);
  }

  #end_(): void {
    if (this.#ended) return;
    this.#ended = true;
    if (this.#closeTimer) clearTimeout(this.#closeTimer);
    this.#queue = [];
    this.#stream.close();
    const info = this.#info ?? { code: CloseCode.Abnormal, reason: "", remote: true };
    this.#opts.onClose?.(info);
    this.#resolveDone(info);
  }
}
