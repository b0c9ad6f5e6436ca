/**
 * WebSocket messages over a tunnel stream, after the upgrade's response head.
 *
 *  +----------+----------------+-------------------+
 *  | kind u8  | length (u32 BE) | payload           |
 *  +----------+----------------+-------------------+
 *  kind: 1 text (UTF-8), 2 binary, 8 close (payload: code u16 BE + UTF-8 reason)
 */
import { concatBytes } from "../bytes.ts";
/** Message kinds on the wire (the WebSocket opcodes). */
export const WsKind = { Text: 1, Binary: 2, Close: 8 } as const;
/** Largest message we carry (the local service or caller may set lower). */
export const MAX_WS_MESSAGE = 64 * 1024 * 1024;

/** One whole WebSocket message: text, binary, or close with code and reason. */
export type WsMessage =
  | { kind: typeof WsKind.Text; data: string }
  | { kind: typeof WsKind.Binary; data: Uint8Array }
  | { kind: typeof WsKind.Close; code: number; reason: string };

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A message as it goes on the stream: kind, u32 BE length, payload. */
export function encodeWsMessage(m: WsMessage): Uint8Array {
  let payload: Uint8Array;
  if (m.kind === WsKind.Text) payload = enc.encode(m.data);
  else if (m.kind === WsKind.Binary) payload = m.data;
  else {
    const reason = enc.encode(m.reason).subarray(0, 123);
    payload = new Uint8Array(2 + reason.length);
    payload[0] = m.code >>> 8;
    payload[1] = m.code & 0xff;
    payload.set(reason, 2);
  }
  const out = new Uint8Array(5 + payload.length);
  out[0] = m.kind;
  new DataView(out.buffer).setUint32(1, payload.length);
  out.set(payload, 5);
  return out;
}

/** Incremental decoder: push chunks, get whole messages; `error` is set on bad input. */
export class WsMessageDecoder {
  #buf: Uint8Array = new Uint8Array(0);
  /** Set once the input is not a valid message sequence; `push` then returns nothing. */
  error: string | undefined;

  /** Takes the next bytes; returns the messages they complete. */
  push(chunk: Uint8Array): WsMessage[] {
    const out: WsMessage[] = [];
    if (this.error) return out;
    let buf: Uint8Array = this.#buf.length ? concatBytes(this.#buf, chunk) : chunk;
    while (buf.length >= 5) {
      const kind = buf[0]!;
      const len = new DataView(buf.buffer, buf.byteOffset + 1, 4).getUint32(0);
      if (len > MAX_WS_MESSAGE) {
        this.error = `WebSocket message of ${len} bytes exceeds ${MAX_WS_MESSAGE}`;
        return out;
      }
      if (buf.length < 5 + len) break;
      const payload = buf.slice(5, 5 + len);
      buf = buf.subarray(5 + len);
      if (kind === WsKind.Text) out.push({ kind, data: dec.decode(payload) });
      else if (kind === WsKind.Binary) out.push({ kind, data: payload });
      else if (kind === WsKind.Close) {
        const code = payload.length >= 2 ? (payload[0]! << 8) | payload[1]! : 1005;
        out.push({ kind, code, reason: dec.decode(payload.subarray(2)) });
      } else {
        this.error = `Unknown WebSocket message kind ${kind}`;
        return out;
      }
    }
    this.#buf = buf.slice();
    return out;
  }
}
