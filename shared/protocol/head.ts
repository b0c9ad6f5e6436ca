/**
 * The first message on every tunnel stream: a "head", then (for HTTP) the body.
 *
 *  +----------------+---------------------------------+---------------------
 *  | length (u32 BE) | head, length bytes              | body bytes until FIN ...
 *  +----------------+---------------------------------+---------------------
 *
 * A head is JSON (UTF-8), which keeps the wire debuggable and versionable (unknown
 * fields are ignored), or, for request heads to a client that announced
 * FEATURE_COMPACT_HEADS and the response heads that answer them, a compact form: a tag
 * byte, then the fields as UTF-8 text separated by LF, in a fixed order (`encodeCompact`
 * below). No field of such a head can hold an LF (names are tokens, values and targets
 * exclude controls); one that does is sent as JSON. JSON heads were ~10 % of each side's
 * CPU for a small request at c50 (bench/quick.sh profile); encoding and decoding both
 * compact heads of such a request costs ~0.7x what JSON does (bench/head_bench.ts).
 * Decoders take both forms, validate every field and return `{ error }`, never throw.
 */
import { concatBytes, EMPTY_BYTES, transientBytes } from "../bytes.ts";

/** Protocol version spoken on the control stream (Hello.proto). */
export const PROTOCOL_VERSION = 1;
/** Largest head accepted: request line + headers. */
export const MAX_HEAD_BYTES = 64 * 1024;
/**
 * Hello.features: the client splices HTTP/1.1 upgrades as raw bytes (RequestHead.upgrade)
 * instead of bridging WebSocket messages (RequestHead.ws).
 */
export const FEATURE_SPLICE = "splice";
/**
 * Welcome.features: the server reads `Drain` on the control stream after the
 * welcome (a client moving to a new tunnel asks the old one to be drained).
 */
export const FEATURE_DRAIN = "drain";

/**
 * Hello.features: the client decodes compact request heads, and answers a compact request
 * head with a compact response head (and a JSON one with JSON). Whoever sends a request
 * head reads its response head, so the choice is per stream: a node relaying a request
 * for another node's tunnel (server/cluster) sends JSON, not knowing that client.
 */
export const FEATURE_COMPACT_HEADS = "compact-heads";

/**
 * Hello.features and Welcome.features: this side reads the mux's TIMESTAMP frames (which
 * date ACKs on their sender's clock, so that a bulk sender can time its deliveries by when
 * they arrived, not by when ACKs queued behind the other direction's data reached it). Each
 * side sends them once the other has listed this: the server after a hello that lists it,
 * the client after a welcome that does.
 */
export const FEATURE_ACK_TIMESTAMPS = "ack-timestamps";

/**
 * Hello.features and Welcome.features: this side reads the mux's WARM_UP frames and
 * warms its own sending direction up (shared/mux/warm_up.ts) once the other side listed
 * this too. A client lists it to ask for the server's warm-up; either side leaves it out
 * to have none either way (`HOP_CLIENT_WARM_UP=false`, `HOP_TUNNEL_WARM_UP=false`).
 */
export const FEATURE_WARM_UP = "warm-up";

/** Header fields as name/value pairs, in order, repeats kept apart. */
export type HeaderList = [string, string][];

/** Client → server on the control stream, first thing after the DTLS handshake. */
export interface Hello {
  /** Head type tag. */
  t: "hello";
  /** The tunnel protocol version the client speaks (PROTOCOL_VERSION). */
  proto: number;
  /** Client software version, e.g. "hopgate-client/0.1.0". */
  client: string;
  /** The domain this client serves (must equal the DTLS PSK identity). */
  domain: string;
  /** Human description of the local target, e.g. "http://127.0.0.1:3000". */
  target: string;
  /** What this client can do beyond protocol `proto`, e.g. FEATURE_SPLICE; absent from old clients. */
  features?: string[];
}

/** Server → client: accepted. */
export interface Welcome {
  /** Head type tag. */
  t: "welcome";
  /** Server-assigned session id (shown in the admin API's live sessions). */
  session: string;
  /** Server software version, e.g. "hopgate-server/0.1.0". */
  server: string;
  /** What this server can do beyond the protocol, e.g. FEATURE_DRAIN; absent from old servers. */
  features?: string[];
  /**
   * This connection's DTLS stateless reset token, 32 hex digits (shared/dtls/stateless_reset.ts):
   * a datagram carrying it means the server lost the connection (it restarted), and the
   * client reconnects at once. Absent when the server has none (older, or no CID).
   */
  reset?: string;
}

