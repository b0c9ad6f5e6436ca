/**
 * The HTTP/1.1 front on real sockets (127.0.0.1), driven by raw TCP callers:
 * framing both ways, keep-alive and pipelining in order, every timeout, the
 * connection caps, refusals, 100-continue, the upgrade hand-over and shutdown.
 */
import assert from "node:assert/strict";
import type { CutReason, FrontHandler, FrontLimits } from "./http1.ts";
import { FrontServer } from "./http1.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

interface Harness {
  port: number;
  cuts: CutReason[];
  server: FrontServer;
  close(): Promise<void>;
}

function start(handler: FrontHandler, limits: Partial<FrontLimits> = {}): Harness {
  const cuts: CutReason[] = [];
  const server = new FrontServer({
    scheme: "http",
    handler,
    limits,
    events: { cut: (r) => cuts.push(r) },
  });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = server.serve(listener);
  return {
    port: (listener.addr as Deno.NetAddr).port,
    cuts,
    server,
    async close() {
      server.abortAll();
      await server.shutdown();
      await serving;
    },
  };
}

/** Answers "<method> <path> <body>" with a length. */
const echo: FrontHandler = async (req, res) => {
  const parts: Uint8Array[] = [];
  for (;;) {
    const v = await req.readBody();
    if (v === null) break;
    parts.push(v.slice());
  }
  const body = `${req.method} ${req.path} ${dec.decode(concat(parts))}`;
  res.head(200, [["content-type", "text/plain"]], -1);
  await res.end(enc.encode(body));
};

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

async function connect(port: number): Promise<Deno.TcpConn> {
  return await Deno.connect({ hostname: "127.0.0.1", port });
}

/** Reads until EOF (or `ms`), returns the text. */
async function readAll(conn: Deno.Conn, ms = 3000): Promise<string> {
  const parts: Uint8Array[] = [];
  const buf = new Uint8Array(65536);
  const timer = setTimeout(() => conn.close(), ms);
  try {
    for (;;) {
      const n = await conn.read(buf).catch(() => null);
      if (n === null) break;
      parts.push(buf.slice(0, n));
    }
  } finally {
    clearTimeout(timer);
  }
  return dec.decode(concat(parts));
}

