/**
 * Test fixture: a mux session pair over an in-memory link on real time, with the
 * client side serving every stream through `serveStream`, and helpers that play
 * the public server's part (open a stream, write a RequestHead and a body).
 */
import { concatBytes } from "../../shared/bytes.ts";
import { MuxSession, type MuxStream, realClock } from "../../shared/mux/mod.ts";
import { createLinkPair } from "../../shared/mux/testing/lossy_link.ts";
import {
  encodeHead,
  type ForwardError,
  type Head,
  readHead,
  type RequestHead,
  type ResponseHead,
} from "../../shared/protocol/mod.ts";
import { type ForwardOptions, type ForwardOutcome, serveStream } from "../forwarder.ts";

export interface Tunnel {
  /** The public server's end. */
  server: MuxSession;
  client: MuxSession;
  /** Outcomes of `serveStream`, in completion order. */
  outcomes: ForwardOutcome[];
  /** Resolves with the next outcome. */
  nextOutcome(): Promise<ForwardOutcome>;
  close(): Promise<void>;
}

export function startTunnel(options: ForwardOptions): Tunnel {
  const link = createLinkPair({ clock: realClock, immediate: true, mtu: 1200 });
  const server = new MuxSession(link.b, { role: "server" });
  const client = new MuxSession(link.a, { role: "client" });
  const outcomes: ForwardOutcome[] = [];
  const waiters: ((o: ForwardOutcome) => void)[] = [];
  const serving: Promise<void>[] = [];
  const loop = (async () => {
    for (;;) {
      const s = await client.acceptStream();
      if (!s) return;
      serving.push(
        serveStream(s, options).then((o) => {
          const w = waiters.shift();
          if (w) w(o);
          else outcomes.push(o);
        }),
      );
    }
  })();
  return {
    server,
    client,
    outcomes,
    nextOutcome() {
      const o = outcomes.shift();
      if (o) return Promise.resolve(o);
      return new Promise((r) => waiters.push(r));
    },
    async close() {
      client.abort(0, "test done");
      server.abort(0, "test done");
      await client.closed;
      await server.closed;
      await loop;
      await Promise.all(serving);
    },
  };
}

export function requestHead(o: Partial<RequestHead> & { host?: string } = {}): RequestHead {
  const { host = "app.example.com", ...rest } = o;
  return {
    t: "req",
    id: "r1",
    method: "GET",
    url: "/",
    headers: [["host", host], ["x-forwarded-for", "203.0.113.7"], ["x-forwarded-proto", "https"]],
    client: "203.0.113.7",
    scheme: "https",
    ...rest,
  };
}

/**
 * Plays the server: opens a stream, writes `head` and `body` (bytes, or a stream
 * written as it produces), then FIN.
 */
export function sendRequest(
  t: Tunnel,
  head: RequestHead,
  body?: Uint8Array | ReadableStream<Uint8Array>,
  opts: { fin?: boolean } = {},
): { stream: MuxStream; written: Promise<void>; writer: WritableStreamDefaultWriter<Uint8Array> } {
  const stream = t.server.openStream();
  const writer = stream.writable.getWriter();
  const written = (async () => {
    await writer.write(encodeHead(head));
    if (body instanceof Uint8Array) {
      for (let i = 0; i < body.length; i += 64 * 1024) {
        await writer.write(body.subarray(i, Math.min(body.length, i + 64 * 1024)));
      }
    } else if (body) {
      for await (const chunk of body) await writer.write(chunk);
    }
    if (opts.fin ?? true) await writer.close();
  })();
  return { stream, written, writer };
}

/** Reads the client's answer head (ResponseHead or ForwardError) and leaves the body. */
export async function readAnswer(
  stream: MuxStream,
): Promise<{ head: ResponseHead | ForwardError; body: ReadableStream<Uint8Array> }> {
  const { head, body } = await readHead(stream.readable);
  if (head.t !== "res" && head.t !== "err") throw new Error(`unexpected head ${head.t}`);
  return { head, body };
}

export async function readBytes(r: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const c of r) parts.push(c);
  return concatBytes(...parts);
}

export function isHead<T extends Head["t"]>(h: Head, t: T): h is Extract<Head, { t: T }> {
  return h.t === t;
}

/** Rejects if `p` does not settle within `ms` (so a hang fails with a message, not a CI timeout). */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
