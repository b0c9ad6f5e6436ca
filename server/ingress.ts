/**
 * Public ingress: routes each HTTP request by Host to a tunnel and streams it
 * through one mux stream (DESIGN.md "HTTP over the tunnel").
 *
 *   caller --HTTP--> ingress --stream: RequestHead + body--> client --> local service
 *   caller <--HTTP-- ingress <--stream: ResponseHead + body-- client <--
 *
 * Nothing is buffered whole; backpressure runs end to end through the mux's
 * flow control. Gateway errors: 404 no tunnel, 502 local service failed, 504 no
 * response head in time, 503 tunnel lost before the response head.
 */
import { concatBytes } from "../shared/bytes.ts";
import { MuxSessionError, type MuxStream, StreamErrorCode } from "../shared/mux/mod.ts";
import {
  connectionOptions,
  encodeHead,
  encodeWsMessage,
  type ForwardError,
  type HeaderList,
  HOP_BY_HOP,
  isNullBodyStatus,
  readHeadFrom,
  type RequestHead,
  type ResponseHead,
  WsKind,
  WsMessageDecoder,
} from "../shared/protocol/mod.ts";
import { Deadlines } from "./deadlines.ts";
import type { ErrorPages, GatewayErrorKind } from "./error_pages.ts";
import type { Logger } from "./log.ts";
import type { Tunnel, TunnelHub } from "./tunnels.ts";

export type Handler = (req: Request, info: Deno.ServeHandlerInfo) => Response | Promise<Response>;

export interface IngressOptions {
  hub: Pick<TunnelHub, "pick">;
  serverDomain: string;
  /** Scheme the listener serves, for X-Forwarded-Proto. */
  scheme: "http" | "https";
  /** Time to wait for the response head; a streaming body is never cut. */
  proxyTimeoutMs: number;
  pages: ErrorPages;
  logger: Logger;
  /** Requests for the server domain itself (admin API, health); default 404. */
  serverHandler?: Handler;
  /** Largest request head (request line + headers) accepted, in bytes. Default 32 KiB. */
  maxHeaderBytes?: number;
  /** Called once per answered request, with what its log line says (metrics). */
  onRequest?: (r: RequestRecord) => void;
}

/** One answered request: what the "request" log line and the metrics see. */
export interface RequestRecord {
  method: string;
  status: number;
  durationMs: number;
  /** Response body bytes relayed to the caller. */
  bytes: number;
  /** The domain whose tunnel took the request; undefined if none did. */
  domain: string | undefined;
}

/** Host header without port, lowercase; "" if missing or malformed. */
export function routingHost(host: string | null): string {
  if (!host) return "";
  let h = host.trim().toLowerCase();
  if (h.startsWith("[")) {
    const end = h.indexOf("]");
    return end > 0 ? h.slice(0, end + 1) : "";
  }
  const colon = h.lastIndexOf(":");
  if (colon >= 0) h = h.slice(0, colon);
  if (h.endsWith(".")) h = h.slice(0, -1);
  return /^[a-z0-9.-]+$/.test(h) ? h : "";
}

/**
 * Read size for request bodies. Deno 2.9's HTTP/1 server, once a response is
 * streaming, reads the rest of the request off the socket into one buffer and
 * each body read then shifts that whole buffer (a memmove of everything not
 * yet read): with 64 KiB reads a 50 MiB echo spent ~1.2 s of CPU there. Reading
 * 1 MiB at a time makes those shifts 16x rarer (bench/quick.sh, ONLY=echo).
 */
const BODY_READ_BYTES = 1 << 20;

/**
 * Copies a request body into a tunnel stream through one reused buffer (the
 * mux copies on write, so the buffer is free again once a write resolves).
 */
