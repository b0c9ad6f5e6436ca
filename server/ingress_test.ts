/**
 * The ingress handler in-process against a tunnel whose client end is played by
 * the test over the in-memory mux link, called through the HTTP/1.1 front on 127.0.0.1: how a response head from the tunnel
 * becomes the caller's response (bytes at once, streamed, no body; bad headers).
 */
import assert from "node:assert/strict";
import { realClock } from "../shared/mux/clock.ts";
import { MuxSession, type MuxStream, MuxStreamError } from "../shared/mux/mod.ts";
import { createLinkPair } from "../shared/mux/testing/lossy_link.ts";
import { encodeHead, type HeaderList, readHeadFrom } from "../shared/protocol/mod.ts";
import { ErrorPages } from "./error_pages.ts";
import { createIngressHandler } from "./ingress.ts";
import { MemoryLogger } from "./log.ts";
import { Tunnel } from "./tunnels.ts";
import { startFront } from "./front/testing.ts";

type Answer = (s: MuxStream) => Promise<void>;

async function withIngress(
  answer: Answer,
  fn: (call: (r: Request) => Promise<Response>) => Promise<void>,
  logger = new MemoryLogger(),
  compactHeads = false,
) {
  const link = createLinkPair({ clock: realClock, immediate: true, mtu: 16384 });
  const server = new MuxSession(link.a, { role: "server" });
  const client = new MuxSession(link.b, {
    role: "client",
    onStream: (s) => {
      answer(s).catch(() => {});
    },
  });
  const tunnel = new Tunnel(
    "t1",
    "app.test",
    server,
    { remoteAddr: { hostname: "127.0.0.1", port: 1 } },
    "test",
    false,
    "udp",
    compactHeads,
  );
  const front = startFront(createIngressHandler({
    hub: { pick: (d, ex) => d === "app.test" && !ex?.has(tunnel) ? tunnel : undefined },
    serverDomain: "gateway.test",
    proxyTimeoutMs: 60_000, // longer than any test: what stops a stream here is the caller
    pages: await ErrorPages.load(undefined),
    logger,
  }));
  try {
    await fn((r) => front.call(r));
  } finally {
    await front.close();
    await Promise.allSettled([client.close(), server.close()]);
  }
}

const bad: HeaderList = [
  ["x-good", "yes"],
  ["bad name", "dropped"],
  ["x-bad-value", "a\r\nInjected: 1"],
  ["set-cookie", "a=1"],
  ["set-cookie", "b=2"],
];

/** Answers with `chunks`; before each chunk after the first it awaits `between()`. */
function answerWith(
  status: number,
  headers: HeaderList,
  chunks: string[],
  between: () => Promise<unknown> = () => Promise.resolve(),
): Answer {
  return async (s) => {
    await readHeadFrom(s);
    s.readRest();
    await s.write(encodeHead({ t: "res", status, headers }));
    for (const [i, c] of chunks.entries()) {
      if (i > 0) await between();
      await s.write(new TextEncoder().encode(c));
    }
    s.close();
  };
}

Deno.test("ingress: a small whole response is answered from bytes; invalid origin headers are dropped", async () => {
  const headers: HeaderList = [["content-length", "999"], ...bad]; // a wrong length is not trusted
  await withIngress(answerWith(201, headers, ["hello"]), async (call) => {
    const res = await call(new Request("http://app.test/x"));
    assert.equal(res.status, 201);
    assert.equal(await res.text(), "hello");
    assert.equal(res.headers.get("x-good"), "yes");
    assert.equal(res.headers.get("x-bad-value"), null);
    assert.deepEqual(res.headers.getSetCookie(), ["a=1", "b=2"]);
    assert.equal([...res.headers.keys()].includes("bad name"), false);
  });
});

