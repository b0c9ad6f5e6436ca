/**
 * The forwarder against real local origins (Deno.serve, a raw TCP socket), over a
 * real mux session pair; the test plays the public server exactly as it will:
 * open a stream, write a RequestHead and the body, read the answer.
 */
import { testCertificates } from "./testing/certs.ts";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { encodeWsMessage, WsKind, WsMessageDecoder } from "../shared/protocol/mod.ts";
import { randomBytes } from "../shared/mux/testing/harness.ts";
import type { ForwardOptions } from "./forwarder.ts";
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
import { unacceptingListener } from "./testing/unaccepting.ts";

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

interface Origin {
  url: URL;
  close(): Promise<void>;
}

function startOrigin(handler: (req: Request) => Response | Promise<Response>): Origin {
  const srv = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, handler);
  return {
    url: new URL(`http://127.0.0.1:${srv.addr.port}`),
    async close() {
      await srv.shutdown();
    },
  };
}

/** Runs `fn` with a tunnel forwarding to `origin`, closing everything after. */
async function withTunnel(
  target: URL,
  fn: (t: Tunnel) => Promise<void>,
  extra: Partial<ForwardOptions> = {},
): Promise<void> {
  const timeout = extra.connectTimeoutMs;
  const pool = new OriginPool(target, timeout ? { connectTimeoutMs: timeout } : {});
  const t = startTunnel({ target, pool, ...extra });
  try {
    await within(fn(t), 30_000, "test body");
  } finally {
    await t.close();
    pool.close();
  }
}

Deno.test("forwarder: GET keeps Host, query, headers and status; response headers come back", async () => {
  let seen: { host: string | null; url: string; xff: string | null; method: string } | undefined;
  const origin = startOrigin((req) => {
    seen = {
      host: req.headers.get("host"),
      url: req.url,
      xff: req.headers.get("x-forwarded-for"),
      method: req.method,
    };
    return new Response("hello", {
      status: 203,
      headers: { "x-answer": "42", "content-type": "text/plain" },
    });
  });
  await withTunnel(origin.url, async (t) => {
    const { stream } = sendRequest(t, requestHead({ url: "/a/b?x=1&y=%20z" }));
    const { head, body } = await readAnswer(stream);
    assert.equal(head.t, "res");
    if (head.t !== "res") return;
    assert.equal(head.status, 203);
    const h = new Map(head.headers);
    assert.equal(h.get("x-answer"), "42");
    assert.equal(h.get("content-type"), "text/plain");
    assert.equal(new TextDecoder().decode(await readBytes(body)), "hello");
    assert.deepEqual(seen, {
      host: "app.example.com",
      url: "http://app.example.com/a/b?x=1&y=%20z",
      xff: "203.0.113.7",
      method: "GET",
    });
    const outcome = await t.nextOutcome();
    assert.deepEqual(outcome, {
      kind: "response",
      method: "GET",
      url: "/a/b?x=1&y=%20z",
      status: 203,
    });
  });
  await origin.close();
});

Deno.test("forwarder: POST streams a 6 MB body to the origin and back, bit-exact", async () => {
  const data = randomBytes(7, 6 * 1024 * 1024 + 13);
  let originSha = "";
  let originLength = -1;
  let originTransferEncoding: string | null = null;
  const origin = startOrigin(async (req) => {
    originTransferEncoding = req.headers.get("transfer-encoding");
    const got = new Uint8Array(await req.arrayBuffer());
    originLength = got.length;
    originSha = sha(got);
    // Echo it back reversed in 100 KB pieces, as a stream.
    let i = 0;
    return new Response(
      new ReadableStream({
        pull(c) {
          if (i >= got.length) return c.close();
          c.enqueue(got.slice(i, i + 100_000));
          i += 100_000;
        },
      }),
    );
  });
  await withTunnel(origin.url, async (t) => {
    // No content-length: the body is sent chunked, as the server relays an unknown length.
    const { stream, written } = sendRequest(
      t,
      requestHead({ method: "POST", url: "/upload", id: "up" }),
      data,
    );
    const { head, body } = await readAnswer(stream);
    await written;
    assert.equal(head.t === "res" && head.status, 200);
    const back = await readBytes(body);
    assert.equal(originLength, data.length);
    assert.equal(originSha, sha(data));
    assert.equal(originTransferEncoding, "chunked");
    assert.equal(back.length, data.length);
    assert.equal(sha(back), sha(data));
  });
  await origin.close();
});

