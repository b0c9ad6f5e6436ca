/**
 * A strict HTTP/1.1 response parser for the origin hop (RFC 9112), with no I/O.
 *
 * The client keeps connections to the local service alive and reuses them, so a
 * response read with the wrong length would hand the next caller's answer to this
 * one. This parser therefore only accepts framing it can be sure of and throws
 * `ResponseError` on everything else, after which the connection is closed, never
 * reused:
 *
 * - body length from the request method and status (HEAD, 1xx, 204, 304: none),
 *   then `Transfer-Encoding: chunked` (exactly that coding; any other coding is
 *   refused), then `Content-Length` (digits only; repeats must agree), else until
 *   the connection closes;
 * - no obs-fold, no bare CR, no whitespace before a header's colon, no control
 *   characters in values, field names that are tokens, a head of at most
 *   `maxHeadBytes` (also the bound on a chunk-size line and on trailers);
 * - in a chunked body every line ends in CRLF (a bare LF is accepted only in the
 *   head), and a chunk-size line is hex digits and well-formed extensions
 *   (`;name` or `;name=token` or `;name="quoted"`), no whitespace;
 * - interim 1xx responses (100, 102, 103) are skipped; 101 is an error, and so is
 *   an interim response that closes the connection (`Connection: close`, or
 *   HTTP/1.0). Only a response started with `{ upgrade: true }` (the request asked
 *   for an upgrade) may be a 101 (HTTP/1.1): the parser reports its head and stops
 *   right after it (`upgraded`); the bytes after it are the new protocol's, left
 *   unconsumed by `feed`.
 *
 * A connection may be reused only when `reusable` is true after `complete`:
 * HTTP/1.1, no `Connection: close`, and a body framed by length or chunks (a
 * response with both Transfer-Encoding and Content-Length is read as chunked but
 * not reused, as RFC 9112 §6.1 asks).
 *
 * Header values are read as Latin-1 (one byte, one code unit), as node:http does.
 */
import type { HeaderList } from "../../shared/protocol/mod.ts";
import { hasBadValueChar, isToken, latin1, trimOws } from "../../shared/protocol/field_text.ts";

/** The origin's answer could not be read safely. */
export class ResponseError extends Error {
  override name = "ResponseError";
}

export interface ResponseHead {
  status: number;
  reason: string;
  /** Field names lowercased, values as sent (OWS trimmed), in order, repeats kept. */
  headers: HeaderList;
}

/** What the parser reports. Body views point into the fed buffer: copy them to keep them. */
export interface ResponseEvents {
  head(head: ResponseHead): void;
  body(view: Uint8Array): void;
  end(): void;
}

export const DEFAULT_MAX_HEAD_BYTES = 64 * 1024;

const enum State {
  Idle,
  Head,
  Sized,
  ChunkSize,
  ChunkData,
  ChunkDataEnd,
  Trailers,
  UntilClose,
  Complete,
  /** A 101 head was read: what follows is not HTTP. */
  Upgraded,
}

// deno-lint-ignore no-control-regex
const STATUS_LINE = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?$/;
const DIGITS = /^\d+$/;
// RFC 9112 §7.1.1 chunk-ext without BWS: ;token[=(token / quoted-string)].
const CHUNK_SIZE =
  /^([0-9A-Fa-f]{1,13})(?:;[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:=(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+|"(?:[\t !#-[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"))?)*$/;
const LF = 0x0a;
const CR = 0x0d;

export class ResponseParser {
  readonly #events: ResponseEvents;
  readonly #maxHeadBytes: number;
  #state = State.Idle;
  #headRequest = false;
  /** Bytes of a head (or chunk-size line, or trailers) not yet complete. */
  #partial: Uint8Array[] = [];
  #partialBytes = 0;
  /** Body bytes left (Sized, ChunkData). */
  #left = 0;
  #reusable = false;
  #started = false;
  #trailerBytes = 0;
  #upgrade = false;

