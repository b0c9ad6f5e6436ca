/**
 * Session-level flow control, both directions (RFC 9000 §4.1), and the checks every
 * incoming STREAM and RESET_STREAM frame passes: final size (§4.5) and the stream's and
 * session's windows. flow.ts has the windows' design.
 */
import type { Clock } from "./clock.ts";
import { SessionErrorCode } from "./errors.ts";
import { ReceiveWindow, SessionReceiveWindow } from "./flow.ts";
import {
  type MuxParams,
  WIRE_INITIAL_SESSION_WINDOW_BYTES,
  WIRE_INITIAL_STREAM_WINDOW_BYTES,
} from "./params.ts";
import type { Stream } from "./stream.ts";

/**
 * Credit announced with our streams that their readers have not taken yet is at most
 * this share of the session's pool, in all (newStreamWindow).
 */
const OPEN_CREDIT_POOL_SHARE = 0.25;

export interface ConnFlowHooks {
  /** The peer broke a flow-control or final-size rule: close the session with this error. */
  fail(code: number, reason: string): void;
  /** One of ours the peer may not know of yet: it holds no credit. */
  beyondPeerLimit(s: Stream): boolean;
  /** The session's receive limit was raised: send MAX_DATA. */
  sendMaxData(): void;
  /** s's receive window was updated: send MAX_STREAM_DATA. */
  sendMaxStreamData(s: Stream): void;
}

export class ConnFlow {
  /** What the peer may send us in all (MAX_DATA we advertise). */
  readonly recvWindow: SessionReceiveWindow;
  /** Sum over streams of the highest offset received. */
  #recvHighestTotal = 0;
  /** Peer's MAX_DATA, and new stream bytes we sent against it. */
  #sendMax = WIRE_INITIAL_SESSION_WINDOW_BYTES;
  #sentNew = 0;
  readonly #p: MuxParams;
  readonly #clock: Clock;
  /** For the smoothed RTT (recovery.ts). */
  readonly #rtt: { readonly smoothedRtt: number };
  readonly #hooks: ConnFlowHooks;
  readonly #stats: { streamBytesReceived: number; openWindowsLimited: number };
  /** The session closed: reads are no longer counted, limits no longer raised. */
  #closed = false;
  /** Sum of `Stream.openCredit`: credit announced with our streams the peer has not used yet. */
  #openCredit = 0;
  /** Size of the stream window updated last (at least initialStreamWindowBytes). */
  #recentWindowBytes: number;

  constructor(
    p: MuxParams,
    clock: Clock,
    rtt: { readonly smoothedRtt: number },
    stats: { streamBytesReceived: number; openWindowsLimited: number },
    hooks: ConnFlowHooks,
  ) {
    this.recvWindow = new SessionReceiveWindow({
      maxBytes: p.maxSessionWindowBytes,
      headroomBytes: p.initialSessionWindowBytes,
      reserveBytes: p.maxSessionWindowBytes * p.streamWindowReserveRatio,
      shareRatio: p.streamWindowShareRatio,
      floorBytes: WIRE_INITIAL_STREAM_WINDOW_BYTES,
    });
    this.#p = p;
    this.#clock = clock;
    this.#rtt = rtt;
    this.#stats = stats;
    this.#hooks = hooks;
    this.#recentWindowBytes = p.initialStreamWindowBytes;
  }

  // ---- send side

  /** New stream bytes the peer's MAX_DATA still allows. */
  get sendCredit(): number {
    return this.#sendMax - this.#sentNew;
  }

  onNewDataSent(n: number): void {
    this.#sentNew += n;
  }

