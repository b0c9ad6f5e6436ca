/**
 * HTTP/1.1 upgrades spliced as raw bytes (RequestHead.upgrade, for a server that
 * knows the client announced FEATURE_SPLICE): WebSocket or any other protocol.
 *
 *   server → client:  RequestHead { upgrade }, request body (its Content-Length), then
 *                     upgraded bytes ... FIN
 *   client → origin:  a new connection (never pooled): the request with
 *                     `Connection: upgrade` and `Upgrade: <upgrade>`, then its body
 *   origin 101     →  ResponseHead { status: 101, headers, upgrade }, then the connection's
 *                     bytes both ways (bytes the origin sent right behind its head included)
 *   origin non-101 →  ResponseHead and body, framed by the strict parser, then FIN
 *   no answer      →  ForwardError (local_unreachable, local_timeout, local_error)
 *
 * Upgraded bytes flow with backpressure both ways: each socket write is awaited before
 * the next stream read, and each stream write before the next socket read, so what is
 * in memory is one read buffer per direction plus the mux's own bounded buffers.
 * Half-close: the server's FIN → `closeWrite()` on the socket; the origin's EOF → FIN.
 * A RESET or STOP_SENDING from the server closes the socket; a failed socket resets
 * the stream. The socket is closed once both directions are done.
 *
 * Bytes the server sends after the request body are held back (not read) until the
 * origin's answer: they go to the origin only after a 101.
 */
import type { MuxStream } from "../shared/mux/mod.ts";
import { StreamErrorCode } from "../shared/mux/mod.ts";
import {
  encodeHead,
  HOP_BY_HOP,
  isNullBodyStatus,
  type RequestHead,
} from "../shared/protocol/mod.ts";
import {
  abortStream,
  classifyLocalError,
  type ForwardOptions,
  type ForwardOutcome,
  localPath,
  RESET_LOCAL_ERROR,
  responseHeaders,
  sendForwardError,
} from "./local_http.ts";
import { checkRequestLine, encodeLatin1, OriginError, requestHeadLines } from "./origin/pool.ts";
import { type ResponseHead, ResponseParser } from "./origin/parser.ts";

const READ_BUFFER_BYTES = 64 * 1024;

/** The request body did not arrive whole (the server's FIN came early). */
class ShortBody extends Error {}

