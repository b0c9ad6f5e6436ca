/**
 * The front's request parser on its own: request lines and target forms, Host,
 * framing by Content-Length and chunks, keep-alive and pipelining with next(),
 * and a request-smuggling corpus of refusals, each with the status to answer.
 * Every case is fed whole, one byte at a time, split at every offset and at every
 * pair of offsets, and must read (or be refused) the same each way.
 */
import assert from "node:assert/strict";
import type { HeaderList } from "../../shared/protocol/mod.ts";
import {
  DEFAULT_MAX_HEAD_BYTES,
  DEFAULT_MAX_HEADERS,
  DEFAULT_MAX_TARGET_BYTES,
  MAX_LEADING_EMPTY_LINES,
  RequestError,
  type RequestHead,
  RequestParser,
  type RequestParserOptions,
} from "./request_parser.ts";

/** Latin-1 bytes of a string (one code unit, one byte), so tests can write any byte. */
const bytes = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));
const latin1 = (b: Uint8Array) => {
  let s = "";
  for (let i = 0; i < b.length; i += 4096) s += String.fromCharCode(...b.subarray(i, i + 4096));
  return s;
};

interface Message {
  head: RequestHead;
  /** Body bytes, copied out of the fed buffers, as Latin-1 text. */
  body: string;
  trailers: HeaderList;
}

interface Run {
  parser: RequestParser;
  /** Messages whose end() came, in order. */
  done: Message[];
  /** The message being read (head seen, no end yet), if any. */
  current: Message | null;
  /** Sum of what each feed() said it consumed. */
  consumed: number;
}

function newRun(options?: RequestParserOptions): Run {
  const run: Run = { parser: null!, done: [], current: null, consumed: 0 };
  run.parser = new RequestParser({
    head: (head) => {
      assert.equal(run.current, null, "head() twice without end()");
      run.current = { head, body: "", trailers: [] };
    },
    // The view points into the fed buffer: copy it (here, into a string).
    body: (v) => {
      assert.ok(v.length > 0, "empty body view");
      run.current!.body += latin1(v);
    },
    trailers: (t) => run.current!.trailers.push(...t),
    end: () => {
      run.done.push(run.current!);
      run.current = null;
    },
  }, options);
  return run;
}

/**
 * Feeds `raw` in pieces cut at `cuts`, as a server would: each piece fed until used
 * up, calling next() after every end() (before feeding what is left).
 */
function feedCut(raw: Uint8Array, cuts: number[], options?: RequestParserOptions): Run {
  const run = newRun(options);
  let from = 0;
  let ended = 0;
  for (const to of [...cuts, raw.length]) {
    let piece = raw.slice(from, to); // a fresh buffer each time, as a socket gives
    from = to;
    while (piece.length > 0) {
      if (run.done.length > ended) {
        run.parser.next();
        ended = run.done.length;
      }
      const used = run.parser.feed(piece);
      assert.ok(used >= 0 && used <= piece.length);
      run.consumed += used;
      if (used < piece.length) {
        assert.ok(run.done.length > ended, "feed left bytes without ending a request");
      }
      piece = piece.subarray(used);
    }
  }
  return run;
}

/** Every way of feeding `n` bytes: whole, bytewise, every 2-piece split, every 3-piece split. */
function* splits(n: number, pairs = true): Generator<{ cuts: number[]; how: string }> {
  yield { cuts: [], how: "whole" };
  yield { cuts: Array.from({ length: Math.max(0, n - 1) }, (_, i) => i + 1), how: "bytewise" };
  for (let i = 0; i <= n; i++) yield { cuts: [i], how: `split at ${i}` };
  if (!pairs) return;
  for (let i = 1; i < n; i++) {
    for (let j = i + 1; j < n; j++) yield { cuts: [i, j], how: `split at ${i} and ${j}` };
  }
}

/** What a test expects of one request; unnamed fields take the defaults of `expected`. */
interface Want {
  method?: string;
  target?: string;
  minor?: 0 | 1;
  headers: HeaderList;
  /** Default: the Host field's value, or null. */
  host?: string | null;
  body?: RequestHead["body"];
  contentLength?: number;
  keepAlive?: boolean;
  expectContinue?: boolean;
  upgrade?: string | null;
  connection?: string[];
  data?: string;
  trailers?: HeaderList;
}

function expected(w: Want): { head: unknown; body: string; trailers: HeaderList } {
  const minor = w.minor ?? 1;
  const connection = w.connection ?? [];
  return {
    head: {
      method: w.method ?? "GET",
      target: w.target ?? "/",
      minor,
      headers: w.headers,
      host: w.host !== undefined ? w.host : (w.headers.find(([n]) => n === "host")?.[1] ?? null),
      body: w.body ?? "none",
      contentLength: w.contentLength ?? 0,
      keepAlive: w.keepAlive ?? (!connection.includes("close") &&
        (minor === 1 || connection.includes("keep-alive"))),
      expectContinue: w.expectContinue ?? false,
      upgrade: w.upgrade ?? null,
      connection: [...connection].sort(),
    },
    body: w.data ?? "",
    trailers: w.trailers ?? [],
  };
}

const shown = (m: Message) => ({
  head: { ...m.head, connection: [...m.head.connection].sort() },
  body: m.body,
  trailers: m.trailers,
});

