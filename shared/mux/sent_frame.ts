/**
 * What a sent packet remembers of each frame it carried, so that an ACK or a loss
 * can be applied to the right thing (recovery.ts carries these opaquely): one type
 * per meaning, told apart by `kind`. ACK and PADDING frames are not remembered.
 */

export const FrameKind = {
  STREAM: 0,
  RESET_STREAM: 1,
  STOP_SENDING: 2,
  MAX_STREAM_DATA: 3,
  MAX_DATA: 4,
  MAX_STREAMS: 5,
  GOAWAY: 6,
  PING: 7,
  CLOSE: 8,
  ACK_FREQUENCY: 9,
  MTU_PROBE: 10,
} as const;

/** Control frames about one stream (control_frames.ts). */
export type StreamControlKind =
  | typeof FrameKind.RESET_STREAM
  | typeof FrameKind.STOP_SENDING
  | typeof FrameKind.MAX_STREAM_DATA;

/** Control frames about the whole session that carry nothing worth remembering. */
export type SessionControlKind =
  | typeof FrameKind.MAX_DATA
  | typeof FrameKind.MAX_STREAMS
  | typeof FrameKind.GOAWAY
  | typeof FrameKind.PING
  | typeof FrameKind.CLOSE;

/**
 * The stream a remembered frame belongs to, as far as this module needs to know
 * (stream.ts's `Stream` is one; naming it here would make the two import each other).
 */
export interface SentStream {
  readonly id: number;
  onDataAcked(offset: number, length: number, fin: boolean): void;
  onDataLost(offset: number, length: number, fin: boolean): void;
}

/** Stream data [offset, offset + length), and the FIN if `fin`. */
export class SentStreamData {
  readonly kind = FrameKind.STREAM;
  constructor(
    readonly stream: SentStream,
    readonly offset: number,
    readonly length: number,
    readonly fin: boolean,
  ) {}
}

/** RESET_STREAM, STOP_SENDING or MAX_STREAM_DATA of `stream` (values are re-read on resend). */
export class SentStreamControl {
  constructor(readonly kind: StreamControlKind, readonly stream: SentStream) {}
}

/** MAX_DATA, MAX_STREAMS, GOAWAY, PING or CLOSE (values are re-read on resend). */
export class SentSessionControl {
  constructor(readonly kind: SessionControlKind) {}
}

/** ACK_FREQUENCY with sequence number `seq`: only the newest one is worth resending. */
export class SentAckFrequency {
  readonly kind = FrameKind.ACK_FREQUENCY;
  constructor(readonly seq: number) {}
}

/** A PMTU probe packet (PING + PADDING) of `size` bytes. */
export class SentMtuProbe {
  readonly kind = FrameKind.MTU_PROBE;
  constructor(readonly size: number) {}
}

/** A retransmittable control frame (control_frames.ts has what each kind does). */
export type SentControl = SentStreamControl | SentSessionControl | SentAckFrequency;

export type SentFrame = SentStreamData | SentControl | SentMtuProbe;
