/**
 * A small local service for tests that need real traffic behind a client: echo
 * (with the upload's SHA-256), a generated download, SSE and WebSocket echo.
 */
import { createHash } from "node:crypto";

/** Hex SHA-256. */
export const sha256 = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

/** The bytes `/bytes?n=` sends: a 64 KiB pattern repeated. */
export function patternBytes(n: number): Uint8Array {
  const chunk = new Uint8Array(64 * 1024).map((_, i) => i * 31);
  const out = new Uint8Array(n);
  for (let o = 0; o < n; o += chunk.length) {
    out.set(chunk.subarray(0, Math.min(chunk.length, n - o)), o);
  }
  return out;
}

/** Starts the origin on 127.0.0.1; `close()` stops it. */
export function startOrigin(name = "origin"): { port: number; close(): Promise<void> } {
  const ac = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    async (req) => {
      const url = new URL(req.url);
      if (req.headers.get("upgrade") === "websocket") {
        const { socket, response } = Deno.upgradeWebSocket(req);
        socket.onmessage = (e) => socket.send(e.data);
        return response;
      }
      switch (url.pathname) {
        case "/echo": {
          const body = new Uint8Array(await req.arrayBuffer());
          return new Response(body, { headers: { "x-sha256": sha256(body), "x-origin": name } });
        }
        case "/bytes": {
          const n = Number(url.searchParams.get("n"));
          let sent = 0;
          const chunk = new Uint8Array(64 * 1024).map((_, i) => i * 31);
          return new Response(
            new ReadableStream({
              pull(c) {
                if (sent >= n) return c.close();
                const part = chunk.subarray(0, Math.min(chunk.length, n - sent));
                sent += part.length;
                c.enqueue(part);
              },
            }),
          );
        }
        case "/sse": {
          const n = Number(url.searchParams.get("n") ?? 5);
          let i = 0;
          return new Response(
            new ReadableStream({
              async pull(c) {
                if (i === n) return c.close();
                await new Promise((r) => setTimeout(r, 150));
                c.enqueue(new TextEncoder().encode(`data: ${i++}\n\n`));
              },
            }),
            { headers: { "content-type": "text/event-stream" } },
          );
        }
        default:
          return new Response(`hello from ${name}\n`, { headers: { "x-origin": name } });
      }
    },
  );
  return { port: server.addr.port, close: () => (ac.abort(), server.finished) };
}