/** Parses `raw` every way and checks each reads the requests `want`, consuming every byte. */
function expectEveryWay(raw: string, want: Want[], options?: RequestParserOptions): void {
  const b = bytes(raw);
  const wanted = want.map(expected);
  for (const { cuts, how } of splits(b.length)) {
    const where = `${JSON.stringify(raw)} fed ${how}`;
    const run = feedCut(b, cuts, options);
    assert.equal(run.current, null, `a request left unfinished: ${where}`);
    assert.deepEqual(run.done.map(shown), wanted, where);
    assert.equal(run.consumed, b.length, `consumed: ${where}`);
    assert.equal(run.parser.inBody, false, where);
  }
}

/** Parses `raw` every way and expects a RequestError with `status` every way. */
function expectRefused(raw: string, status: number, options?: RequestParserOptions): void {
  const b = bytes(raw);
  // 3-piece splits of long cases add little but time: those get every 2-piece split only.
  for (const { cuts, how } of splits(b.length, b.length <= 120)) {
    const where = `${JSON.stringify(raw)} fed ${how}`;
    assert.throws(
      () => feedCut(b, cuts, options),
      (e: unknown) => {
        assert.ok(e instanceof RequestError, `${where}: ${e}`);
        assert.equal(e.status, status, `${where}: ${e.message}`);
        return true;
      },
      `${where} should be refused with ${status}`,
    );
  }
  // Once it has thrown, the parser is dead: it throws the same error again.
  const p = new RequestParser({ head() {}, body() {}, end() {} }, options);
  let first: unknown;
  try {
    for (let i = 0; i < b.length; i++) {
      if (p.feed(b.subarray(i, i + 1)) === 0) p.next();
    }
  } catch (e) {
    first = e;
  }
  assert.ok(first instanceof RequestError, `${JSON.stringify(raw)} bytewise`);
  assert.throws(() => p.feed(bytes("GET / HTTP/1.1\r\nHost: a\r\n\r\n")), (e) => e === first);
}

const H = "Host: example.com\r\n";
const HOST: [string, string] = ["host", "example.com"];

Deno.test("request parser: GET, POST with Content-Length, HTTP/1.0, Latin-1 at every split", () => {
  expectEveryWay("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", [{ headers: [HOST] }]);
  // Names lowercased, values' OWS trimmed, repeats kept in order, empty values, HTAB inside.
  expectEveryWay(
    "GET /a/b?c=d&e=%20f HTTP/1.1\r\nhost:example.com\r\nX-Multi: a\r\nset-cookie:  a=1 \t\r\n" +
      "Set-Cookie:b=2\r\nX-Empty:\r\nX-Tab:\ta\tb\t\r\n\r\n",
    [{
      target: "/a/b?c=d&e=%20f",
      headers: [
        HOST,
        ["x-multi", "a"],
        ["set-cookie", "a=1"],
        ["set-cookie", "b=2"],
        ["x-empty", ""],
        ["x-tab", "a\tb"],
      ],
    }],
  );
  // A body with CR, LF and a request-looking line in it is just bytes.
  expectEveryWay(
    "POST /upload HTTP/1.1\r\nHost: example.com\r\nContent-Length: 26\r\n\r\n" +
      "\r\n\r\nGET / HTTP/1.1\r\n\r\n\n\r\x00\xff",
    [{
      method: "POST",
      target: "/upload",
      headers: [HOST, ["content-length", "26"]],
      body: "length",
      contentLength: 26,
      data: "\r\n\r\nGET / HTTP/1.1\r\n\r\n\n\r\x00\xff",
    }],
  );
  expectEveryWay("PUT /x HTTP/1.1\r\nHost: example.com\r\nContent-Length:  007 \r\n\r\nhello!!", [{
    method: "PUT",
    target: "/x",
    headers: [HOST, ["content-length", "007"]],
    body: "length",
    contentLength: 7,
    data: "hello!!",
  }]);
  expectEveryWay("DELETE /x HTTP/1.1\r\nContent-Length: 0\r\nHost: example.com\r\n\r\n", [{
    method: "DELETE",
    target: "/x",
    headers: [["content-length", "0"], HOST],
    body: "length",
  }]);
  // HTTP/1.0: Host may be missing; no keep-alive unless asked for.
  expectEveryWay("GET /old HTTP/1.0\r\n\r\n", [{
    target: "/old",
    minor: 0,
    headers: [],
    keepAlive: false,
  }]);
  expectEveryWay(
    "POST /old HTTP/1.0\r\nHost: example.com\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok",
    [{
      method: "POST",
      target: "/old",
      minor: 0,
      headers: [HOST, ["connection", "Keep-Alive"], ["content-length", "2"]],
      connection: ["keep-alive"],
      body: "length",
      contentLength: 2,
      data: "ok",
    }],
  );
  // Field values are Latin-1, one byte one code unit; body bytes pass unchanged.
  expectEveryWay(
    "POST / HTTP/1.1\r\nHost: example.com\r\nX-Name: caf\xe9 \x80\xff\r\nX-Utf8: \xc3\xa9\r\n" +
      "Content-Length: 4\r\n\r\n\xe9\x00\x80\xff",
    [{
      method: "POST",
      headers: [
        HOST,
        ["x-name", "caf\u00e9 \u0080\u00ff"],
        ["x-utf8", "\u00c3\u00a9"],
        ["content-length", "4"],
      ],
      body: "length",
      contentLength: 4,
      data: "\xe9\x00\x80\xff",
    }],
  );
  // Any token is a method (methods are case-sensitive; the caller decides what it serves).
  expectEveryWay("M-SEARCH* /x HTTP/1.1\r\nHost: example.com\r\n\r\n", [{
    method: "M-SEARCH*",
    target: "/x",
    headers: [HOST],
  }]);
});

