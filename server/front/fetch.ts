/**
 * Web `Request`/`Response` on the HTTP/1.1 front, for the handlers whose cost per
 * request does not matter (admin API, health, metrics, ACME challenges, error
 * pages). The tunnel path never builds these objects.
 */
import type { FrontRequest, Responder } from "./http1.ts";

/** Who sent a request: the handler's view (as `Deno.ServeHandlerInfo`). */
export interface ClientInfo {
  /** The caller's address: the TCP peer, or what a trusted proxy said it is. */
  remoteAddr: Deno.NetAddr;
}

export type FetchHandler = (req: Request, info: ClientInfo) => Response | Promise<Response>;

/**
 * A `Request` for a front request: URL from the listener's scheme (or `scheme`,
 * what a trusted proxy said) and the Host.
 */
export function toRequest(req: FrontRequest, scheme: "http" | "https" = req.scheme): Request {
  const headers = new Headers();
  for (const [k, v] of req.headers) headers.append(k, v);
  const init: RequestInit = { method: req.method, headers, signal: req.signal };
  if (req.hasBody && req.method !== "GET" && req.method !== "HEAD") {
    init.body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          const v = await req.readBody();
          if (v === null) controller.close();
          else controller.enqueue(v.slice());
        } catch (e) {
          controller.error(e);
        }
      },
    }, { highWaterMark: 0 });
  }
  return new Request(`${scheme}://${req.host || "invalid"}${req.path}`, init);
}

/** Writes a `Response` through the responder, its body streamed with backpressure. */
export async function sendResponse(res: Responder, response: Response): Promise<void> {
  const headers: [string, string][] = [];
  let length = -1;
  for (const [k, v] of response.headers) {
    if (k === "content-length") {
      if (/^\d{1,15}$/.test(v)) length = Number(v);
      continue;
    }
    headers.push([k, v]);
  }
  if (!response.body) {
    res.head(response.status, headers, length >= 0 ? length : 0);
    await res.end();
    return;
  }
  res.head(response.status, headers, length);
  const reader = response.body.getReader();
  // Small bodies come in one piece: send them with the head, with a length.
  const first = await reader.read();
  if (first.done) {
    if (length < 0) res.head(response.status, headers, 0);
    await res.end();
    return;
  }
  const second = await reader.read();
  if (second.done) {
    if (length < 0) res.head(response.status, headers, first.value.length);
    await res.end(first.value);
    return;
  }
  try {
    await res.write(first.value);
    await res.write(second.value);
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      await res.write(value);
    }
    await res.end();
  } catch (e) {
    reader.cancel().catch(() => {});
    throw e;
  }
}

/** Runs a fetch-style handler for a front request. */
export async function serveFetch(
  handler: FetchHandler,
  req: FrontRequest,
  res: Responder,
  info: ClientInfo,
  scheme: "http" | "https" = req.scheme,
): Promise<void> {
  await sendResponse(res, await handler(toRequest(req, scheme), info));
}