Deno.test("forwarder: 302 is passed through, not followed; Set-Cookie headers stay apart", async () => {
  let hits = 0;
  const origin = startOrigin((req) => {
    hits++;
    if (new URL(req.url).pathname === "/next") return new Response("followed!");
    const h = new Headers({ location: "/next" });
    h.append("set-cookie", "a=1; Path=/; HttpOnly");
    h.append("set-cookie", "b=2, with comma; Path=/");
    return new Response(null, { status: 302, headers: h });
  });
  await withTunnel(origin.url, async (t) => {
    const { stream } = sendRequest(t, requestHead({ url: "/login" }));
    const { head, body } = await readAnswer(stream);
    assert.equal(head.t, "res");
    if (head.t !== "res") return;
    assert.equal(head.status, 302);
    assert.deepEqual(head.headers.filter(([k]) => k === "location"), [["location", "/next"]]);
    assert.deepEqual(head.headers.filter(([k]) => k === "set-cookie").map(([, v]) => v), [
      "a=1; Path=/; HttpOnly",
      "b=2, with comma; Path=/",
    ]);
    assert.equal((await readBytes(body)).length, 0);
    assert.equal(hits, 1);
  });
  await origin.close();
});

Deno.test("forwarder: 204, 304 and HEAD answer with no body and FIN", async () => {
  const origin = startOrigin((req) => {
    const path = new URL(req.url).pathname;
    if (path === "/204") return new Response(null, { status: 204, headers: { "x-k": "v" } });
    if (path === "/304") return new Response(null, { status: 304, headers: { etag: '"e1"' } });
    return new Response("body for GET only", { headers: { "content-type": "text/plain" } });
  });
  await withTunnel(origin.url, async (t) => {
    for (
      const [method, url, status] of [["GET", "/204", 204], ["GET", "/304", 304], [
        "HEAD",
        "/h",
        200,
      ]] as const
    ) {
      const { stream } = sendRequest(t, requestHead({ method, url }));
      const { head, body } = await readAnswer(stream);
      assert.equal(head.t === "res" && head.status, status, `${method} ${url}`);
      assert.equal((await readBytes(body)).length, 0, `${method} ${url} has no body`);
      if (method === "HEAD" && head.t === "res") {
        assert.equal(new Map(head.headers).get("content-length"), "17");
      }
    }
  });
  await origin.close();
});

Deno.test("forwarder: origin down → ForwardError local_unreachable with no internal address", async () => {
  // A port that was just free: listen, note it, close.
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  await withTunnel(new URL(`http://127.0.0.1:${port}`), async (t) => {
    const { stream } = sendRequest(t, requestHead({ method: "POST" }), new Uint8Array(10));
    const { head, body } = await readAnswer(stream);
    assert.equal(head.t, "err");
    if (head.t !== "err") return;
    assert.equal(head.code, "local_unreachable");
    assert.ok(!head.message.includes("127.0.0.1") && !head.message.includes(String(port)));
    assert.equal((await readBytes(body)).length, 0);
    const o = await t.nextOutcome();
    assert.equal(o.kind, "error");
  });
});