  constructor(events: ResponseEvents, maxHeadBytes = DEFAULT_MAX_HEAD_BYTES) {
    this.#events = events;
    this.#maxHeadBytes = maxHeadBytes;
  }

  /**
   * Expects the response to a request with this method. `upgrade`: the request asked
   * for a protocol upgrade, so a 101 is a valid final answer.
   */
  start(method: string, options: { upgrade?: boolean } = {}): void {
    this.#state = State.Head;
    this.#headRequest = method === "HEAD";
    this.#upgrade = options.upgrade ?? false;
    this.#partial = [];
    this.#partialBytes = 0;
    this.#reusable = false;
    this.#started = false;
    this.#left = 0;
  }

  /** Some byte of the response has arrived. */
  get started(): boolean {
    return this.#started;
  }

  /** The response has been read to its end. */
  get complete(): boolean {
    return this.#state === State.Complete;
  }

  /** After `complete`: the connection may carry another request. */
  get reusable(): boolean {
    return this.#state === State.Complete && this.#reusable;
  }

  /** A 101 head was read (only after `start(method, { upgrade: true })`): the rest is not HTTP. */
  get upgraded(): boolean {
    return this.#state === State.Upgraded;
  }

  /** The body runs until the connection closes. */
  get untilClose(): boolean {
    return this.#state === State.UntilClose;
  }

