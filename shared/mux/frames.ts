/**
 * Mux packet and frame codecs (pure, no I/O). One packet per datagram:
 *
 * ```
 * packet  = header frame*
 * header  = | 0x4d ('M', version 1) : u8 | packet number : varint |
 *
 * PADDING          0x00
 * PING             0x01
 * ACK              0x02 largest, ack_delay_us, range_count, first_range,
 *                       (gap, range_len){range_count}         (RFC 9000 §19.3)
 * RESET_STREAM     0x04 stream_id, error_code, final_size     (§19.4)
 * STOP_SENDING     0x05 stream_id, error_code                 (§19.5)
 * STREAM           0x08 | FIN(0x01)  stream_id, offset, length, data (§19.8)
 * MAX_DATA         0x10 maximum                               (§19.9)
 * MAX_STREAM_DATA  0x11 stream_id, maximum                    (§19.10)
 * MAX_STREAMS      0x12 maximum (cumulative count, bidi only) (§19.11)
 * CLOSE            0x1c error_code, reason_length, reason     (§19.19)
 * GOAWAY           0x1e last_stream_id + 1 (0: none)          (HTTP/3 style)
 * ACK_FREQUENCY    0x20 sequence, ack_eliciting_threshold, max_ack_delay_us
 *                       (draft-ietf-quic-ack-frequency §4, own code point)
 * TIMESTAMP        0x21 timestamp_us: when this packet left, on its sender's clock (µs
 *                       since its session began); only ahead of ACK frames, which it
 *                       dates: their largest arrived at timestamp_us - ack_delay_us.
 *                       Sent only to a peer that announced it reads them
 *                       (draft-huitema-quic-ts, own code point)
 * WARM_UP          0x22 (no fields) asks for an ACK in no hurry: a warm-up packet's
 *                       (warm_up.ts) one frame before its PADDING; a PING in its place
 *                       would be acknowledged at once, as a probe is. Sent only to a
 *                       peer that announced it reads them
 * ```
 * All integers are QUIC varints (wire.ts). There is no encryption or packet
 * number protection here: DTLS below provides confidentiality and integrity.
 */
import { Reader, varintLength, Writer } from "./wire.ts";

export const PACKET_MAGIC = 0x4d;

export const FrameType = {
  PADDING: 0x00,
  PING: 0x01,
  ACK: 0x02,
  RESET_STREAM: 0x04,
  STOP_SENDING: 0x05,
  STREAM: 0x08,
  STREAM_FIN: 0x09,
  MAX_DATA: 0x10,
  MAX_STREAM_DATA: 0x11,
  MAX_STREAMS: 0x12,
  CLOSE: 0x1c,
  GOAWAY: 0x1e,
  ACK_FREQUENCY: 0x20,
  TIMESTAMP: 0x21,
  WARM_UP: 0x22,
} as const;

export type Frame =
  | { type: 0x00 }
  | { type: 0x01 }
  | {
    type: 0x02;
    /** Acknowledged ranges, descending, as flat [high0, low0, high1, low1, ...] (inclusive). */
    ranges: number[];
    ackDelayUs: number;
  }
  | { type: 0x04; streamId: number; code: number; finalSize: number }
  | { type: 0x05; streamId: number; code: number }
  | { type: 0x08; streamId: number; offset: number; data: Uint8Array; fin: boolean }
  | { type: 0x10; max: number }
  | { type: 0x11; streamId: number; max: number }
  | { type: 0x12; max: number }
  | { type: 0x1c; code: number; reason: string }
  | { type: 0x1e; lastStreamIdPlusOne: number }
  | { type: 0x20; seq: number; threshold: number; maxAckDelayUs: number }
  | { type: 0x21; us: number }
  | { type: 0x22 };

export function encodePacketHeader(w: Writer, pn: number): void {
  w.u8(PACKET_MAGIC);
  w.varint(pn);
}

export function packetHeaderLength(pn: number): number {
  return 1 + varintLength(pn);
}

/** Reads the header; returns the packet number or -1 (reader.error set). */
export function decodePacketHeader(r: Reader): number {
  const magic = r.u8();
  if (r.error !== null) return -1;
  if (magic !== PACKET_MAGIC) {
    r.fail(`Cannot decode packet: magic 0x${magic.toString(16)} is not 0x4d`);
    return -1;
  }
  const pn = r.varint();
  return r.error === null ? pn : -1;
}

