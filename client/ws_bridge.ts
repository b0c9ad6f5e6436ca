/**
 * WebSocket upgrades: opens a WebSocket to the local service (keeping the caller's
 * Host and offered subprotocols) and bridges messages with the tunnel stream,
 * framed by `shared/protocol/ws_frames.ts`.
 *
 *   origin 101  → ResponseHead { status: 101, headers: [], protocol }, then messages both ways
 *   origin 4xx  → ResponseHead with the origin's status and headers, then its body (no upgrade)
 *   no origin   → ForwardError
 *
 * npm `ws` rather than Deno's WebSocket: Deno's client replaces the Host header (checked on
 * Deno 2.9.6) and cannot send other request headers (cookies, X-Forwarded-*).
 */
import { concatBytes } from "../shared/bytes.ts";
import type * as http from "node:http";
import WebSocketImpl from "ws";
import type { MuxStream } from "../shared/mux/mod.ts";
import { StreamErrorCode } from "../shared/mux/mod.ts";
import {
  encodeHead,
  encodeWsMessage,
  type RequestHead,
  WsKind,
  type WsMessage,
  WsMessageDecoder,
} from "../shared/protocol/mod.ts";
import {
  abortStream,
  classifyLocalError,
  type ForwardOptions,
  type ForwardOutcome,
  localPath,
  nodeRequestHeaders,
  RESET_LOCAL_ERROR,
  responseHeaderList,
  sendForwardError,
} from "./local_http.ts";
import { DEFAULT_CONNECT_TIMEOUT_MS } from "./origin/pool.ts";

/** Bytes queued towards the origin before we stop reading the stream. */
const WS_SEND_HIGH_WATER_BYTES = 1024 * 1024;

/** The part of npm `ws`'s client we use (it ships no types). */
interface WsClient {
  readonly protocol: string;
  readonly readyState: number;
  readonly bufferedAmount: number;
  on(event: "open", cb: () => void): void;
  on(event: "message", cb: (data: Uint8Array | Uint8Array[], isBinary: boolean) => void): void;
  on(event: "close", cb: (code: number, reason: Uint8Array) => void): void;
  on(event: "error", cb: (e: Error) => void): void;
  on(
    event: "unexpected-response",
    cb: (req: http.ClientRequest, res: http.IncomingMessage) => void,
  ): void;
  send(data: string | Uint8Array, opts: { binary: boolean }, cb: (e?: Error) => void): void;
  close(code?: number, reason?: string): void;
  terminate(): void;
  pause(): void;
  resume(): void;
}
type WsCtor = new (
  url: string,
  protocols: string[],
  options: Record<string, unknown>,
) => WsClient;
const WebSocketClient = WebSocketImpl as unknown as WsCtor;

/** Request headers the `ws` client sets itself. */
const WS_OWN = (name: string) => name.startsWith("sec-websocket-");

/** Close codes an endpoint may send (RFC 6455 7.4). */
function sendableCloseCode(code: number): boolean {
  return code === 1000 || (code >= 1001 && code <= 1003) || (code >= 1007 && code <= 1014) ||
    (code >= 3000 && code <= 4999);
}

const dec = new TextDecoder();

