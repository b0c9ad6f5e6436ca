/**
 * Serves one tunnel stream: reads the server's RequestHead, forwards the request
 * to the local service, and streams the answer back (DESIGN.md "HTTP over the tunnel").
 *
 *   server → client:  RequestHead, request body ... FIN
 *   client → server:  ResponseHead, response body ... FIN
 *                 or  ForwardError (then FIN) when no response could be had
 *                 or  RESET when the local service failed mid-response
 *
 * HTTP goes through `node:http`, not `fetch`: Deno's fetch replaces the Host header
 * with the URL's host, and the origin must see the caller's Host. Both bodies are
 * streamed with backpressure; redirects are passed through, never followed.
 * WebSocket upgrades are bridged in `ws_bridge.ts`.
 */
import { concatBytes } from "../shared/bytes.ts";
import * as http from "node:http";
import * as https from "node:https";
import type { MuxStream } from "../shared/mux/mod.ts";
import { StreamErrorCode } from "../shared/mux/mod.ts";
import {
  bodyStream,
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

/** How long to wait for a TCP connection to the local service. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

/** Stream code our RESET carries when the local service failed mid-response. */
export const RESET_LOCAL_ERROR = StreamErrorCode.INTERNAL_ERROR;

export interface ForwardOptions {
  /** The local service: `http://host:port` or `https://...`; a path is prefixed to each request. */
  target: URL;
  /** Keep-alive agent for the local service (see `createLocalAgent`); default: one connection per request. */
  agent?: http.Agent;
  /** Give up connecting to the local service after this long (local_timeout). */
  connectTimeoutMs?: number;
  /** Give up waiting for the response head after this long (local_timeout); default: never (the server has its own 504). */
  responseTimeoutMs?: number;
}

/** What happened to one stream, for counters and debug logs. */
export type ForwardOutcome =
  | { kind: "response"; method: string; url: string; status: number }
  | { kind: "websocket"; url: string; status: number }
  | { kind: "error"; method: string; url: string; code: ForwardErrorCode; message: string }
  /** The server reset the stream (the caller went away) or the local service failed mid-body. */
  | { kind: "aborted"; method: string; url: string; reason: string };

/** A keep-alive agent for the local target (destroy it when the client stops). */
export function createLocalAgent(target: URL): http.Agent {
  const o = { keepAlive: true, maxFreeSockets: 64, scheduling: "lifo" as const };
  return target.protocol === "https:" ? new https.Agent(o) : new http.Agent(o);
}

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

/** The request headers for node:http: hop-by-hop dropped, duplicates kept as arrays. */
export function nodeRequestHeaders(
  headers: HeaderList,
  skip: (name: string) => boolean = () => false,
): Record<string, string | string[]> {
  const connection = new Set<string>();
  for (const [k, v] of headers) {
    if (k.toLowerCase() === "connection") {
      for (const t of v.split(",")) connection.add(t.trim().toLowerCase());
    }
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

/** The response headers for the tunnel: raw pairs (Set-Cookie kept apart), hop-by-hop dropped. */
export function responseHeaderList(rawHeaders: string[]): HeaderList {
  const connection = new Set<string>();
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    if (rawHeaders[i]!.toLowerCase() === "connection") {
      for (const t of rawHeaders[i + 1]!.split(",")) connection.add(t.trim().toLowerCase());
    }
  }
  const out: HeaderList = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!.toLowerCase();
    if (HOP_BY_HOP.has(name) || connection.has(name)) continue;
    out.push([name, rawHeaders[i + 1]!]);
  }
  return out;
}

/** Joins the target's path prefix and the request's origin-form URL. */
export function localPath(target: URL, url: string): string {
  const prefix = target.pathname.replace(/\/+$/, "");
  const path = url.startsWith("/") ? url : `/${url}`;
  return prefix + path;
}

/**
 * Copies a local response body into the stream, one write at a time (the response
 * pauses while the stream's send buffer is full). Rejects if the body fails or ends
 * before its length. Events, not `for await`: the async iterator costs more than
 * the rest of forwarding a small response.
 */
function pumpResponse(res: http.IncomingMessage, stream: MuxStream): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let done = false;
    const end = (e?: unknown) => {
      if (done) return;
      done = true;
      res.off("data", onData).off("end", onEnd).off("error", end).off("close", onClose);
      if (e === undefined) resolve();
      else reject(e);
    };
    const onData = (chunk: Uint8Array) => {
      res.pause();
      stream.write(chunk).then(() => done || res.resume(), end);
    };
    const onEnd = () => end(res.complete ? undefined : new Error("local response ended early"));
    const onClose = () => end(new Error("local response ended early"));
    // Torn down before we got here (the origin reset it while the head was written):
    // its events are gone, so do not wait for them.
    if (res.readableEnded) return end();
    if (res.destroyed) return end(new Error("local response ended early"));
    res.on("data", onData).on("end", onEnd).on("error", end).on("close", onClose);
  });
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
    case "LOCAL_RESPONSE_TIMEOUT":
      return { code: "local_timeout", message: "The local service did not answer in time" };
    default:
      return { code: "local_error", message: "The local service failed to answer" };
  }
}

