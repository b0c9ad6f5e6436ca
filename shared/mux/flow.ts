/**
 * Receive-side flow control: how much the peer may send, per stream and per session.
 *
 * ## Why a slow reader cannot stall its session
 *
 * Credit for a stream returns only as its reader reads, so a reader that stops (an HTTP
 * caller that stopped reading its response) parks up to a window of bytes in its
 * stream. When the session limit was "bytes read + session window", those parked bytes
 * also held the session's credit: a few stalled streams with auto-tuned windows (up to
 * 16 MiB each, against a 24 MiB session window), or 50 with the wire's 64 KiB each
 * (against 1.5 MiB), left no session credit, and every other stream of the tunnel
 * stalled until they went away.
 *
 * The session limit now follows the streams' credit instead of the bytes read:
 *
 *     MAX_DATA = consumed + min(maxSessionWindowBytes, streamCredit + headroom)
 *
 * - `consumed`: bytes read or discarded (reset, STOP_SENDING) over the session.
 * - `streamCredit`: what the peer may still send on the streams we know of: for each
 *   open receive half, its MAX_STREAM_DATA (or final size) minus what its reader took.
 *   Bytes parked in a stream are inside its credit, so they never use up the headroom.
 * - `headroom` (initialSessionWindowBytes, 1.5 MiB): session credit beyond that, for the
 *   first bytes of streams the peer opens before we hear of them (64 KiB each on the
 *   wire default). It is the whole window while no stream holds credit.
 *
 * The peer may have sent at most consumed + streamCredit (+ new streams' first bytes),
 * and MAX_DATA is re-sent once it lags the formula by half the headroom, so a stream
 * waits for session credit only if the cap is reached; until then only its own
 * MAX_STREAM_DATA limits it, and that returns as its own reader reads.
 *
 * The cap keeps memory bounded. The receiver never holds more than
 * `maxSessionWindowBytes` (32 MiB) per session (MAX_DATA never runs further than that
 * past `consumed`) nor more than a stream's window (`maxStreamWindowBytes`, 16 MiB) per
 * stream. To keep streamCredit + headroom below the cap, a stream's window grows only
 * out of a shared pool, `maxSessionWindowBytes` - headroom - reserve (32 - 1.5 - 8 =
 * 22.5 MiB):
 *
 * - A stream whose reader reads fast doubles its window (`ReceiveWindow.update`, as
 *   before), but to at most `streamWindowShareRatio` (3/4) of the pool the other streams
 *   leave. Alone it reaches 16 MiB (3/4 x 22.5 MiB is more), so single-stream
 *   throughput is unchanged; N streams read at once settle at about pool / (N + 1/3)
 *   each (10: 2.2 MiB, 50: 0.45 MiB), and a stream that stops reading keeps only that.
 * - Credit, once sent, cannot be taken back: a parked stream holds what it had. But a
 *   window may also shrink: as a stream reads, it is granted only up to its current
 *   share, so readers that slow down hand their share back.
 * - Every stream may always keep the wire default (64 KiB) in credit, pool or no pool:
 *   a new stream starts with it anyway, and a request/response exchange needs no more.
 *   The reserve (`streamWindowReserveRatio`, 1/4 of the cap: 8 MiB) is what keeps those
 *   inside the cap when they arrive after the pool was handed out: about 140 streams
 *   parked at 64 KiB on top of a fully used pool before a new stream waits on the
 *   session (the peer may have at most 256 streams open anyway).
 * - A stream we open announces its window with its first frames instead (the answer to
 *   our request need not wait a round trip for it): out of the pool, and, until their
 *   readers take it, out of a quarter of it over all our streams (conn_flow.ts).
 *
 * Measured (slow_reader_test.ts: memory link, 10 ms RTT, tunnel params): 50 streams
 * never read, each with 200 MiB to send, hold 3.2 MiB (their 64 KiB each); 200
 * request/response exchanges on new streams beside them take 10 ms at p50 and p99, as
 * with no stalled streams (before: the first one never completed). Worst case, 10 streams
 * that grew alone, one after another, then stopped, plus 40 never read: 23.8 MiB held,
 * the pool spent, exchanges still 10 ms at p99, a new bulk stream down to 64 KiB per RTT.
 * All of it is receiver-side: the sender still obeys MAX_DATA and MAX_STREAM_DATA as
 * before, so an unchanged peer interoperates (it just sees larger MAX_DATA values).
 */