async function pumpRequestBody(
  body: ReadableStream<Uint8Array>,
  writer: { write(chunk: Uint8Array): Promise<void> },
): Promise<void> {
  let reader: ReadableStreamBYOBReader;
  try {
    reader = body.getReader({ mode: "byob" });
  } catch { // not a byte stream
    for await (const chunk of body) await writer.write(chunk);
    return;
  }
  let buf = new Uint8Array(BODY_READ_BYTES);
  for (;;) {
    const { done, value } = await reader.read(buf);
    if (done) return;
    await writer.write(value);
    buf = new Uint8Array(value.buffer);
  }
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** What one pass over a request's headers finds. */
interface RequestHeaders {
  /** End-to-end headers to forward, without the X-Forwarded-* and X-Request-Id we set. */
  forward: HeaderList;
  /** Size of all header lines, as sent (name, ": ", value, CRLF). */
  bytes: number;
  host: string | null;
  requestId: string | null;
  forwardedFor: string | null;
  upgrade: string | null;
}

const SET_BY_US = new Set([
  "x-forwarded-for",
  "x-forwarded-proto",
  "x-forwarded-host",
  "x-request-id",
]);

function readRequestHeaders(headers: Headers): RequestHeaders {
  const connection = headers.get("connection");
  const named = connection ? connectionOptions(connection) : undefined;
  const r: RequestHeaders = {
    forward: [],
    bytes: 0,
    host: null,
    requestId: null,
    forwardedFor: null,
    upgrade: null,
  };
  // Iteration joins repeated fields with ", " (Set-Cookie apart), like get().
  for (const [k, v] of headers) {
    r.bytes += k.length + v.length + 4;
    if (HOP_BY_HOP.has(k) || named?.has(k)) {
      if (k === "upgrade") r.upgrade = v;
      continue;
    }
    if (SET_BY_US.has(k)) {
      if (k === "x-request-id") r.requestId = v;
      else if (k === "x-forwarded-for") r.forwardedFor = v;
      continue;
    }
    if (k === "host") r.host = v;
    r.forward.push([k, v]);
  }
  return r;
}

class Timeout extends Error {}

export function createIngressHandler(opts: IngressOptions): Handler {
  const maxHeaderBytes = opts.maxHeaderBytes ?? 32 * 1024;
  const log = opts.logger;
  const deadlines = new Deadlines();

  return async (req, info) => {
    const started = performance.now();
    const url = new URL(req.url);
    const h = readRequestHeaders(req.headers);
    const given = h.requestId;
    const requestId = given && REQUEST_ID.test(given) ? given : crypto.randomUUID();
    const host = routingHost(h.host);
    /** The one "request" line (path without query) and the metrics record. */
    const report = (
      status: number,
      bytes: number,
      tunneled: boolean,
      extra: Record<string, unknown>,
    ) => {
      const durationMs = performance.now() - started;
      log.info("request", {
        component: "ingress",
        request_id: requestId,
        domain: host,
        method: req.method,
        path: url.pathname,
        status,
        duration_ms: Math.round(durationMs),
        bytes,
        ...extra,
      });
      opts.onRequest?.({
        method: req.method,
        status,
        durationMs,
        bytes,
        domain: tunneled ? host : undefined,
      });
    };
    let tunneled = false;
    const fail = (kind: GatewayErrorKind, message: string) => {
      const res = opts.pages.respond(kind, message, req, requestId);
      report(res.status, 0, tunneled, { error: kind });
      return res;
    };
    const requestLine = req.method.length + url.pathname.length + url.search.length + 12;
    if (requestLine + h.bytes > maxHeaderBytes) {
      report(431, 0, false, { error: "header_too_large" });
      return new Response("Request Header Fields Too Large\n", { status: 431 });
    }
    if (!host) return fail("bad_request", "The request has no valid Host header.");
    if (host === opts.serverDomain) {
      return opts.serverHandler
        ? opts.serverHandler(req, info)
        : fail("no_tunnel", "Nothing is served here.");
    }

    const tried = new Set<Tunnel>();
    let tunnel: Tunnel | undefined;
    let stream: MuxStream | undefined;
    while (!stream && (tunnel = opts.hub.pick(host, tried))) {
      tried.add(tunnel);
      try {
        stream = tunnel.session.openStream();
      } catch {
        // closing or out of stream credit: try the next client of this domain
      }
    }
    if (!tunnel || !stream) return fail("no_tunnel", `No tunnel is connected for ${host}.`);
    const t = tunnel;
    const s = stream;
    tunneled = true;

    const remote = info.remoteAddr as Deno.NetAddr;
    const headers = h.forward;
    const xff = h.forwardedFor;
    headers.push(
      ["x-forwarded-for", xff ? `${xff}, ${remote.hostname}` : remote.hostname],
      ["x-forwarded-proto", opts.scheme],
      ["x-forwarded-host", h.host ?? host],
      ["x-request-id", requestId],
    );
    const isWs = h.upgrade?.toLowerCase() === "websocket";
    const head: RequestHead = {
      t: "req",
      id: requestId,
      method: req.method,
      url: url.pathname + url.search,
      headers,
      client: remote.hostname,
      scheme: opts.scheme,
    };
    if (isWs) {
      head.ws = true;
      const protocols = req.headers.get("sec-websocket-protocol");
      if (protocols) head.protocols = protocols.split(",").map((p) => p.trim()).filter(Boolean);
    }

    t.inFlight++;
    let finished = false;
    let bytes = 0;
    /** Ends the tunnel's bookkeeping; `log` false when `fail` writes the line. */
    const done = (status: number, extra: Record<string, unknown> = {}, log = true) => {
      if (finished) return;
      finished = true;
      t.inFlight--;
      t.served++;
      if (log) report(status, bytes, true, extra);
    };
    const abandon = () => {
      try {
        s.reset(StreamErrorCode.CANCELLED);
        s.stopSending(StreamErrorCode.CANCELLED);
      } catch { /* already closed */ }
    };

    // Response head, bounded by the proxy timeout and the caller's patience. The
    // timeout runs from the end of the upload: a long upload is not a slow origin.
    let cancelTimer: (() => void) | undefined;
    let timedOut!: (e: Timeout) => void;
    let headSettled = false;
    const timeout = new Promise<never>((_, reject) => timedOut = reject);
    timeout.catch(() => {}); // only ever observed through the race below
    const startTimer = () => {
      if (!headSettled) {
        cancelTimer ??= deadlines.add(opts.proxyTimeoutMs, () => timedOut(new Timeout()));
      }
    };

    // Request head, then the body as it arrives (in the background). A WebSocket
    // relays messages as they come: its writes queue in a Web Streams writer.
    const wsWriter = isWs ? s.writable.getWriter() : undefined;
    const headWritten = wsWriter ? wsWriter.write(encodeHead(head)) : s.write(encodeHead(head));
    headWritten.catch(() => {});
    if (isWs) startTimer();
    else {
      (async () => {
        await headWritten;
        if (req.body) await pumpRequestBody(req.body, s);
        s.close();
      })().then(startTimer, () => abandon());
    }

    const onAbort = () => abandon();
    req.signal.addEventListener("abort", onAbort, { once: true });
    let response: { head: ResponseHead | ForwardError; rest: Uint8Array | undefined };
    try {
      const r = await Promise.race([readHeadFrom(s), timeout]);
      if (r.head.t !== "res" && r.head.t !== "err") throw new Error(`unexpected head ${r.head.t}`);
      response = r as typeof response;
    } catch (e) {
      abandon();
      const status = e instanceof Timeout
        ? 504
        : e instanceof MuxSessionError || t.session.isClosed
        ? 503
        : 502;
      done(status, {}, false);
      if (e instanceof Timeout) {
        return fail("local_timeout", `The service behind ${host} did not answer in time.`);
      }
      if (status === 503) return fail("tunnel_lost", `The tunnel for ${host} was lost.`);
      return fail("local_unreachable", `The tunnel for ${host} answered badly.`);
    } finally {
      headSettled = true;
      cancelTimer?.();
      req.signal.removeEventListener("abort", onAbort);
    }

    if (response.head.t === "err") {
      const err = response.head;
      done(err.code === "local_timeout" ? 504 : 502, { error: err.code });
      wsWriter?.releaseLock();
      return opts.pages.respond(
        err.code === "local_timeout" ? "local_timeout" : "local_unreachable",
        err.message,
        req,
        requestId,
      );
    }

    const res = response.head;

    if (wsWriter && res.status === 101) {
      return bridgeWebSocket(req, res, response.rest, s, wsWriter, () => done(101), abandon);
    }
    if (wsWriter) wsWriter.close().catch(() => {});

    const noBody = isNullBodyStatus(res.status) || req.method === "HEAD";
    if (noBody) {
      if (s.readRest() === null) s.stopSending(StreamErrorCode.CANCELLED);
      done(res.status);
      return originResponse(null, res.status, res.headers);
    }
    // The whole body already here (small responses): hand Deno the bytes, which
    // it writes with the head in one go, with no body stream at all.
    const rest = s.readRest();
    if (rest !== null) {
      const all = response.rest ? concatBytes(response.rest, rest) : rest;
      bytes = all.length;
      done(res.status);
      // Deno sets Content-Length from the bytes.
      const headers = res.headers.filter(([k]) => k !== "content-length");
      return originResponse(all as Uint8Array<ArrayBuffer>, res.status, headers);
    }
    const outHeaders = validHeaders(res.headers);
    let first = response.rest;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          let value = first;
          first = undefined;
          value ??= await s.read() ?? undefined;
          if (value === undefined) {
            controller.close();
            done(res.status);
            return;
          }
          bytes += value.length;
          controller.enqueue(value);
        } catch (e) {
          // Tunnel lost or the client reset mid-body: the caller sees a cut connection.
          done(res.status, { error: "body_interrupted" });
          controller.error(e);
        }
      },
      cancel() {
        // Deno stops reading once a Content-Length body is complete: that is a
        // finished response, not a caller that went away.
        const length = Number(outHeaders.get("content-length") ?? NaN);
        if (bytes === length) done(res.status);
        // The caller went away: tell the client to stop.
        else done(499, { error: "caller_gone" });
        abandon();
      },
    }, { highWaterMark: 0 });
    return new Response(body, { status: res.status, headers: outHeaders });
  };
}