Deno.test("forwarder: a connection the origin never accepts → local_timeout; kept-alive ones need none", async () => {
  const hung = await unacceptingListener();
  try {
    await withTunnel(new URL(`http://127.0.0.1:${hung.port}`), async (t) => {
      const t0 = performance.now();
      const { stream } = sendRequest(t, requestHead(), new Uint8Array(0));
      const { head } = await readAnswer(stream);
      assert.equal(head.t === "err" && head.code, "local_timeout");
      const took = performance.now() - t0;
      assert.ok(took >= 250 && took < 5000, `gave up after ${took} ms`);
    }, { connectTimeoutMs: 300 });
  } finally {
    await hung.close();
  }
  // A kept-alive connection is reused with no connect timer: slow answers are fine.
  const origin = startOrigin(async () => {
    await new Promise((r) => setTimeout(r, 400));
    return new Response("slow");
  });
  try {
    await withTunnel(origin.url, async (t) => {
      for (let i = 0; i < 2; i++) {
        const { stream } = sendRequest(t, requestHead(), new Uint8Array(0));
        const { head, body } = await readAnswer(stream);
        assert.equal(head.t === "res" && head.status, 200);
        assert.equal(new TextDecoder().decode(await readBytes(body)), "slow");
      }
    }, { connectTimeoutMs: 300 });
  } finally {
    await origin.close();
  }
});

Deno.test("forwarder: a bad head gets ForwardError bad_request", async () => {
  await withTunnel(new URL("http://127.0.0.1:9"), async (t) => {
    const stream = t.server.openStream();
    const w = stream.writable.getWriter();
    const json = new TextEncoder().encode('{"t":"req","id":1}');
    const frame = new Uint8Array(4 + json.length);
    new DataView(frame.buffer).setUint32(0, json.length);
    frame.set(json, 4);
    await w.write(frame);
    await w.close();
    const { head } = await readAnswer(stream);
    assert.equal(head.t === "err" && head.code, "bad_request");
  });
});

Deno.test("forwarder: the server resetting the stream aborts the origin's request", async () => {
  let cancelled!: () => void;
  const originSawAbort = new Promise<void>((r) => cancelled = r);
  const origin = startOrigin(() =>
    new Response(
      new ReadableStream({
        start(c) {
          c.enqueue(new TextEncoder().encode("first"));
        },
        cancel() {
          cancelled();
        },
      }),
    )
  );
  await withTunnel(origin.url, async (t) => {
    const { stream } = sendRequest(t, requestHead({ url: "/long-poll" }));
    const { head, body } = await readAnswer(stream);
    assert.equal(head.t === "res" && head.status, 200);
    const r = body.getReader();
    const first = await r.read();
    assert.equal(new TextDecoder().decode(first.value), "first");
    // The caller went away: the server abandons both halves.
    stream.reset(0x1);
    await r.cancel(0x1);
    await within(originSawAbort, 10_000, "the origin to see its response cancelled");
    const o = await t.nextOutcome();
    assert.equal(o.kind, "aborted");
  });
  await origin.close();
});

Deno.test("forwarder: a reset during the upload aborts the origin's request body", async () => {
  let bodyError!: (e: string) => void;
  const originSawAbort = new Promise<string>((r) => bodyError = r);
  let started!: () => void;
  const originStarted = new Promise<void>((r) => started = r);
  const origin = startOrigin(async (req) => {
    try {
      const reader = req.body!.getReader();
      for (;;) {
        const { done } = await reader.read();
        started();
        if (done) break;
      }
      bodyError("completed");
    } catch (e) {
      bodyError((e as Error).name);
    }
    return new Response("ok");
  });
  await withTunnel(origin.url, async (t) => {
    const { stream, writer } = sendRequest(
      t,
      requestHead({ method: "PUT", url: "/big" }),
      new Uint8Array(100_000),
      { fin: false },
    );
    await within(originStarted, 10_000, "origin to start reading");
    writer.releaseLock();
    stream.reset(0x1);
    stream.stopSending(0x1);
    const seen = await within(originSawAbort, 10_000, "origin to see the upload aborted");
    assert.notEqual(seen, "completed");
    assert.equal((await t.nextOutcome()).kind, "aborted");
  });
  await origin.close();
});