/** Arrival marks kept per window: at a quarter RTT apart, two RTTs of them. */
const MARKS = 8;

/**
 * A receive window that grows with use (auto-tuning as in quic-go's
 * flowcontrol): when the peer used up a window's worth in less than about two
 * round trips, the window doubles, up to a maximum. This is what keeps a single
 * stream from being capped at window/RTT: a fixed 64 KiB window would hold a stream
 * to 640 KiB/s on a 100 ms path, however fast the path is. The session's pool
 * (`SessionReceiveWindow.streamCap`) may hold it lower.
 *
 * The rate judged is the higher of the epoch's read rate and the rate data arrived at
 * over the last round trip or so, and an update grows the window by as many doublings as
 * that asks for, not by one. While the peer's congestion controller ramps up (Startup
 * doubles its rate every round trip) the epoch's average, which reaches back to the
 * stream's opening or to the last update, lagged it by a doubling or more at every
 * update: a fresh session's first download on a 50 ms, 50 Mbit/s path with 1 % loss was
 * held by flow control for ~0.35 s of its first second, and on a 100 ms, 150 Mbit/s one
 * for about half of every round trip of its Startup. Held by flow control, the sender's
 * rate samples are app-limited, so its Startup could not see the path was full, and it
 * kept its queue. Reads come in bursts when a lost packet's resend fills the hole that
 * held them back; arrivals do not, so they are what is timed.
 */
export class ReceiveWindow {
  /** Current window size in bytes. */
  size: number;
  readonly maxSize: number;
  /** Highest offset the peer may send up to (last advertised). */
  limit: number;
  /** Bytes consumed by the reader (credit returned). */
  consumed = 0;
  #epochStart = -1;
  #epochOffset = 0;
  /** The peer still has the smaller starting limit (nothing advertised yet). */
  #belowSize = false;
  /** Times (ms) and highest offsets received, a quarter RTT or more apart (a ring of MARKS). */
  readonly #markAt: number[] = [];
  readonly #markOffset: number[] = [];
  #highest = 0;

  /**
   * `advertised` is the limit the peer starts with when it is below `initial` (a
   * stream's wire default): the larger window is announced only once half of that
   * is used, so a small request/response stream never needs a MAX_STREAM_DATA.
   * `openedAt` (ms) starts the first growth epoch when the whole window is announced at
   * once: a window used up within two round trips of the stream's opening doubles at its
   * first update instead of its second.
   */
  constructor(initial: number, max: number, advertised = initial, openedAt = -1) {
    this.size = initial;
    this.maxSize = max;
    this.limit = Math.min(initial, advertised);
    this.#belowSize = this.limit < initial;
    this.#epochStart = openedAt;
  }