  /** The peer's MAX_DATA; true if it allows more than before. */
  onMaxData(max: number): boolean {
    if (max <= this.#sendMax) return false;
    this.#sendMax = max;
    return true;
  }

  // ---- receive side

  /**
   * A new stream's receive window. On a stream the peer opens, the peer starts at the wire
   * default and the larger window goes out once the stream has used half of that
   * (onConsumed), not with every new stream.
   *
   * On a stream we open, the answer to our request (an HTTP response) would otherwise be
   * held to the wire default for its first round trip, and to the initial window for the
   * next: on a 50 ms, 50 Mbit/s path a warm session's 20 MiB download stalled twice in its
   * first 250 ms. So the whole window goes out with the stream's first frames (`announce`),
   * at the size the session's last updated window settled at (at least the initial size:
   * a download on a warm session starts where the last one's auto-tuning ended), and its
   * growth is judged from the stream's opening. Such credit is not earned by reading, and
   * a stream whose answer is slow (a long poll) or never read (a caller that stopped)
   * would hold it from the pool the whole time; so the part of it no reader has taken
   * yet is, over all our streams, at most OPEN_CREDIT_POOL_SHARE of the pool (and each
   * stream's window is at most its share of the pool, as ever). Beyond that budget a
   * stream starts with less (down to the wire default) and is counted
   * (openWindowsLimited); the window it would have had goes out once its reader has taken
   * half of what it started with, as on a stream the peer opens: earned by reading, and
   * one round trip later rather than the several that doubling from there would take.
   */
  newStreamWindow(local: boolean): ReceiveWindow {
    const p = this.#p;
    if (!local) {
      return new ReceiveWindow(
        p.initialStreamWindowBytes,
        p.maxStreamWindowBytes,
        WIRE_INITIAL_STREAM_WINDOW_BYTES,
      );
    }
    const sw = this.recvWindow;
    const budget = OPEN_CREDIT_POOL_SHARE * sw.poolBytes - this.#openCredit;
    const wanted = Math.min(this.#recentWindowBytes, sw.streamCap(0));
    const size = Math.min(wanted, WIRE_INITIAL_STREAM_WINDOW_BYTES + Math.max(0, budget));
    if (size < wanted) this.#stats.openWindowsLimited++;
    // At least the wire default: initialStreamWindowBytes and streamCap are never below it.
    return new ReceiveWindow(wanted, p.maxStreamWindowBytes, size, this.#clock.now());
  }

  /** s was just added: counts its credit, and tells the peer of a window above the wire default. */
  announce(s: Stream): void {
    const extra = s.window.limit - WIRE_INITIAL_STREAM_WINDOW_BYTES;
    if (s.local && extra > 0) {
      s.openCredit = extra;
      this.#openCredit += extra;
      this.#hooks.sendMaxStreamData(s);
    }
    this.updateCredit(s);
  }

  /**
   * `n` of s's at-open credit is no longer speculative: its reader took that much, or
   * (all of it) its receive half ended. Bytes that arrived and wait unread still count:
   * an answer its caller never reads holds its window from the budget, not the pool.
   */
  #settleOpenCredit(s: Stream, n: number): void {
    const d = Math.min(n, s.openCredit);
    this.#openCredit -= d;
    s.openCredit -= d;
  }

  /** A STREAM frame for s (the stream is open or known). */
  onStreamFrame(s: Stream, offset: number, data: Uint8Array, fin: boolean): void {
    const end = offset + data.length;
    if (fin && !this.#checkFinalSize(s, end)) return;
    if (s.recv.finalSize >= 0 && end > s.recv.finalSize) {
      this.#hooks.fail(SessionErrorCode.FINAL_SIZE_ERROR, `stream ${s.id} data past final size`);
      return;
    }
    if (s.recvState === "reset" || s.recvState === "closed") return;
    const prevHighest = s.recv.highest;
    if (!this.#account(s, end)) return;
    if (fin) {
      s.recv.finalSize = end;
      this.updateCredit(s);
    }
    // After STOP_SENDING the data is discarded, but its credit returns.
    if (s.recvState === "stopped") s.onDataAfterStop(end - prevHighest, fin);
    else s.onData(offset, data);
  }

  /** A RESET_STREAM for s. */
  onResetStream(s: Stream, code: number, finalSize: number): void {
    if (!this.#checkFinalSize(s, finalSize)) return;
    if (!this.#account(s, finalSize)) return;
    s.onReset(code, finalSize);
    this.updateCredit(s);
  }

  #checkFinalSize(s: Stream, finalSize: number): boolean {
    const known = s.recv.finalSize;
    if ((known >= 0 && known !== finalSize) || finalSize < s.recv.highest) {
      this.#hooks.fail(SessionErrorCode.FINAL_SIZE_ERROR, `stream ${s.id} final size changed`);
      return false;
    }
    return true;
  }

  /** Flow-control accounting for data up to `end` on s; false if the session was failed. */
  #account(s: Stream, end: number): boolean {
    const prev = s.recv.highest;
    if (end <= prev) return true;
    if (end > s.window.limit) {
      this.#hooks.fail(
        SessionErrorCode.FLOW_CONTROL_ERROR,
        `stream ${s.id} data to ${end} exceeds window ${s.window.limit}`,
      );
      return false;
    }
    this.#recvHighestTotal += end - prev;
    if (this.#recvHighestTotal > this.recvWindow.limit) {
      this.#hooks.fail(SessionErrorCode.FLOW_CONTROL_ERROR, `session data exceeds window`);
      return false;
    }
    s.recv.highest = end;
    s.window.onArrival(this.#clock.now(), end, this.#rtt.smoothedRtt);
    return true;
  }

  /** s's reader consumed `n` bytes (or they were discarded): return credit. */
  onConsumed(s: Stream, n: number): void {
    if (this.#closed) return;
    this.#stats.streamBytesReceived += n;
    if (s.openCredit > 0) this.#settleOpenCredit(s, n);
    const w = s.window;
    w.consumed += n;
    const sw = this.recvWindow;
    sw.consumed += n;
    if (s.recvOpen && w.wantsUpdate) {
      // The window grows (or shrinks) within the share of the pool the others leave.
      w.update(this.#clock.now(), this.#rtt.smoothedRtt, sw.streamCap(s.credit));
      this.#recentWindowBytes = Math.max(w.size, this.#p.initialStreamWindowBytes);
      this.#hooks.sendMaxStreamData(s);
    }
    this.updateCredit(s);
  }

  /** Session closed: no stream holds credit any more. */
  clear(): void {
    this.#closed = true;
    this.recvWindow.streamCredit = 0;
  }

  /**
   * Recomputes what the peer may still send on s (0 once its receive half is no longer
   * open: later data is discarded on arrival; 0 for our stream the peer cannot know of
   * yet, beyond its MAX_STREAMS) and re-sends MAX_DATA if the session limit lags (flow.ts).
   */
  updateCredit(s: Stream): void {
    if (s.openCredit > 0 && (s.done || s.recvState !== "open")) {
      this.#settleOpenCredit(s, s.openCredit);
    }
    const credit = this.#hooks.beyondPeerLimit(s) ? 0 : s.receivable;
    const sw = this.recvWindow;
    sw.streamCredit += credit - s.credit;
    s.credit = credit;
    if (sw.wantsUpdate && !this.#closed) {
      sw.update();
      this.#hooks.sendMaxData();
    }
  }
}
