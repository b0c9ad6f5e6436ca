/**
 * The RFC 6455 opening handshake, both sides: the server's checks of an upgrade
 * request and its Sec-WebSocket-Accept, the client's request and its checks of
 * the 101. Also reading one HTTP/1.1 response head off a byte stream, bounded
 * (the 101, or an HTTP proxy's answer to CONNECT).
 */
import { createHash } from "node:crypto";

/** RFC 6455 1.3: appended to the client's key before hashing. */
export const WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** Sec-WebSocket-Accept for a Sec-WebSocket-Key. */
export function acceptKeyFor(key: string): string {
  return createHash("sha1").update(key + WS_GUID).digest("base64");
}

/** A fresh Sec-WebSocket-Key: 16 random bytes, base64. */
export function newClientKey(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return btoa(String.fromCharCode(...b));
}

/** Header fields, names lowercase, in order. */
export type Fields = readonly (readonly [string, string])[];

/** What a valid upgrade request carries. */
export interface UpgradeRequest {
  /** The Sec-WebSocket-Key. */
  key: string;
  /** Sec-WebSocket-Protocol values offered, in order. */
  protocols: string[];
}

/** Why an upgrade request is refused: the status to answer and a short reason. */
export interface UpgradeRefusal {
  /** The status to answer with. */
  status: 400 | 405 | 426;
  /** What was wrong, for the answer's body. */
  message: string;
  /** Fields to add to the answer (426: the version we speak). */
  headers: [string, string][];
}

const KEY = /^[A-Za-z0-9+/]{22}==$/;

/**
 * Checks a server-side upgrade request (RFC 6455 4.2.1): GET, Upgrade websocket
 * (`upgrade` is the Upgrade value the Connection field named), version 13, a
 * 16-byte base64 key, no body.
 */
export function checkUpgradeRequest(
  method: string,
  upgrade: string | null,
  headers: Fields,
  hasBody: boolean,
): UpgradeRequest | UpgradeRefusal {
  const refuse = (
    status: UpgradeRefusal["status"],
    message: string,
    h: [string, string][] = [],
  ) => ({ status, message, headers: h });
  if (method !== "GET") return refuse(405, "a WebSocket upgrade must be a GET");
  if (hasBody) return refuse(400, "a WebSocket upgrade has no body");
  if (upgrade === null || !upgrade.split(",").some((t) => t.trim().toLowerCase() === "websocket")) {
    return refuse(426, "expected Upgrade: websocket", [["upgrade", "websocket"]]);
  }
  let key: string | undefined;
  let version: string | undefined;
  let keys = 0;
  const protocols: string[] = [];
  for (const [k, v] of headers) {
    if (k === "sec-websocket-key") {
      keys++;
      key = v.trim();
    } else if (k === "sec-websocket-version") version = v.trim();
    else if (k === "sec-websocket-protocol") {
      for (const p of v.split(",")) if (p.trim()) protocols.push(p.trim());
    }
  }
  if (version !== "13") {
    return refuse(426, "unsupported Sec-WebSocket-Version", [["sec-websocket-version", "13"]]);
  }
  if (keys !== 1 || !key || !KEY.test(key)) return refuse(400, "bad Sec-WebSocket-Key");
  return { key, protocols };
}

/** The client's upgrade request head. */
export function clientUpgradeRequest(o: {
  /** The Host field (host, or host:port). */
  host: string;
  path: string;
  key: string;
  protocol?: string;
  /** More fields (User-Agent...). */
  headers?: [string, string][];
}): Uint8Array {
  let s = `GET ${o.path} HTTP/1.1\r\nhost: ${o.host}\r\nconnection: Upgrade\r\n` +
    `upgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: ${o.key}\r\n`;
  if (o.protocol) s += `sec-websocket-protocol: ${o.protocol}\r\n`;
  for (const [k, v] of o.headers ?? []) s += `${k}: ${v}\r\n`;
  return new TextEncoder().encode(s + "\r\n");
}