/** Bytes a STREAM frame header takes (without its data). */
export function streamFrameOverhead(streamId: number, offset: number, length: number): number {
  return 1 + varintLength(streamId) + varintLength(offset) + varintLength(length);
}

export function encodeStreamHeader(
  w: Writer,
  streamId: number,
  offset: number,
  length: number,
  fin: boolean,
): void {
  w.u8(fin ? FrameType.STREAM_FIN : FrameType.STREAM);
  w.varint(streamId);
  w.varint(offset);
  w.varint(length);
}

export function encodeStream(
  w: Writer,
  streamId: number,
  offset: number,
  data: Uint8Array,
  fin: boolean,
): void {
  encodeStreamHeader(w, streamId, offset, data.length, fin);
  w.bytes(data);
}

/** Writes a TIMESTAMP frame: `us` on the sender's clock, µs since its session began. */
export function encodeTimestamp(w: Writer, us: number): void {
  w.u8(FrameType.TIMESTAMP);
  w.varint(us);
}

/** Bytes a TIMESTAMP frame of `us` takes. */
export function timestampFrameLength(us: number): number {
  return 1 + varintLength(us);
}

/** Max bytes of an ACK frame for `rangeCount` ranges with values below 2^30. */
export function ackFrameMaxLength(rangeCount: number): number {
  return 1 + 4 + 4 + 4 + 4 + (rangeCount - 1) * 8;
}

/** ranges: flat descending inclusive [high0, low0, high1, low1, ...], at least one range. */
export function encodeAck(w: Writer, ranges: readonly number[], ackDelayUs: number): void {
  const hi0 = ranges[0]!;
  const lo0 = ranges[1]!;
  const count = ranges.length / 2;
  w.u8(FrameType.ACK);
  w.varint(hi0);
  w.varint(ackDelayUs);
  w.varint(count - 1);
  w.varint(hi0 - lo0);
  let prevLo = lo0;
  for (let i = 2; i < ranges.length; i += 2) {
    const hi = ranges[i]!;
    const lo = ranges[i + 1]!;
    w.varint(prevLo - hi - 2); // gap (RFC 9000 §19.3.1)
    w.varint(hi - lo);
    prevLo = lo;
  }
}

export function ackFrameLength(ranges: readonly number[], ackDelayUs: number): number {
  const hi0 = ranges[0]!;
  const lo0 = ranges[1]!;
  let n = 1 + varintLength(hi0) + varintLength(ackDelayUs) + varintLength(ranges.length / 2 - 1) +
    varintLength(hi0 - lo0);
  let prevLo = lo0;
  for (let i = 2; i < ranges.length; i += 2) {
    const hi = ranges[i]!;
    const lo = ranges[i + 1]!;
    n += varintLength(prevLo - hi - 2) + varintLength(hi - lo);
    prevLo = lo;
  }
  return n;
}

export function encodeResetStream(w: Writer, id: number, code: number, finalSize: number): void {
  w.u8(FrameType.RESET_STREAM);
  w.varint(id);
  w.varint(code);
  w.varint(finalSize);
}
export function encodeStopSending(w: Writer, id: number, code: number): void {
  w.u8(FrameType.STOP_SENDING);
  w.varint(id);
  w.varint(code);
}
export function encodeMaxData(w: Writer, max: number): void {
  w.u8(FrameType.MAX_DATA);
  w.varint(max);
}
export function encodeMaxStreamData(w: Writer, id: number, max: number): void {
  w.u8(FrameType.MAX_STREAM_DATA);
  w.varint(id);
  w.varint(max);
}
export function encodeMaxStreams(w: Writer, max: number): void {
  w.u8(FrameType.MAX_STREAMS);
  w.varint(max);
}
export function encodeGoAway(w: Writer, lastStreamIdPlusOne: number): void {
  w.u8(FrameType.GOAWAY);
  w.varint(lastStreamIdPlusOne);
}
/** Asks the peer to ack every `threshold` ack-eliciting packets, or after `maxAckDelayUs`. */
export function encodeAckFrequency(
  w: Writer,
  seq: number,
  threshold: number,
  maxAckDelayUs: number,
): void {
  w.u8(FrameType.ACK_FREQUENCY);
  w.varint(seq);
  w.varint(threshold);
  w.varint(maxAckDelayUs);
}
const encoder = new TextEncoder();
const decoder = new TextDecoder();
/** Reason is truncated to 200 bytes. */
export function encodeClose(w: Writer, code: number, reason: string): void {
  const r = encoder.encode(reason).subarray(0, 200);
  w.u8(FrameType.CLOSE);
  w.varint(code);
  w.varint(r.length);
  w.bytes(r);
}

