import assert from "node:assert/strict";
import {
  bodyStream,
  decodeHead,
  decodeHeadJson,
  encodeHead,
  FEATURE_SPLICE,
  HeadError,
  type Hello,
  MAX_HEAD_BYTES,
  readHead,
  readHeadFrom,
  type RequestHead,
  type ResponseHead,
  validateHead,
  type Welcome,
} from "./head.ts";

const req = (extra: Partial<RequestHead> = {}): RequestHead => ({
  t: "req",
  id: "r1",
  method: "POST",
  url: "/a?b=c",
  headers: [["host", "app.example.com"], ["content-type", "text/plain"]],
  client: "203.0.113.7",
  scheme: "https",
  ...extra,
});

/** A source handing out `bytes` in the given chunk sizes. */
function source(bytes: Uint8Array, sizes: number[]) {
  let pos = 0;
  let i = 0;
  return {
    read: () => {
      if (pos >= bytes.length) return Promise.resolve(null);
      const n = sizes[i++ % sizes.length]!;
      const c = bytes.subarray(pos, pos + n);
      pos += c.length;
      return Promise.resolve(c);
    },
  };
}

Deno.test("head: length prefix is the UTF-8 JSON length, ASCII and not", () => {
  for (const h of [req(), req({ url: "/caf%C3%A9", headers: [["x-note", "déjà vu ✓"]] })]) {
    const bytes = encodeHead(h);
    const n = new DataView(bytes.buffer, bytes.byteOffset).getUint32(0);
    const json = new TextEncoder().encode(JSON.stringify(h));
    assert.equal(n, json.length);
    assert.deepEqual(bytes.subarray(4), json);
    assert.deepEqual(decodeHeadJson(bytes.subarray(4)).value, h);
  }
});

Deno.test("head: a head over the limit is refused when encoded and when read", async () => {
  const big = req({ headers: [["x-big", "a".repeat(MAX_HEAD_BYTES)]] });
  assert.throws(() => encodeHead(big), RangeError);
  const prefix = new Uint8Array([0, 1, 0, 1]); // 65537 bytes announced
  await assert.rejects(readHeadFrom(source(prefix, [4]), 65536), HeadError);
});

Deno.test("head: readHeadFrom reassembles a head split anywhere and returns the bytes after it", async () => {
  const head = encodeHead(req());
  const body = new TextEncoder().encode("hello body");
  const all = new Uint8Array(head.length + body.length);
  all.set(head);
  all.set(body, head.length);
  for (const sizes of [[1], [3, 7], [head.length], [head.length + 4], [all.length]]) {
    const src = source(all, sizes);
    const r = await readHeadFrom(src);
    assert.deepEqual(r.head, req());
    const parts = [r.rest ?? new Uint8Array(0)];
    for (let c = await src.read(); c !== null; c = await src.read()) parts.push(c);
    assert.equal(
      new TextDecoder().decode(new Uint8Array(parts.flatMap((p) => [...p]))),
      "hello body",
    );
  }
});

Deno.test("head: truncated, empty and malformed heads fail with HeadError", async () => {
  const head = encodeHead(req());
  await assert.rejects(readHeadFrom(source(new Uint8Array(0), [1])), /ended before a head/);
  await assert.rejects(readHeadFrom(source(head.subarray(0, 10), [4])), /ended inside a head/);
  const junk = new Uint8Array([0, 0, 0, 3, 0x7b, 0x7b, 0x7b]);
  await assert.rejects(readHeadFrom(source(junk, [7])), HeadError);
  const wrongShape = encodeHead({ ...req(), method: 5 } as unknown as RequestHead);
  await assert.rejects(readHeadFrom(source(wrongShape, [64])), HeadError);
});

Deno.test("head: readHead (Web Streams) and bodyStream keep the body after the head", async () => {
  const head = encodeHead(req());
  const readable = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(new Uint8Array([...head, 1, 2]));
      c.enqueue(new Uint8Array([3]));
      c.close();
    },
  });
  const r = await readHead(readable);
  assert.deepEqual(r.head, req());
  const got: number[] = [];
  for await (const c of r.body) got.push(...c);
  assert.deepEqual(got, [1, 2, 3]);
  let cancelled: unknown;
  const b = bodyStream(source(new Uint8Array([9]), [1]), new Uint8Array([8]), (why) => {
    cancelled = why;
  });
  const reader = b.getReader();
  assert.deepEqual((await reader.read()).value, new Uint8Array([8]));
  await reader.cancel("gone");
  assert.equal(cancelled, "gone");
});

