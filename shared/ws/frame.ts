/**
 * RFC 6455 frames, as strict as the tunnel needs (docs/tcp-fallback.md): binary
 * messages only, bounded in size, masked from client to server and never from
 * server to client, control frames whole and small. A violation is a
 * `WsProtocolError` carrying the close code to answer with.
 *
 *    0                   1                   2                   3
 *   +-+-+-+-+-------+-+-------------+-------------------------------+
 *   |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
 *   |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
 *   |N|V|V|V|       |S|             |   (if payload len==126/127)   |
 *   +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
 *   |     Masking-key (0 or 4 bytes, if MASK set)  |  Payload ...   |
 */

/** Frame opcodes (RFC 6455 5.2). */
export const Opcode = {
  Continuation: 0x0,
  Text: 0x1,
  Binary: 0x2,
  Close: 0x8,
  Ping: 0x9,
  Pong: 0xa,
} as const;

/** Close codes we send (RFC 6455 7.4.1). */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  ProtocolError: 1002,
  UnsupportedData: 1003,
  NoStatus: 1005,
  Abnormal: 1006,
  PolicyViolation: 1008,
  TooBig: 1009,
} as const;

/** Largest header: 2 bytes, 8 of extended length, 4 of mask. */
export const MAX_HEADER_BYTES = 14;
/** Control frames carry at most this many payload bytes (RFC 6455 5.5). */
export const MAX_CONTROL_PAYLOAD = 125;