  /**
   * Parses `bytes`; returns how many were consumed. Stops at the end of the
   * response, so anything after it (which an origin must not send unasked) is
   * left unconsumed. Throws ResponseError on a response it cannot frame safely.
   */
  feed(bytes: Uint8Array): number {
    let pos = 0;
    const n = bytes.length;
    if (n > 0 && this.#state !== State.Idle) this.#started = true;
    while (pos < n) {
      switch (this.#state) {
        case State.Head:
          pos = this.#feedHead(bytes, pos);
          break;
        case State.Sized: {
          const k = Math.min(this.#left, n - pos);
          this.#events.body(bytes.subarray(pos, pos + k));
          pos += k;
          this.#left -= k;
          if (this.#left === 0) this.#finish();
          break;
        }
        case State.ChunkSize: {
          const line = this.#takeLine(bytes, pos, "chunk size line");
          if (line === null) return n;
          pos = line.next;
          const m = CHUNK_SIZE.exec(line.text);
          if (m === null) throw new ResponseError("Invalid chunk size line");
          const size = parseInt(m[1]!, 16);
          if (size === 0) {
            this.#state = State.Trailers;
            this.#trailerBytes = 0;
          } else {
            this.#left = size;
            this.#state = State.ChunkData;
          }
          break;
        }
        case State.ChunkData: {
          const k = Math.min(this.#left, n - pos);
          this.#events.body(bytes.subarray(pos, pos + k));
          pos += k;
          this.#left -= k;
          if (this.#left === 0) this.#state = State.ChunkDataEnd;
          break;
        }
        case State.ChunkDataEnd: {
          const line = this.#takeLine(bytes, pos, "chunk end");
          if (line === null) return n;
          if (line.text !== "") throw new ResponseError("Chunk data longer than its size");
          pos = line.next;
          this.#state = State.ChunkSize;
          break;
        }
        case State.Trailers: {
          const line = this.#takeLine(bytes, pos, "trailer section");
          if (line === null) return n;
          this.#trailerBytes += line.size;
          pos = line.next;
          if (this.#trailerBytes > this.#maxHeadBytes) {
            throw new ResponseError("Trailer section too large");
          }
          if (line.text === "") this.#finish();
          else parseField(line.text, "trailer"); // validated, then dropped
          break;
        }
        case State.UntilClose:
          this.#events.body(bytes.subarray(pos));
          return n;
        case State.Complete:
        case State.Upgraded:
          return pos;
        case State.Idle:
          throw new ResponseError("The origin sent bytes nobody asked for");
      }
    }
    return pos;
  }

  /** The connection closed: ends a body that runs until close; else the response is cut. */
  eof(): void {
    if (this.#state === State.UntilClose) {
      this.#state = State.Complete;
      this.#reusable = false;
      this.#events.end();
      return;
    }
    if (
      this.#state === State.Complete || this.#state === State.Idle ||
      this.#state === State.Upgraded
    ) return;
    throw new ResponseError(
      this.#state === State.Head
        ? "The origin closed the connection before a complete response head"
        : "The origin closed the connection before the end of the body",
    );
  }

  #finish(): void {
    this.#state = State.Complete;
    this.#events.end();
  }

  /** Collects head bytes until the blank line; then frames the response. */
  #feedHead(bytes: Uint8Array, pos: number): number {
    const end = findHeadEnd(bytes, pos, this.#partial);
    if (end < 0) {
      this.#keep(bytes.subarray(pos), "Response head too large");
      return bytes.length;
    }
    const size = this.#partialBytes + end - pos;
    if (size > this.#maxHeadBytes) throw new ResponseError("Response head too large");
    const text = latin1(this.#partial, bytes.subarray(pos, end));
    this.#partial = [];
    this.#partialBytes = 0;
    this.#onHead(text);
    return end;
  }

  #keep(bytes: Uint8Array, tooLarge: string): void {
    this.#partialBytes += bytes.length;
    if (this.#partialBytes > this.#maxHeadBytes) throw new ResponseError(tooLarge);
    this.#partial.push(bytes.slice());
  }

  /**
   * One CRLF-ended line of a chunked body from the partial bytes plus `bytes`, or
   * null to wait for more; `size` counts the line's bytes across feeds.
   */
  #takeLine(
    bytes: Uint8Array,
    pos: number,
    what: string,
  ): { text: string; next: number; size: number } | null {
    const lf = bytes.indexOf(LF, pos);
    if (lf < 0) {
      this.#keep(bytes.subarray(pos), `Response ${what} too long`);
      return null;
    }
    const size = this.#partialBytes + lf + 1 - pos;
    if (size > this.#maxHeadBytes) throw new ResponseError(`Response ${what} too long`);
    const text = latin1(this.#partial, bytes.subarray(pos, lf + 1));
    this.#partial = [];
    this.#partialBytes = 0;
    // Where a chunked body ends decides where the next response starts: CRLF only.
    if (!text.endsWith("\r\n")) throw new ResponseError(`Bare LF in the ${what}`);
    return { text: stripEol(text), next: lf + 1, size };
  }

  #onHead(text: string): void {
    const lines = text.split("\n");
    // The block ends with an empty line: drop it (and the split's empty tail).
    lines.length -= 2;
    const statusLine = stripEol(lines[0] ?? "");
    const m = STATUS_LINE.exec(statusLine);
    if (m === null) throw new ResponseError("Invalid status line");
    const minor = m[1] === "1" ? 1 : 0;
    const status = Number(m[2]);
    const headers: HeaderList = [];
    let chunked = false;
    let te = false;
    let length = -1;
    let close = minor === 0;
    for (let i = 1; i < lines.length; i++) {
      const [name, value] = parseField(stripEol(lines[i]!), "header");
      headers.push([name, value]);
      if (name === "transfer-encoding") {
        if (te) throw new ResponseError("Transfer-Encoding given twice");
        te = true;
        if (value.toLowerCase() !== "chunked") {
          throw new ResponseError(`Unsupported Transfer-Encoding "${value}"`);
        }
        chunked = true;
      } else if (name === "content-length") {
        for (const part of value.split(",")) {
          const v = part.trim();
          if (!DIGITS.test(v) || v.length > 15) throw new ResponseError("Invalid Content-Length");
          const k = Number(v);
          if (length >= 0 && k !== length) throw new ResponseError("Conflicting Content-Length");
          length = k;
        }
      } else if (name === "connection") {
        for (const t of value.split(",")) if (t.trim().toLowerCase() === "close") close = true;
      }
    }
    if (status === 101 && this.#upgrade) {
      // HTTP/1.0 has no 101 (RFC 9110 15.2.2).
      if (minor === 0) throw new ResponseError("101 Switching Protocols in HTTP/1.0");
      this.#events.head({ status, reason: m[3] ?? "", headers });
      this.#reusable = false;
      this.#state = State.Upgraded;
      return;
    }
    if (status < 200) {
      if (status === 101) throw new ResponseError("Unexpected 101 Switching Protocols");
      // An interim response announcing a close (or from HTTP/1.0, which has no 1xx)
      // ends the exchange for some readers (llhttp) and not for others: refused.
      if (close) throw new ResponseError("Interim response that closes the connection");
      // Interim response: the final one follows.
      this.#state = State.Head;
      return;
    }
    this.#events.head({ status, reason: m[3] ?? "", headers });
    if (this.#headRequest || status === 204 || status === 304) {
      this.#reusable = !close;
      this.#finish();
    } else if (chunked) {
      // Both framings given: read as chunked, but do not trust the connection after.
      this.#reusable = !close && length < 0;
      this.#state = State.ChunkSize;
    } else if (length >= 0) {
      this.#reusable = !close;
      this.#left = length;
      if (length === 0) this.#finish();
      else this.#state = State.Sized;
    } else {
      this.#reusable = false;
      this.#state = State.UntilClose;
    }
  }
}

/** Index just past the blank line ending a head, searching from `pos`; -1 if not there yet. */
function findHeadEnd(bytes: Uint8Array, pos: number, partial: Uint8Array[]): number {
  // A blank line: LF followed by LF or by CR LF. The LF before it may be in a
  // chunk already kept, so look at the kept tail too.
  let prev1 = -1; // the byte before `pos`
  let prev2 = -1; // the one before that
  if (partial.length > 0) {
    const tail = tailBytes(partial, 2);
    prev1 = tail[1]!;
    prev2 = tail[0]!;
  }
  let i = bytes.indexOf(LF, pos);
  while (i >= 0) {
    const a = i - 1 >= pos ? bytes[i - 1]! : (i - 1 === pos - 1 ? prev1 : -1);
    if (a === LF) return i + 1;
    if (a === CR) {
      const b = i - 2 >= pos ? bytes[i - 2]! : (i - 2 === pos - 1 ? prev1 : prev2);
      if (b === LF) return i + 1;
    }
    i = bytes.indexOf(LF, i + 1);
  }
  return -1;
}

/** The last `n` bytes of the kept chunks (padded with -1 in front). */
function tailBytes(chunks: Uint8Array[], n: number): number[] {
  const out: number[] = [];
  for (let c = chunks.length - 1; c >= 0 && out.length < n; c--) {
    const chunk = chunks[c]!;
    for (let i = chunk.length - 1; i >= 0 && out.length < n; i--) out.unshift(chunk[i]!);
  }
  while (out.length < n) out.unshift(-1);
  return out;
}

function stripEol(line: string): string {
  if (line.endsWith("\n")) line = line.slice(0, -1);
  if (line.endsWith("\r")) line = line.slice(0, -1);
  if (line.includes("\r")) throw new ResponseError("Bare CR in the response head");
  return line;
}

/** One `name: value` line, validated; name lowercased, value's OWS trimmed. */
function parseField(line: string, what: string): [string, string] {
  const c = line.charCodeAt(0);
  if (c === 0x20 || c === 0x09) throw new ResponseError(`Folded ${what} line`);
  const colon = line.indexOf(":");
  if (colon <= 0) throw new ResponseError(`Invalid ${what} line`);
  const name = line.slice(0, colon);
  if (!isToken(name)) throw new ResponseError(`Invalid ${what} name`);
  const value = trimOws(line, colon + 1);
  if (hasBadValueChar(value)) throw new ResponseError(`Invalid ${what} value`);
  return [name.toLowerCase(), value];
}