Deno.test("head: Hello.features is optional, a list of strings; old hellos still decode", () => {
  const hello: Hello = {
    t: "hello",
    proto: 1,
    client: "hopgate-client/0.1.0",
    domain: "app.example.com",
    target: "http://127.0.0.1:3000",
  };
  assert.equal(FEATURE_SPLICE, "splice");
  assert.deepEqual(validateHead(hello).value, hello);
  const withFeatures = { ...hello, features: [FEATURE_SPLICE, "later-thing"] };
  assert.deepEqual(decodeHeadJson(encodeHead(withFeatures).subarray(4)).value, withFeatures);
  assert.deepEqual(validateHead({ ...hello, features: [] }).value, { ...hello, features: [] });
  for (const features of ["splice", [1], [["splice"]], null, { splice: true }]) {
    assert.match(validateHead({ ...hello, features }).error ?? "", /features/, String(features));
  }
});

Deno.test("head: Welcome.reset is optional, 32 lowercase hex digits; welcomes without it still decode", () => {
  const welcome: Welcome = { t: "welcome", session: "s1", server: "hopgate-server/0.1.0" };
  assert.deepEqual(validateHead(welcome).value, welcome);
  const withReset = { ...welcome, reset: "0123456789abcdef0123456789abcdef" };
  assert.deepEqual(decodeHeadJson(encodeHead(withReset).subarray(4)).value, withReset);
  for (
    const reset of ["", "0123456789ABCDEF0123456789ABCDEF", "0123456789abcdef", "g".repeat(32), 7]
  ) {
    assert.match(validateHead({ ...welcome, reset }).error ?? "", /reset/, String(reset));
  }
});

Deno.test("head: RequestHead.upgrade is an Upgrade field value, and never comes with ws", () => {
  for (
    const upgrade of ["websocket", "WebSocket", "h2c", "foo/1.0", "a, b/2", " websocket ", ",x,"]
  ) {
    assert.deepEqual(validateHead(req({ upgrade })).value, req({ upgrade }), upgrade);
  }
  assert.deepEqual(validateHead(req({ upgrade: "websocket", ws: false })).value?.t, "req");
  const bad: unknown[] = [
    "",
    " , ",
    "web socket",
    "websocket\r\nx-injected: 1",
    "websocket/",
    "a/b/c",
    "caf\u00e9",
    5,
    ["websocket"],
    null,
  ];
  for (const upgrade of bad) {
    const r = validateHead({ ...req(), upgrade });
    assert.match(r.error ?? "", /upgrade/, JSON.stringify(upgrade));
  }
  assert.match(validateHead(req({ upgrade: "websocket", ws: true })).error ?? "", /ws\/upgrade/);
  // An old server's WebSocket head is unchanged.
  assert.equal(validateHead(req({ ws: true, protocols: ["chat"] })).value?.t, "req");
});

Deno.test("head: a 101 ResponseHead may carry the origin's Upgrade value", () => {
  const res: ResponseHead = {
    t: "res",
    status: 101,
    headers: [["sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="]],
    upgrade: "websocket",
  };
  assert.deepEqual(decodeHeadJson(encodeHead(res).subarray(4)).value, res);
  const { upgrade: _, ...plain } = res;
  assert.deepEqual(validateHead(plain).value, plain);
  assert.match(validateHead({ ...res, upgrade: "no good" }).error ?? "", /upgrade/);
  assert.match(validateHead({ ...res, upgrade: 1 }).error ?? "", /upgrade/);
});

const res = (extra: Partial<ResponseHead> = {}): ResponseHead => ({
  t: "res",
  status: 200,
  headers: [["content-type", "text/plain"], ["content-length", "13"]],
  ...extra,
});

/** The bytes of a head string as a stream would carry them (u32 length, then UTF-8). */
function wire(text: string): Uint8Array {
  const body = new TextEncoder().encode(text);
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, body.length);
  out.set(body, 4);
  return out;
}

Deno.test("head: compact request and response heads decode to what their JSON decodes to", () => {
  const cases: (RequestHead | ResponseHead)[] = [
    req(),
    req({ headers: [] }),
    req({ method: "GET", url: "*", scheme: "http", headers: [["x-empty", ""], ["x-", " "]] }),
    req({ url: "/caf%C3%A9", headers: [["x-note", "déjà vu ✓"], ["x-latin1", "\xe9\xff"]] }),
    req({ upgrade: "websocket", headers: [["upgrade", "websocket"], ["connection", "upgrade"]] }),
    res(),
    res({ status: 101, upgrade: "websocket", headers: [] }),
    res({ status: 599, headers: [["set-cookie", "a=1"], ["set-cookie", "b=2"]] }),
    res({ status: 100, headers: [["x-tab", "a\tb"], ["x-", ""]] }),
  ];
  for (const h of cases) {
    const compact = encodeHead(h, true);
    const json = encodeHead(h);
    assert.ok(compact[4] === 1 || compact[4] === 2, `compact tag for ${JSON.stringify(h)}`);
    assert.equal(json[4], 0x7b);
    assert.ok(compact.length < json.length);
    const n = new DataView(compact.buffer, compact.byteOffset).getUint32(0);
    assert.equal(n, compact.length - 4);
    assert.deepEqual(decodeHead(compact.subarray(4)).value, decodeHead(json.subarray(4)).value);
    assert.deepEqual(decodeHead(compact.subarray(4)).value, h);
  }
});

