/**
 * HTTP/2 on the HTTPS listener, on real sockets: TlsAcceptor (ALPN h2 +
 * http/1.1) → H2Bridge (h2c Deno.serve inside) or FrontServer, driven by curl.
 * The handler echoes what it saw: method, path, host, peer, headers and the
 * body's SHA-256.
 */
import assert from "node:assert/strict";
import { createSelfSignedCertificate } from "../certs/self_signed.ts";
import { H2Bridge } from "./h2.ts";
import {
  type CutReason,
  type FrontHandler,
  type FrontLimits,
  type FrontRequest,
  FrontServer,
} from "./http1.ts";
import { type CertifiedKey, TlsAcceptor } from "./tls.ts";
import { connect } from "node:tls";

const cert: CertifiedKey = await createSelfSignedCertificate(["a.test"]);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const enc = new TextEncoder();

interface Seen {
  proto: "h2" | "h1";
  method: string;
  path: string;
  host: string;
  peer: Deno.NetAddr;
  headers: [string, string][];
}

interface Harness {
  port: number;
  seen: Seen[];
  aborted: string[];
  cuts: CutReason[];
  bridge: H2Bridge;
  close(): Promise<void>;
}

async function sha256(b: Uint8Array): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", b as BufferSource);
  return Array.from(new Uint8Array(d), (x) => x.toString(16).padStart(2, "0")).join("");
}

function start(limits: Partial<FrontLimits> = {}): Harness {
  const seen: Seen[] = [];
  const aborted: string[] = [];
  const cuts: CutReason[] = [];
  const handler = (proto: "h2" | "h1"): FrontHandler => async (req: FrontRequest, res) => {
    seen.push({
      proto,
      method: req.method,
      path: req.path,
      host: req.host,
      peer: req.peer,
      headers: [...req.headers],
    });
    req.signal.addEventListener("abort", () => aborted.push(req.path), { once: true });
    if (req.path === "/stream") {
      res.head(200, [["content-type", "text/plain"]], -1);
      for (let i = 0; i < 4; i++) {
        await res.write(enc.encode(`chunk-${i}\n`));
        await sleep(300);
      }
      await res.end();
      return;
    }
    if (req.path === "/big") {
      res.head(200, [["content-type", "application/octet-stream"]], -1);
      const chunk = new Uint8Array(64 * 1024);
      for (let i = 0; i < 160; i++) await res.write(chunk);
      await res.end();
      return;
    }
    if (req.path === "/hang") {
      res.head(200, [["content-type", "text/plain"], ["connection", "keep-alive"]], -1);
      await res.write(enc.encode("first\n"));
      await new Promise((r) => req.signal.addEventListener("abort", r, { once: true }));
      res.abort();
      return;
    }
    const parts: Uint8Array[] = [];
    let n = 0;
    for (;;) {
      const v = await req.readBody();
      if (v === null) break;
      parts.push(v.slice());
      n += v.length;
    }
    const all = new Uint8Array(n);
    let off = 0;
    for (const p of parts) {
      all.set(p, off);
      off += p.length;
    }
    if (req.path.startsWith("/raw")) {
      res.head(200, [["content-type", "application/octet-stream"]], all.length);
      // Streamed back in 64 KiB pieces (not one buffer).
      for (let i = 0; i < all.length; i += 65536) await res.write(all.subarray(i, i + 65536));
      await res.end();
      return;
    }
    const body = enc.encode(JSON.stringify({
      proto,
      method: req.method,
      path: req.path,
      host: req.host,
      peer: `${req.peer.hostname}:${req.peer.port}`,
      length: n,
      sha256: await sha256(all),
    }));
    res.head(
      200,
      [["content-type", "application/json"], ["transfer-encoding", "chunked"]],
      body.length,
    );
    await res.end(body);
  };
  const events = { cut: (r: CutReason) => cuts.push(r) };
  const acceptor = new TlsAcceptor({
    hostname: "127.0.0.1",
    port: 0,
    lookup: (name) => Promise.resolve(name === "a.test" ? cert : undefined),
    alpn: ["h2", "http/1.1"],
  });
  const front = new FrontServer({ scheme: "https", handler: handler("h1"), limits, events });
  const bridge = new H2Bridge({ handler: handler("h2"), limits, events });
  const serving = bridge.serve(acceptor, front);
  return {
    port: acceptor.addr.port,
    seen,
    aborted,
    cuts,
    bridge,
    async close() {
      const done = Promise.all([front.shutdown(), bridge.shutdown()]);
      front.abortAll();
      bridge.abortAll();
      await done;
      await serving;
      await acceptor.finished;
    },
  };
}