/**
 * Client → server on the control stream, after the welcome (FEATURE_DRAIN): this
 * client has another tunnel now. The server opens no more request streams on this
 * session and closes it once the requests in flight on it are done.
 */
export interface Drain {
  /** Head type tag. */
  t: "drain";
}

/** Why the server refused a client; stable codes the CLI explains. */
export type RejectCode = "version_mismatch" | "domain_mismatch" | "bad_hello" | "server_busy";

/** Server → client: refused, with a stable code and a message; the server then closes. */
export interface Reject {
  /** Head type tag. */
  t: "reject";
  /** Why, as a stable code. */
  code: RejectCode;
  /** Why, for a person. */
  message: string;
}

/** Server → client: one HTTP request (or WebSocket upgrade) per stream. */
export interface RequestHead {
  /** Head type tag. */
  t: "req";
  /** Request id (X-Request-Id), for logs on both sides. */
  id: string;
  /** The request method, as received. */
  method: string;
  /** Path and query, as received (origin-form). */
  url: string;
  /** Headers as received, hop-by-hop removed, X-Forwarded-* set; includes Host. */
  headers: HeaderList;
  /** The caller's IP address. */
  client: string;
  /** The scheme the caller used to reach the server. */
  scheme: "http" | "https";
  /**
   * True for a WebSocket upgrade: the stream carries WebSocket messages after the response
   * head. Sent to clients without FEATURE_SPLICE only.
   */
  ws?: boolean;
  /** For ws: the subprotocols the caller offered. */
  protocols?: string[];
  /**
   * An HTTP/1.1 upgrade, to a client that announced FEATURE_SPLICE (instead of `ws`): the
   * caller's Upgrade field value, e.g. "websocket". The client sends the request to the local
   * service with `Connection: upgrade` and this `Upgrade`; on a 101 the stream then carries
   * the upgraded connection's raw bytes both ways. The request body, if any, is the
   * Content-Length bytes right after the head; upgraded bytes follow it.
   */
  upgrade?: string;
}

/** Client → server: the origin's response head. */
export interface ResponseHead {
  /** Head type tag. */
  t: "res";
  /** The origin's status code. */
  status: number;
  /** The origin's header fields, hop-by-hop removed. */
  headers: HeaderList;
  /** For ws: the subprotocol the origin chose. */
  protocol?: string;
  /** For a 101 answer to `upgrade`: the origin's Upgrade field value (the protocol it switched to). */
  upgrade?: string;
}

/** Why the client could not get a response from the local service. */
export type ForwardErrorCode =
  | "local_unreachable"
  | "local_timeout"
  | "local_error"
  | "bad_request";

/** Client → server instead of a response head. */
export interface ForwardError {
  /** Head type tag. */
  t: "err";
  /** What went wrong, as a stable code (the server picks 502 or 504 from it). */
  code: ForwardErrorCode;
  /** Short reason for the error page; never an internal address. */
  message: string;
}

/** Any head a stream can start with, told apart by `t`. */
export type Head = Hello | Welcome | Drain | Reject | RequestHead | ResponseHead | ForwardError;
/** A decoder's result: the value, or an error message. */
export type Decoded<T> = { value: T; error?: undefined } | { value?: undefined; error: string };

const enc = new TextEncoder();
const dec = new TextDecoder("utf-8", { fatal: true });

/** The first byte of a compact request head; a JSON head starts with "{". */
const COMPACT_REQ = 0x01;
/** The first byte of a compact response head. */
const COMPACT_RES = 0x02;
/** Fields of a compact request head before its header pairs. */
const REQ_FIXED_FIELDS = 6;
/** Fields of a compact response head before its header pairs. */
const RES_FIXED_FIELDS = 2;

/**
 * A head as it goes on the wire: a u32 BE length, then the head. `compact`: the peer
 * announced FEATURE_COMPACT_HEADS, so a request or response head may go compact.
 */
