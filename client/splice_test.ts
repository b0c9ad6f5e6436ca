/**
 * Spliced upgrades (RequestHead.upgrade) against real local origins, over a real mux
 * session pair: the test plays the public server's new HTTP/1.1 front, which passes
 * the caller's bytes through untouched. WebSocket frames are built and read here by
 * hand, so what crosses the stream is exactly what crosses the origin's socket.
 */
import { testCertificates } from "./testing/certs.ts";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { MuxStream } from "../shared/mux/mod.ts";
import { StreamErrorCode } from "../shared/mux/mod.ts";
import type { HeaderList, ResponseHead } from "../shared/protocol/mod.ts";
import { randomBytes } from "../shared/mux/testing/harness.ts";
import type { ForwardOptions, ForwardOutcome } from "./forwarder.ts";
import { ResponseError, ResponseParser } from "./origin/parser.ts";
import { OriginPool } from "./origin/pool.ts";
import {
  readAnswer,
  readBytes,
  requestHead,
  sendRequest,
  startTunnel,
  type Tunnel,
  within,
} from "./testing/tunnel.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** Runs `fn` with a tunnel forwarding to `target`, closing everything after. */
async function withTunnel(
  target: URL,
  fn: (t: Tunnel) => Promise<void>,
  extra: Partial<ForwardOptions> = {},
): Promise<void> {
  const pool = extra.pool ?? new OriginPool(target);
  const t = startTunnel({ target, pool, ...extra });
  try {
    await within(fn(t), 30_000, "test body");
  } finally {
    await t.close();
    pool.close();
  }
}

/** An upgrade request head as the new front sends it: hop-by-hop gone, `upgrade` set. */
function upgradeHead(upgrade: string, url: string, extra: HeaderList = [], method = "GET") {
  const head = requestHead({ url, upgrade, method });
  head.headers.push(...extra);
  return head;
}