/** Serves a stream whose head asks for an upgrade (`head.upgrade` set). Never throws. */
export async function spliceUpgrade(
  stream: MuxStream,
  head: RequestHead,
  first: Uint8Array | undefined,
  o: ForwardOptions,
  /** The request head came compact: the response head goes compact too. */
  compact = false,
): Promise<ForwardOutcome> {
  const { method, url } = head;
  const path = localPath(o.target, url);
  const bad = checkRequestLine(method, path);
  if (bad !== null || head.upgrade === undefined) {
    const message = bad ?? "Missing upgrade";
    await sendForwardError(stream, "bad_request", message);
    return { kind: "error", method, url, code: "bad_request", message };
  }
  const { lines, contentLength } = requestHeadLines(head.headers, HOP_BY_HOP);
  // An upgrade request's body can only be delimited by its length: without one, none.
  const bodyLength = Math.max(0, contentLength);
  const requestBytes = encodeLatin1(
    `${method} ${path} HTTP/1.1\r\n${lines}connection: upgrade\r\nupgrade: ${head.upgrade}\r\n` +
      (bodyLength > 0 ? `content-length: ${bodyLength}\r\n` : "") +
      "\r\n",
  );

  // The server gave up (STOP_SENDING, or the session ended): nothing more to do here.
  let abandoned = false;
  let stopping = false; // we are ending the stream ourselves: its settling is not the server's
  const connecting = new AbortController();
  let conn: Deno.Conn | undefined;
  let connClosed = false;
  const closeConn = () => {
    if (connClosed || conn === undefined) return;
    connClosed = true;
    try {
      conn.close();
    } catch { /* already closed */ }
  };
  stream.sendClosed.catch(() => {
    if (stopping) return;
    abandoned = true;
    connecting.abort();
    closeConn();
  });
  const aborted = (reason: string): ForwardOutcome => {
    stopping = true;
    closeConn();
    abortStream(stream, StreamErrorCode.CANCELLED);
    return { kind: "aborted", method, url, reason };
  };

  try {
    conn = await o.pool.connectRaw(connecting.signal);
  } catch (e) {
    if (abandoned) return aborted("the server reset the stream");
    stopping = true;
    const { code, message } = classifyLocalError(e);
    await sendForwardError(stream, code, message);
    return { kind: "error", method, url, code, message };
  }
  if (abandoned) return aborted("the server reset the stream");
  const socket = conn;

  // The request: head, then exactly `bodyLength` bytes of the stream. Whatever came
  // with them is the start of the upgraded bytes (`early`), kept for after a 101.
  let bodyFailed: "short" | "reset" | null = null;
  const sent = (async (): Promise<Uint8Array | undefined> => {
    await writeAll(socket, requestBytes);
    let left = bodyLength;
    let pending = first;
    while (left > 0) {
      let chunk: Uint8Array | null;
      if (pending !== undefined) {
        chunk = pending;
        pending = undefined;
      } else {
        try {
          chunk = await stream.read();
        } catch (e) {
          bodyFailed = "reset";
          throw e;
        }
      }
      if (chunk === null) {
        bodyFailed = "short";
        throw new ShortBody();
      }
      const k = Math.min(left, chunk.length);
      await writeAll(socket, k === chunk.length ? chunk : chunk.subarray(0, k));
      left -= k;
      if (k < chunk.length) pending = chunk.subarray(k);
    }
    return pending;
  })();
  // A request the origin stopped reading is its answer's business; a request body the
  // server could not deliver ends the exchange.
  sent.catch(() => {
    if (bodyFailed !== null) closeConn();
  });

  // The answer's head (and, when it is not a 101, its body).
  let resHead: ResponseHead | undefined;
  const bodyViews: Uint8Array[] = [];
  const parser = new ResponseParser({
    head: (h) => void (resHead = h),
    body: (view) => void bodyViews.push(view),
    end: () => {},
  });
  parser.start(method, { upgrade: true });
  const buf = new Uint8Array(READ_BUFFER_BYTES);
  let responded = false;
  let noBody = false;
  let leftover: Uint8Array | undefined;
  let status = 0;
  for (;;) {
    let n: number | null;
    let failure: { code: string } | undefined;
    try {
      n = await socket.read(buf);
    } catch (e) {
      n = null;
      failure = { code: errno(e, "ECONNRESET") };
    }
    if (abandoned) return aborted("the server reset the stream");
    if (bodyFailed !== null) {
      return aborted(
        bodyFailed === "short"
          ? "the request body did not arrive whole"
          : "the server reset the request body",
      );
    }
    let complete = false;
    try {
      if (failure !== undefined) throw new OriginError(failure.code, "read failed", responded);
      if (n === null) {
        parser.eof();
        complete = true;
      } else {
        const bytes = buf.subarray(0, n);
        const used = parser.feed(bytes);
        if (parser.upgraded) leftover = bytes.slice(used);
        else complete = parser.complete;
      }
    } catch (e) {
      if (responded) {
        stopping = true;
        closeConn();
        abortStream(stream, RESET_LOCAL_ERROR);
        return { kind: "aborted", method, url, reason: "response body failed" };
      }
      stopping = true;
      closeConn();
      const err = e instanceof OriginError
        ? e
        : new OriginError(n === null ? "ECONNRESET" : "BAD_RESPONSE", String(e), false);
      const { code, message } = classifyLocalError(err);
      await sendForwardError(stream, code, message);
      return { kind: "error", method, url, code, message };
    }
    try {
      if (resHead !== undefined && !responded) {
        responded = true;
        status = resHead.status;
        noBody = method === "HEAD" || isNullBodyStatus(status);
        await stream.write(encodeHead(responseHeadOf(resHead), compact));
      }
      if (!noBody) { for (const v of bodyViews) await stream.write(v); }
      bodyViews.length = 0;
    } catch {
      return aborted("the server reset the stream");
    }
    if (parser.upgraded) break;
    if (complete) {
      // Not upgraded: an ordinary response, now whole. The rest of the stream is not wanted.
      stopping = true;
      closeConn();
      stream.close();
      stream.stopSending(StreamErrorCode.NO_ERROR);
      return { kind: "response", method, url, status };
    }
  }

  // 101: splice.
  let early: Uint8Array | undefined;
  try {
    early = await sent;
  } catch {
    // The origin switched protocols without reading the whole request: nothing to splice.
    return aborted("the request could not be sent whole");
  }
  return await splice(stream, socket, early, leftover, {
    url,
    method,
    stop: () => void (stopping = true),
    isAbandoned: () => abandoned,
    closeConn,
  });
}