function timeoutError(code: string): Error {
  return Object.assign(new Error(code), { code });
}

async function forwardHttp(
  stream: MuxStream,
  head: RequestHead,
  first: Uint8Array | undefined,
  o: ForwardOptions,
): Promise<ForwardOutcome> {
  const { method, url } = head;
  const target = o.target;
  const secure = target.protocol === "https:";
  const request = secure ? https.request : http.request;

  return await new Promise<ForwardOutcome>((resolve) => {
    let settled = false;
    let responded = false;
    const timers: ReturnType<typeof setTimeout>[] = [];
    let bodyDone = false;
    const finish = (outcome: ForwardOutcome) => {
      if (settled) return;
      settled = true;
      for (const t of timers) clearTimeout(t);
      // The rest of the request body is not wanted: tell the server to stop sending.
      if (!bodyDone) stream.stopSending(StreamErrorCode.NO_ERROR);
      resolve(outcome);
    };
    /** The server or the stream gave up: abort the local request. */
    let answering = false; // a ForwardError is being written: ignore the fallout
    const abandoned = (reason: string) => {
      if (settled || answering) return;
      req.destroy();
      abortStream(stream, StreamErrorCode.CANCELLED);
      finish({ kind: "aborted", method, url, reason });
    };

    const req = request({
      protocol: target.protocol,
      hostname: target.hostname.replace(/^\[|\]$/g, ""),
      port: target.port || (secure ? 443 : 80),
      method,
      path: localPath(target, url),
      headers: nodeRequestHeaders(head.headers),
      agent: o.agent ?? false,
    });

    // A stopped send half (STOP_SENDING) or a dead session: the server no
    // longer wants the response.
    stream.sendClosed.catch(() => abandoned("the server reset the stream"));

    // A connect timeout only for a new connection (a kept-alive one is already up).
    req.once("socket", (sock) => {
      if (!(sock as { connecting?: boolean }).connecting) return;
      const connectTimer = setTimeout(() => {
        if (!responded) req.destroy(timeoutError("LOCAL_CONNECT_TIMEOUT"));
      }, o.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS);
      timers.push(connectTimer);
      sock.once("connect", () => clearTimeout(connectTimer));
    });
    if (o.responseTimeoutMs !== undefined) {
      const ms = o.responseTimeoutMs;
      timers.push(setTimeout(() => {
        if (!responded) req.destroy(timeoutError("LOCAL_RESPONSE_TIMEOUT"));
      }, ms));
    }

    req.on("error", (e) => {
      if (settled || responded || answering) return; // mid-response: the body loop sees it
      answering = true;
      const { code, message } = classifyLocalError(e);
      sendForwardError(stream, code, message).then(() => {
        finish({ kind: "error", method, url, code, message });
      });
    });

    req.on("response", (res) => {
      responded = true;
      const status = res.statusCode ?? 502;
      const headers = responseHeaderList(res.rawHeaders);
      const noBody = method === "HEAD" || isNullBodyStatus(status);
      (async () => {
        try {
          await stream.write(encodeHead({ t: "res", status, headers }));
          if (noBody) res.resume();
          else await pumpResponse(res, stream);
          if (settled) return;
          stream.close();
          finish({ kind: "response", method, url, status });
        } catch (e) {
          if (settled) return;
          // Either the local service failed mid-body or the stream died under us.
          req.destroy();
          res.destroy();
          abortStream(stream, RESET_LOCAL_ERROR);
          finish({
            kind: "aborted",
            method,
            url,
            reason: `response body failed: ${(e as Error).message}`,
          });
        }
      })();
    });

    // Request body: stream → local service, with backpressure. Most requests
    // have all of it (often nothing) here already, with the head.
    const rest = stream.readRest();
    if (rest !== null) {
      bodyDone = true;
      const all = first ? concatBytes(first, rest) : rest;
      if (all.length > 0) req.end(all);
      else req.end();
      return;
    }
    (async () => {
      try {
        for (;;) {
          const value = first ?? await stream.read();
          first = undefined;
          if (value === null) break;
          if (settled) return;
          if (!req.write(value)) {
            await new Promise<void>((r) => {
              const go = () => {
                req.off("drain", go);
                req.off("close", go);
                r();
              };
              req.on("drain", go);
              req.on("close", go);
            });
          }
        }
        bodyDone = true;
        if (!req.destroyed) req.end();
      } catch {
        bodyDone = true;
        // The server reset the request body: the caller went away.
        abandoned("the server reset the request body");
      }
    })();
  });
}
