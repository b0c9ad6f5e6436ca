/**
 * A strict, bounded reader of a TLS ClientHello, so the front can learn the
 * server name (SNI) before any TLS engine sees the connection: the certificate
 * is looked up first and the handshake starts with the right one, and the bytes
 * read so far are handed to the engine unchanged.
 *
 *   record 0x16 ver len | record 0x16 ver len | ...     (≤ 16 KiB of handshake)
 *   └── handshake: type 1, len24, ClientHello body ──┘
 *
 * The ClientHello may span several records and arrive in any number of TCP
 * segments; `parseClientHello` is called on all bytes read so far and says
 * "need more", "done" or "bad". Every length is checked against its container;
 * nothing is allocated beyond the one buffer that joins the handshake bytes.
 */
import { sniHostName } from "../../shared/names.ts";

/** Largest ClientHello handshake message accepted (its body and 4-byte header). */
export const MAX_CLIENT_HELLO_BYTES = 16 * 1024;
/** TLS record header. */
const RECORD_HEADER = 5;
/** Largest record payload TLS allows (RFC 8446 5.1: 2^14). */
const MAX_RECORD_PAYLOAD = 16 * 1024;
/** Records a ClientHello may span (real clients use one; rustls joins any number). */
const MAX_RECORDS = 64;
/** Most bytes a ClientHello's records can take: the message plus every record header. */
export const MAX_CLIENT_HELLO_READ = MAX_CLIENT_HELLO_BYTES + MAX_RECORDS * RECORD_HEADER;

export interface ClientHelloInfo {
  /** Lowercase server name without a trailing dot; "" when the client sent none. */
  serverName: string;
  /** Protocols offered in the ALPN extension, in the client's order (empty if none). */
  alpn: string[];
  /** Bytes of the input the ClientHello's records took (more may follow). */
  consumed: number;
}

export type ClientHelloResult =
  /** Incomplete: call again once at least `need` bytes (from the start) are in. */
  | { kind: "more"; need: number }
  | { kind: "done"; hello: ClientHelloInfo }
  | { kind: "bad"; why: string };

const more = (need: number): ClientHelloResult => ({ kind: "more", need });
const bad = (why: string): ClientHelloResult => ({ kind: "bad", why });

/** Parses the ClientHello at the start of `buf` (everything the client sent so far). */
export function parseClientHello(buf: Uint8Array): ClientHelloResult {
  // Join the payloads of the leading handshake records until the message is whole.
  let off = 0;
  let hs: Uint8Array | undefined;
  let hsLen = 0;
  let msgLen = -1; // handshake body length once the 4-byte header is in
  for (let records = 0;; records++) {
    if (records >= MAX_RECORDS) return bad("too many records");
    if (buf.length - off < RECORD_HEADER) return more(off + RECORD_HEADER);
    const type = buf[off]!;
    const major = buf[off + 1]!;
    const minor = buf[off + 2]!;
    const len = (buf[off + 3]! << 8) | buf[off + 4]!;
    if (type !== 0x16) return bad(records === 0 ? "not a TLS handshake record" : "record type");
    if (major !== 3 || minor > 4) return bad("record version");
    if (len === 0 || len > MAX_RECORD_PAYLOAD) return bad("record length");
    // Bounds known from the header alone, so `need` never passes MAX_CLIENT_HELLO_READ.
    if (len > MAX_CLIENT_HELLO_BYTES - hsLen) return bad("ClientHello too large");
    if (msgLen >= 0 && len > 4 + msgLen - hsLen) return bad("data after ClientHello in its record");
    if (buf.length - off - RECORD_HEADER < len) return more(off + RECORD_HEADER + len);
    const payload = buf.subarray(off + RECORD_HEADER, off + RECORD_HEADER + len);
    if (records === 0 && len >= 4) {
      // Common case: the whole message in the first record, no copy.
      const m = readHandshakeHeader(payload);
      if (typeof m === "string") return bad(m);
      if (m + 4 <= len) {
        if (m + 4 < len) return bad("data after ClientHello in its record");
        return finish(payload.subarray(4, 4 + m), off + RECORD_HEADER + len);
      }
    }
    // The message spans records: join their payloads (bounded by the message limit).
    hs ??= new Uint8Array(MAX_CLIENT_HELLO_BYTES);
    hs.set(payload, hsLen);
    hsLen += len;
    off += RECORD_HEADER + len;
    if (msgLen < 0 && hsLen >= 4) {
      const m = readHandshakeHeader(hs.subarray(0, 4));
      if (typeof m === "string") return bad(m);
      msgLen = m;
    }
    if (msgLen >= 0 && hsLen >= 4 + msgLen) {
      if (hsLen > 4 + msgLen) return bad("data after ClientHello in its record");
      return finish(hs.subarray(4, 4 + msgLen), off);
    }
  }
}