Deno.test("request parser: chunked bodies (extensions, uppercase hex, trailers) at every split", () => {
  const head = "POST /c HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n";
  const base = {
    method: "POST",
    target: "/c",
    headers: [HOST, ["transfer-encoding", "chunked"]] as HeaderList,
    body: "chunked" as const,
  };
  expectEveryWay(
    head + '5\r\nhello\r\n1;name=value\r\n \r\nA;a;b="q \\" s"\r\n0123456789\r\n0\r\n\r\n',
    [
      { ...base, data: "hello 0123456789" },
    ],
  );
  expectEveryWay(
    head + "1B\r\n" + "x".repeat(27) + "\r\n000;last\r\nX-Checksum: abc\r\nx-other:  2 \r\n\r\n",
    [{ ...base, data: "x".repeat(27), trailers: [["x-checksum", "abc"], ["x-other", "2"]] }],
  );
  expectEveryWay(head + "0\r\n\r\n", [base]);
  // Chunk data holding CRLFs and a "0" line: only the sizes frame it.
  expectEveryWay(head + "5\r\n0\r\n\r\n\r\n0\r\n\r\n", [{ ...base, data: "0\r\n\r\n" }]);
  // 16 hex digits with leading zeros are fine.
  expectEveryWay(head + "0000000000000003\r\nabc\r\n0\r\n\r\n", [{ ...base, data: "abc" }]);
  // OWS (spaces: no tabs in framing fields) and case around "chunked".
  expectEveryWay(
    "POST /c HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding:  Chunked  \r\n\r\n2\r\nok\r\n0\r\n\r\n",
    [{ ...base, headers: [HOST, ["transfer-encoding", "Chunked"]], data: "ok" }],
  );
});

Deno.test("request parser: target forms, Host forms, leading empty lines, Expect, Upgrade, CONNECT", () => {
  // absolute-form: the authority is the host, and Host must say the same (in any case).
  expectEveryWay("GET hTTp://Example.com:8080/p?q=1 HTTP/1.1\r\nHost: example.COM:8080\r\n\r\n", [{
    target: "hTTp://Example.com:8080/p?q=1",
    headers: [["host", "example.COM:8080"]],
    host: "Example.com:8080",
  }]);
  expectEveryWay("GET https://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n", [{
    target: "https://example.com",
    headers: [HOST],
    host: "example.com",
  }]);
  // HTTP/1.0 absolute-form without Host: the authority.
  expectEveryWay("GET http://[::1]:8080/x HTTP/1.0\r\n\r\n", [{
    target: "http://[::1]:8080/x",
    minor: 0,
    headers: [],
    host: "[::1]:8080",
    keepAlive: false,
  }]);
  expectEveryWay("OPTIONS * HTTP/1.1\r\nHost: example.com\r\n\r\n", [{
    method: "OPTIONS",
    target: "*",
    headers: [HOST],
  }]);
  // CONNECT: authority-form; host is the Host field (which need not carry the port).
  expectEveryWay("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n", [{
    method: "CONNECT",
    target: "example.com:443",
    headers: [HOST],
  }]);
  // Host forms: IPv4, IPv6 (with an IPv4 tail), reg-name with sub-delims and %XX, ports.
  for (
    const host of [
      "127.0.0.1",
      "127.0.0.1:8080",
      "[::1]",
      "[2001:db8::ff00:42:8329]:443",
      "[::ffff:192.0.2.1]",
      "[1:2:3:4:5:6:7:8]",
      "a-b.c_d~e!$&'()*+,;=%41",
      "x:65535",
      "x:0",
    ]
  ) {
    expectEveryWay(`GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`, [{ headers: [["host", host]] }]);
  }
  // Up to MAX_LEADING_EMPTY_LINES empty lines before the request line are skipped.
  expectEveryWay("\r\n".repeat(MAX_LEADING_EMPTY_LINES) + "GET / HTTP/1.1\r\n" + H + "\r\n", [{
    headers: [HOST],
  }]);
  // Expect: 100-continue (any case) for HTTP/1.1; HTTP/1.0 ignores it.
  expectEveryWay(
    "POST / HTTP/1.1\r\nHost: example.com\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\nok",
    [{
      method: "POST",
      headers: [HOST, ["expect", "100-Continue"], ["content-length", "2"]],
      expectContinue: true,
      body: "length",
      contentLength: 2,
      data: "ok",
    }],
  );
  expectEveryWay("GET / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n", [{
    minor: 0,
    headers: [["expect", "100-continue"]],
    keepAlive: false,
    expectContinue: false,
  }]);
  // Upgrade: reported when Connection lists it (HTTP/1.1 only).
  expectEveryWay(
    "GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n" +
      "Sec-WebSocket-Version: 13\r\n\r\n",
    [{
      target: "/ws",
      headers: [
        HOST,
        ["connection", "keep-alive, Upgrade"],
        ["upgrade", "websocket"],
        ["sec-websocket-version", "13"],
      ],
      connection: ["keep-alive", "upgrade"],
      upgrade: "websocket",
    }],
  );
  expectEveryWay("GET /ws HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\r\n", [{
    target: "/ws",
    headers: [HOST, ["upgrade", "websocket"]],
  }]);
  expectEveryWay("GET /ws HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", [{
    target: "/ws",
    minor: 0,
    headers: [["connection", "upgrade"], ["upgrade", "websocket"]],
    connection: ["upgrade"],
    keepAlive: false,
  }]);
  // Connection lists across fields, empty elements ignored, close wins.
  expectEveryWay(
    "GET / HTTP/1.1\r\nHost: example.com\r\nConnection: ,X-Hop ,\r\nconnection: Close\r\nX-Hop: 1\r\n\r\n",
    [{
      headers: [HOST, ["connection", ",X-Hop ,"], ["connection", "Close"], ["x-hop", "1"]],
      connection: ["x-hop", "close"],
      keepAlive: false,
    }],
  );
});