/** The peer broke the protocol; answer with `code` and close. */
export class WsProtocolError extends Error {
  /** The error's name. */
  override name = "WsProtocolError";
  /** `code`: the close code to answer with (1002, 1003, 1009). */
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

/** A parsed frame header. */
export interface FrameHeader {
  /** The final fragment of its message. */
  fin: boolean;
  /** One of `Opcode`. */
  opcode: number;
  /** The masking key, or undefined for an unmasked frame. */
  mask: Uint8Array | undefined;
  /** Payload bytes after the header. */
  payloadLength: number;
  /** Header bytes (where the payload starts). */
  headerLength: number;
}

/**
 * Parses the frame header at `buf[start..end)`. Returns undefined when the
 * header is not complete yet. Checks what the header alone can tell: reserved
 * bits, known opcodes, control frame rules, masking by `expectMasked`, and the
 * payload against `maxPayload`.
 */
export function parseFrameHeader(
  buf: Uint8Array,
  start: number,
  end: number,
  expectMasked: boolean,
  maxPayload: number,
): FrameHeader | undefined {
  if (end - start < 2) return undefined;
  const b0 = buf[start]!;
  const b1 = buf[start + 1]!;
  if (b0 & 0x70) throw new WsProtocolError(CloseCode.ProtocolError, "reserved bits set");
  const fin = (b0 & 0x80) !== 0;
  const opcode = b0 & 0x0f;
  const masked = (b1 & 0x80) !== 0;
  let len = b1 & 0x7f;
  let at = start + 2;
  if (len === 126) {
    if (end - at < 2) return undefined;
    len = (buf[at]! << 8) | buf[at + 1]!;
    if (len < 126) throw new WsProtocolError(CloseCode.ProtocolError, "length not minimal");
    at += 2;
  } else if (len === 127) {
    if (end - at < 8) return undefined;
    const hi = ((buf[at]! << 24) >>> 0) + (buf[at + 1]! << 16) + (buf[at + 2]! << 8) +
      buf[at + 3]!;
    const lo = ((buf[at + 4]! << 24) >>> 0) + (buf[at + 5]! << 16) + (buf[at + 6]! << 8) +
      buf[at + 7]!;
    if (hi & 0x8000_0000) throw new WsProtocolError(CloseCode.ProtocolError, "length MSB set");
    len = hi * 0x1_0000_0000 + lo;
    if (len < 65536) throw new WsProtocolError(CloseCode.ProtocolError, "length not minimal");
    at += 8;
  }
  if (opcode >= 0x8) {
    if (opcode > Opcode.Pong) {
      throw new WsProtocolError(CloseCode.ProtocolError, `unknown opcode ${opcode}`);
    }
    if (!fin) throw new WsProtocolError(CloseCode.ProtocolError, "fragmented control frame");
    if (len > MAX_CONTROL_PAYLOAD) {
      throw new WsProtocolError(CloseCode.ProtocolError, "control frame too long");
    }
  } else if (opcode > Opcode.Binary) {
    throw new WsProtocolError(CloseCode.ProtocolError, `unknown opcode ${opcode}`);
  } else if (opcode === Opcode.Text) {
    throw new WsProtocolError(CloseCode.UnsupportedData, "text messages are not accepted");
  }
  if (masked !== expectMasked) {
    throw new WsProtocolError(
      CloseCode.ProtocolError,
      expectMasked ? "unmasked frame from the client" : "masked frame from the server",
    );
  }
  if (len > maxPayload) {
    throw new WsProtocolError(
      CloseCode.TooBig,
      `frame of ${len} bytes, the limit is ${maxPayload}`,
    );
  }
  let mask: Uint8Array | undefined;
  if (masked) {
    if (end - at < 4) return undefined;
    mask = buf.subarray(at, at + 4);
    at += 4;
  }
  return { fin, opcode, mask, payloadLength: len, headerLength: at - start };
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** XORs `data` in place with the 4-byte `mask`, starting at mask offset `phase`. */
export function applyMask(data: Uint8Array, mask: Uint8Array, phase = 0): void {
  const m0 = mask[0]!, m1 = mask[1]!, m2 = mask[2]!, m3 = mask[3]!;
  const n = data.length;
  let i = 0;
  // Up to the first 4-aligned byte, then 32 bits at a time (the mask rotated to match).
  const off = data.byteOffset;
  while (i < n && ((off + i) & 3) !== 0) {
    data[i] = data[i]! ^ mask[(phase + i) & 3]!;
    i++;
  }
  const words = (n - i) >>> 2;
  if (words > 0) {
    const p = (phase + i) & 3;
    const k = [m0, m1, m2, m3];
    // Little-endian word of the mask bytes as they fall on this alignment.
    const w = (k[p]! | (k[(p + 1) & 3]! << 8) | (k[(p + 2) & 3]! << 16) | (k[(p + 3) & 3]! << 24)) |
      0;
    if (LITTLE_ENDIAN) {
      const u32 = new Uint32Array(data.buffer, off + i, words);
      for (let j = 0; j < words; j++) u32[j] = u32[j]! ^ w;
      i += words * 4;
    }
  }
  for (; i < n; i++) data[i] = data[i]! ^ mask[(phase + i) & 3]!;
}

/**
 * One frame, FIN set: header, then `payload` (masked with a fresh random key when
 * `masked`, as a client must). The payload is copied; the result is new.
 */
export function encodeFrame(opcode: number, payload: Uint8Array, masked: boolean): Uint8Array {
  const n = payload.length;
  const ext = n < 126 ? 0 : n < 65536 ? 2 : 8;
  const head = 2 + ext + (masked ? 4 : 0);
  const out = new Uint8Array(head + n);
  out[0] = 0x80 | opcode;
  out[1] = (masked ? 0x80 : 0) | (ext === 0 ? n : ext === 2 ? 126 : 127);
  if (ext === 2) {
    out[2] = n >>> 8;
    out[3] = n & 0xff;
  } else if (ext === 8) {
    const hi = Math.floor(n / 0x1_0000_0000);
    out[2] = hi >>> 24;
    out[3] = (hi >>> 16) & 0xff;
    out[4] = (hi >>> 8) & 0xff;
    out[5] = hi & 0xff;
    out[6] = n >>> 24;
    out[7] = (n >>> 16) & 0xff;
    out[8] = (n >>> 8) & 0xff;
    out[9] = n & 0xff;
  }
  out.set(payload, head);
  if (masked) {
    const mask = out.subarray(head - 4, head);
    crypto.getRandomValues(mask);
    applyMask(out.subarray(head), mask);
  }
  return out;
}

/** A close frame's payload: the code, then a UTF-8 reason cut to fit 125 bytes. */
export function closePayload(code: number, reason = ""): Uint8Array {
  const r = new TextEncoder().encode(reason).subarray(0, MAX_CONTROL_PAYLOAD - 2);
  const out = new Uint8Array(2 + r.length);
  out[0] = code >>> 8;
  out[1] = code & 0xff;
  out.set(r, 2);
  return out;
}

/** Reads a close frame's payload: code (1005 when absent) and reason. */
export function parseClosePayload(p: Uint8Array): { code: number; reason: string } {
  if (p.length === 0) return { code: CloseCode.NoStatus, reason: "" };
  if (p.length === 1) throw new WsProtocolError(CloseCode.ProtocolError, "close payload of 1 byte");
  const code = (p[0]! << 8) | p[1]!;
  let reason: string;
  try {
    reason = new TextDecoder("utf-8", { fatal: true }).decode(p.subarray(2));
  } catch {
    throw new WsProtocolError(CloseCode.ProtocolError, "close reason is not UTF-8");
  }
  return { code, reason };
}
