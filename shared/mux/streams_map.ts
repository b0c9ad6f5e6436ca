/**
 * The session's streams by id, and the rules for opening them (RFC 9000 §2.1, §4.6):
 * client-opened ids are even, server-opened odd; each side opens streams in order, and
 * a peer stream opens implicitly with the first frame for it (or for a later one).
 *
 * - MAX_STREAMS: how many streams the peer may open in all (`#localMaxStreams`) grows
 *   by one per peer stream freed, and is announced in batches; ours may go on the wire
 *   only below the peer's limit (`beyondPeerLimit`).
 * - GOAWAY: once sent, peer streams from the limit on are refused; once received, we
 *   open no more, and ours the peer did not take fail.
 *
 * New streams get the session's host (stream.ts) and a receive window from ConnFlow.
 */
import type { ConnFlow } from "./conn_flow.ts";
import { MuxSessionError, SessionErrorCode, StreamErrorCode } from "./errors.ts";
import { WIRE_INITIAL_MAX_STREAMS, WIRE_INITIAL_STREAM_WINDOW_BYTES } from "./params.ts";
import { Stream, type StreamHost } from "./stream.ts";
import type { MuxStream } from "./types.ts";

export interface StreamsMapHooks {
  /** More peer streams may be granted: send MAX_STREAMS. */
  grant(): void;
  /** The peer broke a stream rule: close the session with this error. */
  fail(code: number, reason: string): void;
  /** Called for each stream the peer opens; without it, they wait for `accept`. */
  onStream: ((s: MuxStream) => void) | undefined;
}

export class StreamsMap {
  readonly #streams = new Map<number, Stream>();
  readonly #hooks: StreamsMapHooks;
  readonly #host: StreamHost;
  readonly #flow: ConnFlow;
  /** 1 for the server (odd ids), 0 for the client. */
  readonly #parity: number;
  readonly #maxIncoming: number;
  #nextLocalIndex = 0;
  /** Next peer stream index not yet seen. */
  #nextPeerIndex = 0;
  /** Peer streams allowed (cumulative), what we advertised or will. */
  #localMaxStreams: number;
  /** The largest MAX_STREAMS sent so far (the peer's view, once it arrives). */
  #advertisedMaxStreams = WIRE_INITIAL_MAX_STREAMS;
  /** Our streams the peer allows (cumulative). */
  #peerMaxStreams = WIRE_INITIAL_MAX_STREAMS;
  /** Peer streams with index >= this are refused (after our GOAWAY). */
  #goAwayLimitIndex = Infinity;
  #peerGoAway = false;
  #acceptQueue: Stream[] = [];
  #acceptWaiters: ((s: MuxStream | null) => void)[] = [];

  constructor(
    role: "client" | "server",
    maxIncomingStreams: number,
    host: StreamHost,
    flow: ConnFlow,
    hooks: StreamsMapHooks,
  ) {
    this.#parity = role === "server" ? 1 : 0;
    this.#maxIncoming = maxIncomingStreams;
    this.#localMaxStreams = maxIncomingStreams;
    this.#host = host;
    this.#flow = flow;
    this.#hooks = hooks;
  }

  get size(): number {
    return this.#streams.size;
  }

  /** Streams this side opened that are not freed yet. */
  get localCount(): number {
    return this.#localCount;
  }
  #localCount = 0;

  values(): IterableIterator<Stream> {
    return this.#streams.values();
  }

  /** Bytes the streams hold in their send and receive buffers. */
  bufferedBytes(): { send: number; recv: number } {
    let send = 0;
    let recv = 0;
    for (const s of this.#streams.values()) {
      send += s.sendBufferedBytes;
      recv += s.recvBufferedBytes;
    }
    return { send, recv };
  }

  /** Opens our next stream (the caller checked the session is open). Throws after GOAWAY. */
  open(): Stream {
    if (this.#peerGoAway) {
      throw new MuxSessionError(SessionErrorCode.NO_ERROR, true, "peer sent GOAWAY");
    }
    const index = this.#nextLocalIndex++;
    this.#localCount++;
    return this.#add(index * 2 + this.#parity, true);
  }

  #add(id: number, local: boolean): Stream {
    const window = this.#flow.newStreamWindow(local);
    const s = new Stream(this.#host, id, local, WIRE_INITIAL_STREAM_WINDOW_BYTES, window);
    this.#streams.set(id, s);
    this.#flow.announce(s);
    return s;
  }