/** One HTTP/1.x response head. */
export interface ResponseHead {
  /** The status code. */
  status: number;
  /** The reason phrase. */
  reason: string;
  /** Fields, names lowercase, in order. */
  headers: [string, string][];
  /** Bytes read past the head (the first frames, or the tunnelled stream's). */
  rest: Uint8Array;
}

/** The field's value, or undefined; several are joined with ", ". */
export function field(headers: Fields, name: string): string | undefined {
  let v: string | undefined;
  for (const [k, x] of headers) if (k === name) v = v === undefined ? x : `${v}, ${x}`;
  return v;
}

/** The stream ended, or sent something that is not an HTTP/1.x response head. */
export class HandshakeError extends Error {
  /** The error's name. */
  override name = "HandshakeError";
}

/**
 * Reads a response head (up to `maxBytes`) off `read`, which fills its buffer
 * and resolves with the count (null at EOF).
 */
export async function readResponseHead(
  read: (p: Uint8Array) => Promise<number | null>,
  maxBytes = 16 * 1024,
): Promise<ResponseHead> {
  const buf = new Uint8Array(maxBytes);
  let n = 0;
  for (;;) {
    if (n === buf.length) throw new HandshakeError(`response head longer than ${maxBytes} bytes`);
    const got = await read(buf.subarray(n));
    if (got === null) throw new HandshakeError("connection closed before a response head");
    const from = Math.max(0, n - 3);
    n += got;
    const end = indexOfCrlfCrlf(buf, from, n);
    if (end < 0) continue;
    const text = new TextDecoder("latin1").decode(buf.subarray(0, end));
    const lines = text.split("\r\n");
    const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(lines[0]!);
    if (!m) throw new HandshakeError("not an HTTP/1.x response");
    const headers: [string, string][] = [];
    for (const line of lines.slice(1)) {
      const c = line.indexOf(":");
      if (c <= 0) throw new HandshakeError("malformed header line in the response");
      headers.push([line.slice(0, c).trim().toLowerCase(), line.slice(c + 1).trim()]);
    }
    return {
      status: Number(m[1]),
      reason: m[2] ?? "",
      headers,
      rest: buf.slice(end + 4, n),
    };
  }
}

function indexOfCrlfCrlf(b: Uint8Array, from: number, to: number): number {
  for (let i = from; i + 3 < to; i++) {
    if (b[i] === 13 && b[i + 1] === 10 && b[i + 2] === 13 && b[i + 3] === 10) return i;
  }
  return -1;
}

/**
 * Checks the server's answer to our upgrade (RFC 6455 4.1): 101, Upgrade
 * websocket, Connection upgrade, the right Accept, no extension we did not
 * offer, and the protocol we offered if any. Throws HandshakeError.
 */
export function checkUpgradeResponse(head: ResponseHead, key: string, protocol?: string): void {
  if (head.status !== 101) {
    throw new HandshakeError(`server answered ${head.status} ${head.reason} to the upgrade`);
  }
  const h = head.headers;
  if (field(h, "upgrade")?.toLowerCase() !== "websocket") {
    throw new HandshakeError("101 without Upgrade: websocket");
  }
  const conn = (field(h, "connection") ?? "").toLowerCase().split(",").map((t) => t.trim());
  if (!conn.includes("upgrade")) throw new HandshakeError("101 without Connection: upgrade");
  if (field(h, "sec-websocket-accept") !== acceptKeyFor(key)) {
    throw new HandshakeError("wrong Sec-WebSocket-Accept");
  }
  if (field(h, "sec-websocket-extensions") !== undefined) {
    throw new HandshakeError("server chose an extension we did not offer");
  }
  const p = field(h, "sec-websocket-protocol");
  if (p !== undefined && p !== protocol) {
    throw new HandshakeError("server chose a subprotocol we did not offer");
  }
}