Deno.test("forwarder: SSE events arrive one by one (nothing buffered)", async () => {
  const enc = new TextEncoder();
  const gates: (() => void)[] = [];
  const origin = startOrigin(() => {
    let n = 0;
    return new Response(
      new ReadableStream({
        async pull(c) {
          if (n === 3) return c.close();
          // Event n+1 is produced only after the test received event n.
          if (n > 0) await new Promise<void>((r) => gates.push(r));
          c.enqueue(enc.encode(`data: event ${n++}\n\n`));
        },
      }),
      { headers: { "content-type": "text/event-stream" } },
    );
  });
  await withTunnel(origin.url, async (t) => {
    const { stream } = sendRequest(t, requestHead({ url: "/events" }));
    const { head, body } = await readAnswer(stream);
    assert.equal(
      head.t === "res" && new Map(head.headers).get("content-type"),
      "text/event-stream",
    );
    const r = body.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    for (let i = 0; i < 3; i++) {
      while (!text.includes(`data: event ${i}\n\n`)) {
        const { value, done } = await r.read();
        assert.ok(!done, `stream ended before event ${i}`);
        text += value;
      }
      // Release the next event only now: a buffering forwarder would never get here.
      await new Promise((r) => setTimeout(r, 0));
      gates.shift()?.();
    }
    const end = await r.read();
    assert.ok(end.done);
  });
  await origin.close();
});

/** A raw TCP origin that promises 100 bytes, sends 3, waits `holdMs` and hangs up. */
function cutShortOrigin(holdMs: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = (async () => {
    for await (const conn of listener) {
      await conn.read(new Uint8Array(4096));
      await conn.write(
        new TextEncoder().encode("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc"),
      );
      if (holdMs > 0) await new Promise((r) => setTimeout(r, holdMs));
      conn.close();
    }
  })();
  return {
    url: new URL(`http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`),
    async close() {
      listener.close();
      await served.catch(() => {});
    },
  };
}

Deno.test("forwarder: origin failing mid-response resets the stream", async () => {
  const origin = cutShortOrigin(50);
  await withTunnel(origin.url, async (t) => {
    const { stream } = sendRequest(t, requestHead());
    const { head, body } = await readAnswer(stream);
    assert.equal(head.t === "res" && head.status, 200);
    await assert.rejects(readBytes(body), /reset by peer/);
    assert.equal((await t.nextOutcome()).kind, "aborted");
  });
  await origin.close();
});

Deno.test("forwarder: origin failing in the same moment as its head → the stream ends in a reset, never a FIN", async () => {
  // The head may not have left before the reset (which drops unsent bytes), so the
  // server sees the reset at the head or in the body: either way not a clean answer.
  const origin = cutShortOrigin(0);
  await withTunnel(origin.url, async (t) => {
    const { stream } = sendRequest(t, requestHead());
    await assert.rejects(async () => {
      const { body } = await readAnswer(stream);
      await readBytes(body);
    }, /reset by peer/);
    assert.equal((await t.nextOutcome()).kind, "aborted");
  });
  await origin.close();
});

Deno.test("forwarder: WebSocket echo both ways, Host and subprotocol kept, close from the origin", async () => {
  let seenHost: string | null = null;
  const origin = startOrigin((req) => {
    seenHost = req.headers.get("host");
    const { socket, response } = Deno.upgradeWebSocket(req, { protocol: "chat.v2" });
    socket.onmessage = (e) => {
      if (e.data === "bye") socket.close(4000, "origin says bye");
      else socket.send(typeof e.data === "string" ? `echo:${e.data}` : e.data);
    };
    return response;
  });
  await withTunnel(origin.url, async (t) => {
    const { stream, writer } = sendRequest(
      t,
      requestHead({ url: "/ws", ws: true, protocols: ["chat.v1", "chat.v2"] }),
      undefined,
      { fin: false },
    );
    const { head, body } = await readAnswer(stream);
    assert.equal(head.t, "res");
    if (head.t !== "res") return;
    assert.equal(head.status, 101);
    assert.equal(head.protocol, "chat.v2");
    assert.equal(seenHost, "app.example.com");

    const reader = body.getReader();
    const decoder = new WsMessageDecoder();
    const pending: ReturnType<WsMessageDecoder["push"]> = [];
    const next = async () => {
      while (pending.length === 0) {
        const { value, done } = await reader.read();
        if (done) return undefined;
        pending.push(...decoder.push(value));
      }
      return pending.shift();
    };
    await writer.write(encodeWsMessage({ kind: WsKind.Text, data: "hi" }));
    assert.deepEqual(await next(), { kind: WsKind.Text, data: "echo:hi" });
    const bin = randomBytes(3, 200_000);
    await writer.write(encodeWsMessage({ kind: WsKind.Binary, data: bin }));
    const m = await next();
    assert.equal(m?.kind, WsKind.Binary);
    assert.equal(m?.kind === WsKind.Binary && sha(m.data), sha(bin));
    // The origin closes: a Close message, then FIN.
    await writer.write(encodeWsMessage({ kind: WsKind.Text, data: "bye" }));
    assert.deepEqual(await next(), { kind: WsKind.Close, code: 4000, reason: "origin says bye" });
    assert.equal(await next(), undefined);
    await writer.close().catch(() => {});
    assert.equal((await t.nextOutcome()).kind, "websocket");
  });
  await origin.close();
});

