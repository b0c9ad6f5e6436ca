/**
 * A strict HTTP/1.1 request parser for the server's own front (RFC 9112), with no
 * I/O.
 *
 * The front reads requests from the open Internet and hands each one to a tunnel,
 * keeping the connection alive between them. If this parser and anything behind
 * it (or in front of it) disagreed about where a request ends, one client could
 * slip a request into another's stream (request smuggling). So it accepts only
 * messages whose framing is unambiguous and throws `RequestError` (with the
 * status to answer before closing) on everything else:
 *
 * - up to `MAX_LEADING_EMPTY_LINES` empty lines (CRLF) before the request line
 *   are skipped (RFC 9112 §2.2) and count towards the head size;
 * - request line `method SP request-target SP HTTP/1.x CRLF`: a token method,
 *   single spaces, a target of visible ASCII only, `HTTP/1.0` or `HTTP/1.1`
 *   (another well-formed `HTTP/d.d`: 505);
 * - request-target forms: origin-form (`/…`); absolute-form (`http://` or
 *   `https://`, scheme in any case, an authority, no userinfo, then nothing or
 *   `/`, `?` or `#`); `*` only for OPTIONS; authority-form (`host:port`) only and
 *   always for CONNECT;
 * - CRLF ends every line: a bare LF or a bare CR anywhere in the head, a
 *   chunk-size line, after chunk data or in the trailers is refused;
 * - fields: the name a token with the colon right after it, the value's OWS
 *   trimmed, no control characters but HTAB, bytes 0x80–0xFF allowed (read as
 *   Latin-1), no obs-fold;
 * - `Host`: exactly one for HTTP/1.1 (at most one for HTTP/1.0), a non-empty
 *   `uri-host [":" port]` (reg-name, IPv4 or `[IPv6]`; a port is 1–5 digits up to
 *   65535); with absolute-form it must equal the target's authority ignoring case
 *   (no default-port equivalence);
 * - framing: no HTAB in `Transfer-Encoding` or `Content-Length` values, not even
 *   as OWS (llhttp refuses it after the value); `Transfer-Encoding` at most once,
 *   only for HTTP/1.1, never with `Content-Length`, and its value exactly
 *   `chunked` (any case, spaces around it). A well-formed
 *   list of other or more codings (`gzip, chunked`, `chunked, chunked`,
 *   `identity`, `chunked;q=1`) is 501; a malformed one (empty, `chunked,`, an
 *   empty list element, a non-token) is 400. `Content-Length` at most once, 1–15
 *   digits (no sign, no list, no repeat even if equal). Neither: no body. CONNECT
 *   has no body: either field on it is 400;
 * - chunked body: a chunk-size of 1–16 hex digits and at most
 *   `Number.MAX_SAFE_INTEGER`, extensions only as `;name`, `;name=token` or
 *   `;name="quoted"` with no whitespace, the line at most `maxChunkLineBytes`;
 *   chunk data followed by exactly CRLF; trailers after the last chunk under the
 *   field rules, at most `maxHeadBytes` in all and `maxHeaders` fields, none of
 *   the fields that frame, route or steer the message (`TRAILER_FORBIDDEN`);
 * - `Connection`: a list of tokens (empty elements ignored); `Expect`: absent or
 *   one `100-continue` (another value 417; a repeated field 400); `Upgrade` at
 *   most once.
 *
 * Every limit and every check gives the same answer however the bytes are split
 * across `feed` calls: the request line is checked byte by byte (so the first
 * bad byte decides, and garbage such as a TLS ClientHello is refused at once),
 * every other line when its LF arrives, and a line that cannot fit in what is
 * left of its limit is refused as soon as that is certain.
 */
import type { HeaderList } from "../../shared/protocol/mod.ts";
import {
  hasBadValueChar,
  isToken,
  latin1,
  latin1Of,
  trimOws,
} from "../../shared/protocol/field_text.ts";

