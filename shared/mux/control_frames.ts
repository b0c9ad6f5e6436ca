/**
 * Retransmittable control frames, as one table: for each kind, the room it needs in a
 * packet, how it is written, and what its ACK or its loss does. This is the only place
 * that queues them again.
 *
 * A frame is queued as a pending bit (`1 << kind`): the session's own in `#pending`,
 * a stream's in `Stream.controlPending` (with the stream in `#streams`, in queue
 * order). The packer writes them ahead of stream data. Values are read when a frame is
 * written, so one resent after loss carries the current value (the newest MAX_DATA,
 * not the lost one), and a frame no longer wanted (MAX_STREAM_DATA for a finished
 * receive half, an ACK_FREQUENCY superseded by a newer one) is not resent.
 */
import type { Clock } from "./clock.ts";
import { SessionErrorCode } from "./errors.ts";
import type { SessionReceiveWindow } from "./flow.ts";
import {
  encodeAckFrequency,
  encodeClose,
  encodeGoAway,
  encodeMaxData,
  encodeMaxStreamData,
  encodeMaxStreams,
  encodeResetStream,
  encodeStopSending,
  FrameType,
  MAX_CONTROL_FRAME_LENGTH,
} from "./frames.ts";
import type { MuxParams } from "./params.ts";
import {
  FrameKind,
  SentAckFrequency,
  type SentControl,
  type SentFrame,
  SentSessionControl,
  SentStreamControl,
  type StreamControlKind,
} from "./sent_frame.ts";
import type { Stream } from "./stream.ts";
import type { StreamsMap } from "./streams_map.ts";
import type { Writer } from "./wire.ts";

/** Session-wide control frames (ACK_FREQUENCY carries a sequence number, the others nothing). */
export type SessionFrameKind =
  | typeof FrameKind.MAX_DATA
  | typeof FrameKind.MAX_STREAMS
  | typeof FrameKind.GOAWAY
  | typeof FrameKind.CLOSE
  | typeof FrameKind.ACK_FREQUENCY
  | typeof FrameKind.PING;

/** What the frames' values and effects come from. */
export interface ControlContext {
  /** Schedules a send. */
  wake(): void;
  readonly recvWindow: SessionReceiveWindow;
  readonly streams: StreamsMap;
  readonly ackFrequency: AckFrequency;
  readonly pings: Pings;
  /** Reason carried by the graceful CLOSE. */
  closeReason(): string;
  /** The graceful CLOSE was acknowledged: the session is over. */
  onCloseAcked(): void;
}

interface SessionFrameType {
  readonly kind: SessionFrameKind;
  /** Bytes the packet must have left before the frame is written (at least its length). */
  readonly room: number;
  encode(w: Writer, c: ControlContext): SentControl;
  onAcked(f: SentControl, c: ControlContext): void;
  /** After a loss: still worth sending? */
  resend(f: SentControl, c: ControlContext): boolean;
}

interface StreamFrameType {
  readonly kind: StreamControlKind;
  readonly room: number;
  /** Writes the frame, or nothing (null) if it is no longer wanted. */
  encode(w: Writer, s: Stream): SentStreamControl | null;
  onAcked(s: Stream): void;
  resend(s: Stream): boolean;
}

const ROOM = MAX_CONTROL_FRAME_LENGTH;
const none = () => {};
const always = () => true;
const sent = {
  [FrameKind.MAX_DATA]: new SentSessionControl(FrameKind.MAX_DATA),
  [FrameKind.MAX_STREAMS]: new SentSessionControl(FrameKind.MAX_STREAMS),
  [FrameKind.GOAWAY]: new SentSessionControl(FrameKind.GOAWAY),
  [FrameKind.CLOSE]: new SentSessionControl(FrameKind.CLOSE),
  [FrameKind.PING]: new SentSessionControl(FrameKind.PING),
};