export function encodeHead(head: Head, compact = false): Uint8Array {
  if (compact) {
    const out = encodeCompact(head);
    if (out !== undefined) return out;
  }
  return framed(JSON.stringify(head));
}

/**
 * The compact form, or undefined when `head` has none (another type, a field holding an
 * LF, the old `ws` bridge's fields). A request head is the tag 0x01 then
 * `id LF method LF url LF client LF scheme LF upgrade (LF name LF value)*`; a response
 * head is the tag 0x02 then `status LF upgrade (LF name LF value)*`. An absent upgrade is
 * an empty field (an Upgrade value is never empty).
 */
function encodeCompact(head: Head): Uint8Array | undefined {
  let fields: string[];
  let tag: number;
  if (head.t === "req") {
    if (head.ws !== undefined || head.protocols !== undefined) return undefined;
    tag = COMPACT_REQ;
    fields = [head.id, head.method, head.url, head.client, head.scheme, head.upgrade ?? ""];
  } else if (head.t === "res") {
    if (head.protocol !== undefined) return undefined;
    tag = COMPACT_RES;
    fields = [String(head.status), head.upgrade ?? ""];
  } else {
    return undefined;
  }
  for (const [k, v] of head.headers) fields.push(k, v);
  // An LF anywhere means no compact form. The text is joined and encoded natively: a
  // loop over its characters, written byte by byte, measured 0.4 µs a head alone but
  // ~3.5 µs inside the busy server (bench/head_bench.ts cannot show that; `quick.sh`
  // can), where the native join and encode took ~0.5 µs.
  for (const f of fields) if (f.includes("\n")) return undefined;
  return framed(String.fromCharCode(tag) + fields.join("\n"));
}

/** `text` as UTF-8 after its u32 BE length. */
function framed(text: string): Uint8Array {
  // Heads are almost always ASCII (header values are byte strings): encode straight
  // into the output, sized for that; anything wider is encoded again at full width.
  // The output is copied into a stream's send buffer, so it comes from the shared slab.
  let out = transientBytes(4 + text.length);
  if (enc.encodeInto(text, out.subarray(4)).read !== text.length) {
    const wide = enc.encode(text);
    out = transientBytes(4 + wide.length);
    out.set(wide, 4);
  }
  return withLength(out);
}

/** `out` with its first four bytes set to the length of the rest (u32 BE), checked. */
function withLength(out: Uint8Array): Uint8Array {
  const n = out.length - 4;
  if (n > MAX_HEAD_BYTES) {
    throw new RangeError(`Cannot encode head: ${n} bytes exceeds ${MAX_HEAD_BYTES}`);
  }
  out[0] = n >>> 24;
  out[1] = (n >>> 16) & 0xff;
  out[2] = (n >>> 8) & 0xff;
  out[3] = n & 0xff;
  return out;
}

const isStr = (v: unknown): v is string => typeof v === "string";
const isHeaderList = (v: unknown): v is HeaderList =>
  Array.isArray(v) &&
  v.every((p) => Array.isArray(p) && p.length === 2 && isStr(p[0]) && isStr(p[1]));