/** The tunnel's response head: the origin's status and headers, hop-by-hop removed. */
function responseHeadOf(h: ResponseHead) {
  const headers = responseHeaders(h.headers);
  if (h.status !== 101) return { t: "res" as const, status: h.status, headers };
  const upgrade = h.headers.filter(([k]) => k === "upgrade").map(([, v]) => v).join(", ");
  return { t: "res" as const, status: h.status, headers, ...(upgrade ? { upgrade } : {}) };
}

interface SpliceContext {
  url: string;
  method: string;
  /** Ending the stream ourselves from now on. */
  stop(): void;
  /** The server reset or stopped the stream. */
  isAbandoned(): boolean;
  closeConn(): void;
}

/** Both directions of an upgraded connection, until each side has ended. */
async function splice(
  stream: MuxStream,
  socket: Deno.Conn,
  early: Uint8Array | undefined,
  leftover: Uint8Array | undefined,
  c: SpliceContext,
): Promise<ForwardOutcome> {
  let failed: string | null = null;
  let downFinished = false;
  const fail = (reason: string, code: number) => {
    if (failed !== null) return;
    failed = reason;
    c.stop();
    c.closeConn();
    abortStream(stream, code);
  };
  const serverGone = () => fail("the server reset the stream", StreamErrorCode.CANCELLED);

  // Origin → server.
  const down = (async () => {
    const buf = new Uint8Array(READ_BUFFER_BYTES);
    let chunk = leftover !== undefined && leftover.length > 0 ? leftover : undefined;
    for (;;) {
      if (chunk !== undefined) {
        try {
          await stream.write(chunk);
        } catch {
          return serverGone();
        }
      }
      let n: number | null;
      try {
        n = await socket.read(buf);
      } catch {
        if (failed !== null) return;
        if (c.isAbandoned()) return serverGone();
        return fail("the local service's connection failed", RESET_LOCAL_ERROR);
      }
      if (failed !== null) return;
      if (n === null) break;
      chunk = buf.subarray(0, n);
    }
    downFinished = true;
    stream.close();
  })();

  // Server → origin.
  const up = (async () => {
    let chunk = early !== undefined && early.length > 0 ? early : undefined;
    for (;;) {
      if (chunk !== undefined) {
        try {
          await writeAll(socket, chunk);
        } catch {
          if (failed !== null) return;
          if (c.isAbandoned()) return serverGone();
          if (downFinished) {
            // The origin closed its connection after ending its side: the rest is not wanted.
            stream.stopSending(StreamErrorCode.NO_ERROR);
            return;
          }
          return fail("the local service's connection failed", RESET_LOCAL_ERROR);
        }
      }
      let next: Uint8Array | null;
      try {
        next = await stream.read();
      } catch {
        if (failed !== null) return;
        return serverGone();
      }
      if (failed !== null) return;
      if (next === null) break;
      chunk = next;
    }
    try {
      await socket.closeWrite();
    } catch {
      // The origin already closed the connection: nothing left to tell it.
    }
  })();

  await Promise.all([down, up]);
  c.stop();
  c.closeConn();
  if (failed !== null) return { kind: "aborted", method: c.method, url: c.url, reason: failed };
  return { kind: "websocket", url: c.url, status: 101 };
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) {
    off += await conn.write(off === 0 ? bytes : bytes.subarray(off));
  }
}

function errno(e: unknown, fallback: string): string {
  const code = (e as { code?: unknown })?.code;
  return typeof code === "string" && code !== "" ? code : fallback;
}