Deno.test("request parser: pipelined requests, each fed until used up with next() between", () => {
  const reqs = [
    "GET /1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "POST /2 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nfirst",
    // An empty line between requests (as some clients send after a body).
    "\r\nPOST /3 HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n" +
    "3;x=y\r\nthi\r\n2\r\nrd\r\n0\r\nT: 1\r\n\r\n",
    "GET /4 HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
  ];
  const want: Want[] = [
    { target: "/1", headers: [HOST] },
    {
      method: "POST",
      target: "/2",
      headers: [HOST, ["content-length", "5"]],
      body: "length",
      contentLength: 5,
      data: "first",
    },
    {
      method: "POST",
      target: "/3",
      headers: [HOST, ["transfer-encoding", "chunked"]],
      body: "chunked",
      data: "third",
      trailers: [["t", "1"]],
    },
    { target: "/4", headers: [HOST, ["connection", "close"]], connection: ["close"] },
  ];
  expectEveryWay(reqs.join(""), want);

  // feed stops right after an end(): the rest is left for after next().
  const run = newRun();
  const all = bytes(reqs.join(""));
  assert.equal(run.parser.idle, true);
  let off = 0;
  for (let i = 0; i < reqs.length; i++) {
    const used = run.parser.feed(all.subarray(off));
    assert.equal(used, reqs[i]!.length, `request ${i + 1}`);
    off += used;
    assert.equal(run.done.length, i + 1);
    assert.equal(run.parser.idle, false);
    assert.equal(run.parser.inBody, false);
    // Complete: nothing more is consumed until next().
    assert.equal(run.parser.feed(all.subarray(off)), 0);
    run.parser.next();
    assert.equal(run.parser.idle, true);
  }
  assert.equal(off, all.length);

  // next() only after end().
  const p = newRun();
  assert.throws(() => p.parser.next(), Error);
  p.parser.feed(bytes("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nx"));
  assert.equal(p.parser.inBody, true);
  assert.equal(p.parser.idle, false);
  assert.throws(() => p.parser.next(), Error);
  p.parser.feed(bytes("yz"));
  assert.equal(p.parser.inBody, false);
  p.parser.next();
  // A leading empty line is a consumed byte: no longer idle.
  p.parser.feed(bytes("\r\n"));
  assert.equal(p.parser.idle, false);
  assert.equal(p.parser.inBody, false);
});

Deno.test("request parser: body views point into the fed buffer, nothing is buffered", () => {
  const head = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n";
  const views: Uint8Array[] = [];
  const fed: Uint8Array[] = [];
  let ends = 0;
  const p = new RequestParser({ head() {}, body: (v) => views.push(v), end: () => ends++ });
  const first = bytes(head + "ab");
  fed.push(first);
  assert.equal(p.feed(first), first.length);
  for (let i = 0; i < 10; i++) {
    const chunk = new Uint8Array(i === 9 ? 100_000 - 2 : 100_000);
    fed.push(chunk);
    assert.equal(p.feed(chunk), chunk.length);
  }
  assert.equal(ends, 1);
  assert.equal(views.reduce((n, v) => n + v.length, 0), 1_000_000);
  for (let i = 0; i < views.length; i++) assert.equal(views[i]!.buffer, fed[i]!.buffer);
});

