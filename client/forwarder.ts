/**
 * Serves one tunnel stream: reads the server's RequestHead, forwards the request
 * to the local service, and streams the answer back (DESIGN.md "HTTP over the tunnel").
 *
 *   server → client:  RequestHead, request body ... FIN
 *   client → server:  ResponseHead, response body ... FIN
 *                 or  ForwardError (then FIN) when no response could be had
 *                 or  RESET when the local service failed mid-response
 *
 * HTTP goes through our own kept-alive HTTP/1.1 client (`origin/pool.ts`, which says
 * why not node:http or fetch). Both bodies are streamed with backpressure; redirects
 * are passed through, never followed. HTTP/1.1 upgrades (`head.upgrade`, from a server
 * that knows we splice) are spliced as raw bytes in `splice.ts`; WebSocket upgrades
 * from older servers (`head.ws`) are bridged message by message in `ws_bridge.ts`.
 */
import { concatBytes } from "../shared/bytes.ts";
import type { MuxStream } from "../shared/mux/mod.ts";
import { StreamErrorCode } from "../shared/mux/mod.ts";
import {
  bodyStream,
  connectionOptions,
  encodeHead,
  type ForwardErrorCode,
  type HeaderList,
  HeadError,
  HOP_BY_HOP,
  isNullBodyStatus,
  readHeadFrom,
  type RequestHead,
} from "../shared/protocol/mod.ts";
import { bridgeWebSocket } from "./ws_bridge.ts";
import { spliceUpgrade } from "./splice.ts";
import {
  checkRequestLine,
  type OriginError,
  type OriginPool,
  type OriginRequest,
  requestHeadLines,
  type ResponseSink,
} from "./origin/pool.ts";

export { DEFAULT_CONNECT_TIMEOUT_MS } from "./origin/pool.ts";

/** Stream code our RESET carries when the local service failed mid-response. */
export const RESET_LOCAL_ERROR = StreamErrorCode.INTERNAL_ERROR;

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

/** Serves one stream the server opened. Never throws; resolves when the stream is done. */
export async function serveStream(
  stream: MuxStream,
  options: ForwardOptions,
): Promise<ForwardOutcome> {
  let head: RequestHead;
  let first: Uint8Array | undefined;
  try {
    const r = await readHeadFrom(stream);
    if (r.head.t !== "req") throw new HeadError(`Expected a request head, got "${r.head.t}"`);
    head = r.head;
    first = r.rest;
  } catch (e) {
    const message = e instanceof HeadError ? e.message : "stream failed before the request head";
    if (e instanceof HeadError) await sendForwardError(stream, "bad_request", message);
    else abortStream(stream);
    return { kind: e instanceof HeadError ? "error" : "aborted", ...badHead(message) };
  }
  if (head.upgrade !== undefined) return await spliceUpgrade(stream, head, first, options);
  if (head.ws) {
    const body = bodyStream(stream, first, () => stream.stopSending(StreamErrorCode.CANCELLED));
    return await bridgeWebSocket(stream, head, body, options);
  }
  return await forwardHttp(stream, head, first, options);
}

function badHead(message: string) {
  return { method: "?", url: "?", code: "bad_request" as const, message, reason: message };
}

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

async function forwardHttp(
  stream: MuxStream,
  head: RequestHead,
  first: Uint8Array | undefined,
  o: ForwardOptions,
): Promise<ForwardOutcome> {
  const { method, url } = head;
  const path = localPath(o.target, url);
  const bad = checkRequestLine(method, path);
  if (bad !== null) {
    await sendForwardError(stream, "bad_request", bad);
    return { kind: "error", method, url, code: "bad_request", message: bad };
  }
  const { lines, contentLength } = requestHeadLines(head.headers, HOP_BY_HOP);

  // Request body: most requests have all of it (often nothing) here already, with the head.
  let bodyDone = false;
  let body: OriginRequest["body"];
  const rest = stream.readRest();
  if (rest !== null) {
    bodyDone = true;
    body = first ? concatBytes(first, rest) : rest;
  } else {
    const source = {
      read: async (): Promise<Uint8Array | null> => {
        if (first !== undefined) {
          const f = first;
          first = undefined;
          return f;
        }
        const v = await stream.read();
        if (v === null) bodyDone = true;
        return v;
      },
    };
    body = { source, length: contentLength };
  }

  let status = 0;
  let noBody = false;
  const sink: ResponseSink = {
    head(h) {
      status = h.status;
      noBody = method === "HEAD" || isNullBodyStatus(status);
      return stream.write(encodeHead({ t: "res", status, headers: responseHeaders(h.headers) }));
    },
    body(view) {
      if (!noBody) return stream.write(view);
    },
    end() {
      stream.close();
    },
  };

  const ex = o.pool.request({ method, path, headerLines: lines, body }, sink);
  // A stopped send half (STOP_SENDING) or a dead session: the server no longer wants the answer.
  let abandoned = false;
  stream.sendClosed.catch(() => {
    abandoned = true;
    ex.abort();
  });
  try {
    await ex.done;
    return { kind: "response", method, url, status };
  } catch (e) {
    const err = e as OriginError;
    if (abandoned) {
      abortStream(stream, StreamErrorCode.CANCELLED);
      return { kind: "aborted", method, url, reason: "the server reset the stream" };
    }
    if (err.code === "BODY_FAILED") {
      // The server reset the request body: the caller went away.
      abortStream(stream, StreamErrorCode.CANCELLED);
      return { kind: "aborted", method, url, reason: "the server reset the request body" };
    }
    if (err.responded) {
      // The local service failed mid-body, or the stream died under us.
      abortStream(stream, RESET_LOCAL_ERROR);
      return { kind: "aborted", method, url, reason: `response body failed: ${err.message}` };
    }
    const { code, message } = classifyLocalError(err);
    await sendForwardError(stream, code, message);
    return { kind: "error", method, url, code, message };
  } finally {
    // The rest of the request body is not wanted: tell the server to stop sending.
    if (!bodyDone) stream.stopSending(StreamErrorCode.NO_ERROR);
  }
}