  /** True when less than half a window of credit is left (of the starting limit, at first). */
  get wantsUpdate(): boolean {
    return this.limit - this.consumed <= (this.#belowSize ? this.limit : this.size) / 2;
  }

  /** Data up to `highest` has arrived (a new highest offset), at `now`. */
  onArrival(now: number, highest: number, srttMs: number): void {
    this.#highest = highest;
    const n = this.#markAt.length;
    if (n > 0 && now - this.#markAt[n - 1]! < srttMs / 4) return;
    if (n === MARKS) {
      this.#markAt.shift();
      this.#markOffset.shift();
    }
    this.#markAt.push(now);
    this.#markOffset.push(highest);
  }

  /** The rate data arrived at over the last round trip or so (bytes/ms; 0 if unknown). */
  #arrivalRate(now: number, srttMs: number): number {
    for (let i = this.#markAt.length - 1; i >= 0; i--) {
      const dt = now - this.#markAt[i]!;
      if (dt >= srttMs) return (this.#highest - this.#markOffset[i]!) / dt;
    }
    return 0;
  }

  /**
   * Computes a new limit, growing the window if it was used up fast, and holding it
   * to at most `capBytes` (it shrinks if it was larger; the limit never goes back).
   * Returns the new limit.
   */
  update(now: number, srttMs: number, capBytes = Infinity): number {
    if (this.#epochStart >= 0 && this.size < this.maxSize) {
      const used = this.consumed - this.#epochOffset;
      const elapsed = now - this.#epochStart;
      // Grow while a whole window, at this epoch's rate, would last under 4 RTTs (the
      // update goes out with half of it left: under 2).
      const rate = Math.max(
        elapsed > 0 ? used / elapsed : Infinity,
        this.#arrivalRate(now, srttMs),
      );
      while (used > 0 && this.size < 4 * srttMs * rate && this.size < this.maxSize) {
        this.size = Math.min(this.size * 2, this.maxSize);
      }
    }
    if (this.size > capBytes) this.size = capBytes;
    this.#belowSize = false;
    this.#epochStart = now;
    this.#epochOffset = this.consumed;
    this.limit = Math.max(this.limit, this.consumed + this.size);
    return this.limit;
  }
}

/** What the session's receive budget is made of (from MuxParams). */
export interface SessionWindowOptions {
  /** Most the peer may have sent beyond what was consumed (maxSessionWindowBytes). */
  maxBytes: number;
  /** Session credit beyond the streams' credit (initialSessionWindowBytes). */
  headroomBytes: number;
  /** Part of maxBytes no stream window grows into (maxBytes x streamWindowReserveRatio). */
  reserveBytes: number;
  /** Fraction of the pool the other streams leave that one stream's window may take. */
  shareRatio: number;
  /** Credit every stream may keep whatever the pool says (the wire's initial stream window). */
  floorBytes: number;
}

/**
 * The session's receive limit (MAX_DATA), derived from its streams' credit (see the
 * top of this file): consumed + min(maxBytes, streamCredit + headroom).
 */
export class SessionReceiveWindow {
  readonly maxBytes: number;
  readonly headroomBytes: number;
  readonly floorBytes: number;
  /** What stream windows grow from: maxBytes - headroom - reserve. */
  readonly poolBytes: number;
  readonly #shareRatio: number;
  /** Highest session offset the peer may send up to (last advertised). */
  limit: number;
  /** Bytes read or discarded over the session. */
  consumed = 0;
  /** Sum of the open receive halves' credit (`Stream.credit`). */
  streamCredit = 0;

  constructor(o: SessionWindowOptions) {
    this.maxBytes = o.maxBytes;
    this.headroomBytes = o.headroomBytes;
    this.floorBytes = o.floorBytes;
    this.poolBytes = Math.max(0, o.maxBytes - o.headroomBytes - o.reserveBytes);
    this.#shareRatio = o.shareRatio;
    this.limit = this.#target;
  }

  get #target(): number {
    return this.consumed + Math.min(this.maxBytes, this.streamCredit + this.headroomBytes);
  }

  /** True when the advertised limit lags what it should be by half the headroom or more. */
  get wantsUpdate(): boolean {
    return this.#target - this.limit >= this.headroomBytes / 2;
  }

  /** Raises the limit to what it should be (never lowers it). Returns the new limit. */
  update(): number {
    this.limit = Math.max(this.limit, this.#target);
    return this.limit;
  }

  /** Largest window a stream that holds `ownCredit` of streamCredit may have now. */
  streamCap(ownCredit: number): number {
    const free = this.poolBytes - (this.streamCredit - ownCredit);
    return Math.max(this.floorBytes, Math.floor(this.#shareRatio * free));
  }
}