Deno.test("request parser: limits on head, fields, target, chunk-size lines and trailers", () => {
  const head = "GET /x HTTP/1.1\r\nHost: a\r\nX-Pad: " + "p".repeat(40) + "\r\n\r\n";
  const want = [{
    target: "/x",
    headers: [["host", "a"], ["x-pad", "p".repeat(40)]] as HeaderList,
  }];
  // A head of exactly the limit is read; one byte less refuses it (431), however fed.
  expectEveryWay(head, want, { maxHeadBytes: head.length });
  expectRefused(head, 431, { maxHeadBytes: head.length - 1 });
  // Leading empty lines count towards the head.
  expectRefused("\r\n" + head, 431, { maxHeadBytes: head.length + 1 });
  // The limit bites inside the request line too, and before the fields.
  expectRefused(head, 431, { maxHeadBytes: 10 });
  expectRefused(head, 431, { maxHeadBytes: 17 });
  expectRefused(head, 431, { maxHeadBytes: 18 });
  // A head that never ends is refused while it is fed.
  expectRefused("GET / HTTP/1.1\r\n" + "X-Pad: 0123456789\r\n".repeat(10), 431, {
    maxHeadBytes: 64,
  });
  // Fields: exactly maxHeaders is fine, one more is 431.
  const fields = (n: number) =>
    "GET / HTTP/1.1\r\nHost: a\r\n" + Array.from({ length: n - 1 }, (_, i) => `X-${i}: ${i}\r\n`)
      .join("") +
    "\r\n";
  const r = feedCut(bytes(fields(DEFAULT_MAX_HEADERS)), []);
  assert.equal(r.done[0]!.head.headers.length, DEFAULT_MAX_HEADERS);
  expectRefused(fields(DEFAULT_MAX_HEADERS + 1), 431);
  expectRefused(fields(5), 431, { maxHeaders: 4 });
  // Target: exactly maxTargetBytes is fine, one more is 414; what comes first decides.
  const t = "/" + "t".repeat(DEFAULT_MAX_TARGET_BYTES - 1);
  assert.equal(feedCut(bytes(`GET ${t} HTTP/1.1\r\nHost: a\r\n\r\n`), []).done[0]!.head.target, t);
  const long = `GET ${t}u HTTP/1.1\r\nHost: a\r\n\r\n`;
  // (8 KiB: whole, bytewise, and cut every 61 bytes and right around the excess byte.)
  const excess = 4 + t.length;
  for (const { cuts, how } of splits(long.length, false)) {
    const cut = cuts[0] ?? 0;
    if (cuts.length === 1 && cut % 61 !== 0 && Math.abs(cut - excess) > 2) continue;
    assert.throws(
      () => feedCut(bytes(long), cuts),
      (e) => (e as RequestError).status === 414,
      how,
    );
  }
  expectRefused("GET /0123456789abcdef HTTP/1.1\r\nHost: a\r\n\r\n", 414, { maxTargetBytes: 16 });
  expectRefused("GET /0123456789abcdef HTTP/1.1\r\nHost: a\r\n\r\n", 431, {
    maxTargetBytes: 16,
    maxHeadBytes: 12,
  });
  // A bad byte before the target is too long decides (400), after it 414.
  expectRefused("GET /01\x01456789abcdef HTTP/1.1\r\nHost: a\r\n\r\n", 400, { maxTargetBytes: 16 });
  expectRefused("GET /0123456789abcdef\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 414, {
    maxTargetBytes: 16,
  });

  const chunked = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
  // A chunk-size line longer than its limit, in pieces or in one buffer.
  expectRefused(chunked + "5;a=" + "x".repeat(80) + "\r\nhello\r\n0\r\n\r\n", 400, {
    maxChunkLineBytes: 64,
  });
  // Trailers adding up to more than maxHeadBytes, in short lines, however they are fed.
  const trailers = "X-T: 0123456789\r\n".repeat(6); // 102 bytes
  expectRefused(chunked + "0\r\n" + trailers + "\r\n", 431, { maxHeadBytes: 100 });
  expectRefused(chunked + "0\r\n" + trailers + "\r\n", 431, { maxHeaders: 5 });
  expectEveryWay(chunked + "0\r\n" + trailers + "\r\n", [{
    method: "POST",
    headers: [["host", "a"], ["transfer-encoding", "chunked"]],
    body: "chunked",
    trailers: Array.from({ length: 6 }, () => ["x-t", "0123456789"] as [string, string]),
  }], { maxHeadBytes: 104 });

  // A huge line in one buffer is refused without reading it all (and quickly).
  const started = performance.now();
  const huge = new Uint8Array(32 * 1024 * 1024).fill(0x61);
  const cases: [string, number][] = [
    ["GET / HTTP/1.1\r\nX-Long: ", 431],
    ["GET /", 414],
    [chunked + "5;a=", 400],
    [chunked + "0\r\nX-T: ", 431],
  ];
  for (const [prefix, status] of cases) {
    const buf = new Uint8Array(prefix.length + huge.length);
    buf.set(bytes(prefix));
    buf.set(huge, prefix.length);
    assert.throws(() => newRun().parser.feed(buf), (e) => (e as RequestError).status === status);
  }
  assert.ok(performance.now() - started < 2000, "huge lines took too long");
  assert.equal(DEFAULT_MAX_HEAD_BYTES, 64 * 1024);
});

