/**
 * The origin pool against real sockets on 127.0.0.1: `Deno.serve` where a real HTTP
 * server is wanted, and raw listeners scripted byte by byte where the test must see
 * exactly what the pool sent, or make the origin misbehave.
 */
import assert from "node:assert/strict";
import { HOP_BY_HOP } from "../../shared/protocol/mod.ts";
import { randomBytes, sha256 } from "../../shared/mux/testing/harness.ts";
import { within } from "../testing/tunnel.ts";
import { unacceptingListener } from "../testing/unaccepting.ts";
import {
  type BodySource,
  checkRequestLine,
  OriginError,
  OriginPool,
  type OriginPoolOptions,
  type OriginRequest,
  requestHeadLines,
  type ResponseHead,
  type ResponseSink,
} from "./pool.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Text as Latin-1 bytes and back (the scripted origin speaks bytes). */
function bytesOf(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}
function textOf(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += String.fromCharCode(x);
  return s;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => resolve = r);
  return { promise, resolve };
}

/** Polls `cond` until it holds, failing after `ms`. */
async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`Timed out after ${ms} ms: ${what}`);
    await delay(5);
  }
}

/** A request as the scripted origin received it. */
interface Received {
  /** The head through its blank line, exactly as sent. */
  head: string;
  body: Uint8Array;
  /** The chunked framing exactly as sent (chunked requests only). */
  framing?: string;
  /** The body arrived whole (its length, or the last chunk and trailers). */
  complete: boolean;
}

/** One accepted connection of a scripted origin, read through a buffer. */
class Peer {
  readonly conn: Deno.Conn;
  #buf: Uint8Array = new Uint8Array(0);
  #eof = false;
  #closed = false;

  constructor(conn: Deno.Conn) {
    this.conn = conn;
  }

  async #more(): Promise<boolean> {
    if (this.#eof) return false;
    const chunk = new Uint8Array(64 * 1024);
    const n = await this.conn.read(chunk);
    if (n === null) {
      this.#eof = true;
      return false;
    }
    this.#buf = concat(this.#buf, chunk.subarray(0, n));
    return true;
  }