const isStrList = (v: unknown): v is string[] => Array.isArray(v) && v.every(isStr);
/** A stateless reset token in a welcome: 16 bytes as lowercase hex. */
const RESET_TOKEN_HEX = /^[0-9a-f]{32}$/;
const PROTOCOL = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:\/[!#$%&'*+\-.^_`|~0-9A-Za-z]+)?$/;
/**
 * An Upgrade field value (RFC 9110 7.8): one or more `protocol-name["/"protocol-version]`,
 * comma-separated (empty elements ignored). Nothing else: it goes into a request head as is.
 */
function isUpgrade(v: unknown): v is string {
  if (!isStr(v)) return false;
  let n = 0;
  for (const part of v.split(",")) {
    const p = part.replace(/^[ \t]+|[ \t]+$/g, "");
    if (p === "") continue;
    if (!PROTOCOL.test(p)) return false;
    n++;
  }
  return n > 0;
}

/** Validates a parsed head's shape by its `t`. */
export function validateHead(v: unknown): Decoded<Head> {
  if (typeof v !== "object" || v === null) return { error: "head is not an object" };
  const o = v as Record<string, unknown>;
  const bad = (field: string) => ({ error: `head "${String(o.t)}": bad or missing ${field}` });
  switch (o.t) {
    case "hello":
      if (typeof o.proto !== "number") return bad("proto");
      if (!isStr(o.client) || !isStr(o.domain) || !isStr(o.target)) {
        return bad("client/domain/target");
      }
      if (o.features !== undefined && !isStrList(o.features)) return bad("features");
      return { value: o as unknown as Hello };
    case "welcome":
      if (!isStr(o.session) || !isStr(o.server)) return bad("session/server");
      if (o.features !== undefined && !isStrList(o.features)) return bad("features");
      if (o.reset !== undefined && !(isStr(o.reset) && RESET_TOKEN_HEX.test(o.reset))) {
        return bad("reset");
      }
      return { value: o as unknown as Welcome };
    case "drain":
      return { value: o as unknown as Drain };
    case "reject":
      if (!isStr(o.code) || !isStr(o.message)) return bad("code/message");
      return { value: o as unknown as Reject };
    case "req":
      if (!isStr(o.id) || !isStr(o.method) || !isStr(o.url) || !isStr(o.client)) {
        return bad("id/method/url/client");
      }
      if (o.scheme !== "http" && o.scheme !== "https") return bad("scheme");
      if (!isHeaderList(o.headers)) return bad("headers");
      if (o.ws !== undefined && typeof o.ws !== "boolean") return bad("ws");
      if (o.protocols !== undefined && !isStrList(o.protocols)) return bad("protocols");
      if (o.upgrade !== undefined && !isUpgrade(o.upgrade)) return bad("upgrade");
      // One or the other: a message bridge and a byte splice cannot share the stream.
      if (o.upgrade !== undefined && o.ws === true) return bad("ws/upgrade (both set)");
      return { value: o as unknown as RequestHead };
    case "res":
      if (
        typeof o.status !== "number" || !Number.isInteger(o.status) || o.status < 100 ||
        o.status > 599
      ) {
        return bad("status");
      }
      if (!isHeaderList(o.headers)) return bad("headers");
      if (o.protocol !== undefined && !isStr(o.protocol)) return bad("protocol");
      if (o.upgrade !== undefined && !isUpgrade(o.upgrade)) return bad("upgrade");
      return { value: o as unknown as ResponseHead };
    case "err":
      if (!isStr(o.code) || !isStr(o.message)) return bad("code/message");
      return { value: o as unknown as ForwardError };
    default:
      return { error: `unknown head type ${JSON.stringify(o.t)}` };
  }
}

/** Decodes a head's bytes (without the length prefix): JSON or compact. */
export function decodeHead(bytes: Uint8Array): Decoded<Head> {
  const tag = bytes[0];
  if (tag === COMPACT_REQ || tag === COMPACT_RES) return decodeCompact(tag, bytes);
  return decodeHeadJson(bytes);
}

function decodeCompact(tag: number, bytes: Uint8Array): Decoded<Head> {
  let f: string[];
  try {
    f = dec.decode(bytes.subarray(1)).split("\n");
  } catch (e) {
    return { error: `compact head is not UTF-8: ${(e as Error).message}` };
  }
  const fixed = tag === COMPACT_REQ ? REQ_FIXED_FIELDS : RES_FIXED_FIELDS;
  const what = tag === COMPACT_REQ ? "req" : "res";
  if (f.length < fixed || (f.length - fixed) % 2 !== 0) {
    return { error: `compact head "${what}": ${f.length} fields` };
  }
  const headers: HeaderList = [];
  for (let i = fixed; i < f.length; i += 2) headers.push([f[i]!, f[i + 1]!]);
  const upgrade = f[fixed - 1]!;
  if (upgrade !== "" && !isUpgrade(upgrade)) {
    return { error: `head "${what}": bad or missing upgrade` };
  }
  if (tag === COMPACT_RES) {
    const st = f[0]!;
    if (!STATUS.test(st)) return { error: `head "res": bad or missing status` };
    const res: ResponseHead = { t: "res", status: Number(st), headers };
    if (upgrade !== "") res.upgrade = upgrade;
    return { value: res };
  }
  const scheme = f[4];
  if (scheme !== "http" && scheme !== "https") {
    return { error: `head "req": bad or missing scheme` };
  }
  const req: RequestHead = {
    t: "req",
    id: f[0]!,
    method: f[1]!,
    url: f[2]!,
    headers,
    client: f[3]!,
    scheme,
  };
  if (upgrade !== "") req.upgrade = upgrade;
  return { value: req };
}

/** A status code as a compact head carries it: 100-599, three digits. */
const STATUS = /^[1-5][0-9][0-9]$/;

/** Decodes a JSON head's bytes (without the length prefix). */
export function decodeHeadJson(bytes: Uint8Array): Decoded<Head> {
  let v: unknown;
  try {
    v = JSON.parse(dec.decode(bytes));
  } catch (e) {
    return { error: `head is not JSON: ${(e as Error).message}` };
  }
  return validateHead(v);
}

/** Thrown by `readHead` for a stream that does not start with a valid head. */
export class HeadError extends Error {
  /** The error's name, for logs. */
  override name = "HeadError";
}

/** Where a head is read from: the next chunk, or null at the end (a MuxStream fits). */
export interface ChunkSource {
  /** The next chunk, or null at the end. */
  read(): Promise<Uint8Array | null>;
}

/**
 * Reads one head from the front of `source`. Returns it with the bytes read past
 * it (the start of the body), if any; the rest of the body is still in `source`.
 * `compact`: it came in the compact form (a client answers such a request head compact).
 */
export async function readHeadFrom(
  source: ChunkSource,
  maxBytes = MAX_HEAD_BYTES,
): Promise<{ head: Head; rest: Uint8Array | undefined; compact: boolean }> {
  let buf: Uint8Array = EMPTY_BYTES;
  let need = 4;
  let len = -1;
  for (;;) {
    if (buf.length >= need) {
      if (len < 0) {
        len = ((buf[0]! << 24) | (buf[1]! << 16) | (buf[2]! << 8) | buf[3]!) >>> 0;
        if (len > maxBytes) {
          throw new HeadError(`Cannot read head: ${len} bytes exceeds ${maxBytes}`);
        }
        need = 4 + len;
        continue;
      }
      break;
    }
    const value = await source.read();
    if (value === null) {
      throw new HeadError(
        buf.length === 0 ? "Stream ended before a head" : "Stream ended inside a head",
      );
    }
    buf = buf.length === 0 ? value : concatBytes(buf, value);
  }
  const decoded = decodeHead(buf.subarray(4, need));
  if (decoded.error !== undefined) throw new HeadError(decoded.error);
  return {
    head: decoded.value,
    rest: buf.length > need ? buf.subarray(need) : undefined,
    compact: buf[4] === COMPACT_REQ || buf[4] === COMPACT_RES,
  };
}

/**
 * Reads one head from the front of `readable` and returns it with a stream of
 * the bytes after it (the body). The body stream keeps backpressure: it pulls
 * from the underlying stream only as it is read. Cancelling it cancels the source.
 */
export async function readHead(
  readable: ReadableStream<Uint8Array>,
  maxBytes = MAX_HEAD_BYTES,
): Promise<{ head: Head; body: ReadableStream<Uint8Array> }> {
  const reader = readable.getReader();
  const source = {
    read: async () => {
      const { value, done } = await reader.read();
      return done ? null : value;
    },
  };
  let r: Awaited<ReturnType<typeof readHeadFrom>>;
  try {
    r = await readHeadFrom(source, maxBytes);
  } catch (e) {
    reader.cancel().catch(() => {});
    throw e;
  }
  return { head: r.head, body: bodyStream(source, r.rest, (reason) => reader.cancel(reason)) };
}

/**
 * A body as a Web Stream: `first` (bytes read with the head), then `source` to its
 * end. Pulls only as it is read; cancelling calls `cancel`.
 */
export function bodyStream(
  source: ChunkSource,
  first: Uint8Array | undefined,
  cancel: (reason: unknown) => void | Promise<void>,
): ReadableStream<Uint8Array> {
  let leftover = first;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (leftover) {
        controller.enqueue(leftover);
        leftover = undefined;
        return;
      }
      const value = await source.read();
      if (value === null) controller.close();
      else controller.enqueue(value);
    },
    cancel,
  }, { highWaterMark: 0 });
}