interface CurlResult {
  code: number;
  stdout: string;
  stderr: string;
}

async function curl(port: number, args: string[], stdin?: Uint8Array): Promise<CurlResult> {
  const cmd = new Deno.Command("curl", {
    args: ["-sSk", "--resolve", `a.test:${port}:127.0.0.1`, ...args],
    stdin: stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  });
  const p = cmd.spawn();
  if (stdin) {
    const w = p.stdin.getWriter();
    await w.write(stdin);
    await w.close();
  }
  const out = await p.output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

const url = (port: number, path: string) => `https://a.test:${port}${path}`;

/** Open descriptors of this process (through `ls`: Deno's permissions keep /proc/self from us). */
async function openFds(): Promise<number> {
  const out = await new Deno.Command("ls", { args: [`/proc/${Deno.pid}/fd`], stdout: "piped" })
    .output();
  return new TextDecoder().decode(out.stdout).split("\n").filter((l) => l !== "").length;
}

Deno.test("h2: negotiated, the handler sees method, path, host and the real peer", async () => {
  const h = start();
  try {
    const r = await curl(h.port, [
      "--http2",
      "-H",
      "x-test: yes",
      "-w",
      "\n%{http_version} %{local_port}",
      url(h.port, "/echo/a?b=c"),
    ]);
    assert.equal(r.code, 0, r.stderr);
    const [json, tail] = r.stdout.split("\n");
    const [version, localPort] = tail!.split(" ");
    assert.equal(version, "2");
    const got = JSON.parse(json!);
    assert.equal(got.proto, "h2");
    assert.equal(got.method, "GET");
    assert.equal(got.path, "/echo/a?b=c");
    assert.equal(got.host, `a.test:${h.port}`);
    assert.equal(got.peer, `127.0.0.1:${localPort}`);
    const s = h.seen[0]!;
    assert.ok(s.headers.some(([k, v]) => k === "host" && v === `a.test:${h.port}`));
    assert.ok(s.headers.some(([k, v]) => k === "x-test" && v === "yes"));
    assert.ok(s.headers.every(([k]) => k === k.toLowerCase() && !k.startsWith(":")));
  } finally {
    await h.close();
  }
});

Deno.test("h2: a 10 MiB POST is echoed bit-exact", async () => {
  const h = start();
  try {
    const body = new Uint8Array(10 * 1024 * 1024);
    for (let i = 0; i < body.length; i += 65536) {
      crypto.getRandomValues(body.subarray(i, Math.min(body.length, i + 65536)));
    }
    const want = await sha256(body);
    const tmp = await Deno.makeTempFile({ dir: "/tmp" });
    const outFile = await Deno.makeTempFile({ dir: "/tmp" });
    try {
      await Deno.writeFile(tmp, body);
      const r = await curl(h.port, [
        "--http2",
        "--data-binary",
        `@${tmp}`,
        "-o",
        outFile,
        "-w",
        "%{http_version} %{http_code}",
        url(h.port, "/raw"),
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "2 200");
      const back = await Deno.readFile(outFile);
      assert.equal(back.length, body.length);
      assert.equal(await sha256(back), want);
      assert.equal(h.seen[0]!.method, "POST");
    } finally {
      await Deno.remove(tmp);
      await Deno.remove(outFile);
    }
  } finally {
    await h.close();
  }
});

Deno.test("h2: 50 parallel requests on one connection", async () => {
  const h = start();
  try {
    // No --parallel-immediate: curl waits to multiplex on the first connection.
    const args = ["--http2", "--parallel", "--parallel-max", "50"];
    for (let i = 0; i < 50; i++) {
      args.push("-w", "%{http_version} %{http_code} %{num_connects}\n", "-o", "/dev/null");
      args.push(url(h.port, `/echo/${i}`));
    }
    const r = await curl(h.port, args);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split("\n");
    assert.equal(lines.length, 50);
    assert.ok(lines.every((l) => l.startsWith("2 200 ")), r.stdout);
    const connects = lines.reduce((n, l) => n + Number(l.split(" ")[2]), 0);
    assert.equal(connects, 1, r.stdout);
    assert.equal(h.seen.length, 50);
    assert.equal(new Set(h.seen.map((s) => s.peer.port)).size, 1);
  } finally {
    await h.close();
  }
});

Deno.test("h2: a streamed response arrives chunk by chunk", async () => {
  const h = start();
  try {
    const p = new Deno.Command("curl", {
      args: [
        "-sSkN",
        "--http2",
        "--resolve",
        `a.test:${h.port}:127.0.0.1`,
        url(h.port, "/stream"),
      ],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const times: number[] = [];
    let text = "";
    const dec = new TextDecoder();
    const t0 = Date.now();
    for await (const b of p.stdout) {
      const s = dec.decode(b);
      for (const _ of s.matchAll(/chunk-\d\n/g)) times.push(Date.now() - t0);
      text += s;
    }
    assert.equal((await p.status).code, 0);
    assert.equal(text, "chunk-0\nchunk-1\nchunk-2\nchunk-3\n");
    assert.equal(times.length, 4);
    // 300 ms between chunks on the handler's side: the first arrives long before the last.
    assert.ok(times[3]! - times[0]! >= 600, `arrivals ${times}`);
  } finally {
    await h.close();
  }
});

Deno.test("h2: HTTP/1.1 clients still go to the HTTP/1.1 front", async () => {
  const h = start();
  try {
    const r = await curl(h.port, [
      "--http1.1",
      "-w",
      "\n%{http_version}",
      url(h.port, "/echo/one"),
    ]);
    assert.equal(r.code, 0, r.stderr);
    const [json, version] = r.stdout.split("\n");
    assert.equal(version, "1.1");
    assert.equal(JSON.parse(json!).proto, "h1");
    assert.equal(h.bridge.size, 0);
  } finally {
    await h.close();
  }
});

Deno.test("h2: a caller that leaves mid-response aborts the request's signal", async () => {
  const h = start();
  try {
    const r = await curl(h.port, ["--http2", "-N", "--max-time", "1", url(h.port, "/hang")]);
    assert.notEqual(r.code, 0);
    assert.equal(r.stdout, "first\n");
    for (let i = 0; i < 50 && !h.aborted.includes("/hang"); i++) await sleep(20);
    assert.deepEqual(h.aborted, ["/hang"]);
    for (let i = 0; i < 50 && h.bridge.size > 0; i++) await sleep(20);
    assert.equal(h.bridge.size, 0);
  } finally {
    await h.close();
  }
});

Deno.test("h2: the idle timeout closes a silent connection, descriptors released", async () => {
  const h = start({ idleTimeoutMs: 300 });
  try {
    // Warm up (the internal listener, curl) before taking the baseline.
    await curl(h.port, ["--http2", "-o", "/dev/null", url(h.port, "/echo")]);
    await sleep(100);
    const base = await openFds();
    const sockets = Array.from({ length: 5 }, () =>
      connect({
        host: "127.0.0.1",
        port: h.port,
        servername: "a.test",
        rejectUnauthorized: false,
        ALPNProtocols: ["h2"],
      }));
    const t0 = Date.now();
    await Promise.all(sockets.map((s) =>
      new Promise<void>((resolve) => {
        s.on("secureConnect", () => assert.equal(s.alpnProtocol, "h2"));
        s.on("data", () => {});
        s.on("error", () => {});
        s.on("close", () => resolve());
      })
    ));
    const took = Date.now() - t0;
    assert.ok(took >= 300 && took < 3000, `closed after ${took} ms`);
    assert.equal(h.cuts.filter((c) => c === "idle_timeout").length, 5);
    let fds = await openFds();
    for (let i = 0; i < 250 && (h.bridge.size > 0 || fds > base); i++) {
      await sleep(20);
      fds = await openFds();
    }
    assert.equal(h.bridge.size, 0);
    // The count is the whole process's: under `deno test --parallel` other modules
    // open and close descriptors too, so allow a little; the 5 connections held 20.
    assert.ok(fds <= base + 3, `descriptors ${fds} > ${base} + 3`);
  } finally {
    await h.close();
  }
});

Deno.test("h2: the front's header-field cap applies (431), the connection goes on", async () => {
  const h = start({ maxHeaders: 8 });
  try {
    const many = Array.from({ length: 12 }, (_, i) => ["-H", `x-f${i}: ${i}`]).flat();
    const r = await curl(h.port, [
      "--http2",
      "-o",
      "/dev/null",
      "-w",
      "%{http_version} %{http_code} %{num_connects}\n",
      ...many,
      url(h.port, "/echo/many"),
      "--next",
      ...["-sSk", "--http2", "--resolve", `a.test:${h.port}:127.0.0.1`],
      ...["-o", "/dev/null", "-w", "%{http_version} %{http_code} %{num_connects}\n"],
      url(h.port, "/echo/few"),
    ]);
    assert.equal(r.code, 0, r.stderr);
    // The second request reused the connection (no new connect).
    assert.deepEqual(r.stdout.trim().split("\n"), ["2 431 1", "2 200 0"]);
    assert.deepEqual(h.seen.map((s) => s.path), ["/echo/few"]);
  } finally {
    await h.close();
  }
});

Deno.test("h2: shutdown lets a stream in progress finish, then refuses new connections", async () => {
  const h = start();
  let closed = false;
  try {
    const p = curl(h.port, ["--http2", "-N", url(h.port, "/stream")]);
    for (let i = 0; i < 50 && h.seen.length === 0; i++) await sleep(20);
    const t0 = Date.now();
    const done = h.bridge.shutdown();
    const r = await p;
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "chunk-0\nchunk-1\nchunk-2\nchunk-3\n");
    await done;
    assert.ok(Date.now() - t0 >= 600, "shutdown waited for the stream");
    assert.equal(h.bridge.size, 0);
    const after = await curl(h.port, ["--http2", "--max-time", "2", url(h.port, "/echo")]);
    assert.notEqual(after.code, 0, "the acceptor is closed");
    closed = true;
  } finally {
    if (!closed) h.bridge.abortAll();
    await h.close();
  }
});

/** An HTTP/2 frame: 9-byte header, then the payload. */
function frame(type: number, flags: number, stream: number, payload: Uint8Array): Uint8Array {
  const f = new Uint8Array(9 + payload.length);
  const v = new DataView(f.buffer);
  v.setUint32(0, payload.length << 8);
  f[3] = type;
  f[4] = flags;
  v.setUint32(5, stream);
  f.set(payload, 9);
  return f;
}

Deno.test("h2: a caller that stops reading (flow control) is cut at the write timeout", async () => {
  const h = start({ writeTimeoutMs: 300 });
  try {
    const s = connect({
      host: "127.0.0.1",
      port: h.port,
      servername: "a.test",
      rejectUnauthorized: false,
      ALPNProtocols: ["h2"],
    });
    s.on("data", () => {});
    s.on("error", () => {});
    await new Promise((r) => s.once("secureConnect", r));
    assert.equal(s.alpnProtocol, "h2");
    // A stream window of 0: the server may send no DATA at all.
    const settings = new Uint8Array([0, 4, 0, 0, 0, 0]);
    // HPACK: :method GET, :scheme https, :path /big, :authority a.test (literals, no Huffman).
    const lit = (index: number, value: string) => [index, value.length, ...enc.encode(value)];
    const block = new Uint8Array([0x82, 0x87, ...lit(4, "/big"), ...lit(1, "a.test")]);
    s.write(enc.encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
    s.write(frame(4, 0, 0, settings));
    s.write(frame(1, 0x5, 1, block));
    for (let i = 0; i < 150 && !h.cuts.includes("write_timeout"); i++) await sleep(20);
    assert.deepEqual(h.cuts, ["write_timeout"]);
    for (let i = 0; i < 50 && !h.aborted.includes("/big"); i++) await sleep(20);
    assert.deepEqual(h.aborted, ["/big"]);
    s.destroy();
    for (let i = 0; i < 50 && h.bridge.size > 0; i++) await sleep(20);
    assert.equal(h.bridge.size, 0);
  } finally {
    await h.close();
  }
});

Deno.test("h2: a request body with no byte for the body timeout fails the read", async () => {
  const h = start({ bodyTimeoutMs: 300 });
  try {
    const s = connect({
      host: "127.0.0.1",
      port: h.port,
      servername: "a.test",
      rejectUnauthorized: false,
      ALPNProtocols: ["h2"],
    });
    s.on("data", () => {});
    s.on("error", () => {});
    await new Promise((r) => s.once("secureConnect", r));
    // HPACK: :method POST, :scheme https, :path /echo, :authority a.test; no END_STREAM, no DATA.
    const lit = (index: number, value: string) => [index, value.length, ...enc.encode(value)];
    const block = new Uint8Array([0x83, 0x87, ...lit(4, "/echo"), ...lit(1, "a.test")]);
    s.write(enc.encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
    s.write(frame(4, 0, 0, new Uint8Array(0)));
    s.write(frame(1, 0x4, 1, block));
    const t0 = Date.now();
    for (let i = 0; i < 150 && !h.cuts.includes("body_timeout"); i++) await sleep(20);
    assert.deepEqual(h.cuts, ["body_timeout"]);
    assert.ok(Date.now() - t0 >= 250);
    for (let i = 0; i < 50 && !h.aborted.includes("/echo"); i++) await sleep(20);
    assert.deepEqual(h.aborted, ["/echo"]);
    s.destroy();
    for (let i = 0; i < 50 && h.bridge.size > 0; i++) await sleep(20);
    assert.equal(h.bridge.size, 0);
  } finally {
    await h.close();
  }
});