  #take(n: number): Uint8Array {
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }

  /** A head through its blank line; null on EOF before any byte of it. */
  async head(): Promise<string | null> {
    for (;;) {
      const text = textOf(this.#buf);
      const i = text.indexOf("\r\n\r\n");
      if (i >= 0) return textOf(this.#take(i + 4));
      if (!await this.#more()) {
        if (this.#buf.length === 0) return null;
        throw new Error(`EOF inside a request head: ${JSON.stringify(text)}`);
      }
    }
  }

  /** One CRLF-terminated line without its CRLF; null at EOF. */
  async line(): Promise<string | null> {
    for (;;) {
      const i = textOf(this.#buf).indexOf("\r\n");
      if (i >= 0) return textOf(this.#take(i + 2)).slice(0, -2);
      if (!await this.#more()) return null;
    }
  }

  /** `n` bytes, or fewer at EOF. */
  async bytes(n: number): Promise<Uint8Array> {
    while (this.#buf.length < n && await this.#more());
    return this.#take(Math.min(n, this.#buf.length));
  }

  /** Everything until the pool closes its side. */
  async rest(): Promise<Uint8Array> {
    while (await this.#more());
    return this.#take(this.#buf.length);
  }

  /** A whole request (body by Content-Length or chunks, decoded strictly); null at EOF. */
  async request(): Promise<Received | null> {
    const head = await this.head();
    if (head === null) return null;
    const cl = /\r\ncontent-length: (\d+)\r\n/i.exec(head);
    if (/\r\ntransfer-encoding: chunked\r\n/i.test(head)) {
      assert.equal(cl, null, "both Content-Length and Transfer-Encoding");
      let body: Uint8Array = new Uint8Array(0);
      let framing = "";
      for (;;) {
        const size = await this.line();
        if (size === null) return { head, body, framing, complete: false };
        framing += `${size}\r\n`;
        assert.match(size, /^[0-9a-f]+$/, "chunk size line");
        const n = parseInt(size, 16);
        if (n === 0) {
          const trailers = await this.line();
          if (trailers === null) return { head, body, framing, complete: false };
          assert.equal(trailers, "", "no trailers");
          framing += "\r\n";
          return { head, body, framing, complete: true };
        }
        const data = await this.bytes(n);
        body = concat(body, data);
        framing += `<${data.length}>`;
        if (data.length < n) return { head, body, framing, complete: false };
        const end = await this.line();
        if (end === null) return { head, body, framing, complete: false };
        assert.equal(end, "", "chunk data ends with CRLF");
        framing += "\r\n";
      }
    }
    const length = cl ? Number(cl[1]) : 0;
    const body = await this.bytes(length);
    return { head, body, complete: body.length === length };
  }

  async write(data: string | Uint8Array): Promise<void> {
    const b = typeof data === "string" ? bytesOf(data) : data;
    let off = 0;
    while (off < b.length) off += await this.conn.write(b.subarray(off));
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch { /* already closed */ }
  }
}

interface RawOrigin {
  url: URL;
  /** Connections accepted so far. */
  readonly accepts: number;
  /** Stops listening, closes what is left, rethrows a script's failure. */
  close(): Promise<void>;
}

/** A raw TCP origin running `script` on each connection it accepts (then closing it). */
function rawOrigin(script: (peer: Peer, n: number) => Promise<void>): RawOrigin {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const peers: Peer[] = [];
  const runs: Promise<void>[] = [];
  const errors: unknown[] = [];
  let closing = false;
  const accepting = (async () => {
    for await (const conn of listener) {
      const peer = new Peer(conn);
      const n = peers.length;
      peers.push(peer);
      runs.push(
        script(peer, n)
          .catch((e) => void (closing || errors.push(e)))
          .finally(() => peer.close()),
      );
    }
  })();
  return {
    url: new URL(`http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`),
    get accepts() {
      return peers.length;
    },
    async close() {
      closing = true;
      listener.close();
      await accepting.catch(() => {});
      for (const p of peers) p.close();
      await Promise.all(runs);
      if (errors.length > 0) throw errors[0];
    },
  };
}

/** A complete HTTP/1.1 response with a Content-Length body. */
function ok(body: string, extraHeaders = ""): string {
  return `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n${extraHeaders}\r\n${body}`;
}

/** Answers every request on the connection with `answer(request)`, recording them. */
async function keepAlive(
  peer: Peer,
  answer: (r: Received) => string,
  seen: Received[] = [],
): Promise<void> {
  for (;;) {
    const r = await peer.request();
    if (r === null) return;
    seen.push(r);
    await peer.write(answer(r));
  }
}

/** What a sink received, and anything it saw out of order. */
interface Got {
  head: ResponseHead | null;
  body: Uint8Array;
  ended: boolean;
  problems: string[];
}

function collector(): { sink: ResponseSink; got: Got } {
  const got: Got = { head: null, body: new Uint8Array(0), ended: false, problems: [] };
  const sink: ResponseSink = {
    head(h) {
      if (got.head !== null || got.ended) got.problems.push("head twice or after end");
      got.head = h;
    },
    body(view) {
      if (got.head === null || got.ended) got.problems.push("body before head or after end");
      got.body = concat(got.body, view);
    },
    end() {
      if (got.head === null || got.ended) got.problems.push("end before head or twice");
      got.ended = true;
    },
  };
  return { sink, got };
}

function request(o: Partial<OriginRequest> = {}): OriginRequest {
  return {
    method: "GET",
    path: "/",
    headerLines: "host: origin.test\r\n",
    body: new Uint8Array(0),
    ...o,
  };
}

/** One exchange through `pool`, to its clean end. */
async function fetchVia(pool: OriginPool, o: Partial<OriginRequest> = {}): Promise<Got> {
  const { sink, got } = collector();
  await within(pool.request(request(o), sink).done, 5_000, `${o.method ?? "GET"} ${o.path ?? "/"}`);
  assert.deepEqual(got.problems, []);
  assert.ok(got.ended, "the sink got end()");
  return got;
}

/** One exchange that must fail; returns its error and what the sink got. */
async function failVia(
  pool: OriginPool,
  o: Partial<OriginRequest> = {},
): Promise<{ err: OriginError; got: Got }> {
  const { sink, got } = collector();
  const err = await within(
    pool.request(request(o), sink).done.then(
      () => assert.fail("the exchange should have failed"),
      (e) => e,
    ),
    5_000,
    "the exchange to fail",
  );
  assert.ok(err instanceof OriginError, `an OriginError, not ${err}`);
  assert.deepEqual(got.problems, []);
  return { err, got };
}

/** A pool to `url` (each test closes it in its `finally`). */
function poolFor(url: URL, o: OriginPoolOptions = {}): OriginPool {
  return new OriginPool(url, o);
}

/** A body source giving `pieces` (an Error piece is thrown), then null. */
function sourceOf(pieces: (string | Error)[]): BodySource {
  let i = 0;
  return {
    read() {
      const p = pieces[i++];
      if (p === undefined) return Promise.resolve(null);
      if (p instanceof Error) return Promise.reject(p);
      return Promise.resolve(enc.encode(p));
    },
  };
}

const text = (got: Got) => dec.decode(got.body);

// 1. Keep-alive reuse and the exact request bytes.

Deno.test("pool: sequential requests reuse one kept-alive connection and send exactly the expected bytes", async () => {
  const seen: Received[] = [];
  const origin = rawOrigin((peer) =>
    keepAlive(peer, (r) => ok(`#${seen.length}:${r.body.length}`), seen)
  );
  const pool = poolFor(origin.url);
  try {
    const answers: string[] = [];
    for (const path of ["/a?x=1", "/b", "/c%20d"]) {
      answers.push(
        text(
          await fetchVia(pool, {
            path,
            headerLines: "host: origin.test\r\nx-one: 1\r\naccept: */*\r\n",
          }),
        ),
      );
      assert.equal(pool.size, 1);
      assert.equal(pool.idleCount, 1);
    }
    answers.push(text(await fetchVia(pool, { method: "POST", path: "/empty" })));
    answers.push(
      text(await fetchVia(pool, { method: "PUT", path: "/p", body: enc.encode("hello") })),
    );
    assert.deepEqual(answers, ["#1:0", "#2:0", "#3:0", "#4:0", "#5:5"]);
    assert.equal(origin.accepts, 1);
    assert.equal(pool.size, 1);
    assert.equal(pool.idleCount, 1);
    assert.deepEqual(seen.map((r) => r.head), [
      "GET /a?x=1 HTTP/1.1\r\nhost: origin.test\r\nx-one: 1\r\naccept: */*\r\n\r\n",
      "GET /b HTTP/1.1\r\nhost: origin.test\r\nx-one: 1\r\naccept: */*\r\n\r\n",
      "GET /c%20d HTTP/1.1\r\nhost: origin.test\r\nx-one: 1\r\naccept: */*\r\n\r\n",
      "POST /empty HTTP/1.1\r\nhost: origin.test\r\ncontent-length: 0\r\n\r\n",
      "PUT /p HTTP/1.1\r\nhost: origin.test\r\ncontent-length: 5\r\n\r\n",
    ]);
    assert.equal(dec.decode(seen[4]!.body), "hello");
  } finally {
    pool.close();
    await origin.close();
  }
});

// 2. Connections that must not be reused.

/**
 * The first connection answers with `first`; later ones keep alive. The first
 * answer must reach its sink as `expect`, its connection must be closed, and the
 * next request must go on a new connection and get its own answer.
 */
async function notReused(first: string, expect: string, originCloses: boolean): Promise<void> {
  let firstRest: Uint8Array | undefined;
  const firstDone = deferred();
  const origin = rawOrigin(async (peer, n) => {
    if (n > 0) return keepAlive(peer, () => ok("second"));
    try {
      assert.ok(await peer.request());
      await peer.write(first);
      if (!originCloses) firstRest = await peer.rest(); // until the pool hangs up
    } finally {
      firstDone.resolve();
    }
  });
  const pool = poolFor(origin.url);
  try {
    const got1 = await fetchVia(pool);
    assert.equal(text(got1), expect);
    assert.equal(pool.size, 0, "the first connection is closed");
    assert.equal(pool.idleCount, 0);
    await within(firstDone.promise, 5_000, "the first connection to end");
    if (!originCloses) assert.equal(firstRest?.length, 0, "nothing sent after the first request");
    const got2 = await fetchVia(pool);
    assert.equal(text(got2), "second");
    assert.equal(got2.head?.status, 200);
    assert.equal(origin.accepts, 2);
    assert.equal(pool.size, 1);
    assert.equal(pool.idleCount, 1);
  } finally {
    pool.close();
    await origin.close();
  }
}

Deno.test("pool: a response with Connection: close is not reused; the pool closes the connection", async () => {
  await notReused(ok("hi", "Connection: close\r\n"), "hi", false);
});

Deno.test("pool: an HTTP/1.0 response (even with Connection: keep-alive) is not reused", async () => {
  await notReused(
    "HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nhi",
    "hi",
    false,
  );
});

Deno.test("pool: a body delimited by the origin closing is read whole and the connection is not reused", async () => {
  await notReused(
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
    "until the end",
    true,
  );
});

Deno.test("pool: bytes after a response (two answers at once) close the connection and reach nobody", async () => {
  await notReused(ok("first") + ok("EXTRA"), "first", false);
});

// 3. Streamed request bodies.

Deno.test("pool: a streamed body is framed by its declared length, or chunked when unknown, byte-exact", async () => {
  const seen: Received[] = [];
  const origin = rawOrigin((peer) => keepAlive(peer, (r) => ok(`got ${r.body.length}`), seen));
  const pool = poolFor(origin.url);
  try {
    const sized = await fetchVia(pool, {
      method: "POST",
      path: "/sized",
      body: { source: sourceOf(["hel", "", "lo world"]), length: 11 },
    });
    assert.equal(text(sized), "got 11");
    const big = randomBytes(3, 200_003);
    let off = 0;
    const chunked = await fetchVia(pool, {
      method: "POST",
      path: "/chunked",
      body: {
        source: {
          read: () => {
            if (off >= big.length) return Promise.resolve(null);
            const piece = big.subarray(off, off + 70_000);
            off += piece.length;
            return Promise.resolve(piece);
          },
        },
        length: -1,
      },
    });
    assert.equal(text(chunked), `got ${big.length}`);
    const small = await fetchVia(pool, {
      method: "PATCH",
      path: "/chunked-small",
      body: { source: sourceOf(["abc", "", "0123456789abcdefg"]), length: -1 },
    });
    assert.equal(text(small), "got 20");
    assert.equal(origin.accepts, 1, "all on one kept-alive connection");
    assert.equal(pool.idleCount, 1);

    assert.equal(
      seen[0]!.head,
      "POST /sized HTTP/1.1\r\nhost: origin.test\r\ncontent-length: 11\r\n\r\n",
    );
    assert.equal(dec.decode(seen[0]!.body), "hello world");
    assert.equal(
      seen[1]!.head,
      "POST /chunked HTTP/1.1\r\nhost: origin.test\r\ntransfer-encoding: chunked\r\n\r\n",
    );
    assert.ok(seen[1]!.complete);
    assert.equal(sha256(seen[1]!.body), sha256(big));
    assert.equal(
      seen[1]!.framing,
      "11170\r\n<70000>\r\n11170\r\n<70000>\r\nea63\r\n<60003>\r\n0\r\n\r\n",
    );
    assert.equal(dec.decode(seen[2]!.body), "abc0123456789abcdefg");
    // The empty piece is not sent as a chunk (a zero-size chunk would end the body).
    assert.equal(seen[2]!.framing, "3\r\n<3>\r\n11\r\n<17>\r\n0\r\n\r\n");
  } finally {
    pool.close();
    await origin.close();
  }
});

Deno.test("pool: a body source that ends short, runs long or throws → BODY_FAILED and its connection is closed", async () => {
  const seen: { head: string; rest: string }[] = [];
  const origin = rawOrigin(async (peer) => {
    const head = await peer.head();
    if (head === null) return;
    seen.push({ head, rest: textOf(await peer.rest()) }); // everything until the pool hangs up
  });
  const pool = poolFor(origin.url);
  try {
    const cases: [string, BodySource, number][] = [
      ["short", sourceOf(["abc"]), 10],
      ["long", sourceOf(["abcdef"]), 3],
      ["long-later", sourceOf(["ab", "cd"]), 3],
      ["throws", sourceOf(["abc", new Error("the tunnel stream was reset")]), -1],
      ["throws-first", sourceOf([new Error("gone")]), 5],
    ];
    for (const [i, [name, source, length]] of cases.entries()) {
      const { err, got } = await failVia(pool, {
        method: "POST",
        path: `/${name}`,
        body: { source, length },
      });
      assert.equal(err.code, "BODY_FAILED", name);
      assert.equal(err.responded, false, name);
      assert.equal(got.head, null);
      assert.equal(pool.size, 0, `${name}: the connection is closed`);
      assert.equal(pool.idleCount, 0);
      await until(() => seen.length === i + 1, 2_000, `${name}: the origin to see the close`);
    }
    assert.equal(origin.accepts, cases.length, "a new connection each time");
    assert.deepEqual(seen.map((s) => s.rest), [
      "abc", // short: what there was, then the close (never a complete body)
      "", // long: nothing past the declared length is ever written
      "ab", // long, later: the piece that overruns is not written
      "3\r\nabc\r\n", // throws: no last chunk, so the origin knows it is cut
      "",
    ]);
    assert.match(seen[0]!.head, /\r\ncontent-length: 10\r\n/);
    assert.match(seen[3]!.head, /\r\ntransfer-encoding: chunked\r\n/);
  } finally {
    pool.close();
    await origin.close();
  }
});

// 4. Early response.

Deno.test("pool: an origin answering 413 before reading a streamed body → the answer is delivered, the connection is not reused", async () => {
  const releaseBody = deferred<null>();
  let reads = 0;
  let originRest = "";
  const origin = rawOrigin(async (peer, n) => {
    if (n > 0) return keepAlive(peer, () => ok("next"));
    const head = await peer.head();
    assert.match(head ?? "", /^PUT \/upload HTTP\/1\.1\r\n/);
    await peer.write("HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n\r\ntoo big!");
    originRest = textOf(await peer.rest());
  });
  const pool = poolFor(origin.url);
  try {
    const source: BodySource = {
      read() {
        reads++;
        // The first piece now; then the caller is slow (the body may never end).
        return reads === 1 ? Promise.resolve(enc.encode("first piece")) : releaseBody.promise;
      },
    };
    const got = await fetchVia(pool, {
      method: "PUT",
      path: "/upload",
      body: { source, length: 1_000_000 },
    });
    assert.equal(got.head?.status, 413);
    assert.equal(got.head?.reason, "Payload Too Large");
    assert.equal(text(got), "too big!");
    assert.equal(pool.size, 0, "not at a request boundary: closed");
    assert.equal(pool.idleCount, 0);
    releaseBody.resolve(null);
    assert.equal(text(await fetchVia(pool)), "next");
    assert.equal(origin.accepts, 2);
    assert.equal(originRest, "first piece");
  } finally {
    releaseBody.resolve(null);
    pool.close();
    await origin.close();
  }
});

// 5. Stale kept-alive connections.

/** Answers the first request on the first connection, then closes it on the second without a word. */
function dropsSecondRequest(secondSeen: Received[]): RawOrigin {
  return rawOrigin(async (peer, n) => {
    if (n > 0) return keepAlive(peer, () => ok("fresh"));
    assert.ok(await peer.request());
    await peer.write(ok("first"));
    const second = await peer.request();
    if (second) secondSeen.push(second);
  });
}

Deno.test("pool: a GET on a kept-alive connection the origin drops is sent again once on a new connection", async () => {
  const second: Received[] = [];
  const origin = dropsSecondRequest(second);
  const pool = poolFor(origin.url);
  try {
    assert.equal(text(await fetchVia(pool)), "first");
    const got = await fetchVia(pool, { path: "/again" });
    assert.equal(got.head?.status, 200);
    assert.equal(text(got), "fresh");
    assert.equal(origin.accepts, 2);
    assert.equal(second.length, 1, "the dropped request did reach the first connection");
    assert.equal(pool.size, 1);
  } finally {
    pool.close();
    await origin.close();
  }
});

Deno.test("pool: a POST on a kept-alive connection the origin drops is not resent → ECONNRESET, responded false", async () => {
  const second: Received[] = [];
  const origin = dropsSecondRequest(second);
  const pool = poolFor(origin.url);
  try {
    assert.equal(text(await fetchVia(pool)), "first");
    const { err, got } = await failVia(pool, { method: "POST", body: enc.encode("data") });
    assert.equal(err.code, "ECONNRESET");
    assert.equal(err.responded, false);
    assert.equal(got.head, null);
    assert.equal(origin.accepts, 1, "not sent again");
    assert.equal(dec.decode(second[0]?.body), "data");
    assert.equal(pool.size, 0);
  } finally {
    pool.close();
    await origin.close();
  }
});

Deno.test("pool: an idle connection the origin closes leaves the pool at once; the next request connects anew", async () => {
  const hangUp = deferred();
  const origin = rawOrigin(async (peer, n) => {
    if (n > 0) return keepAlive(peer, () => ok("fresh"));
    assert.ok(await peer.request());
    await peer.write(ok("first"));
    await hangUp.promise; // then close (the origin's keep-alive timeout)
  });
  const pool = poolFor(origin.url);
  try {
    assert.equal(text(await fetchVia(pool)), "first");
    assert.equal(pool.idleCount, 1);
    hangUp.resolve();
    await until(() => pool.idleCount === 0 && pool.size === 0, 2_000, "the pool to notice");
    assert.equal(text(await fetchVia(pool)), "fresh");
    assert.equal(origin.accepts, 2);
  } finally {
    hangUp.resolve();
    pool.close();
    await origin.close();
  }
});

// 6. Idle timeout.

Deno.test("pool: an idle connection is closed after idleTimeoutMs", async () => {
  let eofAfter = -1;
  let answeredAt = 0;
  const origin = rawOrigin(async (peer) => {
    assert.ok(await peer.request());
    await peer.write(ok("x"));
    answeredAt = performance.now();
    const rest = await peer.rest();
    assert.equal(rest.length, 0);
    eofAfter = performance.now() - answeredAt;
  });
  const pool = poolFor(origin.url, { idleTimeoutMs: 200 });
  try {
    await fetchVia(pool);
    assert.equal(pool.idleCount, 1);
    await until(() => eofAfter >= 0, 1_000, "the origin to see the idle connection closed");
    assert.ok(eofAfter >= 190, `closed after ${eofAfter} ms`);
    assert.equal(pool.size, 0);
    assert.equal(pool.idleCount, 0);
  } finally {
    pool.close();
    await origin.close();
  }
});

// 7. Errors.

Deno.test("pool: connection refused → ECONNREFUSED, responded false", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  const pool = poolFor(new URL(`http://127.0.0.1:${port}`));
  try {
    const { err, got } = await failVia(pool);
    assert.equal(err.code, "ECONNREFUSED");
    assert.equal(err.responded, false);
    assert.equal(got.head, null);
    assert.equal(pool.size, 0);
  } finally {
    pool.close();
  }
});

Deno.test("pool: a connection the origin never accepts → LOCAL_CONNECT_TIMEOUT after the given time; abort() stops the connect at once", async () => {
  const hung = await unacceptingListener();
  try {
    const url = new URL(`http://127.0.0.1:${hung.port}`);
    const pool = poolFor(url, { connectTimeoutMs: 250 });
    const patient = poolFor(url, { connectTimeoutMs: 30_000 });
    try {
      const t0 = performance.now();
      const { err } = await failVia(pool);
      const took = performance.now() - t0;
      assert.equal(err.code, "LOCAL_CONNECT_TIMEOUT");
      assert.equal(err.responded, false);
      assert.ok(took >= 200 && took < 3_000, `gave up after ${took} ms`);
      assert.equal(pool.size, 0);

      // abort() while connecting (the caller left) gives up at once, not at the timeout.
      const { sink } = collector();
      const ex = patient.request(request({}), sink);
      const t1 = performance.now();
      setTimeout(() => ex.abort(), 50);
      const err2 = await within(ex.done.then(() => null, (e) => e), 5_000, "the abort");
      assert.ok(err2 instanceof OriginError);
      assert.equal(err2.code, "ABORTED");
      assert.ok(performance.now() - t1 < 2_000, "abort did not wait for the connect timeout");
      assert.equal(patient.size, 0);
    } finally {
      pool.close();
      patient.close();
    }
  } finally {
    await hung.close();
  }
});

Deno.test("pool: an invalid response → BAD_RESPONSE, responded false, and the connection is closed", async () => {
  let rest: string | undefined;
  const origin = rawOrigin(async (peer) => {
    assert.ok(await peer.request());
    await peer.write("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n");
    rest = textOf(await peer.rest());
  });
  const pool = poolFor(origin.url);
  try {
    const { err, got } = await failVia(pool);
    assert.equal(err.code, "BAD_RESPONSE");
    assert.equal(err.responded, false);
    assert.equal(got.head, null);
    assert.equal(pool.size, 0);
    await until(() => rest !== undefined, 2_000, "the origin to see EOF");
    assert.equal(rest, "");
  } finally {
    pool.close();
    await origin.close();
  }
});

Deno.test("pool: a response cut mid-body rejects with responded true after the sink got the head", async () => {
  const origin = rawOrigin(async (peer) => {
    assert.ok(await peer.request());
    await peer.write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc");
  });
  const pool = poolFor(origin.url);
  try {
    const { err, got } = await failVia(pool);
    assert.equal(err.code, "ECONNRESET");
    assert.equal(err.responded, true);
    assert.equal(got.head?.status, 200);
    assert.equal(text(got), "abc");
    assert.equal(got.ended, false, "a cut body never gets end()");
    assert.equal(pool.size, 0);
  } finally {
    pool.close();
    await origin.close();
  }
});

Deno.test("pool: abort() while waiting for the head rejects with ABORTED and closes the connection", async () => {
  const requested = deferred();
  let rest: string | undefined;
  const origin = rawOrigin(async (peer) => {
    assert.ok(await peer.request());
    requested.resolve();
    rest = textOf(await peer.rest()); // never answers
  });
  const pool = poolFor(origin.url);
  try {
    const { sink, got } = collector();
    const ex = pool.request(request({ path: "/slow" }), sink);
    await within(requested.promise, 5_000, "the request to reach the origin");
    ex.abort();
    const err = await within(
      ex.done.then(() => assert.fail("aborted, yet resolved"), (e) => e),
      2_000,
      "done to reject after abort()",
    );
    assert.ok(err instanceof OriginError);
    assert.equal(err.code, "ABORTED");
    assert.equal(err.responded, false);
    assert.equal(got.head, null);
    assert.equal(pool.size, 0);
    await until(() => rest !== undefined, 2_000, "the origin to see the connection close");
    assert.equal(rest, "");
  } finally {
    pool.close();
    await origin.close();
  }
});

Deno.test("pool: abort() after done settled leaves the connection alone (by then it is the pool's or another request's)", async () => {
  const origin = rawOrigin((peer) => keepAlive(peer, (r) => ok(r.head.split(" ")[1]!)));
  const pool = poolFor(origin.url);
  try {
    const first = pool.request(request({ path: "/first" }), collector().sink);
    await first.done;
    // The next request takes the kept-alive connection; the first one's caller aborts late.
    const { sink, got } = collector();
    const second = pool.request(request({ path: "/second" }), sink);
    first.abort();
    await within(second.done, 5_000, "the second request");
    assert.equal(text(got), "/second");
    first.abort();
    assert.equal(pool.idleCount, 1);
    assert.equal(text(await fetchVia(pool, { path: "/third" })), "/third");
    assert.equal(origin.accepts, 1);
  } finally {
    pool.close();
    await origin.close();
  }
});

// 8. Backpressure.

Deno.test("pool: a slow sink is never called again before its promise settles; 8 MiB arrive intact and in order", async () => {
  const data = randomBytes(11, 8 * 1024 * 1024);
  const srv = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => {
    let i = 0;
    return new Response(
      new ReadableStream({
        pull(c) {
          if (i >= data.length) return c.close();
          c.enqueue(data.slice(i, i + 100_000));
          i += 100_000;
        },
      }),
    );
  });
  const pool = poolFor(new URL(`http://127.0.0.1:${srv.addr.port}`));
  try {
    const out = new Uint8Array(data.length);
    let off = 0;
    let busy = false;
    let overlaps = 0;
    let calls = 0;
    let ended = false;
    const problems: string[] = [];
    const sink: ResponseSink = {
      head(h) {
        if (h.status !== 200) problems.push(`status ${h.status}`);
      },
      body(view) {
        if (busy) overlaps++;
        if (ended) problems.push("body after end");
        busy = true;
        calls++;
        // Copy only when the promise settles: the view must still hold its bytes then.
        return new Promise<void>((resolve) =>
          setTimeout(() => {
            if (off + view.length > out.length) problems.push("more bytes than sent");
            else out.set(view, off);
            off += view.length;
            busy = false;
            resolve();
          }, 5)
        );
      },
      end() {
        if (busy) problems.push("end before the last body() settled");
        ended = true;
      },
    };
    await within(pool.request(request(), sink).done, 10_000, "8 MiB through a slow sink");
    assert.deepEqual(problems, []);
    assert.equal(overlaps, 0, "body() called while the previous promise was pending");
    assert.ok(ended);
    assert.equal(off, data.length);
    assert.equal(sha256(out), sha256(data));
    assert.ok(calls >= data.length / (64 * 1024), `${calls} body calls`);
    assert.equal(pool.idleCount, 1, "chunked response read to its end: reusable");
  } finally {
    pool.close();
    await srv.shutdown();
  }
});

// 9. Responses without a body.

Deno.test("pool: HEAD with Content-Length 1000, 204 and 304 carry no body and keep the connection", async () => {
  const seen: Received[] = [];
  const origin = rawOrigin((peer) =>
    keepAlive(peer, (r) => {
      if (r.head.startsWith("HEAD ")) return "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
      if (r.head.startsWith("GET /204 ")) return "HTTP/1.1 204 No Content\r\nX-K: v\r\n\r\n";
      if (r.head.startsWith("GET /304 ")) {
        return 'HTTP/1.1 304 Not Modified\r\nETag: "e1"\r\nContent-Length: 1000\r\n\r\n';
      }
      return ok("after");
    }, seen)
  );
  const pool = poolFor(origin.url);
  try {
    const head = await fetchVia(pool, { method: "HEAD", path: "/h" });
    assert.equal(head.head?.status, 200);
    assert.deepEqual(head.head?.headers, [["content-length", "1000"]]);
    assert.equal(head.body.length, 0);
    const noContent = await fetchVia(pool, { path: "/204" });
    assert.equal(noContent.head?.status, 204);
    assert.equal(noContent.body.length, 0);
    const notModified = await fetchVia(pool, { path: "/304" });
    assert.equal(notModified.head?.status, 304);
    assert.equal(notModified.body.length, 0);
    assert.equal(pool.idleCount, 1);
    assert.equal(text(await fetchVia(pool, { path: "/after" })), "after");
    assert.equal(origin.accepts, 1, "all four on one connection");
    assert.equal(seen.length, 4);
    assert.equal(seen[0]!.head, "HEAD /h HTTP/1.1\r\nhost: origin.test\r\n\r\n");
  } finally {
    pool.close();
    await origin.close();
  }
});

// 10. Request head building and checking.

Deno.test("requestHeadLines: drops hop-by-hop, Connection-named, second Host and invalid headers; joins Cookie; returns Content-Length", () => {
  const { lines, contentLength } = requestHeadLines([
    ["Host", "app.example"],
    ["Connection", "keep-alive, X-Secret"],
    ["X-Secret", "s"],
    ["Keep-Alive", "timeout=5"],
    ["TE", "trailers"],
    ["Upgrade", "h2c"],
    ["Proxy-Authorization", "Basic eA=="],
    ["host", "evil.example"],
    ["Cookie", "a=1"],
    ["X-Ok", "v"],
    ["cookie", "b=2"],
    ["Content-Length", "12"],
    ["Transfer-Encoding", "chunked"],
    ["X-Crlf", "a\r\nInjected: 1"],
    ["X-Lf", "a\nb"],
    ["X-Cr", "a\rb"],
    ["X-Nul", "a\0b"],
    ["Bad Name", "v"],
    ["Bad:Name", "v"],
    ["", "empty name"],
    ["X-Tab", "a\tb"],
    ["X-Latin1", "caf\u00e9"],
    ["X-Wide", "\u20ac"],
  ], HOP_BY_HOP);
  assert.equal(
    lines,
    "host: app.example\r\nx-ok: v\r\nx-tab: a\tb\r\nx-latin1: caf\u00e9\r\ncookie: a=1; b=2\r\n",
  );
  assert.equal(contentLength, 12);

  // Framing is the client's even when the caller's hop-by-hop set forgets it.
  const framing = requestHeadLines([
    ["host", "h"],
    ["transfer-encoding", "chunked"],
    ["content-length", "abc"],
  ], new Set());
  assert.equal(framing.lines, "host: h\r\n");
  assert.equal(framing.contentLength, -1);
  assert.equal(requestHeadLines([["content-length", "-1"]], HOP_BY_HOP).contentLength, -1);
  assert.equal(requestHeadLines([["content-length", "1e3"]], HOP_BY_HOP).contentLength, -1);
  assert.equal(requestHeadLines([["content-length", "0"]], HOP_BY_HOP).contentLength, 0);
  assert.deepEqual(requestHeadLines([], HOP_BY_HOP), { lines: "", contentLength: -1 });

  // The caller's own filter.
  const skipped = requestHeadLines(
    [["host", "h"], ["x-forwarded-for", "1.2.3.4"], ["x-keep", "k"]],
    HOP_BY_HOP,
    (name) => name.startsWith("x-forwarded-"),
  );
  assert.equal(skipped.lines, "host: h\r\nx-keep: k\r\n");
});

Deno.test("checkRequestLine: rejects a method that is not a token and an empty target or one with space, CR or LF", () => {
  assert.equal(checkRequestLine("GET", "/a?b=c"), null);
  assert.equal(checkRequestLine("M-SEARCH", "*"), null);
  assert.equal(checkRequestLine("GET", "/caf\u00e9"), null);
  for (const method of ["G ET", "GET ", "", "GE\r\nT", "GET/"]) {
    assert.equal(checkRequestLine(method, "/"), "Invalid method", JSON.stringify(method));
  }
  for (const target of ["", "/a b", "/a\rb", "/a\nb", "/a\tb", "/a\0", "/\u20ac"]) {
    assert.equal(checkRequestLine("GET", target), "Invalid request target", JSON.stringify(target));
  }
});