/** Reads until `text` contains `until` times the marker `count`. */
async function readUntil(conn: Deno.Conn, marker: string, count = 1, ms = 3000): Promise<string> {
  let text = "";
  const buf = new Uint8Array(65536);
  const deadline = Date.now() + ms;
  while (text.split(marker).length - 1 < count) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${marker}: ${text}`);
    const n = await conn.read(buf);
    if (n === null) break;
    text += dec.decode(buf.subarray(0, n));
  }
  return text;
}

/** Resolves whether the connection was closed by the server within `ms`. */
async function closedWithin(conn: Deno.Conn, ms: number): Promise<boolean> {
  const buf = new Uint8Array(1024);
  const timer = setTimeout(() => conn.close(), ms);
  try {
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) return true;
    }
  } catch {
    return false; // we closed it: the server did not
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("front: keep-alive requests and pipelined ones are answered in order", async () => {
  const h = start(echo);
  const c = await connect(h.port);
  await c.write(enc.encode("GET /a HTTP/1.1\r\nHost: x\r\n\r\n"));
  const first = await readUntil(c, "GET /a ");
  assert.match(first, /^HTTP\/1\.1 200 OK\r\n/);
  assert.match(first, /content-length: 7\r\n/);
  // Three pipelined in one write, the middle one with a body.
  await c.write(enc.encode(
    "GET /b HTTP/1.1\r\nHost: x\r\n\r\n" +
      "POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" +
      "GET /d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
  ));
  const rest = await readAll(c);
  const bodies = [...rest.matchAll(/\r\n\r\n([A-Z]+ \/\w [a-z]*)/g)].map((m) => m[1]);
  assert.deepEqual(bodies, ["GET /b ", "POST /c abc", "GET /d "]);
  assert.match(rest, /connection: close\r\n/);
  await h.close();
});

Deno.test("front: chunked request bodies in, chunked and close-delimited responses out", async () => {
  const h = start(async (req, res) => {
    const parts: Uint8Array[] = [];
    for (let v; (v = await req.readBody()) !== null;) parts.push(v.slice());
    res.head(200, [], -1);
    await res.write(enc.encode("got:"));
    await res.write(concat(parts));
    await res.end();
  });
  const c = await connect(h.port);
  await c.write(enc.encode(
    "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
  ));
  const text = await readUntil(c, "0\r\n\r\n");
  assert.match(text, /transfer-encoding: chunked\r\n/);
  assert.ok(text.endsWith("\r\n\r\n4\r\ngot:\r\n5\r\nabcde\r\n0\r\n\r\n"), text);
  c.close();
  // HTTP/1.0: no chunks, the body ends with the connection.
  const d = await connect(h.port);
  await d.write(enc.encode("GET / HTTP/1.0\r\n\r\n"));
  const old = await readAll(d);
  assert.match(old, /connection: close\r\n/);
  assert.ok(old.endsWith("\r\n\r\ngot:"), old);
  await h.close();
});

Deno.test("front: malformed requests get 400 / 431 / 505 and the connection closes", async () => {
  const h = start(echo, { maxHeadBytes: 4096 });
  const cases: [string, RegExp][] = [
    ["GET / HTTP/1.1\r\nHost: a b\r\n\r\n", /^HTTP\/1\.1 400 /],
    ["GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", /^HTTP\/1\.1 400 /],
    ["GET / HTTP/1.1\r\n\r\n", /^HTTP\/1\.1 400 /],
    [
      "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
      /^HTTP\/1\.1 400 /,
    ],
    [`GET / HTTP/1.1\r\nHost: x\r\nX: ${"a".repeat(5000)}\r\n\r\n`, /^HTTP\/1\.1 431 /],
    ["GET / HTTP/2.0\r\nHost: x\r\n\r\n", /^HTTP\/1\.1 505 /],
  ];
  for (const [request, expected] of cases) {
    const c = await connect(h.port);
    await c.write(enc.encode(request));
    const text = await readAll(c);
    assert.match(text, expected, JSON.stringify(request));
    assert.match(text, /connection: close\r\n/);
  }
  assert.equal(h.cuts.filter((r) => r === "bad_request").length, 5);
  assert.equal(h.cuts.filter((r) => r === "head_too_large").length, 1);
  await h.close();
});

Deno.test("front: a head sent one byte at a time is cut at the header timeout", async () => {
  const h = start(echo, { headerTimeoutMs: 300 });
  const c = await connect(h.port);
  const started = Date.now();
  let sent = 0;
  const dribble = (async () => {
    for (const b of enc.encode("GET / HTTP/1.1\r\nHost: x\r\nX-Long: aaaaaaaaaaaaaaaa")) {
      try {
        await c.write(new Uint8Array([b]));
      } catch {
        return;
      }
      sent++;
      await new Promise((r) => setTimeout(r, 40));
    }
  })();
  assert.equal(await closedWithin(c, 3000), true);
  const took = Date.now() - started;
  assert.ok(took >= 250 && took < 1500, `closed after ${took} ms (${sent} bytes sent)`);
  await dribble;
  assert.deepEqual(h.cuts, ["header_timeout"]);
  // A silent connection too.
  const s = await connect(h.port);
  assert.equal(await closedWithin(s, 3000), true);
  await h.close();
});

Deno.test("front: an idle kept-alive connection is cut at the idle timeout, not before", async () => {
  const h = start(echo, { idleTimeoutMs: 400, headerTimeoutMs: 5000 });
  const c = await connect(h.port);
  await c.write(enc.encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  await readUntil(c, "GET / ");
  const started = Date.now();
  assert.equal(await closedWithin(c, 3000), true);
  const took = Date.now() - started;
  assert.ok(took >= 350 && took < 1500, `idle close after ${took} ms`);
  assert.deepEqual(h.cuts, ["idle_timeout"]);
  await h.close();
});

Deno.test("front: a request body that stops arriving is cut at the body timeout", async () => {
  let error = "";
  const h = start(async (req, res) => {
    try {
      while (await req.readBody() !== null);
    } catch (e) {
      error = (e as Error).name;
      throw e;
    }
    await res.end();
  }, { bodyTimeoutMs: 300 });
  const c = await connect(h.port);
  await c.write(enc.encode("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc"));
  assert.equal(await closedWithin(c, 3000), true);
  assert.equal(error, "BodyError");
  assert.deepEqual(h.cuts, ["body_timeout"]);
  await h.close();
});

Deno.test("front: a caller that stops reading is cut at the write timeout", async () => {
  let failed = "";
  const h = start(async (_req, res) => {
    res.head(200, [], -1);
    const chunk = new Uint8Array(256 * 1024);
    try {
      for (let i = 0; i < 4096; i++) await res.write(chunk); // 1 GiB: never all taken
    } catch (e) {
      failed = (e as Error).name;
    }
  }, { writeTimeoutMs: 300 });
  const c = await connect(h.port);
  await c.write(enc.encode("GET /big HTTP/1.1\r\nHost: x\r\n\r\n"));
  // Read nothing: the kernel buffers fill, then the server's writes stall.
  const deadline = Date.now() + 5000;
  while (!failed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.equal(failed, "WriteError");
  assert.deepEqual(h.cuts, ["write_timeout"]);
  c.close();
  await h.close();
});

Deno.test("front: connection caps refuse the excess, in total and per address, and count it", async () => {
  const h = start(echo, { maxConnections: 4, maxConnectionsPerAddress: 3 });
  const held = await Promise.all([1, 2, 3].map(() => connect(h.port)));
  await new Promise((r) => setTimeout(r, 50));
  const refused = await connect(h.port);
  assert.equal(await closedWithin(refused, 2000), true);
  assert.deepEqual(h.cuts, ["max_connections_per_address"]);
  held.forEach((c) => c.close());
  await new Promise((r) => setTimeout(r, 50));
  const ok = await connect(h.port);
  await ok.write(enc.encode("GET /again HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  assert.match(await readAll(ok), /GET \/again $/);
  await h.close();
});

Deno.test("front: Expect: 100-continue gets its interim answer only when the body is read", async () => {
  const h = start(echo);
  const c = await connect(h.port);
  await c.write(enc.encode(
    "POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n",
  ));
  const interim = await readUntil(c, "\r\n\r\n");
  assert.equal(interim, "HTTP/1.1 100 Continue\r\n\r\n");
  await c.write(enc.encode("hi"));
  assert.match(await readUntil(c, "POST /e hi"), /200 OK/);
  c.close();
  await h.close();
});

Deno.test("front: an unread body is drained when small, else the connection closes", async () => {
  const h = start(async (_req, res) => {
    res.head(413, [], 0);
    await res.end();
  });
  const c = await connect(h.port);
  await c.write(enc.encode(
    "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" +
      "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
  ));
  const two = await readUntil(c, "413", 2);
  assert.equal(two.split("HTTP/1.1 413").length - 1, 2);
  c.close();
  const d = await connect(h.port);
  await d.write(enc.encode(`POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n`));
  await d.write(new Uint8Array(200 * 1024)).catch(() => {});
  assert.match(await readAll(d), /^HTTP\/1\.1 413 /);
  await h.close();
});

Deno.test("front: a caller that leaves while its answer is pending aborts the request's signal", async () => {
  let aborted!: () => void;
  const saw = new Promise<void>((r) => aborted = r);
  const h = start(async (req, _res) => {
    await new Promise<void>((r) => req.signal.addEventListener("abort", () => r()));
    aborted();
  });
  const c = await connect(h.port);
  await c.write(enc.encode("GET /wait HTTP/1.1\r\nHost: x\r\n\r\n"));
  await new Promise((r) => setTimeout(r, 50));
  c.close();
  await saw;
  await h.close();
});

Deno.test("front: 101 hands the raw connection over, with bytes sent after the head", async () => {
  const h = start(async (req, res) => {
    assert.equal(req.upgrade, "echo");
    res.head(101, [], -1);
    const raw = await res.upgrade();
    if (raw.head.length) await raw.write(raw.head);
    const buf = new Uint8Array(4096);
    for (;;) {
      const n = await raw.read(buf);
      if (n === null) break;
      await raw.write(buf.slice(0, n));
    }
    await raw.closeWrite();
  });
  const c = await connect(h.port);
  await c.write(enc.encode(
    "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly",
  ));
  const head = await readUntil(c, "early");
  assert.match(head, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
  assert.match(head, /connection: upgrade\r\nupgrade: echo\r\n/);
  await c.write(enc.encode("later"));
  assert.equal(await readUntil(c, "later"), "later");
  await c.closeWrite();
  assert.equal(await readAll(c), "");
  await h.close();
});

Deno.test("front: shutdown closes idle connections and lets a request in flight finish", async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  const h = start(async (_req, res) => {
    await gate;
    res.head(200, [], -1);
    await res.end(enc.encode("done"));
  });
  const idle = await connect(h.port);
  const busy = await connect(h.port);
  await busy.write(enc.encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  await new Promise((r) => setTimeout(r, 50));
  const stopped = h.server.shutdown();
  assert.equal(await closedWithin(idle, 2000), true);
  release();
  const text = await readAll(busy);
  assert.match(text, /connection: close\r\n/);
  assert.ok(text.endsWith("done"));
  await stopped;
  await h.close();
});

Deno.test("front: a handler that fails before answering gets a 500, and the failure is reported", async () => {
  const errors: unknown[] = [];
  const server = new FrontServer({
    scheme: "http",
    handler: () => Promise.reject(new Error("boom")),
    events: { error: (e) => errors.push(e) },
  });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = server.serve(listener);
  const c = await connect((listener.addr as Deno.NetAddr).port);
  await c.write(enc.encode("GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  const text = await readUntil(c, "Internal Server Error\n", 2);
  assert.equal(text.split("HTTP/1.1 500 Internal Server Error").length - 1, 2);
  assert.equal(errors.length, 2);
  assert.equal((errors[0] as Error).message, "boom");
  c.close();
  server.abortAll();
  await server.shutdown();
  await serving;
});