/** The ClientHello's body length from its 4-byte handshake header, or why not. */
function readHandshakeHeader(p: Uint8Array): number | string {
  if (p[0] !== 1) return "not a ClientHello";
  const m = (p[1]! << 16) | (p[2]! << 8) | p[3]!;
  if (m + 4 > MAX_CLIENT_HELLO_BYTES) return "ClientHello too large";
  if (m < 2 + 32 + 1 + 2 + 2 + 1 + 1) return "ClientHello too short";
  return m;
}

function finish(body: Uint8Array, consumed: number): ClientHelloResult {
  const r = parseBody(body);
  return typeof r === "string" ? bad(r) : { kind: "done", hello: { ...r, consumed } };
}

/** A cursor over a byte range that refuses to read past its end. */
class Reader {
  constructor(readonly b: Uint8Array, public pos = 0, readonly end = b.length) {}
  left(): number {
    return this.end - this.pos;
  }
  u8(): number {
    if (this.pos + 1 > this.end) throw new RangeError();
    return this.b[this.pos++]!;
  }
  u16(): number {
    if (this.pos + 2 > this.end) throw new RangeError();
    const v = (this.b[this.pos]! << 8) | this.b[this.pos + 1]!;
    this.pos += 2;
    return v;
  }
  /** A sub-reader over the next `n` bytes, which this one skips. */
  take(n: number): Reader {
    if (this.pos + n > this.end) throw new RangeError();
    const r = new Reader(this.b, this.pos, this.pos + n);
    this.pos += n;
    return r;
  }
  bytes(n: number): Uint8Array {
    const r = this.take(n);
    return this.b.subarray(r.pos, r.end);
  }
}

const EXT_SERVER_NAME = 0;
const EXT_ALPN = 16;

function parseBody(body: Uint8Array): Omit<ClientHelloInfo, "consumed"> | string {
  const r = new Reader(body);
  try {
    const major = r.u8();
    r.u8(); // legacy_version minor
    if (major !== 3) return "client version";
    r.take(32); // random
    const sid = r.u8();
    if (sid > 32) return "session id length";
    r.take(sid);
    const suites = r.u16();
    if (suites < 2 || suites % 2 !== 0) return "cipher suites length";
    r.take(suites);
    const comp = r.u8();
    if (comp < 1) return "compression methods length";
    r.take(comp);
    let serverName = "";
    let alpn: string[] = [];
    if (r.left() === 0) return { serverName, alpn }; // no extensions (TLS 1.2 allows it)
    const exts = r.take(r.u16());
    if (r.left() !== 0) return "data after extensions";
    const seen = new Set<number>();
    while (exts.left() > 0) {
      const type = exts.u16();
      const data = exts.take(exts.u16());
      if (seen.has(type)) return "duplicate extension";
      seen.add(type);
      if (type === EXT_SERVER_NAME) {
        const n = parseServerName(data);
        if (n === undefined) return "server_name extension";
        serverName = n;
      } else if (type === EXT_ALPN) {
        const a = parseAlpn(data);
        if (!a) return "ALPN extension";
        alpn = a;
      }
    }
    return { serverName, alpn };
  } catch (e) {
    if (e instanceof RangeError) return "length past its container";
    throw e;
  }
}

/** The host_name of a server_name extension (RFC 6066 3), normalized; "" for an IP literal. */
function parseServerName(data: Reader): string | undefined {
  if (data.left() === 0) return ""; // the server's echo form; never valid from a client, but harmless
  const list = data.take(data.u16());
  if (data.left() !== 0 || list.left() === 0) return undefined;
  let name: string | undefined;
  while (list.left() > 0) {
    const type = list.u8();
    const raw = list.bytes(list.u16());
    if (type !== 0) continue; // only host_name is defined
    if (name !== undefined) return undefined; // one host_name at most
    name = sniHostName(raw);
    if (name === undefined) return undefined;
  }
  return name ?? "";
}

function parseAlpn(data: Reader): string[] | undefined {
  const list = data.take(data.u16());
  if (data.left() !== 0 || list.left() === 0) return undefined;
  const out: string[] = [];
  while (list.left() > 0) {
    const p = list.bytes(list.u8());
    if (p.length === 0) return undefined;
    out.push(String.fromCharCode(...p));
  }
  return out;
}