/** Requests to refuse, with the status to answer (see the module comment for the rules). */
const REFUSED: [string, string, number][] = (() => {
  const get = (fields: string, body = "") => `GET / HTTP/1.1\r\nHost: a\r\n${fields}\r\n${body}`;
  const post = (fields: string, body = "") => `POST / HTTP/1.1\r\nHost: a\r\n${fields}\r\n${body}`;
  const TE = "Transfer-Encoding: chunked\r\n";
  const chunked = (body: string) => post(TE, body);
  return [
    // --- CL.TE, TE.CL
    ["CL then TE", post("Content-Length: 6\r\n" + TE, "0\r\n\r\nX"), 400],
    ["TE then CL", post(TE + "Content-Length: 3\r\n", "8\r\nSMUGGLED\r\n0\r\n\r\n"), 400],
    ["TE then CL 0", post(TE + "Content-Length: 0\r\n", "0\r\n\r\n"), 400],
    // --- TE.TE: obfuscated or repeated Transfer-Encoding
    ["TE xchunked", post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"), 501],
    ["TE chunkedx", post("Transfer-Encoding: chunkedx\r\n", "0\r\n\r\n"), 501],
    ["TE leading space in the name", post(" Transfer-Encoding: chunked\r\n", "0\r\n\r\n"), 400],
    ["TE space before colon", post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n"), 400],
    ["TE tab before colon", post("Transfer-Encoding\t: chunked\r\n", "0\r\n\r\n"), 400],
    ["TE folded", post("Transfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n"), 400],
    ["TE folded with tab", post("X: 1\r\n\tTransfer-Encoding: chunked\r\n", "0\r\n\r\n"), 400],
    ["TE chunked, identity", post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"), 501],
    ["TE identity, chunked", post("Transfer-Encoding: identity, chunked\r\n", "0\r\n\r\n"), 501],
    ["TE gzip, chunked", post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"), 501],
    ["TE chunked, chunked", post("Transfer-Encoding: chunked, chunked\r\n", "0\r\n\r\n"), 501],
    ["TE chunked;q=1", post("Transfer-Encoding: chunked;q=1\r\n", "0\r\n\r\n"), 501],
    ["TE identity", post("Transfer-Encoding: identity\r\n", ""), 501],
    ["TE chunked,", post("Transfer-Encoding: chunked,\r\n", "0\r\n\r\n"), 400],
    ["TE ,chunked", post("Transfer-Encoding: ,chunked\r\n", "0\r\n\r\n"), 400],
    ["TE chunked;", post("Transfer-Encoding: chunked;\r\n", "0\r\n\r\n"), 400],
    ['TE "chunked"', post('Transfer-Encoding: "chunked"\r\n', "0\r\n\r\n"), 400],
    ["TE empty", post("Transfer-Encoding:\r\n", ""), 400],
    ["TE chunk\\ted", post("Transfer-Encoding: chunk\ted\r\n", "0\r\n\r\n"), 400],
    ["TE tab before chunked", post("Transfer-Encoding:\tchunked\r\n", "0\r\n\r\n"), 400],
    ["TE tab after chunked", post("Transfer-Encoding: chunked\t\r\n", "0\r\n\r\n"), 400],
    ["TE gzip,\\tchunked", post("Transfer-Encoding: gzip,\tchunked\r\n", "0\r\n\r\n"), 400],
    ["TE VT before chunked", post("Transfer-Encoding:\x0bchunked\r\n", "0\r\n\r\n"), 400],
    ["TE FF after chunked", post("Transfer-Encoding: chunked\x0c\r\n", "0\r\n\r\n"), 400],
    ["TE NUL in value", post("Transfer-Encoding: chunked\x00\r\n", "0\r\n\r\n"), 400],
    ["TE twice", post(TE + TE, "0\r\n\r\n"), 400],
    ["TE chunked then identity", post(TE + "Transfer-Encoding: identity\r\n", "0\r\n\r\n"), 400],
    ["TE in HTTP/1.0", "POST / HTTP/1.0\r\n" + TE + "\r\n0\r\n\r\n", 400],
    ["TE on CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n" + TE + "\r\n0\r\n\r\n", 400],
    // --- Content-Length
    ["CL twice, same", post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"), 400],
    ["CL twice, different", post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"), 400],
    ["CL list 5, 5", post("Content-Length: 5, 5\r\n", "hello"), 400],
    ["CL list 5, 6", post("Content-Length: 5, 6\r\n", "hello!"), 400],
    ["CL +5", post("Content-Length: +5\r\n", "hello"), 400],
    ["CL -5", post("Content-Length: -5\r\n", "hello"), 400],
    ["CL 5 5", post("Content-Length: 5 5\r\n", "hello"), 400],
    ["CL 0x5", post("Content-Length: 0x5\r\n", "hello"), 400],
    ["CL 5.0", post("Content-Length: 5.0\r\n", "hello"), 400],
    ["CL 1e1", post("Content-Length: 1e1\r\n", "0123456789"), 400],
    ["CL a", post("Content-Length: a\r\n", "hello"), 400],
    ["CL empty", post("Content-Length:\r\n", ""), 400],
    ["CL 16 digits", post("Content-Length: 1000000000000000\r\n", ""), 400],
    ["CL VT", post("Content-Length:\x0b5\r\n", "hello"), 400],
    ["CL tab before", post("Content-Length:\t5\r\n", "hello"), 400],
    ["CL tab after", post("Content-Length: 5\t\r\n", "hello"), 400],
    ["CL on CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", 400],
    // --- chunk sizes and chunk lines
    ["chunk size 17 digits", chunked("FFFFFFFFFFFFFFFFF\r\nx\r\n0\r\n\r\n"), 400],
    ["chunk size 16 F", chunked("FFFFFFFFFFFFFFFF\r\nx\r\n0\r\n\r\n"), 400],
    ["chunk size 2^53", chunked("20000000000000\r\nx\r\n0\r\n\r\n"), 400],
    ["chunk size 0x10", chunked("0x10\r\n0123456789abcdef\r\n0\r\n\r\n"), 400],
    ["chunk size -1", chunked("-1\r\nx\r\n0\r\n\r\n"), 400],
    ["chunk size +5", chunked("+5\r\nhello\r\n0\r\n\r\n"), 400],
    ["chunk size zz", chunked("zz\r\nhello\r\n0\r\n\r\n"), 400],
    ["chunk size empty", chunked("\r\nhello\r\n0\r\n\r\n"), 400],
    ["space before chunk size", chunked(" 5\r\nhello\r\n0\r\n\r\n"), 400],
    ["space after chunk size", chunked("5 \r\nhello\r\n0\r\n\r\n"), 400],
    ["tab after chunk size", chunked("5\t\r\nhello\r\n0\r\n\r\n"), 400],
    ["space inside chunk size", chunked("1 0\r\n0123456789abcdef\r\n0\r\n\r\n"), 400],
    ["space before extension", chunked("5 ;a=b\r\nhello\r\n0\r\n\r\n"), 400],
    ["space in extension", chunked("5;a= b\r\nhello\r\n0\r\n\r\n"), 400],
    ["extension not a token", chunked("5;a b\r\nhello\r\n0\r\n\r\n"), 400],
    ["extension empty", chunked("5;\r\nhello\r\n0\r\n\r\n"), 400],
    ["extension open quote", chunked('5;a="b\r\nhello\r\n0\r\n\r\n'), 400],
    ["extension NUL", chunked("5;a=\x00\r\nhello\r\n0\r\n\r\n"), 400],
    ["chunk-size line bare LF", chunked("5\nhello\r\n0\r\n\r\n"), 400],
    ["chunk-size line bare CR", chunked("5\rhello\r\n0\r\n\r\n"), 400],
    ["chunk data then bare LF", chunked("5\r\nhello\n0\r\n\r\n"), 400],
    ["chunk data then bare CR", chunked("5\r\nhello\r0\r\n\r\n"), 400],
    ["chunk data longer than its size", chunked("3\r\nhello\r\n0\r\n\r\n"), 400],
    ["chunk data shorter than its size", chunked("7\r\nhello\r\n0\r\n\r\n"), 400],
    ["last chunk bare LF", chunked("5\r\nhello\r\n0\n\r\n"), 400],
    ["final CRLF a bare LF", chunked("5\r\nhello\r\n0\r\n\n"), 400],
    ["trailer bare LF", chunked("0\r\nX-T: 1\n\r\n"), 400],
    ["trailer bare CR", chunked("0\r\nX-T: a\rb\r\n\r\n"), 400],
    ["trailer folded", chunked("0\r\nX-T: 1\r\n 2\r\n\r\n"), 400],
    ["trailer space before colon", chunked("0\r\nX-T : 1\r\n\r\n"), 400],
    ["trailer NUL", chunked("0\r\nX-T: \x00\r\n\r\n"), 400],
    ["trailer Content-Length", chunked("0\r\nContent-Length: 5\r\n\r\n"), 400],
    ["trailer Transfer-Encoding", chunked("0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400],
    ["trailer Host", chunked("0\r\nHost: b\r\n\r\n"), 400],
    // --- NUL, CR, LF, controls in names and values
    ["NUL in a name", get("X-A\x00: 1\r\n"), 400],
    ["NUL in a value", get("X-A: a\x00b\r\n"), 400],
    ["CR in a name", get("X-\rA: 1\r\n"), 400],
    ["bare CR in a value", get("X-A: a\rb\r\n"), 400],
    ["bare CR ending a line", get("X-A: a\rX-B: b\r\n"), 400],
    ["CR CR LF", get("X-A: a\r\r\n"), 400],
    ["LF in a value", get("X-A: a\nb\r\n"), 400],
    ["LF in a name", get("X\nA: 1\r\n"), 400],
    ["ESC in a value", get("X-A: \x1b[0m\r\n"), 400],
    ["DEL in a value", get("X-A: a\x7f\r\n"), 400],
    ["non-ASCII in a name", get("X\xe9: 1\r\n"), 400],
    ["bad token in a name", get("X(A): 1\r\n"), 400],
    ["empty name", get(": 1\r\n"), 400],
    ["no colon", get("Just-A-Line\r\n"), 400],
    // --- obs-fold, whitespace before the colon
    ["obs-fold (space)", get("X-A: a\r\n b\r\n"), 400],
    ["obs-fold (tab)", get("X-A: a\r\n\tb\r\n"), 400],
    ["obs-fold on the first field", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400],
    ["space before colon", get("X-A : 1\r\n"), 400],
    ["Host with space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400],
    // --- line endings
    ["bare LF everywhere", "GET / HTTP/1.1\nHost: a\n\n", 400],
    ["bare LF after the request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400],
    ["bare LF after a field", "GET / HTTP/1.1\r\nHost: a\n\r\n", 400],
    ["bare LF ending the head", "GET / HTTP/1.1\r\nHost: a\r\n\n", 400],
    ["bare CR ending the request line", "GET / HTTP/1.1\rHost: a\r\n\r\n", 400],
    ["bare CR ending the head", "GET / HTTP/1.1\r\nHost: a\r\n\rGET / HTTP/1.1\r\n", 400],
    // --- leading empty lines
    ["too many empty lines first", "\r\n".repeat(MAX_LEADING_EMPTY_LINES + 1) + get(""), 400],
    ["leading bare LF", "\n" + get(""), 400],
    ["leading bare CR", "\r" + get(""), 400],
    ["leading CR CR LF", "\r\r\n" + get(""), 400],
    ["leading space", " " + get(""), 400],
    ["leading whitespace line", " \r\n" + get(""), 400],
    // --- Host
    ["Host missing", "GET / HTTP/1.1\r\n\r\n", 400],
    ["Host twice", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400],
    ["Host twice, different", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400],
    ["Host twice in HTTP/1.0", "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400],
    ["Host a b", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400],
    ["Host x:abc", "GET / HTTP/1.1\r\nHost: x:abc\r\n\r\n", 400],
    ["Host empty", "GET / HTTP/1.1\r\nHost:\r\n\r\n", 400],
    ["Host blank", "GET / HTTP/1.1\r\nHost:  \t\r\n\r\n", 400],
    ["Host empty port", "GET / HTTP/1.1\r\nHost: a:\r\n\r\n", 400],
    ["Host only a port", "GET / HTTP/1.1\r\nHost: :80\r\n\r\n", 400],
    ["Host port 65536", "GET / HTTP/1.1\r\nHost: a:65536\r\n\r\n", 400],
    ["Host port 6 digits", "GET / HTTP/1.1\r\nHost: a:000080\r\n\r\n", 400],
    ["Host two ports", "GET / HTTP/1.1\r\nHost: a:80:80\r\n\r\n", 400],
    ["Host userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400],
    ["Host with a path", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400],
    ["Host bad %", "GET / HTTP/1.1\r\nHost: a%zz\r\n\r\n", 400],
    ["Host Latin-1", "GET / HTTP/1.1\r\nHost: caf\xe9\r\n\r\n", 400],
    ["Host unclosed [", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400],
    ["Host bad IPv6", "GET / HTTP/1.1\r\nHost: [zz::1]\r\n\r\n", 400],
    ["Host IPv6 two ::", "GET / HTTP/1.1\r\nHost: [1::2::3]\r\n\r\n", 400],
    ["Host IPv6 9 groups", "GET / HTTP/1.1\r\nHost: [1:2:3:4:5:6:7:8:9]\r\n\r\n", 400],
    ["Host IPv6 7 groups", "GET / HTTP/1.1\r\nHost: [1:2:3:4:5:6:7]\r\n\r\n", 400],
    ["Host IPv6 bad IPv4 tail", "GET / HTTP/1.1\r\nHost: [::1.2.3.256]\r\n\r\n", 400],
    // --- absolute-form
    ["absolute-form vs another Host", "GET http://a/ HTTP/1.1\r\nHost: b\r\n\r\n", 400],
    ["absolute-form port vs Host", "GET http://a:80/ HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["absolute-form without Host", "GET http://a/ HTTP/1.1\r\n\r\n", 400],
    ["absolute-form userinfo", "GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["absolute-form ftp", "GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["absolute-form one slash", "GET http:/a HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["absolute-form empty authority", "GET http:///a HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["absolute-form bad port", "GET http://a:x/ HTTP/1.1\r\nHost: a:x\r\n\r\n", 400],
    // --- target forms vs methods
    ["asterisk with GET", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["asterisk plus more", "OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["authority-form with GET", "GET a:80 HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["CONNECT origin-form", "CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["CONNECT without port", "CONNECT a HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["CONNECT absolute-form", "CONNECT http://a:80/ HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["query only", "GET ?x HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["relative path", "GET x/y HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    // --- request line
    ["HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505],
    ["HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505],
    ["HTTP/0.9", "GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505],
    ["HTTP/9.9", "GET / HTTP/9.9\r\n\r\n", 505],
    ["HTTP/1.10", "GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400],
    ["HTTP/1", "GET / HTTP/1\r\nHost: a\r\n\r\n", 400],
    ["http/1.1", "GET / http/1.1\r\nHost: a\r\n\r\n", 400],
    ["HTTP/1.x", "GET / HTTP/1.x\r\nHost: a\r\n\r\n", 400],
    ["HTTP/11", "GET / HTTP/11\r\nHost: a\r\n\r\n", 400],
    ["HTTP 1.1", "GET / HTTP 1.1\r\nHost: a\r\n\r\n", 400],
    ["no version", "GET /\r\nHost: a\r\n\r\n", 400],
    ["space after version", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400],
    ["two spaces after method", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["two spaces after target", "GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["tab after method", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["DEL in target", "GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["Latin-1 in target", "GET /caf\xe9 HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["NUL in target", "GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["bad method token", "GE(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["method with NUL", "GET\x00 / HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["method Latin-1", "G\xc9T / HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["no method", " / HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["TLS ClientHello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400],
    ["HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505],
    // --- Connection, Expect, Upgrade
    ["Connection not a token", get("Connection: clo se\r\n"), 400],
    ["Connection with quotes", get('Connection: "close"\r\n'), 400],
    ["Expect other", get("Expect: 200-ok\r\n"), 417],
    ["Expect 100-continue plus more", get("Expect: 100-continue, foo\r\n"), 417],
    ["Expect empty", get("Expect:\r\n"), 417],
    ["Expect twice", get("Expect: 100-continue\r\nExpect: 100-continue\r\n"), 400],
    ["Upgrade twice", get("Connection: upgrade\r\nUpgrade: a\r\nUpgrade: b\r\n"), 400],
  ];
})();

Deno.test("request parser: the smuggling corpus is refused with the right status, however fed", () => {
  const wrong: string[] = [];
  for (const [what, raw, status] of REFUSED) {
    try {
      expectRefused(raw, status);
    } catch (e) {
      wrong.push(`${what}: ${(e as Error).message.split("\n")[0]}`);
    }
  }
  assert.deepEqual(wrong, [], `not refused as expected:\n${wrong.join("\n")}`);
  assert.ok(REFUSED.length >= 150, `${REFUSED.length} cases`);
});

Deno.test("request parser: a refusal in the second pipelined request leaves the first one read", () => {
  const first = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n";
  for (const [what, raw, status] of REFUSED) {
    const b = bytes(first + raw);
    for (const cuts of [[], [first.length], [first.length + 1], [first.length - 1]]) {
      assert.throws(
        () => feedCut(b, cuts),
        (e) => (e as RequestError).status === status,
        `${what} after a first request, cut at ${cuts}`,
      );
    }
  }
  // The first request was read before the second was refused.
  const heads: string[] = [];
  const p = new RequestParser({ head: (h) => heads.push(h.target), body() {}, end() {} });
  const b = bytes(first + "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
  const used = p.feed(b);
  assert.equal(used, first.length);
  p.next();
  assert.throws(() => p.feed(b.subarray(used)), RequestError);
  assert.deepEqual(heads, ["/1"]);
});