/** Upper bound for control frames (all fields < 2^53 fit in 8-byte varints). */
export const MAX_CONTROL_FRAME_LENGTH = 1 + 8 * 3;

/**
 * Decodes the next frame. Returns null and sets `r.error` on malformed input;
 * the caller closes the session with FRAME_ENCODING_ERROR.
 */
export function decodeFrame(r: Reader): Frame | null {
  const type = r.u8();
  switch (type) {
    case FrameType.PADDING:
      return { type };
    case FrameType.PING:
      return { type };
    case FrameType.ACK: {
      const largest = r.varint();
      const ackDelayUs = r.varint();
      const count = r.varint();
      const first = r.varint();
      if (r.error !== null) return null;
      if (count > 256) return r.fail(`Cannot decode ACK: ${count} ranges exceed 256`), null;
      if (first > largest) return r.fail(`Cannot decode ACK: first range exceeds largest`), null;
      const ranges = [largest, largest - first];
      let lo = largest - first;
      for (let i = 0; i < count; i++) {
        const gap = r.varint();
        const len = r.varint();
        const hi = lo - gap - 2;
        if (r.error !== null) return null;
        if (hi < 0 || len > hi) return r.fail(`Cannot decode ACK: range below zero`), null;
        lo = hi - len;
        ranges.push(hi, lo);
      }
      return { type, ranges, ackDelayUs };
    }
    case FrameType.RESET_STREAM: {
      const streamId = r.varint();
      const code = r.varint();
      const finalSize = r.varint();
      return r.error === null ? { type, streamId, code, finalSize } : null;
    }
    case FrameType.STOP_SENDING: {
      const streamId = r.varint();
      const code = r.varint();
      return r.error === null ? { type, streamId, code } : null;
    }
    case FrameType.STREAM:
    case FrameType.STREAM_FIN: {
      const streamId = r.varint();
      const offset = r.varint();
      const len = r.varint();
      const data = r.bytes(len);
      if (r.error !== null) return null;
      return { type: FrameType.STREAM, streamId, offset, data, fin: type === FrameType.STREAM_FIN };
    }
    case FrameType.MAX_DATA:
    case FrameType.MAX_STREAMS: {
      const max = r.varint();
      return r.error === null ? { type, max } : null;
    }
    case FrameType.MAX_STREAM_DATA: {
      const streamId = r.varint();
      const max = r.varint();
      return r.error === null ? { type, streamId, max } : null;
    }
    case FrameType.CLOSE: {
      const code = r.varint();
      const len = r.varint();
      const reason = r.bytes(len);
      return r.error === null ? { type, code, reason: decoder.decode(reason) } : null;
    }
    case FrameType.GOAWAY: {
      const lastStreamIdPlusOne = r.varint();
      return r.error === null ? { type, lastStreamIdPlusOne } : null;
    }
    case FrameType.ACK_FREQUENCY: {
      const seq = r.varint();
      const threshold = r.varint();
      const maxAckDelayUs = r.varint();
      if (r.error !== null) return null;
      if (threshold === 0) return r.fail(`Cannot decode ACK_FREQUENCY: threshold 0`), null;
      return { type, seq, threshold, maxAckDelayUs };
    }
    case FrameType.TIMESTAMP: {
      const us = r.varint();
      return r.error === null ? { type, us } : null;
    }
    case FrameType.WARM_UP:
      return { type };
    default:
      if (r.error === null) r.fail(`Cannot decode frame: unknown type 0x${type.toString(16)}`);
      return null;
  }
}
