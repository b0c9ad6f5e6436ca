/**
 * What the three ways of serving a tunnel stream share: the plain HTTP forwarder
 * (`forwarder.ts`), the raw-byte upgrade splice (`splice.ts`) and the WebSocket message
 * bridge (`ws_bridge.ts`). Options and outcomes, answering the server with a ForwardError
 * or a RESET, header filtering, the local path, and the mapping of a local connection
 * error to a code and a message with no internal address. It imports none of the three,
 * so they do not import each other.
 */
import type { MuxStream } from "../shared/mux/mod.ts";
import { StreamErrorCode } from "../shared/mux/mod.ts";
import {
  connectionOptions,
  encodeHead,
  type ForwardErrorCode,
  type HeaderList,
  HOP_BY_HOP,
} from "../shared/protocol/mod.ts";
import type { OriginPool } from "./origin/pool.ts";

/** Stream code our RESET carries when the local service failed mid-response. */
export const RESET_LOCAL_ERROR = StreamErrorCode.INTERNAL_ERROR;

/** How to reach the local service. */
export interface ForwardOptions {
  /** The local service: `http://host:port` or `https://...`; a path is prefixed to each request. */
  target: URL;
  /** Kept-alive connections to the local service (its own connect timeout included). */
  pool: OriginPool;
  /** WebSocket upgrades: give up on the local service's handshake after this long. */
  connectTimeoutMs?: number;
}

/** What happened to one stream, for counters and debug logs. */
export type ForwardOutcome =
  | { kind: "response"; method: string; url: string; status: number }
  | { kind: "websocket"; url: string; status: number }
  | { kind: "error"; method: string; url: string; code: ForwardErrorCode; message: string }
  /** The server reset the stream (the caller went away) or the local service failed mid-body. */
  | { kind: "aborted"; method: string; url: string; reason: string };

/**
 * Writes a ForwardError head and FIN: with `writer` if the caller holds the
 * stream's Web Streams writer, else through the stream's direct API.
 */
export async function sendForwardError(
  stream: MuxStream,
  code: ForwardErrorCode,
  message: string,
  writer?: WritableStreamDefaultWriter<Uint8Array>,
): Promise<void> {
  const bytes = encodeHead({ t: "err", code, message });
  try {
    if (writer) {
      await writer.write(bytes);
      await writer.close();
    } else {
      await stream.write(bytes);
      stream.close();
    }
  } catch {
    // The server already gave up on this stream.
  }
  // We will not read the request body: tell the server to stop sending it.
  try {
    stream.stopSending(StreamErrorCode.NO_ERROR);
  } catch { /* already finished */ }
}

/** Abandons both halves of a stream. */
export function abortStream(stream: MuxStream, code: number = RESET_LOCAL_ERROR): void {
  stream.reset(code);
  stream.stopSending(code);
}

/** The request headers for the ws library's upgrade request: hop-by-hop dropped, duplicates kept as arrays. */
export function nodeRequestHeaders(
  headers: HeaderList,
  skip: (name: string) => boolean = () => false,
): Record<string, string | string[]> {
  const connection = new Set<string>();
  for (const [k, v] of headers) {
    if (k.toLowerCase() === "connection") connectionOptions(v, connection);
  }
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of headers) {
    const name = k.toLowerCase();
    if (HOP_BY_HOP.has(name) || connection.has(name) || skip(name)) continue;
    const prev = out[name];
    if (prev === undefined) out[name] = v;
    else if (name === "cookie") out[name] = `${prev}; ${v}`; // RFC 9113 8.2.3: one line
    else if (name === "host") continue; // a second Host is an attack; keep the first
    else out[name] = Array.isArray(prev) ? [...prev, v] : [prev, v];
  }
  return out;
}

/** Node's raw header array (name, value, name, value...) as the tunnel's header list. */
export function responseHeaderList(rawHeaders: string[]): HeaderList {
  const pairs: HeaderList = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    pairs.push([rawHeaders[i]!.toLowerCase(), rawHeaders[i + 1]!]);
  }
  return responseHeaders(pairs);
}

/**
 * The origin's response headers for the tunnel (names lowercased): hop-by-hop and
 * Connection-named ones dropped, repeats (Set-Cookie) kept apart.
 */
export function responseHeaders(headers: HeaderList): HeaderList {
  let connection: Set<string> | undefined;
  for (const [k, v] of headers) {
    if (k === "connection") connection = connectionOptions(v, connection);
  }
  return headers.filter(([k]) => !HOP_BY_HOP.has(k) && !connection?.has(k));
}

/** Joins the target's path prefix and the request's origin-form URL. */
export function localPath(target: URL, url: string): string {
  const prefix = target.pathname.replace(/\/+$/, "");
  const path = url.startsWith("/") ? url : `/${url}`;
  return prefix + path;
}

/** Turns a local connection error into a code and a message with no internal address. */
export function classifyLocalError(e: unknown): { code: ForwardErrorCode; message: string } {
  const code = (e as { code?: unknown })?.code;
  switch (code) {
    case "ECONNREFUSED":
      return { code: "local_unreachable", message: "The local service refused the connection" };
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return {
        code: "local_unreachable",
        message: "The local service's host name did not resolve",
      };
    case "EHOSTUNREACH":
    case "ENETUNREACH":
    case "EADDRNOTAVAIL":
      return { code: "local_unreachable", message: "The local service is unreachable" };
    case "ECONNRESET":
    case "EPIPE":
      return {
        code: "local_error",
        message: "The local service closed the connection without a response",
      };
    case "ETIMEDOUT":
    case "LOCAL_CONNECT_TIMEOUT":
      return { code: "local_timeout", message: "The local service did not accept the connection" };
    case "ETLS":
      return {
        code: "local_error",
        message: "The TLS handshake with the local service failed (is its certificate trusted?)",
      };
    case "BAD_RESPONSE":
      return { code: "local_error", message: "The local service sent an invalid response" };
    default:
      return { code: "local_error", message: "The local service failed to answer" };
  }
}