/** Reads exact byte counts from a body stream. */
class ByteReader {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  #buf = new Uint8Array(0);
  constructor(body: ReadableStream<Uint8Array>) {
    this.#reader = body.getReader();
  }
  /** `n` bytes, or null if the stream ended first (with nothing buffered). */
  async read(n: number): Promise<Uint8Array | null> {
    while (this.#buf.length < n) {
      const { value, done } = await this.#reader.read();
      if (done) {
        if (this.#buf.length === 0) return null;
        throw new Error(`stream ended ${this.#buf.length} bytes into ${n}`);
      }
      const b = new Uint8Array(this.#buf.length + value.length);
      b.set(this.#buf);
      b.set(value, this.#buf.length);
      this.#buf = b;
    }
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }
  /** Resolves true at FIN (nothing more came), rejects on a reset. */
  async ended(): Promise<boolean> {
    if (this.#buf.length > 0) return false;
    const { done } = await this.#reader.read();
    return done;
  }
  /** Everything until FIN. */
  async rest(): Promise<Uint8Array> {
    const parts: Uint8Array[] = [this.#buf];
    for (;;) {
      const { value, done } = await this.#reader.read();
      if (done) break;
      parts.push(value);
    }
    this.#buf = new Uint8Array(0);
    return concat(parts);
  }
}

// ---- WebSocket frames, by hand (RFC 6455 5.2) ----

const OP_TEXT = 1;
const OP_BINARY = 2;
const OP_CLOSE = 8;
const OP_PING = 9;
const OP_PONG = 10;

/** A masked (client → server) frame with FIN set. */
function clientFrame(opcode: number, payload: Uint8Array): Uint8Array {
  const n = payload.length;
  const ext = n < 126 ? 0 : n < 65536 ? 2 : 8;
  const out = new Uint8Array(2 + ext + 4 + n);
  out[0] = 0x80 | opcode;
  const dv = new DataView(out.buffer);
  if (ext === 0) out[1] = 0x80 | n;
  else if (ext === 2) {
    out[1] = 0x80 | 126;
    dv.setUint16(2, n);
  } else {
    out[1] = 0x80 | 127;
    dv.setBigUint64(2, BigInt(n));
  }
  const mask = crypto.getRandomValues(new Uint8Array(4));
  out.set(mask, 2 + ext);
  const at = 6 + ext;
  for (let i = 0; i < n; i++) out[at + i] = payload[i]! ^ mask[i & 3]!;
  return out;
}

/** The next frame from the origin (unmasked), or null at the end of the stream. */
async function serverFrame(
  r: ByteReader,
): Promise<{ fin: boolean; opcode: number; payload: Uint8Array } | null> {
  const h = await r.read(2);
  if (h === null) return null;
  assert.equal(h[1]! & 0x80, 0, "frames from a server are not masked");
  let n = h[1]! & 0x7f;
  if (n === 126) n = new DataView((await r.read(2))!.buffer).getUint16(0);
  else if (n === 127) n = Number(new DataView((await r.read(8))!.buffer).getBigUint64(0));
  const payload = n === 0 ? new Uint8Array(0) : (await r.read(n))!;
  return { fin: (h[0]! & 0x80) !== 0, opcode: h[0]! & 0x0f, payload };
}

/** The next whole message (continuations joined). */
async function serverMessage(r: ByteReader) {
  const f = await serverFrame(r);
  if (f === null || f.fin) return f;
  const parts = [f.payload];
  for (;;) {
    const c = await serverFrame(r);
    assert.ok(c !== null && c.opcode === 0, "a continuation frame");
    parts.push(c.payload);
    if (c.fin) break;
  }
  return { fin: true, opcode: f.opcode, payload: concat(parts) };
}

function concat(parts: Uint8Array[]): Uint8Array {
  const all = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return all;
}

function closePayload(code: number, reason: string): Uint8Array {
  const r = enc.encode(reason);
  const out = new Uint8Array(2 + r.length);
  new DataView(out.buffer).setUint16(0, code);
  out.set(r, 2);
  return out;
}

function wsKeyAndAccept(): { key: string; accept: string } {
  const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
  const accept = createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
    .digest("base64");
  return { key, accept };
}

/** Reads the answer head, insisting on a response head. */
async function readResponse(stream: MuxStream) {
  const { head, body } = await readAnswer(stream);
  assert.equal(head.t, "res", `a response head, got ${JSON.stringify(head)}`);
  return { head: head as ResponseHead, body };
}

// ---- raw TCP origins ----

interface RawOrigin {
  url: URL;
  /** Request heads received, as text. */
  heads: string[];
  /** Resolves once every connection's handler finished. */
  close(): Promise<void>;
}

/**
 * A raw TCP origin: reads each request head, then hands the connection, the head and
 * whatever came after it to `handler`.
 */
function rawOrigin(
  handler: (conn: Deno.TcpConn, head: string, rest: Uint8Array) => Promise<void>,
): RawOrigin {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const heads: string[] = [];
  const running: Promise<void>[] = [];
  const loop = (async () => {
    for await (const conn of listener) {
      running.push((async () => {
        try {
          let buf = new Uint8Array(0);
          const chunk = new Uint8Array(16 * 1024);
          let end = -1;
          while (end < 0) {
            const n = await conn.read(chunk);
            if (n === null) return;
            const b = new Uint8Array(buf.length + n);
            b.set(buf);
            b.set(chunk.subarray(0, n), buf.length);
            buf = b;
            end = findCrlfCrlf(buf);
          }
          const head = dec.decode(buf.subarray(0, end));
          heads.push(head);
          await handler(conn, head, buf.slice(end));
        } catch {
          // The tunnel side closed: the test checks what it needs through its own promises.
        } finally {
          try {
            conn.close();
          } catch { /* closed by the handler */ }
        }
      })());
    }
  })();
  return {
    url: new URL(`http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`),
    heads,
    async close() {
      listener.close();
      await loop.catch(() => {});
      await Promise.all(running);
    },
  };
}

function findCrlfCrlf(b: Uint8Array): number {
  for (let i = 3; i < b.length; i++) {
    if (b[i] === 0x0a && b[i - 1] === 0x0d && b[i - 2] === 0x0a && b[i - 3] === 0x0d) return i + 1;
  }
  return -1;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
}

/** Everything until EOF. */
async function readToEnd(conn: Deno.Conn, into: Uint8Array[] = []): Promise<Uint8Array> {
  const buf = new Uint8Array(64 * 1024);
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) break;
    into.push(buf.slice(0, n));
  }
  return concat(into);
}

const SWITCH = (proto: string) =>
  `HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${proto}\r\nConnection: Upgrade\r\n` +
  `x-origin: raw\r\n\r\n`;

function headerMap(headers: HeaderList): Map<string, string> {
  return new Map(headers.map(([k, v]) => [k.toLowerCase(), v]));
}

async function outcomeOf(t: Tunnel): Promise<ForwardOutcome> {
  return await within(t.nextOutcome(), 10_000, "the client's outcome");
}

// ---- tests ----

Deno.test("splice: a Deno WebSocket origin, handshake and frames by hand: text, 1 MiB binary, ping/pong, close handshake", async () => {
  let seen: { host: string | null; path: string; xff: string | null } | undefined;
  let originClosed!: (v: { code: number; reason: string }) => void;
  const closedAtOrigin = new Promise<{ code: number; reason: string }>((r) => originClosed = r);
  const srv = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    seen = {
      host: req.headers.get("host"),
      path: new URL(req.url).pathname,
      xff: req.headers.get("x-forwarded-for"),
    };
    const { socket, response } = Deno.upgradeWebSocket(req, { protocol: "chat.v2" });
    socket.binaryType = "arraybuffer";
    socket.onmessage = (e) => {
      if (typeof e.data === "string") socket.send(`echo:${e.data}`);
      else socket.send(new Uint8Array(e.data as ArrayBuffer));
    };
    socket.onclose = (e) => originClosed({ code: e.code, reason: e.reason });
    return response;
  });
  const target = new URL(`http://127.0.0.1:${srv.addr.port}/app`);
  try {
    await withTunnel(target, async (t) => {
      const { key, accept } = wsKeyAndAccept();
      const { stream, writer } = sendRequest(
        t,
        upgradeHead("websocket", "/ws?room=1", [
          ["sec-websocket-key", key],
          ["sec-websocket-version", "13"],
          ["sec-websocket-protocol", "chat.v1, chat.v2"],
        ]),
        undefined,
        { fin: false },
      );
      const { head, body } = await readResponse(stream);
      assert.equal(head.status, 101);
      assert.equal(head.upgrade?.toLowerCase(), "websocket");
      const h = headerMap(head.headers);
      assert.equal(h.get("sec-websocket-accept"), accept);
      assert.equal(h.get("sec-websocket-protocol"), "chat.v2");
      assert.ok(!h.has("connection") && !h.has("upgrade"), "hop-by-hop headers removed");
      assert.deepEqual(seen, { host: "app.example.com", path: "/app/ws", xff: "203.0.113.7" });

      const r = new ByteReader(body);
      await writer.write(clientFrame(OP_TEXT, enc.encode("hi")));
      const m1 = await serverMessage(r);
      assert.equal(m1?.opcode, OP_TEXT);
      assert.equal(dec.decode(m1!.payload), "echo:hi");

      const big = randomBytes(11, 1024 * 1024);
      await writer.write(clientFrame(OP_BINARY, big));
      const m2 = await serverMessage(r);
      assert.equal(m2?.opcode, OP_BINARY);
      assert.equal(m2!.payload.length, big.length);
      assert.equal(sha(m2!.payload), sha(big));

      await writer.write(clientFrame(OP_PING, enc.encode("p1")));
      const pong = await serverMessage(r);
      assert.equal(pong?.opcode, OP_PONG);
      assert.equal(dec.decode(pong!.payload), "p1");

      // The caller closes: the origin answers with its Close and ends the connection.
      await writer.write(clientFrame(OP_CLOSE, closePayload(4001, "caller left")));
      const close = await serverMessage(r);
      assert.equal(close?.opcode, OP_CLOSE);
      assert.equal(new DataView(close!.payload.buffer).getUint16(0), 4001);
      assert.deepEqual(await within(closedAtOrigin, 5_000, "origin close event"), {
        code: 4001,
        reason: "caller left",
      });
      assert.equal(await within(r.ended(), 5_000, "FIN after the origin's close"), true);
      await writer.close();
      assert.deepEqual(await outcomeOf(t), { kind: "websocket", url: "/ws?room=1", status: 101 });
    });
  } finally {
    await srv.shutdown();
  }
});

Deno.test("splice: bytes the origin sends in the same write as its 101 head are not lost; early caller bytes wait for the 101", async () => {
  let afterHead = "";
  const origin = rawOrigin(async (conn, _head, rest) => {
    // Nothing the caller sent past the request may reach us before our 101.
    afterHead = dec.decode(rest);
    await writeAll(conn, enc.encode(SWITCH("foo") + "HELLO-RIGHT-BEHIND"));
    const got = await readToEnd(conn, rest.length > 0 ? [rest] : []);
    await writeAll(conn, enc.encode(`got:${dec.decode(got)}`));
  });
  try {
    await withTunnel(origin.url, async (t) => {
      const { stream, writer } = sendRequest(t, upgradeHead("foo", "/x"), undefined, {
        fin: false,
      });
      await writer.write(enc.encode("EARLY-UP"));
      const { head, body } = await readResponse(stream);
      assert.equal(head.status, 101);
      assert.equal(head.upgrade, "foo");
      assert.equal(headerMap(head.headers).get("x-origin"), "raw");
      const r = new ByteReader(body);
      assert.equal(dec.decode((await r.read(18))!), "HELLO-RIGHT-BEHIND");
      await writer.write(enc.encode("+MORE"));
      await writer.close();
      assert.equal(dec.decode(await r.rest()), "got:EARLY-UP+MORE");
      assert.equal(afterHead, "", "no upgraded byte reached the origin before its 101");
      assert.equal((await outcomeOf(t)).kind, "websocket");
    });
    const req = origin.heads[0]!.toLowerCase();
    assert.match(req, /^get \/x http\/1\.1\r\n/);
    assert.match(req, /\r\nconnection: upgrade\r\n/);
    assert.match(req, /\r\nupgrade: foo\r\n/);
    assert.match(req, /\r\nhost: app\.example\.com\r\n/);
    assert.doesNotMatch(req, /content-length|transfer-encoding/);
  } finally {
    await origin.close();
  }
});

Deno.test("splice: a request body (its Content-Length) reaches the origin before the upgraded bytes that follow it", async () => {
  let seen!: (v: { body: string; after: string }) => void;
  const atOrigin = new Promise<{ body: string; after: string }>((r) => seen = r);
  const origin = rawOrigin(async (conn, head, rest) => {
    const length = Number(/\r\ncontent-length: (\d+)\r\n/i.exec(head)?.[1]);
    const parts = [rest];
    let have = rest.length;
    const buf = new Uint8Array(1024);
    while (have < length) {
      const n = await conn.read(buf);
      if (n === null) throw new Error("short body");
      parts.push(buf.slice(0, n));
      have += n;
    }
    const all = concat(parts);
    await writeAll(conn, enc.encode(SWITCH("foo")));
    const after = await readToEnd(conn, [all.slice(length)]);
    seen({ body: dec.decode(all.subarray(0, length)), after: dec.decode(after) });
  });
  try {
    await withTunnel(origin.url, async (t) => {
      const head = upgradeHead("foo", "/b", [["content-length", "9"]], "POST");
      const { stream, writer } = sendRequest(t, head, undefined, { fin: false });
      // The body and the first upgraded bytes in one write: the client must split them.
      await writer.write(enc.encode("body-9-byUPGRADED"));
      const { head: res, body } = await readResponse(stream);
      assert.equal(res.status, 101);
      await writer.write(enc.encode("+more"));
      await writer.close();
      assert.deepEqual(await within(atOrigin, 5_000, "origin read"), {
        body: "body-9-by",
        after: "UPGRADED+more",
      });
      assert.equal((await readBytes(body)).length, 0);
      assert.equal((await outcomeOf(t)).kind, "websocket");
    });
    assert.match(origin.heads[0]!, /\r\ncontent-length: 9\r\n/);
  } finally {
    await origin.close();
  }
});

Deno.test("origin parser, upgrade mode: a 101 ends the parse at its head, the bytes after it left unconsumed, at every split", () => {
  const head = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n" +
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: abc\r\n\r\n";
  const bytes = enc.encode(head + "\x81\x02hi");
  for (let split = 0; split <= bytes.length; split++) {
    const heads: { status: number; headers: HeaderList }[] = [];
    const p = new ResponseParser({
      head: (h) => heads.push(h),
      body: () => assert.fail("a 101 has no body"),
      end: () => assert.fail("a 101 does not end like a response"),
    });
    p.start("GET", { upgrade: true });
    const rest: number[] = [];
    for (const part of [bytes.subarray(0, split), bytes.subarray(split)]) {
      const used = p.feed(part);
      rest.push(...part.subarray(used));
    }
    assert.equal(p.upgraded, true, `split ${split}`);
    assert.equal(p.complete, false);
    assert.equal(heads.length, 1);
    assert.equal(heads[0]!.status, 101);
    assert.deepEqual(heads[0]!.headers[2], ["sec-websocket-accept", "abc"]);
    assert.deepEqual(rest, [...enc.encode("\x81\x02hi")], `split ${split}`);
    p.eof(); // the upgraded connection's end is not the parser's business
  }
  const refused = (text: string, upgrade: boolean) => {
    const p = new ResponseParser({ head() {}, body() {}, end() {} });
    p.start("GET", { upgrade });
    assert.throws(() => p.feed(enc.encode(text)), ResponseError);
  };
  // Without the option a 101 is still an error; an HTTP/1.0 101 is one with it.
  refused("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", false);
  refused("HTTP/1.0 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", true);
  // In upgrade mode a refusal is an ordinary response, framed as usual.
  const got: string[] = [];
  const p = new ResponseParser({
    head: (h) => got.push(`head ${h.status}`),
    body: (v) => got.push(dec.decode(v)),
    end: () => got.push("end"),
  });
  p.start("GET", { upgrade: true });
  p.feed(enc.encode("HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno"));
  assert.deepEqual(got, ["head 403", "no", "end"]);
  assert.equal(p.upgraded, false);
  assert.equal(p.complete, true);
});

Deno.test("splice: generic Upgrade echo; half-close both ways (caller ends first, then origin ends first)", async () => {
  let originSawEnd = false;
  let lateBytes!: (text: string) => void;
  const originGotLate = new Promise<string>((r) => lateBytes = r);
  const origin = rawOrigin(async (conn, head) => {
    await writeAll(conn, enc.encode(SWITCH("foo")));
    if (head.includes("/caller-first")) {
      // Echo until the caller's end, then still write: our half is open.
      const buf = new Uint8Array(64 * 1024);
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        await writeAll(conn, buf.subarray(0, n));
      }
      originSawEnd = true;
      await writeAll(conn, enc.encode("|after-your-fin"));
      await conn.closeWrite();
    } else {
      // End our side first, then read what the caller still sends.
      await writeAll(conn, enc.encode("origin-done"));
      await conn.closeWrite();
      lateBytes(dec.decode(await readToEnd(conn)));
    }
  });
  try {
    await withTunnel(origin.url, async (t) => {
      // The caller ends first.
      const a = sendRequest(t, upgradeHead("foo", "/caller-first"), undefined, { fin: false });
      const ah = await readResponse(a.stream);
      assert.equal(ah.head.status, 101);
      const data = randomBytes(5, 300_000);
      const echoed = readBytes(ah.body);
      await a.writer.write(data);
      await a.writer.close();
      const all = await within(echoed, 10_000, "echo then FIN");
      assert.equal(all.length, data.length + "|after-your-fin".length);
      assert.equal(sha(all.subarray(0, data.length)), sha(data));
      assert.equal(dec.decode(all.subarray(data.length)), "|after-your-fin");
      assert.ok(originSawEnd);
      assert.equal((await outcomeOf(t)).kind, "websocket");

      // The origin ends first.
      const b = sendRequest(t, upgradeHead("foo", "/origin-first"), undefined, { fin: false });
      const bh = await readResponse(b.stream);
      assert.equal(bh.head.status, 101);
      assert.equal(
        dec.decode(await within(readBytes(bh.body), 5_000, "origin FIN")),
        "origin-done",
      );
      await b.writer.write(enc.encode("caller-still-talking"));
      await b.writer.close();
      assert.equal(
        await within(originGotLate, 5_000, "the origin reads after its own end"),
        "caller-still-talking",
      );
      assert.equal((await outcomeOf(t)).kind, "websocket");
    });
  } finally {
    await origin.close();
  }
});

Deno.test("splice: an origin that refuses the upgrade (403 with body, 426) is relayed as an ordinary response; the body is sent", async () => {
  const srv = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response("no upgrade here", { status: 403, headers: { "x-why": "403" } }),
  );
  // Deno.serve (hyper) answers 400 to an upgrade request with a body: a raw origin.
  const raw = rawOrigin(async (conn, head, rest) => {
    const length = Number(/\r\ncontent-length: (\d+)\r\n/i.exec(head)?.[1] ?? 0);
    const parts = [rest];
    const buf = new Uint8Array(1024);
    let have = rest.length;
    while (have < length) {
      const n = await conn.read(buf);
      if (n === null) break;
      parts.push(buf.slice(0, n));
      have += n;
    }
    const body = `need tls, you said ${dec.decode(concat(parts))}`;
    await writeAll(
      conn,
      enc.encode(
        "HTTP/1.1 426 Upgrade Required\r\nUpgrade: TLS/1.2\r\nConnection: Upgrade\r\n" +
          `x-why: 426\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
      ),
    );
    await readToEnd(conn);
  });
  const target = new URL(`http://127.0.0.1:${srv.addr.port}`);
  try {
    await withTunnel(target, async (t) => {
      const a = sendRequest(t, upgradeHead("websocket", "/ws"));
      const ah = await readResponse(a.stream);
      assert.equal(ah.head.status, 403);
      assert.equal(ah.head.upgrade, undefined);
      assert.equal(headerMap(ah.head.headers).get("x-why"), "403");
      assert.equal(dec.decode(await readBytes(ah.body)), "no upgrade here");
      assert.deepEqual(await outcomeOf(t), {
        kind: "response",
        method: "GET",
        url: "/ws",
        status: 403,
      });
    });
    await withTunnel(raw.url, async (t) => {
      const body = enc.encode("hello");
      const b = sendRequest(
        t,
        upgradeHead("foo", "/up", [["content-length", String(body.length)]], "POST"),
        body,
      );
      const bh = await readResponse(b.stream);
      assert.equal(bh.head.status, 426);
      const h = headerMap(bh.head.headers);
      assert.equal(h.get("x-why"), "426");
      assert.ok(!h.has("upgrade") && !h.has("connection"), "hop-by-hop headers removed");
      assert.equal(dec.decode(await readBytes(bh.body)), "need tls, you said hello");
      assert.equal((await outcomeOf(t)).kind, "response");
    });
    assert.match(raw.heads[0]!, /\r\ncontent-length: 5\r\n/);
  } finally {
    await srv.shutdown();
    await raw.close();
  }
});

Deno.test("splice: origin refused → local_unreachable; closed before a head or garbage → local_error", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  await withTunnel(new URL(`http://127.0.0.1:${port}`), async (t) => {
    const { stream } = sendRequest(t, upgradeHead("websocket", "/ws"));
    const { head, body } = await readAnswer(stream);
    assert.equal(head.t === "err" && head.code, "local_unreachable");
    assert.ok(head.t === "err" && !head.message.includes(String(port)));
    assert.equal((await readBytes(body)).length, 0);
    assert.equal((await outcomeOf(t)).kind, "error");
  });

  const origin = rawOrigin(async (conn, head) => {
    if (head.includes("/garbage")) await writeAll(conn, enc.encode("SSH-2.0-OpenSSH\r\n\r\n"));
    else if (head.includes("/half")) await writeAll(conn, enc.encode("HTTP/1.1 101 Swi"));
    // else: close at once
  });
  try {
    await withTunnel(origin.url, async (t) => {
      for (
        const [path, pattern] of [
          ["/close", /without a response/],
          ["/half", /without a response/],
          ["/garbage", /invalid response/],
        ] as const
      ) {
        const { stream } = sendRequest(t, upgradeHead("websocket", path));
        const { head } = await readAnswer(stream);
        assert.equal(head.t, "err", path);
        if (head.t !== "err") return;
        assert.equal(head.code, "local_error", path);
        assert.match(head.message, pattern, path);
        const o = await outcomeOf(t);
        assert.equal(o.kind, "error", path);
      }
    });
  } finally {
    await origin.close();
  }
});

Deno.test("splice: the server resetting mid-splice closes the origin's socket; the origin closing mid-splice ends the stream", async () => {
  let socketEnded!: (how: string) => void;
  const ended = new Promise<string>((r) => socketEnded = r);
  const origin = rawOrigin(async (conn, head) => {
    await writeAll(conn, enc.encode(SWITCH("foo")));
    if (head.includes("/reset")) {
      const buf = new Uint8Array(1024);
      try {
        for (;;) {
          const n = await conn.read(buf);
          if (n === null) return socketEnded("eof");
          await writeAll(conn, buf.subarray(0, n));
        }
      } catch (e) {
        socketEnded(`error ${(e as Error).name}`);
      }
    } else {
      await writeAll(conn, enc.encode("last words"));
      conn.close(); // both halves at once, no half-close
    }
  });
  try {
    await withTunnel(origin.url, async (t) => {
      const a = sendRequest(t, upgradeHead("foo", "/reset"), undefined, { fin: false });
      const ah = await readResponse(a.stream);
      assert.equal(ah.head.status, 101);
      const r = new ByteReader(ah.body);
      await a.writer.write(enc.encode("ping"));
      assert.equal(dec.decode((await r.read(4))!), "ping");
      // The caller vanished: the server resets both halves.
      a.stream.abort(StreamErrorCode.CANCELLED);
      assert.match(await within(ended, 5_000, "origin socket closed"), /^(eof|error)/);
      const o = await outcomeOf(t);
      assert.equal(o.kind, "aborted");

      const b = sendRequest(t, upgradeHead("foo", "/close"), undefined, { fin: false });
      const bh = await readResponse(b.stream);
      assert.equal(bh.head.status, 101);
      assert.equal(dec.decode(await within(readBytes(bh.body), 5_000, "FIN")), "last words");
      // The caller still sends: the origin is gone; the client's side ends without a fuss.
      await b.writer.write(enc.encode("anyone?")).catch(() => {});
      await b.writer.close().catch(() => {});
      // Its end was clean (EOF): so is the splice's, whatever the caller still sent.
      assert.equal((await outcomeOf(t)).kind, "websocket");
    });
  } finally {
    await origin.close();
  }
});

Deno.test("splice: backpressure: a caller that stops reading stops the origin's writes; 32 MiB arrive whole after", async () => {
  const TOTAL = 32 * 1024 * 1024;
  const CHUNK = 64 * 1024;
  let written = 0;
  const hash = createHash("sha256");
  const origin = rawOrigin(async (conn) => {
    await writeAll(conn, enc.encode(SWITCH("firehose")));
    for (let i = 0; written < TOTAL; i++) {
      const piece = randomBytes(i + 1, CHUNK);
      hash.update(piece);
      await writeAll(conn, piece);
      written += piece.length;
    }
    await conn.closeWrite();
    await readToEnd(conn);
  });
  try {
    await withTunnel(origin.url, async (t) => {
      const { stream, writer } = sendRequest(t, upgradeHead("firehose", "/"), undefined, {
        fin: false,
      });
      const { head, body } = await readResponse(stream);
      assert.equal(head.status, 101);
      // Not reading: the origin must soon be blocked (no progress for 500 ms).
      let stalled = -1;
      for (let waited = 0; written !== stalled; waited += 500) {
        assert.ok(waited < 10_000, `the origin still writes: ${written} bytes`);
        stalled = written;
        await new Promise((r) => setTimeout(r, 500));
      }
      assert.ok(stalled > 0, "the origin did start writing");
      assert.ok(
        stalled < TOTAL / 2,
        `only socket and tunnel buffers' worth was written: ${stalled} bytes`,
      );
      // Reading again: all of it arrives, bit-exact.
      const got = createHash("sha256");
      let n = 0;
      for await (const c of body) {
        got.update(c);
        n += c.length;
      }
      assert.equal(n, TOTAL);
      assert.equal(got.digest("hex"), hash.digest("hex"));
      await writer.close();
      assert.equal((await outcomeOf(t)).kind, "websocket");
      console.log(`  origin blocked after ${(stalled / 1048576).toFixed(1)} MiB`);
    });
  } finally {
    await origin.close();
  }
});

Deno.test("splice: an https local target: the upgrade and its frames go over TLS; an untrusted certificate is local_error", async () => {
  const { ca, cert, key } = await testCertificates();
  const srv = Deno.serve({ hostname: "127.0.0.1", port: 0, cert, key, onListen() {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (e) => socket.send(`tls:${e.data}`);
    return response;
  });
  const target = new URL(`https://127.0.0.1:${srv.addr.port}`);
  try {
    await withTunnel(target, async (t) => {
      const { key: wsKey, accept } = wsKeyAndAccept();
      const { stream, writer } = sendRequest(
        t,
        upgradeHead("websocket", "/ws", [
          ["sec-websocket-key", wsKey],
          ["sec-websocket-version", "13"],
        ]),
        undefined,
        { fin: false },
      );
      const { head, body } = await readResponse(stream);
      assert.equal(head.status, 101);
      assert.equal(headerMap(head.headers).get("sec-websocket-accept"), accept);
      const r = new ByteReader(body);
      await writer.write(clientFrame(OP_TEXT, enc.encode("secret")));
      const m = await serverMessage(r);
      assert.equal(dec.decode(m!.payload), "tls:secret");
      await writer.write(clientFrame(OP_CLOSE, closePayload(1000, "")));
      assert.equal((await serverMessage(r))?.opcode, OP_CLOSE);
      await writer.close();
      assert.equal(await within(r.ended(), 5_000, "FIN"), true);
      assert.equal((await outcomeOf(t)).kind, "websocket");
    }, { pool: new OriginPool(target, { caCerts: [ca] }) });

    await withTunnel(target, async (t) => {
      const { stream } = sendRequest(t, upgradeHead("websocket", "/ws"));
      const { head } = await readAnswer(stream);
      assert.equal(head.t, "err");
      if (head.t !== "err") return;
      assert.equal(head.code, "local_error");
      assert.match(head.message, /TLS handshake/);
    });
  } finally {
    await srv.shutdown();
  }
});
