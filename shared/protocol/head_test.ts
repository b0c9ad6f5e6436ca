import assert from "node:assert/strict";
import {
  bodyStream,
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
    const n = new DataView(bytes.buffer).getUint32(0);
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