Deno.test("forwarder: WebSocket close from the caller reaches the origin", async () => {
  let closed!: (v: { code: number; reason: string }) => void;
  const originClose = new Promise<{ code: number; reason: string }>((r) => closed = r);
  const origin = startOrigin((req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onclose = (e) => closed({ code: e.code, reason: e.reason });
    return response;
  });
  await withTunnel(origin.url, async (t) => {
    const { stream, writer } = sendRequest(t, requestHead({ url: "/ws", ws: true }), undefined, {
      fin: false,
    });
    const { head, body } = await readAnswer(stream);
    assert.equal(head.t === "res" && head.status, 101);
    assert.equal(head.t === "res" && head.protocol, undefined);
    await writer.write(encodeWsMessage({ kind: WsKind.Close, code: 4001, reason: "caller left" }));
    assert.deepEqual(await within(originClose, 10_000, "origin close"), {
      code: 4001,
      reason: "caller left",
    });
    // The close handshake's answer comes back, then FIN.
    const msgs = new WsMessageDecoder().push(await readBytes(body));
    assert.equal(msgs.length, 1);
    assert.equal(msgs[0]?.kind, WsKind.Close);
    await writer.close().catch(() => {});
    assert.equal((await t.nextOutcome()).kind, "websocket");
  });
  await origin.close();
});

Deno.test("forwarder: WebSocket refused by the origin passes its response through; origin down → ForwardError", async () => {
  const origin = startOrigin(() => new Response("no ws here", { status: 403 }));
  await withTunnel(origin.url, async (t) => {
    const { stream } = sendRequest(t, requestHead({ url: "/ws", ws: true }));
    const { head, body } = await readAnswer(stream);
    assert.equal(head.t === "res" && head.status, 403);
    assert.equal(new TextDecoder().decode(await readBytes(body)), "no ws here");
  });
  await origin.close();
  await withTunnel(origin.url, async (t) => {
    const { stream } = sendRequest(t, requestHead({ url: "/ws", ws: true }));
    const { head } = await readAnswer(stream);
    assert.equal(head.t === "err" && head.code, "local_unreachable");
  });
});

Deno.test("forwarder: an https local target is reached over TLS; an untrusted certificate is a clear local_error", async () => {
  const { ca, cert, key } = await testCertificates();
  const srv = Deno.serve(
    { hostname: "127.0.0.1", port: 0, cert, key, onListen() {} },
    (req) => new Response(`tls ${req.method} ${new URL(req.url).pathname}`),
  );
  const target = new URL(`https://127.0.0.1:${srv.addr.port}/base`);
  try {
    const pool = new OriginPool(target, { caCerts: [ca] });
    await withTunnel(target, async (t) => {
      for (let i = 0; i < 2; i++) {
        const { stream } = sendRequest(t, requestHead({ url: "/x" }));
        const { head, body } = await readAnswer(stream);
        assert.equal(head.t === "res" && head.status, 200);
        assert.equal(new TextDecoder().decode(await readBytes(body)), "tls GET /base/x");
      }
      assert.equal(pool.size, 1, "both requests on one kept-alive TLS connection");
    }, { pool });
    pool.close();

    // Without the certificate in the trust store: refused at the handshake.
    await withTunnel(target, async (t) => {
      const { stream } = sendRequest(t, requestHead());
      const { head } = await readAnswer(stream);
      assert.equal(head.t, "err");
      if (head.t !== "err") return;
      assert.equal(head.code, "local_error");
      assert.match(head.message, /TLS handshake/);
      assert.doesNotMatch(head.message, /127\.0\.0\.1/);
    });
  } finally {
    await srv.shutdown();
  }
});

