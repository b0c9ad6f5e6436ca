/** Shared helpers for mux tests and the bench: data, hashing, session pairs on any link. */
import { createHash } from "node:crypto";
import type { DatagramConn } from "../../datagram.ts";
import type { Clock } from "../clock.ts";
import type { MuxParams } from "../params.ts";
import { MuxSession } from "../session.ts";
import type { MuxStream } from "../stream.ts";
import { FakeClock, runFor, runUntil } from "./fake_clock.ts";
import { createLinkPair, type LinkOptions } from "./lossy_link.ts";

/** Deterministic pseudo-random bytes. */
export function randomBytes(seed: number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  const words = new Uint32Array(out.buffer, 0, n >>> 2);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  for (let i = words.length * 4; i < n; i++) out[i] = (i * 31 + seed) & 0xff;
  return out;
}

export function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** Writes `data` in `chunkSize` pieces, then closes the writable. */
export async function writeAll(
  s: MuxStream,
  data: Uint8Array,
  chunkSize = 64 * 1024,
): Promise<void> {
  const w = s.writable.getWriter();
  for (let i = 0; i < data.length; i += chunkSize) {
    await w.write(data.subarray(i, Math.min(data.length, i + chunkSize)));
  }
  await w.close();
}

/** Reads a readable to its end; returns byte count and SHA-256. */
export async function readAll(
  r: ReadableStream<Uint8Array>,
): Promise<{ bytes: number; sha: string }> {
  const h = createHash("sha256");
  let bytes = 0;
  for await (const c of r) {
    h.update(c);
    bytes += c.length;
  }
  return { bytes, sha: h.digest("hex") };
}

/** A client/server session pair plus a way to await promises on its clock. */
export interface SessionPair {
  client: MuxSession;
  server: MuxSession;
  /** Awaits `p`, driving fake time if the pair runs on a FakeClock. */
  wait<T>(p: Promise<T>, what: string, maxMs?: number): Promise<T>;
  /** Resolves once `cond()` holds (drives fake time, or polls real time). */
  until(cond: () => boolean, what: string, maxMs?: number): Promise<void>;
  /** Lets `ms` of (fake or real) time pass. */
  sleep(ms: number): Promise<void>;
  /** True when running on a FakeClock (deterministic). */
  readonly fake: boolean;
  /** Closes both sessions and whatever transport resources the pair holds. */
  dispose(): Promise<void>;
}

export interface PairOptions {
  clock: Clock;
  params?: Partial<MuxParams>;
  serverParams?: Partial<MuxParams>;
  /** Both ends date their ACKs (TIMESTAMP frames), as a tunnel's do; default true. */
  ackTimestamps?: boolean;
  /** Extra cleanup after both sessions closed (sockets). */
  disposeTransport?: () => Promise<void>;
}

export function sessionPair(a: DatagramConn, b: DatagramConn, o: PairOptions): SessionPair {
  const clock = o.clock;
  const client = new MuxSession(a, { role: "client", clock, params: o.params ?? {} });
  const server = new MuxSession(b, {
    role: "server",
    clock,
    params: o.serverParams ?? o.params ?? {},
  });
  if (o.ackTimestamps ?? true) {
    client.sendAckTimestamps();
    server.sendAckTimestamps();
  }
  async function wait<T>(p: Promise<T>, what: string, maxMs = 600_000): Promise<T> {
    if (clock instanceof FakeClock) {
      let done = false;
      let value: T | undefined;
      let error: unknown = undefined;
      let failed = false;
      p.then((v) => {
        done = true;
        value = v;
      }, (e) => {
        done = true;
        failed = true;
        error = e;
      });
      await runUntil(clock, () => done, maxMs, what);
      if (failed) throw error;
      return value as T;
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, rej) => {
      timer = setTimeout(
        () => rej(new Error(`Timed out after ${maxMs} ms waiting for ${what}`)),
        maxMs,
      );
    });
    try {
      return await Promise.race([p, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
  async function until(cond: () => boolean, what: string, maxMs = 600_000): Promise<void> {
    if (clock instanceof FakeClock) return runUntil(clock, cond, maxMs, what);
    const end = performance.now() + maxMs;
    while (!cond()) {
      if (performance.now() > end) {
        throw new Error(`Timed out after ${maxMs} ms waiting for ${what}`);
      }
      await new Promise((r) => setTimeout(r, 2));
    }
  }
  function sleep(ms: number): Promise<void> {
    if (clock instanceof FakeClock) return runFor(clock, ms);
    return new Promise((r) => setTimeout(r, ms));
  }
  async function dispose(): Promise<void> {
    client.abort(0, "test done");
    server.abort(0, "test done");
    await client.closed;
    await server.closed;
    await o.disposeTransport?.();
  }
  return { client, server, wait, until, sleep, fake: clock instanceof FakeClock, dispose };
}

/** A session pair over the in-memory link on a fake clock (5 ms one way unless `link` says). */
export function memoryPair(
  link: Omit<LinkOptions, "clock"> = {},
  params: Partial<MuxParams> = {},
  options: { ackTimestamps?: boolean } = {},
) {
  const clock = new FakeClock();
  const l = createLinkPair({ clock, delayMs: 5, ...link });
  return { clock, link: l, ...sessionPair(l.a, l.b, { clock, params, ...options }) };
}

/**
 * Sends `data` on a new client stream and reads it on the server's end; throws unless
 * the SHA-256 matches. Returns the server's end of the stream.
 */
export async function transfer(p: SessionPair, data: Uint8Array): Promise<MuxStream> {
  const s = p.client.openStream();
  const w = writeAll(s, data);
  const ss = await p.wait(p.server.acceptStream(), "accept");
  if (!ss) throw new Error("no stream accepted");
  const got = await p.wait(readAll(ss.readable), "read");
  await p.wait(w, "write");
  if (got.sha !== sha256(data)) throw new Error(`stream ${s.id}: SHA-256 differs`);
  return ss;
}

/**
 * A download as a tunnel makes one: the client asks on a stream it opens (one byte), the
 * server answers with `size` bytes. Returns the ms (on the pair's clock) from the request
 * to the last byte, and the longest gap between the client's reads once the answer started.
 */
export async function download(
  p: ReturnType<typeof memoryPair>,
  size: number,
  seed = 9,
): Promise<{ ms: number; gapMs: number }> {
  const t0 = p.clock.now();
  const s = p.client.openStream();
  await s.write(new Uint8Array([1]));
  s.close();
  const answering = (async () => {
    const ss = await p.server.acceptStream();
    if (!ss) throw new Error("no stream");
    await ss.read();
    const data = randomBytes(seed, size);
    for (let i = 0; i < size; i += 64 * 1024) await ss.write(data.subarray(i, i + 64 * 1024));
    ss.close();
  })();
  let got = 0;
  let last = -1;
  let gapMs = 0;
  const reading = (async () => {
    for (;;) {
      const c = await s.read();
      if (c === null) break;
      const now = p.clock.now();
      if (last >= 0) gapMs = Math.max(gapMs, now - last);
      last = now;
      got += c.length;
    }
  })();
  await p.wait(Promise.all([answering, reading]), "download", 120_000);
  if (got !== size) throw new Error(`downloaded ${got} of ${size} bytes`);
  return { ms: p.clock.now() - t0, gapMs };
}
