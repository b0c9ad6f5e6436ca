/**
 * Test fixtures for the HTTP/1.1 front: a front server on 127.0.0.1 with a
 * handler, and a caller that sends any `Host` (Deno's `fetch` replaces it),
 * through node:http (llhttp on the caller's side).
 */
import * as http from "node:http";
import { type FrontHandler, type FrontLimits, FrontServer } from "./http1.ts";

export interface TestFront {
  server: FrontServer;
  port: number;
  /** Sends `req` (its URL's path, its Host header or "app.test") and returns the answer. */
  call(req: Request): Promise<Response>;
  close(): Promise<void>;
}

export function startFront(
  handler: FrontHandler,
  limits: Partial<FrontLimits> = {},
  scheme: "http" | "https" = "http",
): TestFront {
  const server = new FrontServer({ scheme, handler, limits });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const serving = server.serve(listener);
  const agent = new http.Agent({ keepAlive: true });
  return {
    server,
    port,
    call: (req) => callFront(port, req, agent),
    async close() {
      agent.destroy();
      server.abortAll();
      await server.shutdown();
      await serving;
    },
  };
}

/** One request through node:http to 127.0.0.1:`port`. */
export function callFront(port: number, req: Request, agent?: http.Agent): Promise<Response> {
  const url = new URL(req.url);
  const headers: Record<string, string | string[]> = {};
  for (const [k, v] of req.headers) {
    const prev = headers[k];
    headers[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
  }
  headers["host"] ??= "app.test";
  return new Promise((resolve, reject) => {
    const r = http.request({
      host: "127.0.0.1",
      port,
      method: req.method,
      path: url.pathname + url.search,
      headers,
      ...(agent ? { agent } : { agent: false }),
    }, (res) => {
      const out = new Headers();
      const raw = res.rawHeaders;
      for (let i = 0; i < raw.length; i += 2) out.append(raw[i]!, raw[i + 1]!);
      const body = req.method === "HEAD" || res.statusCode === 204 || res.statusCode === 304
        ? null
        : new ReadableStream<Uint8Array>({
          start(controller) {
            res.on("data", (c: Uint8Array) => {
              controller.enqueue(new Uint8Array(c));
              res.pause();
            });
            res.on("end", () => controller.close());
            res.on("error", (e) => controller.error(e));
            res.on("aborted", () => controller.error(new Error("response aborted")));
          },
          pull() {
            res.resume();
          },
          cancel() {
            res.destroy();
          },
        }, { highWaterMark: 0 });
      resolve(new Response(body, { status: res.statusCode ?? 0, headers: out }));
    });
    r.on("error", reject);
    if (req.signal.aborted) r.destroy(new Error("aborted"));
    req.signal.addEventListener("abort", () => r.destroy(new Error("aborted")), { once: true });
    if (!req.body) {
      r.end();
      return;
    }
    (async () => {
      for await (const chunk of req.body!) {
        if (!r.write(chunk)) await new Promise((d) => r.once("drain", d));
      }
      r.end();
    })().catch((e) => r.destroy(e));
  });
}