/** The request cannot be read safely: answer `status` (if still possible), then close. */
export class RequestError extends Error {
  override name = "RequestError";
  /**
   * `status` is what to answer before closing: 400 (malformed or ambiguous), 414
   * (request-target too long), 417 (an Expect other than 100-continue), 431 (head
   * or trailers too large, too many fields), 501 (a transfer coding other than
   * chunked), 505 (an HTTP version other than 1.0 and 1.1). The parser never uses
   * 413: a body size limit is the caller's. An error thrown once the head has
   * been reported (in the body) may come too late to be answered.
   */
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

export interface RequestHead {
  method: string;
  /** The request-target as sent. */
  target: string;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  minor: 0 | 1;
  /** Field names lowercased, values as sent with OWS trimmed, in order, repeats kept; Latin-1 (one byte one code unit). */
  headers: HeaderList;
  /**
   * The Host field value (trimmed), or null when absent (HTTP/1.0 only). With an
   * absolute-form target: the target's authority (which equals Host, if sent,
   * ignoring case). With CONNECT: still the Host field, which need not equal the
   * authority-form target.
   */
  host: string | null;
  /** "none" (no body), "length" (Content-Length), "chunked". */
  body: "none" | "length" | "chunked";
  /** Content-Length for body "length" (may be 0: end() follows head() at once), else 0. */
  contentLength: number;
  /** Whether the connection may carry another request after this one (1.1 without `close`; 1.0 only with `keep-alive`). */
  keepAlive: boolean;
  /** `Expect: 100-continue` was sent in an HTTP/1.1 request (HTTP/1.0 ignores it, RFC 9110 §10.1.1). */
  expectContinue: boolean;
  /**
   * The Upgrade field value when the Connection field lists `upgrade` (HTTP/1.1
   * only: RFC 9110 §7.8), else null. The caller switches protocols, if it does,
   * after this message's end(), and reads no further requests.
   */
  upgrade: string | null;
  /** Lowercased tokens the Connection field lists (for the caller to drop those fields). */
  connection: Set<string>;
}

/** What the parser reports, in order: head, body views, trailers (maybe), end. */
export interface RequestEvents {
  head(head: RequestHead): void;
  /** A view into the fed buffer; valid only during the call unless the caller stops feeding. Never empty. */
  body(view: Uint8Array): void;
  /**
   * Optional: the trailer fields of a chunked body (validated like header
   * fields; names lowercased, values OWS-trimmed), called before end() when
   * there is at least one. Without this handler they are dropped.
   */
  trailers?(fields: HeaderList): void;
  /** The message ended (body complete; for chunked: after the trailers). */
  end(): void;
}

export interface RequestParserOptions {
  /** Largest head (empty lines before it, request line, fields, final CRLF) and largest trailer section; more → 431. */
  maxHeadBytes?: number;
  /** Most header fields (and most trailer fields); more → 431. */
  maxHeaders?: number;
  /** Longest request-target in bytes; more → 414. */
  maxTargetBytes?: number;
  /** Longest chunk-size line (extensions included, CRLF included); more → 400. */
  maxChunkLineBytes?: number;
}

export const DEFAULT_MAX_HEAD_BYTES = 64 * 1024;
export const DEFAULT_MAX_HEADERS = 100;
export const DEFAULT_MAX_TARGET_BYTES = 8 * 1024;
export const DEFAULT_MAX_CHUNK_LINE_BYTES = 4 * 1024;
/** Empty lines (CRLF) skipped before a request line (RFC 9112 §2.2); one more is a 400. */
export const MAX_LEADING_EMPTY_LINES = 4;

/**
 * Trailer fields refused (400): they frame, route or steer the message, and a
 * recipient that merged trailers into the header section would be misled.
 */
export const TRAILER_FORBIDDEN: ReadonlySet<string> = new Set([
  "content-length",
  "transfer-encoding",
  "trailer",
  "host",
  "connection",
  "keep-alive",
  "upgrade",
  "expect",
  "te",
]);

const enum State {
  /** Before the request line: its first byte, or an empty line. */
  Start,
  /** A CR before the request line: an LF must follow. */
  StartLf,
  Method,
  Target,
  /** The 8 bytes of `HTTP/d.d`, then CR. */
  Version,
  /** The CR after the version: an LF must follow. */
  RequestLf,
  /** Header field lines, up to the empty line. */
  Fields,
  Sized,
  ChunkSize,
  ChunkData,
  /** Chunk data done: CR must follow. */
  ChunkDataCr,
  /** Then LF. */
  ChunkDataLf,
  Trailers,
  /** end() was called: next() starts the next request. */
  Complete,
  /** A feed threw: the connection is to be closed. */
  Dead,
}

const TCHARS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/** 1 for the bytes of a token (RFC 9110 §5.6.2). */
const TCHAR = new Uint8Array(256);
for (const c of TCHARS) TCHAR[c.charCodeAt(0)] = 1;
const TOKEN_RE = "[!#$%&'*+\\-.^_`|~0-9A-Za-z]+";
const QUOTED_RE = '"(?:[\\t !#-[\\]-~\\x80-\\xff]|\\\\[\\t -~\\x80-\\xff])*"';
// RFC 9112 §7.1.1 chunk-ext without BWS: ;token[=(token / quoted-string)].
const CHUNK_SIZE = new RegExp(
  `^([0-9A-Fa-f]{1,16})(?:;${TOKEN_RE}(?:=(?:${TOKEN_RE}|${QUOTED_RE}))?)*$`,
);
// RFC 9112 §6.1 / RFC 9110 §10.1.4: transfer-coding *( OWS "," OWS transfer-coding ),
// with no empty elements (a well-formed list we do not support is 501, not 400).
const CODING_RE =
  `${TOKEN_RE}(?:[ \\t]*;[ \\t]*${TOKEN_RE}[ \\t]*=[ \\t]*(?:${TOKEN_RE}|${QUOTED_RE}))*`;
const CODINGS = new RegExp(`^${CODING_RE}(?:[ \\t]*,[ \\t]*${CODING_RE})*$`);
const CONTENT_LENGTH = /^[0-9]{1,15}$/;
// RFC 3986 authority without userinfo: reg-name (IPv4 is a reg-name too) or an
// IP literal, then an optional port (checked below: 1-5 digits, at most 65535).
const AUTHORITY =
  /^((?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+|\[[0-9A-Fa-f:.]+\])(?::(\d*))?$/;
const ABSOLUTE = /^https?:\/\/([^/?#]*)([/?#].*)?$/i;
const SP = 0x20;
const HTAB = 0x09;
const LF = 0x0a;
const CR = 0x0d;
const VERSION_PREFIX = "HTTP/";

const bad = (message: string) => new RequestError(400, message);

export class RequestParser {
  readonly #events: RequestEvents;
  readonly #maxHeadBytes: number;
  readonly #maxHeaders: number;
  readonly #maxTargetBytes: number;
  readonly #maxChunkLineBytes: number;
  #state = State.Start;
  #error: unknown = null;
  #idle = true;
  /** Bytes of the head so far (empty lines before it included). */
  #headBytes = 0;
  #emptyLines = 0;
  #method = "";
  #target = "";
  #targetBytes = 0;
  #version = "";
  #minor: 0 | 1 = 1;
  /** The authority of an absolute-form or authority-form target, else null. */
  #authority: string | null = null;
  #headers: HeaderList = [];
  /** Bytes of a line (field, chunk-size, trailer) not yet complete. */
  #partial: Uint8Array[] = [];
  #partialBytes = 0;
  /** Set by a #takeLine that returned a line (see there). */
  #lineNext = 0;
  #lineSize = 0;
  /** Body bytes left (Sized, ChunkData). */
  #left = 0;
  #trailerBytes = 0;
  #trailers: HeaderList = [];

  constructor(events: RequestEvents, options: RequestParserOptions = {}) {
    this.#events = events;
    this.#maxHeadBytes = options.maxHeadBytes ?? DEFAULT_MAX_HEAD_BYTES;
    this.#maxHeaders = options.maxHeaders ?? DEFAULT_MAX_HEADERS;
    this.#maxTargetBytes = options.maxTargetBytes ?? DEFAULT_MAX_TARGET_BYTES;
    this.#maxChunkLineBytes = options.maxChunkLineBytes ?? DEFAULT_MAX_CHUNK_LINE_BYTES;
  }

  /** True between head() and end() (a body is being read). */
  get inBody(): boolean {
    const s = this.#state;
    return s === State.Sized || s === State.ChunkSize || s === State.ChunkData ||
      s === State.ChunkDataCr || s === State.ChunkDataLf || s === State.Trailers;
  }

  /** True when no byte of a request has been consumed since construction/next() (idle keep-alive). */
  get idle(): boolean {
    return this.#idle;
  }

  /**
   * Feeds bytes. Returns how many bytes were consumed: all of them, except after
   * a message's end(), where it stops (pipelined bytes after it belong to the next
   * request: call next() and feed them again). Returns 0 while a message is
   * complete and next() has not been called. Throws RequestError; after a throw
   * the parser is dead and every later feed throws the same error.
   */
  feed(buf: Uint8Array): number {
    if (this.#state === State.Dead) throw this.#error;
    if (this.#state === State.Complete || buf.length === 0) return 0;
    this.#idle = false;
    try {
      return this.#feed(buf);
    } catch (e) {
      this.#state = State.Dead;
      this.#error = e;
      this.#partial = [];
      throw e;
    }
  }

  /** Ready for the next request on the same connection (only after end(); else throws). */
  next(): void {
    if (this.#state !== State.Complete) {
      throw new Error("RequestParser.next() before the end of a request");
    }
    this.#state = State.Start;
    this.#idle = true;
    this.#headBytes = 0;
    this.#emptyLines = 0;
    this.#method = "";
    this.#target = "";
    this.#targetBytes = 0;
    this.#version = "";
    this.#authority = null;
    this.#headers = [];
    this.#partial = [];
    this.#partialBytes = 0;
    this.#left = 0;
    this.#trailerBytes = 0;
    this.#trailers = [];
  }

  #feed(buf: Uint8Array): number {
    let pos = 0;
    const n = buf.length;
    while (pos < n) {
      switch (this.#state) {
        case State.Start:
        case State.StartLf:
        case State.Method:
        case State.Target:
        case State.Version:
        case State.RequestLf:
          pos = this.#feedRequestLine(buf, pos);
          break;
        case State.Fields: {
          const line = this.#takeLine(buf, pos, this.#maxHeadBytes - this.#headBytes, 431, "head");
          if (line === null) return n;
          pos = this.#lineNext;
          this.#headBytes += this.#lineSize;
          if (line === "") {
            this.#onHead();
          } else {
            const field = parseField(line, "header");
            // HTAB is OWS, but llhttp refuses it after these values (and parsers that
            // disagree on framing are how requests get smuggled): refused anywhere in them.
            if (
              (field[0] === "content-length" || field[0] === "transfer-encoding") &&
              line.includes("\t")
            ) {
              throw bad(`HTAB in ${field[0]}`);
            }
            this.#headers.push(field);
            if (this.#headers.length > this.#maxHeaders) {
              throw new RequestError(431, "Too many header fields");
            }
          }
          break;
        }
        case State.Sized: {
          const k = Math.min(this.#left, n - pos);
          this.#events.body(buf.subarray(pos, pos + k));
          pos += k;
          this.#left -= k;
          if (this.#left === 0) {
            this.#state = State.Complete;
            this.#events.end();
          }
          break;
        }
        case State.ChunkSize: {
          const line = this.#takeLine(buf, pos, this.#maxChunkLineBytes, 400, "chunk-size line");
          if (line === null) return n;
          pos = this.#lineNext;
          const m = CHUNK_SIZE.exec(line);
          if (m === null) throw bad("Invalid chunk-size line");
          // Up to 16 hex digits: exact up to 2^53 - 1, and anything above rounds to >= 2^53.
          const size = parseInt(m[1]!, 16);
          if (size > Number.MAX_SAFE_INTEGER) throw bad("Chunk size too large");
          if (size === 0) {
            this.#state = State.Trailers;
          } else {
            this.#left = size;
            this.#state = State.ChunkData;
          }
          break;
        }
        case State.ChunkData: {
          const k = Math.min(this.#left, n - pos);
          this.#events.body(buf.subarray(pos, pos + k));
          pos += k;
          this.#left -= k;
          if (this.#left === 0) this.#state = State.ChunkDataCr;
          break;
        }
        case State.ChunkDataCr:
          if (buf[pos] !== CR) throw bad("Chunk data longer than its size");
          pos++;
          this.#state = State.ChunkDataLf;
          break;
        case State.ChunkDataLf:
          if (buf[pos] !== LF) throw bad("Bare CR after chunk data");
          pos++;
          this.#state = State.ChunkSize;
          break;
        case State.Trailers: {
          const room = this.#maxHeadBytes - this.#trailerBytes;
          const line = this.#takeLine(buf, pos, room, 431, "trailer section");
          if (line === null) return n;
          pos = this.#lineNext;
          this.#trailerBytes += this.#lineSize;
          if (line === "") {
            this.#state = State.Complete;
            if (this.#trailers.length > 0) this.#events.trailers?.(this.#trailers);
            this.#events.end();
          } else {
            const field = parseField(line, "trailer");
            if (TRAILER_FORBIDDEN.has(field[0])) throw bad(`Trailer field ${field[0]} not allowed`);
            this.#trailers.push(field);
            if (this.#trailers.length > this.#maxHeaders) {
              throw new RequestError(431, "Too many trailer fields");
            }
          }
          break;
        }
        case State.Complete:
          return pos;
        case State.Dead:
          throw this.#error;
      }
    }
    return pos;
  }

  /**
   * The request line, byte by byte from `pos`, so that the first bad byte decides
   * however the line is split. Returns where it stopped: the buffer's end, or just
   * past the line's LF.
   */
  #feedRequestLine(buf: Uint8Array, pos: number): number {
    const n = buf.length;
    let from = pos; // where this buffer's run of method or target bytes began
    for (; pos < n; pos++) {
      const c = buf[pos]!;
      if (++this.#headBytes > this.#maxHeadBytes) {
        throw new RequestError(431, "Request head too large");
      }
      switch (this.#state) {
        case State.Start:
          if (c === CR) {
            this.#state = State.StartLf;
          } else if (TCHAR[c] === 1) {
            this.#state = State.Method;
            from = pos;
          } else {
            throw bad(c === LF ? "Bare LF before the request line" : "Invalid request method");
          }
          break;
        case State.StartLf:
          if (c !== LF) throw bad("Bare CR before the request line");
          if (++this.#emptyLines > MAX_LEADING_EMPTY_LINES) {
            throw bad("Too many empty lines before the request line");
          }
          this.#state = State.Start;
          break;
        case State.Method:
          if (c === SP) {
            this.#method += ascii(buf, from, pos);
            this.#state = State.Target;
            from = pos + 1;
          } else if (TCHAR[c] !== 1) {
            throw bad("Invalid request method");
          }
          break;
        case State.Target:
          if (c === SP) {
            this.#target += ascii(buf, from, pos);
            if (this.#target === "") throw bad("Empty request-target");
            this.#state = State.Version;
          } else if (c < 0x21 || c > 0x7e) {
            throw bad("Invalid byte in the request-target");
          } else if (++this.#targetBytes > this.#maxTargetBytes) {
            throw new RequestError(414, "Request-target too long");
          }
          break;
        case State.Version: {
          const i = this.#version.length;
          if (i === 8) {
            if (c !== CR) throw bad("Invalid HTTP version");
            this.#state = State.RequestLf;
            break;
          }
          const ok = i < 5
            ? c === VERSION_PREFIX.charCodeAt(i)
            : i === 6
            ? c === 0x2e
            : c >= 0x30 && c <= 0x39;
          if (!ok) throw bad("Invalid HTTP version");
          this.#version += String.fromCharCode(c);
          break;
        }
        case State.RequestLf:
          if (c !== LF) throw bad("Bare CR in the request line");
          this.#onRequestLine();
          return pos + 1;
      }
    }
    if (this.#state === State.Method) this.#method += ascii(buf, from, n);
    else if (this.#state === State.Target) this.#target += ascii(buf, from, n);
    return n;
  }

  #onRequestLine(): void {
    if (this.#version === "HTTP/1.1") this.#minor = 1;
    else if (this.#version === "HTTP/1.0") this.#minor = 0;
    else throw new RequestError(505, `${this.#version} not supported`);
    // Throws on a form the method does not allow.
    this.#authority = targetForm(this.#method, this.#target);
    this.#state = State.Fields;
  }

  /** The head is complete: checks what its fields say together, reports it, frames the body. */
  #onHead(): void {
    const method = this.#method;
    const target = this.#target;
    const minor = this.#minor;
    const headers = this.#headers;
    const hosts: string[] = [];
    const te: string[] = [];
    const cl: string[] = [];
    const expect: string[] = [];
    const upgrades: string[] = [];
    const connection = new Set<string>();
    for (const [name, value] of headers) {
      switch (name) {
        case "host":
          hosts.push(value);
          break;
        case "transfer-encoding":
          te.push(value);
          break;
        case "content-length":
          cl.push(value);
          break;
        case "expect":
          expect.push(value);
          break;
        case "upgrade":
          upgrades.push(value);
          break;
        case "connection":
          for (const part of value.split(",")) {
            const t = trimOws(part);
            if (t === "") continue; // empty list elements are ignored (RFC 9110 §5.6.1)
            if (!isToken(t)) throw bad("Invalid Connection field");
            connection.add(t.toLowerCase());
          }
          break;
      }
    }

    // Routing: Host, and the target's authority.
    if (hosts.length > 1) throw bad("Host given more than once");
    let host: string | null = hosts[0] ?? null;
    if (host === null && minor === 1) throw bad("Host missing");
    if (host !== null && !isAuthority(host, false)) throw bad("Invalid Host");
    const authority = this.#authority;
    if (authority !== null && method !== "CONNECT") {
      if (host !== null && host.toLowerCase() !== authority.toLowerCase()) {
        throw bad("Host differs from the request-target's authority");
      }
      host = authority;
    }
    if (upgrades.length > 1) throw bad("Upgrade given more than once");

    // Framing.
    let body: RequestHead["body"] = "none";
    let contentLength = 0;
    if (te.length > 0) {
      if (te.length > 1) throw bad("Transfer-Encoding given more than once");
      if (cl.length > 0) throw bad("Both Transfer-Encoding and Content-Length");
      if (minor === 0) throw bad("Transfer-Encoding in an HTTP/1.0 request");
      if (method === "CONNECT") throw bad("CONNECT with a body");
      const v = te[0]!;
      if (v.toLowerCase() !== "chunked") {
        if (CODINGS.test(v)) throw new RequestError(501, `Transfer-Encoding "${v}" not supported`);
        throw bad("Invalid Transfer-Encoding");
      }
      body = "chunked";
    } else if (cl.length > 0) {
      if (cl.length > 1) throw bad("Content-Length given more than once");
      if (method === "CONNECT") throw bad("CONNECT with a body");
      const v = cl[0]!;
      if (!CONTENT_LENGTH.test(v)) throw bad("Invalid Content-Length");
      body = "length";
      contentLength = Number(v);
    }

    if (expect.length > 1) throw bad("Expect given more than once");
    if (expect.length === 1 && expect[0]!.toLowerCase() !== "100-continue") {
      throw new RequestError(417, `Expectation "${expect[0]}" not supported`);
    }

    const close = connection.has("close");
    const head: RequestHead = {
      method,
      target,
      minor,
      headers,
      host,
      body,
      contentLength,
      keepAlive: !close && (minor === 1 || connection.has("keep-alive")),
      expectContinue: minor === 1 && expect.length === 1,
      upgrade: minor === 1 && connection.has("upgrade") ? upgrades[0] ?? null : null,
      connection,
    };
    if (body === "chunked") {
      this.#state = State.ChunkSize;
    } else if (contentLength > 0) {
      this.#left = contentLength;
      this.#state = State.Sized;
    } else {
      this.#state = State.Complete;
    }
    this.#events.head(head);
    if (this.#state === State.Complete) this.#events.end();
  }

  /**
   * One CRLF-ended line (without its CRLF) from the kept bytes plus `buf` from
   * `pos`, or null (the bytes kept) to wait for more; `#lineNext` and `#lineSize`
   * then say where the next byte is and the line's size with its CRLF. The line
   * may take at most `room` bytes: beyond that it is refused with `status` as soon
   * as that is certain, and its LF is never searched for further than that.
   */
  #takeLine(
    buf: Uint8Array,
    pos: number,
    room: number,
    status: number,
    what: string,
  ): string | null {
    // A byte of the line is here (pos < buf.length): with the kept ones, does it fit?
    if (this.#partialBytes >= room) throw new RequestError(status, `Request ${what} too large`);
    // The LF must come before `end` for the line to fit.
    const end = Math.min(buf.length, pos + room - this.#partialBytes);
    const at = end === buf.length ? buf.indexOf(LF, pos) : buf.subarray(0, end).indexOf(LF, pos);
    if (at < 0) {
      // The line will be at least one byte (its LF) longer than what has come.
      this.#partialBytes += end - pos;
      if (this.#partialBytes >= room) throw new RequestError(status, `Request ${what} too large`);
      this.#partial.push(buf.slice(pos));
      return null;
    }
    this.#lineNext = at + 1;
    this.#lineSize = this.#partialBytes + at - pos + 1;
    let text: string;
    if (this.#partial.length === 0) {
      // The usual case, the whole line in this buffer: decoded once, without its CRLF.
      if (at === pos || buf[at - 1] !== CR) throw bad(`Bare LF in the request ${what}`);
      text = at - 1 > pos ? latin1Of(buf.subarray(pos, at - 1)) : "";
    } else {
      text = latin1(this.#partial, buf.subarray(pos, at + 1));
      this.#partial = [];
      if (!text.endsWith("\r\n")) throw bad(`Bare LF in the request ${what}`);
      text = text.slice(0, -2);
    }
    this.#partialBytes = 0;
    if (text.includes("\r")) throw bad(`Bare CR in the request ${what}`);
    return text;
  }
}

/**
 * The request-target's form, checked against the method (RFC 9112 §3.2): the
 * authority for absolute-form and authority-form, else null. Throws 400.
 */
function targetForm(method: string, target: string): string | null {
  if (method === "CONNECT") {
    // authority-form = uri-host ":" port, only and always for CONNECT.
    if (!isAuthority(target, true)) throw bad("CONNECT needs an authority-form target");
    return target;
  }
  if (target.charCodeAt(0) === 0x2f) return null; // origin-form "/..."
  if (target === "*") {
    if (method !== "OPTIONS") throw bad("Asterisk-form target only for OPTIONS");
    return null;
  }
  const m = ABSOLUTE.exec(target);
  if (m === null) throw bad("Invalid request-target");
  const authority = m[1]!;
  if (!isAuthority(authority, false)) throw bad("Invalid authority in the request-target");
  return authority;
}

/** `uri-host [":" port]` with a non-empty host and, if a colon is there, a port 1-65535 digits. */
function isAuthority(s: string, portRequired: boolean): boolean {
  const m = AUTHORITY.exec(s);
  if (m === null) return false;
  const [, hostPart, port] = m;
  if (port === undefined) {
    if (portRequired) return false;
  } else if (port.length === 0 || port.length > 5 || Number(port) > 65535) {
    return false;
  }
  if (hostPart!.startsWith("[")) return isIPv6(hostPart!.slice(1, -1));
  return true;
}

/** An IPv6 address (RFC 4291 text form, IPv4 tail allowed; no zone, no IPvFuture). */
function isIPv6(s: string): boolean {
  const double = s.indexOf("::");
  if (double >= 0 && s.indexOf("::", double + 1) >= 0) return false;
  const parts = (x: string) => (x === "" ? [] : x.split(":"));
  const head = double >= 0 ? parts(s.slice(0, double)) : parts(s);
  const tail = double >= 0 ? parts(s.slice(double + 2)) : [];
  const all = [...head, ...tail];
  let groups = all.length;
  const last = all.at(-1);
  if (last !== undefined && last.includes(".")) {
    if (!isIPv4(last)) return false;
    all.pop();
    groups += 1; // an IPv4 tail fills two groups
  }
  if (!all.every((g) => /^[0-9A-Fa-f]{1,4}$/.test(g))) return false;
  return double >= 0 ? groups <= 7 : groups === 8;
}

function isIPv4(s: string): boolean {
  const parts = s.split(".");
  return parts.length === 4 &&
    parts.every((p) => /^(?:0|[1-9]\d{0,2})$/.test(p) && Number(p) <= 255);
}

/** One `name: value` line, validated; name lowercased, value's OWS trimmed. */
function parseField(line: string, what: string): [string, string] {
  const c = line.charCodeAt(0);
  if (c === SP || c === HTAB) throw bad(`Obsolete line folding in the ${what} section`);
  const colon = line.indexOf(":");
  if (colon <= 0) throw bad(`Invalid ${what} line`);
  const name = line.slice(0, colon);
  if (!isToken(name)) throw bad(`Invalid ${what} field name`);
  const value = line.slice(colon + 1);
  if (hasBadValueChar(value)) throw bad(`Invalid ${what} field value`);
  return [name.toLowerCase(), trimOws(value)];
}

/** `buf[from, to)`, all token or visible ASCII bytes here, as text. */
function ascii(buf: Uint8Array, from: number, to: number): string {
  return to > from ? ASCII.decode(buf.subarray(from, to)) : "";
}

const ASCII = new TextDecoder("utf-8", { ignoreBOM: true });