export async function bridgeWebSocket(
  stream: MuxStream,
  head: RequestHead,
  body: ReadableStream<Uint8Array>,
  o: ForwardOptions,
): Promise<ForwardOutcome> {
  const url = head.url;
  const target = new URL(o.target);
  target.protocol = o.target.protocol === "https:" ? "wss:" : "ws:";
  const wsUrl = `${target.protocol}//${target.host}${localPath(target, url)}`;
  const protocols = head.protocols ?? [];
  const writer = stream.writable.getWriter();
  const reader = body.getReader();

  let ws: WsClient;
  try {
    ws = new WebSocketClient(wsUrl, protocols, {
      headers: nodeRequestHeaders(head.headers, WS_OWN),
      followRedirects: false,
      perMessageDeflate: false,
      handshakeTimeout: o.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
      // Some servers (Deno's among them) split the offer on ", " only; `ws` joins with ",".
      finishRequest: (req: http.ClientRequest) => {
        if (protocols.length > 0) req.setHeader("Sec-WebSocket-Protocol", protocols.join(", "));
        req.end();
      },
    });
  } catch (e) {
    reader.cancel().catch(() => {});
    const { code, message } = classifyLocalError(e);
    await sendForwardError(stream, code, message, writer);
    writer.releaseLock();
    return { kind: "error", method: head.method, url, code, message };
  }

  type Opened = { ok: true } | { ok: false; outcome: ForwardOutcome };
  const opened = await new Promise<Opened>((resolve) => {
    ws.on("open", () => resolve({ ok: true }));
    ws.on("unexpected-response", (req, res) => {
      // The origin refused the upgrade with a plain HTTP response: pass it through.
      const status = res.statusCode ?? 502;
      relayPlainResponse(res, status, writer, stream).then((ok) => {
        req.destroy();
        resolve({
          ok: false,
          outcome: ok
            ? { kind: "response", method: head.method, url, status }
            : { kind: "aborted", method: head.method, url, reason: "refused upgrade failed" },
        });
      });
    });
    ws.on("error", (e) => {
      const { code, message } = classifyLocalError(e);
      sendForwardError(stream, code, message, writer).then(() =>
        resolve({ ok: false, outcome: { kind: "error", method: head.method, url, code, message } })
      );
    });
    // The server gave up before the origin answered.
    writer.closed.catch(() => {
      ws.terminate();
      resolve({
        ok: false,
        outcome: { kind: "aborted", method: head.method, url, reason: "stream reset" },
      });
    });
  });
  if (!opened.ok) {
    reader.cancel().catch(() => {});
    writer.releaseLock();
    return opened.outcome;
  }

  // Open: tell the server, then bridge.
  const protocol = ws.protocol;
  let streamOk = true;
  const write = (bytes: Uint8Array) =>
    writer.write(bytes).catch(() => {
      streamOk = false;
    });
  await write(encodeHead({
    t: "res",
    status: 101,
    headers: [],
    ...(protocol ? { protocol } : {}),
  }));

  let localClosed = false;
  const localDone = new Promise<void>((resolve) => {
    ws.on("message", (data, isBinary) => {
      const bytes = Array.isArray(data) ? concatBytes(...data) : data;
      const m: WsMessage = isBinary
        ? { kind: WsKind.Binary, data: bytes }
        : { kind: WsKind.Text, data: dec.decode(bytes) };
      write(encodeWsMessage(m));
      if ((writer.desiredSize ?? 1) <= 0) {
        ws.pause();
        writer.ready.then(() => ws.resume(), () => {});
      }
    });
    ws.on("close", (code, reason) => {
      localClosed = true;
      const m: WsMessage = { kind: WsKind.Close, code, reason: dec.decode(reason) };
      (async () => {
        if (streamOk) {
          await write(encodeWsMessage(m));
          await writer.close().catch(() => {
            streamOk = false;
          });
        }
        // Nothing more can reach the origin: stop the server's half too.
        reader.cancel(StreamErrorCode.NO_ERROR).catch(() => {});
        resolve();
      })();
    });
    ws.on("error", () => {
      // A "close" event follows (code 1006).
    });
  });

  // Stream → origin.
  const remoteDone = (async () => {
    const decoder = new WsMessageDecoder();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const m of decoder.push(value)) {
          if (localClosed) continue;
          if (m.kind === WsKind.Close) {
            if (sendableCloseCode(m.code)) ws.close(m.code, m.reason);
            else ws.close();
            continue;
          }
          await sendToOrigin(ws, m.kind === WsKind.Text ? m.data : m.data, m.kind);
        }
        if (decoder.error) throw new Error(decoder.error);
      }
      // FIN without a Close message: the server's side is gone.
      if (!localClosed) ws.close(1001, "");
    } catch {
      // Reset by the server (caller vanished) or bad framing: drop the origin connection.
      ws.terminate();
      if (!localClosed) abortStream(stream, RESET_LOCAL_ERROR);
      streamOk = false;
    }
  })();

  await Promise.all([localDone, remoteDone]);
  writer.releaseLock();
  return { kind: "websocket", url, status: 101 };
}

function sendToOrigin(ws: WsClient, data: string | Uint8Array, kind: number): Promise<void> {
  return new Promise<void>((resolve) => {
    let waited = false;
    ws.send(data, { binary: kind === WsKind.Binary }, () => {
      if (waited) resolve();
    });
    if (ws.bufferedAmount > WS_SEND_HIGH_WATER_BYTES) waited = true;
    else resolve();
  });
}

/** The origin answered the upgrade with a plain response: head and body to the stream. */
async function relayPlainResponse(
  res: http.IncomingMessage,
  status: number,
  writer: WritableStreamDefaultWriter<Uint8Array>,
  stream: MuxStream,
): Promise<boolean> {
  try {
    await writer.write(
      encodeHead({ t: "res", status, headers: responseHeaderList(res.rawHeaders) }),
    );
    for await (const chunk of res as AsyncIterable<Uint8Array>) await writer.write(chunk);
    await writer.close();
    stream.stopSending(StreamErrorCode.NO_ERROR);
    return true;
  } catch {
    res.destroy();
    abortStream(stream, RESET_LOCAL_ERROR);
    return false;
  }
}