Deno.test("ingress: a body still arriving is streamed, chunk by chunk, with the same header rules", async () => {
  // The origin sends its next chunk only once the caller has read the one before.
  let readOne = () => {};
  const between = () => new Promise<void>((r) => readOne = r);
  await withIngress(answerWith(200, bad, ["one,", "two,", "three"], between), async (call) => {
    const res = await call(new Request("http://app.test/stream"));
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-good"), "yes");
    assert.equal(res.headers.get("x-bad-value"), null);
    const seen: string[] = [];
    for await (const c of res.body!) {
      seen.push(new TextDecoder().decode(c));
      readOne();
    }
    assert.deepEqual(seen, ["one,", "two,", "three"]);
  });
});

Deno.test("ingress: HEAD and 204 answer with no body, headers kept", async () => {
  await withIngress(answerWith(204, [["x-good", "yes"]], []), async (call) => {
    const res = await call(new Request("http://app.test/none", { method: "DELETE" }));
    assert.equal(res.status, 204);
    assert.equal(res.body, null);
    assert.equal(res.headers.get("x-good"), "yes");
  });
  await withIngress(answerWith(200, [["content-length", "5"]], ["hello"]), async (call) => {
    const res = await call(new Request("http://app.test/h", { method: "HEAD" }));
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-length"), "5");
    assert.equal(await res.text(), "");
  });
});

Deno.test("ingress: a caller that leaves before the answer stops the tunnel stream, counted 499 not 502", async () => {
  let got!: (s: MuxStream) => void;
  const tunnelStream = new Promise<MuxStream>((r) => got = r);
  const answer: Answer = async (s) => {
    got(s);
    await readHeadFrom(s); // and never answer
  };
  const logger = new MemoryLogger();
  await withIngress(answer, async (call) => {
    const ac = new AbortController();
    // The caller's side ends with an abort.
    const pending = call(new Request("http://app.test/slow", { signal: ac.signal })).catch(
      () => {},
    );
    const s = await tunnelStream;
    ac.abort();
    // STOP_SENDING reaches the client's end: what makes the client abort its local request.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stopped = await Promise.race([
      s.sendClosed.then(() => null, (e) => e),
      new Promise((r) => timer = setTimeout(() => r("still open after 3 s"), 3000)),
    ]);
    clearTimeout(timer);
    assert.ok(stopped instanceof MuxStreamError, `our send half was stopped: ${stopped}`);
    await pending;
    // A caller who leaves is not a gateway error: one request line, 499 caller_gone.
    for (let i = 0; i < 100 && !logger.entries.some((e) => e.msg === "request"); i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    const lines = logger.entries.filter((e) => e.msg === "request");
    assert.equal(lines.length, 1);
    assert.equal(lines[0]!.fields.status, 499);
    assert.equal(lines[0]!.fields.error, "caller_gone");
    assert.equal(lines[0]!.level, "info");
  }, logger);
});

Deno.test("ingress: a caller that stops reading a streamed body makes the tunnel stop sending", async () => {
  let writes: Promise<unknown> | undefined;
  const answer: Answer = async (s) => {
    await readHeadFrom(s);
    s.readRest();
    await s.write(encodeHead({ t: "res", status: 200, headers: [] }));
    writes = (async () => {
      for (let i = 0; i < 1000; i++) {
        await s.write(new Uint8Array(16 * 1024));
        await new Promise((r) => setTimeout(r, 1));
      }
    })();
    await writes.catch(() => {});
  };
  await withIngress(answer, async (call) => {
    const res = await call(new Request("http://app.test/endless"));
    const reader = res.body!.getReader();
    await reader.read();
    await reader.cancel();
    while (writes === undefined) await new Promise((r) => setTimeout(r, 1));
    const err = await writes.then(() => null, (e) => e);
    assert.ok(err instanceof MuxStreamError, `the origin side's writes fail: ${err}`);
  });
});