/** The origin's headers that the platform accepts (an invalid one is dropped). */
function validHeaders(list: HeaderList): Headers {
  const h = new Headers();
  for (const [k, v] of list) {
    try {
      h.append(k, v);
    } catch { /* invalid header from the origin: drop it */ }
  }
  return h;
}

/**
 * A response with the origin's headers, built in one go: a separate Headers
 * object first would validate and copy every header twice. Only for bodies
 * the constructor cannot consume before it fails (null, bytes).
 */
function originResponse(
  body: Uint8Array<ArrayBuffer> | null,
  status: number,
  headers: HeaderList,
): Response {
  try {
    return new Response(body, { status, headers });
  } catch {
    return new Response(body, { status, headers: validHeaders(headers) });
  }
}

/** Accepts the caller's upgrade and relays WebSocket messages over the stream. */
function bridgeWebSocket(
  req: Request,
  res: ResponseHead,
  first: Uint8Array | undefined,
  fromClient: MuxStream,
  toClient: WritableStreamDefaultWriter<Uint8Array>,
  onDone: () => void,
  abandon: () => void,
): Response {
  const { socket, response } = Deno.upgradeWebSocket(
    req,
    res.protocol ? { protocol: res.protocol } : {},
  );
  socket.binaryType = "arraybuffer";
  let closed = false;
  const finish = () => {
    if (closed) return;
    closed = true;
    onDone();
  };
  socket.onmessage = (ev) => {
    const m = typeof ev.data === "string"
      ? encodeWsMessage({ kind: WsKind.Text, data: ev.data })
      : encodeWsMessage({ kind: WsKind.Binary, data: new Uint8Array(ev.data as ArrayBuffer) });
    toClient.write(m).catch(() => socket.close(1011, "tunnel error"));
  };
  socket.onclose = (ev) => {
    toClient.write(
      encodeWsMessage({ kind: WsKind.Close, code: ev.code || 1000, reason: ev.reason }),
    )
      .then(() => toClient.close())
      .catch(() => abandon());
    finish();
  };
  socket.onerror = () => {};
  (async () => {
    const decoder = new WsMessageDecoder();
    try {
      for (;;) {
        const value = first ?? await fromClient.read();
        first = undefined;
        if (value === null) break;
        for (const m of decoder.push(value)) {
          if (socket.readyState !== WebSocket.OPEN) continue;
          if (m.kind === WsKind.Close) {
            socket.close(validCloseCode(m.code), m.reason);
          } else socket.send(m.data as string);
        }
        if (decoder.error) throw new Error(decoder.error);
      }
      if (socket.readyState === WebSocket.OPEN) socket.close(1000);
    } catch {
      if (socket.readyState === WebSocket.OPEN) socket.close(1011, "tunnel lost");
      abandon();
    }
    finish();
  })();
  return response;
}

/** Codes a server may send in a Close frame (RFC 6455 7.4). */
function validCloseCode(code: number): number {
  return code === 1000 || (code >= 3000 && code <= 4999) ||
      (code >= 1001 && code <= 1014 && code !== 1004 &&
        code !== 1005 && code !== 1006)
    ? code
    : 1000;
}