/** Session frames, in the order a packet carries them. */
const SESSION_FRAMES: readonly SessionFrameType[] = [
  {
    kind: FrameKind.MAX_DATA,
    room: ROOM,
    encode: (w, c) => (encodeMaxData(w, c.recvWindow.limit), sent[FrameKind.MAX_DATA]),
    onAcked: none,
    resend: always,
  },
  {
    kind: FrameKind.MAX_STREAMS,
    room: ROOM,
    encode: (w, c) => (
      encodeMaxStreams(w, c.streams.advertiseMaxStreams()), sent[FrameKind.MAX_STREAMS]
    ),
    onAcked: none,
    resend: always,
  },
  {
    kind: FrameKind.GOAWAY,
    room: ROOM,
    encode: (w, c) => (encodeGoAway(w, c.streams.goAwayFrameValue), sent[FrameKind.GOAWAY]),
    onAcked: none,
    resend: always,
  },
  {
    // The graceful close's CLOSE: the session ends once it is acknowledged.
    kind: FrameKind.CLOSE,
    room: 256,
    encode: (w, c) => (
      encodeClose(w, SessionErrorCode.NO_ERROR, c.closeReason()), sent[FrameKind.CLOSE]
    ),
    onAcked: (_, c) => c.onCloseAcked(),
    resend: always,
  },
  {
    kind: FrameKind.ACK_FREQUENCY,
    room: ROOM,
    encode: (w, c) => {
      const a = c.ackFrequency;
      encodeAckFrequency(w, a.seq, a.threshold, Math.round(a.delayMs * 1000));
      return new SentAckFrequency(a.seq);
    },
    onAcked: none,
    resend: (f, c) => (f as SentAckFrequency).seq === c.ackFrequency.seq,
  },
  {
    kind: FrameKind.PING,
    room: 1,
    encode: (w) => (w.u8(FrameType.PING), sent[FrameKind.PING]),
    onAcked: (_, c) => c.pings.onAcked(),
    resend: (_, c) => c.pings.waiting,
  },
];

/** Stream frames, in the order a packet carries them. */
const STREAM_FRAMES: readonly StreamFrameType[] = [
  {
    kind: FrameKind.RESET_STREAM,
    room: ROOM,
    encode: (w, s) => {
      encodeResetStream(w, s.id, s.resetCode, s.resetFinalSize);
      return new SentStreamControl(FrameKind.RESET_STREAM, s);
    },
    onAcked: (s) => s.onResetAcked(),
    resend: (s) => !s.resetAcked && !s.done,
  },
  {
    kind: FrameKind.STOP_SENDING,
    room: ROOM,
    encode: (w, s) => {
      encodeStopSending(w, s.id, s.stopCode);
      return new SentStreamControl(FrameKind.STOP_SENDING, s);
    },
    onAcked: none,
    resend: (s) => !s.done && s.stopWanted,
  },
  {
    kind: FrameKind.MAX_STREAM_DATA,
    room: ROOM,
    encode: (w, s) => {
      if (!s.recvOpen) return null;
      encodeMaxStreamData(w, s.id, s.window.limit);
      return new SentStreamControl(FrameKind.MAX_STREAM_DATA, s);
    },
    onAcked: none,
    resend: (s) => !s.done && s.recvOpen,
  },
];

const SESSION_BY_KIND: SessionFrameType[] = [];
for (const t of SESSION_FRAMES) SESSION_BY_KIND[t.kind] = t;
const STREAM_BY_KIND: StreamFrameType[] = [];
for (const t of STREAM_FRAMES) STREAM_BY_KIND[t.kind] = t;
/** Room a stream's control frames need together (a stream's frames go in one packet). */
const STREAM_ROOM = STREAM_FRAMES.reduce((n, t) => n + t.room, 0);

/** Control frames waiting to be sent, and what their ACKs and losses do. */
export class ControlFrames {
  readonly #c: ControlContext;
  /** Pending session frames, bit `1 << kind`. */
  #pending = 0;
  /** Streams with a pending frame (`Stream.controlPending`), in queue order. */
  readonly #streams = new Set<Stream>();
  #closed = false;

  constructor(context: ControlContext) {
    this.#c = context;
  }

  /** Queues a session frame, for a send that is under way or scheduled anyway. */
  queue(kind: SessionFrameKind): void {
    this.#pending |= 1 << kind;
  }

  /** Queues a session frame and wakes the sender. */
  queueAndWake(kind: SessionFrameKind): void {
    this.#pending |= 1 << kind;
    this.#c.wake();
  }

  /** Queues a frame for stream s and wakes the sender. */
  queueStream(s: Stream, kind: StreamControlKind): void {
    s.controlPending |= 1 << kind;
    this.requeueStream(s);
  }