  /** Next stream the peer opened; null once `closed` and none is left. */
  accept(closed: boolean): Promise<MuxStream | null> {
    const s = this.#acceptQueue.shift();
    if (s !== undefined) return Promise.resolve(s);
    if (closed) return Promise.resolve(null);
    return new Promise((r) => this.#acceptWaiters.push(r));
  }

  /** One of ours the peer may not know of yet (beyond its MAX_STREAMS): not on the wire yet. */
  beyondPeerLimit(s: Stream): boolean {
    return s.local && Math.floor(s.id / 2) >= this.#peerMaxStreams;
  }

  /**
   * The stream a frame refers to, opening it (and every lower peer stream) if it is
   * the peer's and new. Null if it was closed already, or on a violation (then the
   * session was failed).
   */
  getOrOpen(id: number): Stream | null {
    const s = this.#streams.get(id);
    if (s !== undefined) return s;
    const index = Math.floor(id / 2);
    if ((id & 1) === this.#parity) {
      if (index >= this.#nextLocalIndex) {
        this.#hooks.fail(SessionErrorCode.STREAM_STATE_ERROR, `frame for unopened stream ${id}`);
      }
      return null;
    }
    if (index < this.#nextPeerIndex) return null; // already closed
    if (index >= this.#localMaxStreams) {
      this.#hooks.fail(
        SessionErrorCode.STREAM_LIMIT_ERROR,
        `stream ${id} exceeds limit ${this.#localMaxStreams}`,
      );
      return null;
    }
    let found: Stream | null = null;
    for (let i = this.#nextPeerIndex; i <= index; i++) {
      const ns = this.#add(i * 2 + (1 - this.#parity), false);
      if (i >= this.#goAwayLimitIndex) {
        ns.reset(StreamErrorCode.REFUSED);
        ns.stopSending(StreamErrorCode.REFUSED);
      } else this.#announce(ns);
      if (i === index) found = ns;
    }
    this.#nextPeerIndex = index + 1;
    this.#maybeGrant();
    return found;
  }

  #announce(s: Stream): void {
    const onStream = this.#hooks.onStream;
    if (onStream !== undefined) {
      onStream(s);
      return;
    }
    const w = this.#acceptWaiters.shift();
    if (w !== undefined) w(s);
    else this.#acceptQueue.push(s);
  }

  /** Forgets a finished stream; a peer stream's place is granted to the peer again. */
  remove(s: Stream): void {
    if (!this.#streams.delete(s.id)) return;
    if (s.local) this.#localCount--;
    if (!s.local) {
      this.#localMaxStreams++;
      this.#maybeGrant();
    }
  }

  /**
   * Sends MAX_STREAMS once the peer has used half of the credit it knows of, not
   * once per finished stream (one eliciting packet per request otherwise).
   */
  #maybeGrant(): void {
    const adv = this.#advertisedMaxStreams;
    if (this.#localMaxStreams > adv && adv - this.#nextPeerIndex <= this.#maxIncoming / 2) {
      this.#hooks.grant();
    }
  }

  /** The MAX_STREAMS value to send now (it counts as advertised). */
  advertiseMaxStreams(): number {
    this.#advertisedMaxStreams = this.#localMaxStreams;
    return this.#localMaxStreams;
  }

  /** Refuses peer streams not seen yet. False if GOAWAY was sent already. */
  goAway(): boolean {
    if (this.#goAwayLimitIndex !== Infinity) return false;
    this.#goAwayLimitIndex = this.#nextPeerIndex;
    return true;
  }

  /** GOAWAY's value: the first refused stream id (0: none). */
  get goAwayFrameValue(): number {
    return this.#goAwayLimitIndex === Infinity ? 0 : this.#goAwayLimitIndex * 2;
  }

  /**
   * The peer sent GOAWAY: ours from `lastIdPlusOne` on will not be served, they fail
   * and `forget` is called for each (so no control frame stays queued for them).
   * False if it did before.
   */
  onGoAway(lastIdPlusOne: number, forget: (s: Stream) => void): boolean {
    if (this.#peerGoAway) return false;
    this.#peerGoAway = true;
    const refused = new MuxSessionError(SessionErrorCode.NO_ERROR, true, "refused after GOAWAY");
    for (const s of [...this.#streams.values()]) {
      if (s.local && s.id >= lastIdPlusOne) {
        s.onSessionClosed(refused, false);
        this.#flow.updateCredit(s);
        this.#streams.delete(s.id);
        this.#localCount--;
        forget(s);
      }
    }
    return true;
  }

  /** The peer raised its MAX_STREAMS; false if it is no news. */
  onMaxStreams(max: number): boolean {
    if (max <= this.#peerMaxStreams) return false;
    this.#peerMaxStreams = max;
    return true;
  }

  /** Session closed: forgets every stream; waiting `accept` calls get null. */
  clear(): void {
    this.#streams.clear();
    this.#localCount = 0;
    for (const w of this.#acceptWaiters) w(null);
    this.#acceptWaiters = [];
    this.#acceptQueue = [];
  }
}