Deno.test("forwarder: Latin-1 header values reach the origin byte for byte, and come back the same", async () => {
  // A raw origin: records the request head's bytes, answers with a Latin-1 header too.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let received = new Uint8Array(0);
  const served = (async () => {
    for await (const conn of listener) {
      const buf = new Uint8Array(4096);
      const n = await conn.read(buf);
      received = buf.slice(0, n ?? 0);
      await conn.write(
        new Uint8Array([
          ...new TextEncoder().encode("HTTP/1.1 200 OK\r\nx-back: caf"),
          0xe9,
          ...new TextEncoder().encode("\r\ncontent-length: 0\r\n\r\n"),
        ]),
      );
      conn.close();
    }
  })();
  const port = (listener.addr as Deno.NetAddr).port;
  await withTunnel(new URL(`http://127.0.0.1:${port}`), async (t) => {
    const head = requestHead();
    head.headers.push(["x-name", "caf\u00e9 na\u00efve"]);
    const { stream } = sendRequest(t, head);
    const answer = await readAnswer(stream);
    assert.equal(answer.head.t, "res");
    if (answer.head.t !== "res") return;
    assert.equal(new Map(answer.head.headers).get("x-back"), "caf\u00e9");
    const line = [..."x-name: caf"].map((c) => c.charCodeAt(0))
      .concat([0xe9], [..." na"].map((c) => c.charCodeAt(0)), [0xef]);
    const at = received.findIndex((_, i) => line.every((b, j) => received[i + j] === b));
    assert.ok(at > 0, "the header's bytes arrive as Latin-1, one byte per character");
  });
  listener.close();
  await served.catch(() => {});
});

Deno.test("forwarder: python's http.server (HTTP/1.0, closes after each answer) serves files and HEAD through the pool", async () => {
  const dir = await Deno.makeTempDir({ prefix: "hopgate-pyorigin-" });
  const blob = randomBytes(7, 300_000);
  await Deno.writeFile(`${dir}/blob.bin`, blob);
  const py = new Deno.Command("python3", {
    args: ["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"],
    cwd: dir,
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = py.stdout.getReader();
  try {
    const line = new TextDecoder().decode((await reader.read()).value);
    const port = Number(/port (\d+)/.exec(line)?.[1]);
    assert.ok(port > 0, `python printed its port: ${line}`);
    const target = new URL(`http://127.0.0.1:${port}`);
    const pool = new OriginPool(target);
    await withTunnel(target, async (t) => {
      for (let i = 0; i < 2; i++) {
        const { stream } = sendRequest(t, requestHead({ url: "/blob.bin" }));
        const { head, body } = await readAnswer(stream);
        assert.equal(head.t === "res" && head.status, 200);
        assert.equal(sha(await readBytes(body)), sha(blob));
      }
      const { stream } = sendRequest(t, requestHead({ method: "HEAD", url: "/blob.bin" }));
      const { head, body } = await readAnswer(stream);
      assert.equal(head.t === "res" && head.status, 200);
      assert.equal(head.t === "res" && new Map(head.headers).get("content-length"), "300000");
      assert.equal((await readBytes(body)).length, 0);
      const missing = sendRequest(t, requestHead({ url: "/nope" }));
      const answer = await readAnswer(missing.stream);
      assert.equal(answer.head.t === "res" && answer.head.status, 404);
      await readBytes(answer.body);
      assert.equal(pool.opened, 4, "HTTP/1.0 answers are never kept alive");
    }, { pool });
    pool.close();
  } finally {
    try {
      py.kill();
    } catch { /* already gone */ }
    await reader.cancel().catch(() => {});
    await py.status;
    await Deno.remove(dir, { recursive: true });
  }
});