  /** Puts s back in line if it has frames pending (held back until the peer's MAX_STREAMS). */
  requeueStream(s: Stream): void {
    if (s.controlPending === 0 || this.#closed) return;
    this.#streams.add(s);
    this.#c.wake();
  }

  /** The stream was freed. */
  forgetStream(s: Stream): void {
    this.#streams.delete(s);
  }

  /** Anything queued (maybe only for streams the peer does not allow yet). */
  get pending(): boolean {
    return this.#pending !== 0 || this.#streams.size > 0;
  }

  /** Writes what fits, session frames first; appends what was sent to `frames`. */
  write(w: Writer, frames: SentFrame[]): void {
    const c = this.#c;
    if (this.#pending !== 0) {
      for (const t of SESSION_FRAMES) {
        const bit = 1 << t.kind;
        if ((this.#pending & bit) === 0 || w.remaining < t.room) continue;
        frames.push(t.encode(w, c));
        this.#pending &= ~bit;
      }
    }
    for (const s of this.#streams) {
      if (w.remaining < STREAM_ROOM) return;
      // A stream beyond the peer's MAX_STREAMS must not appear on the wire yet.
      if (c.streams.beyondPeerLimit(s)) continue;
      for (const t of STREAM_FRAMES) {
        const bit = 1 << t.kind;
        if ((s.controlPending & bit) === 0) continue;
        s.controlPending &= ~bit;
        const f = t.encode(w, s);
        if (f !== null) frames.push(f);
      }
      this.#streams.delete(s);
    }
  }

  onAcked(f: SentControl): void {
    if (f instanceof SentStreamControl) STREAM_BY_KIND[f.kind]!.onAcked(streamOf(f));
    else SESSION_BY_KIND[f.kind]!.onAcked(f, this.#c);
  }

  onLost(f: SentControl): void {
    if (f instanceof SentStreamControl) {
      const s = streamOf(f);
      if (STREAM_BY_KIND[f.kind]!.resend(s)) this.queueStream(s, f.kind);
    } else if (SESSION_BY_KIND[f.kind]!.resend(f, this.#c)) this.queue(f.kind);
  }

  /** Session closed: streams are no longer queued. */
  clear(): void {
    this.#closed = true;
    this.#streams.clear();
  }
}

/**
 * The ACK_FREQUENCY we ask of the peer: during bulk transfer, an ACK every cwnd/4
 * packets (at most ackFrequencyMaxPackets) within a quarter RTT, instead of every 2nd
 * packet. Asked again at most once per RTT, and only when the threshold changes.
 */
export class AckFrequency {
  seq = -1;
  /** Ack-eliciting packets per ACK, and the delay (ms) we ask for. */
  threshold: number;
  delayMs: number;
  readonly #p: MuxParams;
  #askedAt = -Infinity;

  constructor(params: MuxParams) {
    this.#p = params;
    this.threshold = params.ackElicitingThresholdPackets;
    this.delayMs = params.maxAckDelayMs;
  }

  /** Returns true when a new ACK_FREQUENCY should be sent (seq, threshold, delay are set). */
  update(now: number, cwnd: number, packetSize: number, srttMs: number): boolean {
    const p = this.#p;
    if (p.ackFrequencyMaxPackets <= 0) return false;
    const want = Math.max(
      p.ackElicitingThresholdPackets,
      Math.min(
        p.ackFrequencyMaxPackets,
        Math.floor(cwnd / (packetSize * p.ackFrequencyCwndDivisor)),
      ),
    );
    if (want === this.threshold || now - this.#askedAt < srttMs) return false;
    this.seq++;
    this.threshold = want;
    this.delayMs = Math.min(p.maxAckDelayMs, Math.max(p.timerGranularityMs, srttMs / 4));
    this.#askedAt = now;
    return true;
  }
}

/** PINGs asked for by `MuxSession.ping`: each resolves with the RTT once one is acknowledged. */
export class Pings {
  readonly #clock: Clock;
  #waiters: { start: number; resolve: (ms: number) => void; reject: (e: unknown) => void }[] = [];

  constructor(clock: Clock) {
    this.#clock = clock;
  }

  /** Someone waits (a lost PING is worth resending). */
  get waiting(): boolean {
    return this.#waiters.length > 0;
  }

  /** A promise of the RTT (the caller queues the PING). */
  add(): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#waiters.push({ start: this.#clock.now(), resolve, reject });
    });
  }

  onAcked(): void {
    const now = this.#clock.now();
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w.resolve(now - w.start);
  }

  /** Session closed. */
  rejectAll(err: unknown): void {
    for (const w of this.#waiters) w.reject(err);
    this.#waiters = [];
  }
}

/**
 * The stream a stream control frame was about. Only this table makes them (`encode`
 * above), always for a `Stream`; sent_frame.ts types it narrower so that it need not
 * import stream.ts, which imports it.
 */
function streamOf(f: SentStreamControl): Stream {
  return f.stream as Stream;
}