Deno.test("head: what has no compact form goes as JSON even when the peer takes compact heads", () => {
  const jsonOnly = [
    req({ headers: [["x-a", "line1\nline2"]] }),
    req({ headers: [["x\ny", "v"]] }),
    req({ url: "/a\nb" }),
    req({ id: "r\n1" }),
    req({ ws: true, protocols: ["chat"] }),
    res({ protocol: "chat" }),
    res({ headers: [["x-a", "\n"]] }),
    { t: "err", code: "local_timeout", message: "slow" } as const,
    { t: "hello", proto: 1, client: "c", domain: "d", target: "t" } as const,
  ];
  for (const h of jsonOnly) {
    const bytes = encodeHead(h, true);
    assert.equal(bytes[4], 0x7b, JSON.stringify(h));
    assert.deepEqual(decodeHead(bytes.subarray(4)).value, h);
  }
});

Deno.test("head: malformed compact heads are errors, never exceptions or partial heads", () => {
  const bad: [string, RegExp][] = [
    ["\x01", /fields/], // one empty field
    ["\x01id\nGET\n/\n1.2.3.4\nhttp", /5 fields/],
    ["\x01id\nGET\n/\n1.2.3.4\nhttp\n\nhost", /7 fields/],
    ["\x01id\nGET\n/\n1.2.3.4\nftp\n", /scheme/],
    ["\x01id\nGET\n/\n1.2.3.4\nHTTP\n", /scheme/],
    ["\x01id\nGET\n/\n1.2.3.4\nhttp\nweb socket", /upgrade/],
    ["\x02", /1 fields/],
    ["\x02200", /1 fields/],
    ["\x02200\n\nx", /3 fields/],
    ["\x0299\n", /status/],
    ["\x02600\n", /status/],
    ["\x020200\n", /status/],
    ["\x022x0\n", /status/],
    ["\x02 200\n", /status/],
    ["\x02200\n,", /upgrade/],
    ["\x03200\n", /JSON/],
  ];
  for (const [text, why] of bad) {
    const r = decodeHead(wire(text).subarray(4));
    assert.equal(r.value, undefined, JSON.stringify(text));
    assert.match(r.error ?? "", why, JSON.stringify(text));
  }
  const notUtf8 = new Uint8Array([2, 0x32, 0x30, 0x30, 0x0a, 0xff]);
  assert.match(decodeHead(notUtf8).error ?? "", /UTF-8/);
  // The smallest valid ones.
  assert.deepEqual(decodeHead(wire("\x02204\n").subarray(4)).value, {
    t: "res",
    status: 204,
    headers: [],
  });
  assert.deepEqual(decodeHead(wire("\x01\n\n\n\nhttps\n").subarray(4)).value, {
    t: "req",
    id: "",
    method: "",
    url: "",
    headers: [],
    client: "",
    scheme: "https",
  });
});

Deno.test("head: readHeadFrom reads a compact head split anywhere", async () => {
  const head = encodeHead(req({ upgrade: "websocket" }), true);
  assert.equal(head[4], 1);
  const all = new Uint8Array([...head, 7, 8]);
  for (const sizes of [[1], [2, 5], [head.length], [all.length]]) {
    const r = await readHeadFrom(source(all, sizes));
    assert.deepEqual(r.head, req({ upgrade: "websocket" }));
  }
  await assert.rejects(readHeadFrom(source(wire("\x01x"), [3])), /compact head "req": 1 fields/);
});

Deno.test("head: seeded random heads survive the compact form exactly", () => {
  let seed = 12345;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed % n;
  };
  // Characters a head can hold (any but LF), weighted to the awkward ones.
  const alphabet = [
    "a",
    "Z",
    "0",
    " ",
    "\t",
    "\r",
    "\x00",
    "\x01",
    "\x7f",
    "\x80",
    "\xe9",
    "\xff",
    "é",
    "✓",
    "{",
    '"',
    "\\",
    ":",
  ];
  const str = () => Array.from({ length: rnd(6) }, () => alphabet[rnd(alphabet.length)]).join("");
  for (let i = 0; i < 2000; i++) {
    const headers: [string, string][] = Array.from({ length: rnd(5) }, () => [str(), str()]);
    const h: RequestHead | ResponseHead = rnd(2) === 0
      ? req({
        id: str(),
        method: str(),
        url: str(),
        client: str(),
        headers,
        scheme: rnd(2) ? "http" : "https",
      })
      : res({ status: 100 + rnd(500), headers });
    const bytes = encodeHead(h, true);
    assert.ok(bytes[4] === 1 || bytes[4] === 2);
    assert.deepEqual(decodeHead(bytes.subarray(4)).value, h);
  }
});