Deno.test("ingress: a body shorter than its Content-Length is cut, and logged as the tunnel's fault", async () => {
  const logger = new MemoryLogger();
  const answer: Answer = async (s) => {
    await readHeadFrom(s);
    s.readRest();
    await s.write(encodeHead({ t: "res", status: 200, headers: [["content-length", "100"]] }));
    await s.write(new TextEncoder().encode("only ten.."));
    await new Promise((r) => setTimeout(r, 20)); // not all in one piece
    s.close();
  };
  await withIngress(answer, async (call) => {
    const res = await call(new Request("http://app.test/short"));
    assert.equal(res.status, 200);
    await assert.rejects(() => res.arrayBuffer(), "the caller sees a cut, not 10 bytes as whole");
  }, logger);
  const line = logger.entries.find((l) => l.msg === "request");
  assert.equal(line?.fields.error, "body_interrupted");
  assert.equal(line?.fields.status, 200);
});

Deno.test("ingress: an upgrade for a client too old to splice is a 502, and its tunnel stream is reset", async () => {
  let got!: (s: MuxStream) => void;
  const tunnelStream = new Promise<MuxStream>((r) => got = r);
  await withIngress(async (s) => {
    got(s);
    await s.read(); // the client's side of the stream the ingress opened
  }, async (call) => {
    const res = await call(
      new Request("http://app.test/ws", {
        headers: { connection: "upgrade", upgrade: "websocket" },
      }),
    );
    assert.equal(res.status, 502);
    await res.text();
    // Without the reset the client would wait for this stream's head for the whole
    // session, holding one of its incoming stream slots.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const err = await Promise.race([
      tunnelStream.then((s) => s.read()).then(() => null, (e) => e),
      new Promise((r) => timer = setTimeout(() => r("no reset after 3 s"), 3000)),
    ]);
    clearTimeout(timer);
    assert.ok(err instanceof MuxStreamError, `the stream was reset: ${err}`);
  });
});

Deno.test("ingress: a service that answers before reading the upload (413) is answered, even when the client stops the request body first", async () => {
  const answer: Answer = async (s) => {
    await readHeadFrom(s);
    // The client's service will not read the body: it says so before it answers (the
    // order a lossy path can also produce), then answers.
    s.stopSending(0);
    await new Promise((r) => setTimeout(r, 100));
    await s.write(encodeHead({ t: "res", status: 413, headers: [["content-type", "text/plain"]] }));
    await s.write(new TextEncoder().encode("too large\n"));
    s.close();
  };
  const logger = new MemoryLogger();
  await withIngress(answer, async (call) => {
    const body = new Uint8Array(2 * 1024 * 1024); // far beyond a stream's first window
    const res = await call(new Request("http://app.test/upload", { method: "POST", body }));
    assert.equal(res.status, 413);
    assert.equal(await res.text(), "too large\n");
  }, logger);
  const line = logger.entries.find((e) => e.msg === "request");
  assert.equal(line?.fields.status, 413);
});

Deno.test("ingress: request heads go compact only to a client that asked, and either kind of response head is read", async () => {
  for (const compact of [false, true]) {
    const seen: { compact: boolean; head: unknown }[] = [];
    const answer: Answer = async (s) => {
      const r = await readHeadFrom(s);
      seen.push({ compact: r.compact, head: r.head });
      s.readRest();
      // Answer in the form the request came in, as a client does.
      await s.write(encodeHead({ t: "res", status: 201, headers: [["x-seen", "yes"]] }, r.compact));
      await s.write(new TextEncoder().encode("made"));
      s.close();
    };
    await withIngress(
      answer,
      async (call) => {
        const res = await call(
          new Request("http://app.test/p?q=1", { headers: { "x-note": "caf\u00e9" } }),
        );
        assert.equal(res.status, 201);
        assert.equal(res.headers.get("x-seen"), "yes");
        assert.equal(await res.text(), "made");
      },
      new MemoryLogger(),
      compact,
    );
    assert.equal(seen.length, 1);
    assert.equal(seen[0]!.compact, compact, `tunnel compactHeads=${compact}`);
    const head = seen[0]!.head as { t: string; url: string; headers: [string, string][] };
    assert.equal(head.t, "req");
    assert.equal(head.url, "/p?q=1");
    assert.ok(head.headers.some(([k, v]) => k === "x-note" && v === "caf\u00e9"));
  }
});
