/**
 * Serves one tunnel stream: reads the server's RequestHead, forwards the request
 * to the local service, and streams the answer back (docs/protocol.md, "One stream per
 * HTTP request").
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
  encodeHead,
  HeadError,
  HOP_BY_HOP,
  isNullBodyStatus,
  readHeadFrom,
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
import { bridgeWebSocket } from "./ws_bridge.ts";
import { spliceUpgrade } from "./splice.ts";
import {
  checkRequestLine,
  type OriginError,
  type OriginRequest,
  requestHeadLines,
  type ResponseSink,
} from "./origin/pool.ts";

export { DEFAULT_CONNECT_TIMEOUT_MS } from "./origin/pool.ts";
export { type ForwardOptions, type ForwardOutcome, RESET_LOCAL_ERROR } from "./local_http.ts";

/** Serves one stream the server opened. Never throws; resolves when the stream is done. */
export async function serveStream(
  stream: MuxStream,
  options: ForwardOptions,
): Promise<ForwardOutcome> {
  let head: RequestHead;
  let first: Uint8Array | undefined;
  let compact: boolean;
  try {
    const r = await readHeadFrom(stream);
    if (r.head.t !== "req") throw new HeadError(`Expected a request head, got "${r.head.t}"`);
    head = r.head;
    first = r.rest;
    compact = r.compact;
  } catch (e) {
    const message = e instanceof HeadError ? e.message : "stream failed before the request head";
    if (e instanceof HeadError) await sendForwardError(stream, "bad_request", message);
    else abortStream(stream);
    return { kind: e instanceof HeadError ? "error" : "aborted", ...badHead(message) };
  }
  if (head.upgrade !== undefined) {
    return await spliceUpgrade(stream, head, first, options, compact);
  }
  if (head.ws) {
    const body = bodyStream(stream, first, () => stream.stopSending(StreamErrorCode.CANCELLED));
    return await bridgeWebSocket(stream, head, body, options);
  }
  return await forwardHttp(stream, head, first, options, compact);
}

function badHead(message: string) {
  return { method: "?", url: "?", code: "bad_request" as const, message, reason: message };
}

async function forwardHttp(
  stream: MuxStream,
  head: RequestHead,
  first: Uint8Array | undefined,
  o: ForwardOptions,
  /** The request head came compact: the response head goes compact too. */
  compact: boolean,
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
      return stream.write(
        encodeHead({ t: "res", status, headers: responseHeaders(h.headers) }, compact),
      );
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
