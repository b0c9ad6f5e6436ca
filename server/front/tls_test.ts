/**
 * TlsAcceptor on real sockets (127.0.0.1): certificate by SNI, unknown names,
 * ClientHellos split over TCP segments and TLS records, handshake deadlines
 * with descriptors released, ALPN, and bytes both ways after the handshake.
 * Clients are node:tls (public API: servername, ca, peer certificate); a relay
 * in this process cuts the client's ClientHello into pieces with gaps.
 */
import assert from "node:assert/strict";
import nodeNet from "node:net";
import { connect, type TLSSocket } from "node:tls";
import { createSelfSignedCertificate } from "../certs/self_signed.ts";
import type { CertifiedKey } from "./tls.ts";
import { TlsAcceptor, type TlsByteConn, type TlsFailureReason } from "./tls.ts";

const certs = new Map<string, CertifiedKey>();
for (const n of ["a.test", "b.test"]) certs.set(n, await createSelfSignedCertificate([n]));
const lookup = (name: string) => Promise.resolve(certs.get(name));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Harness {
  acceptor: TlsAcceptor;
  port: number;
  conns: TlsByteConn[];
  failures: TlsFailureReason[];
  close(): Promise<void>;
}

/** An acceptor whose connections echo what they read. */
function start(opts: { handshakeTimeoutMs?: number; alpn?: string[] } = {}): Harness {
  const failures: TlsFailureReason[] = [];
  const acceptor = new TlsAcceptor({
    hostname: "127.0.0.1",
    port: 0,
    lookup,
    ...opts,
    onFailure: (reason) => failures.push(reason),
  });
  const conns: TlsByteConn[] = [];
  const echoes = new Set<Promise<void>>();
  const loop = (async () => {
    for (;;) {
      let c: TlsByteConn;
      try {
        c = await acceptor.accept();
      } catch {
        return;
      }
      conns.push(c);
      const e = echo(c);
      echoes.add(e);
      e.finally(() => echoes.delete(e));
    }
  })();
  return {
    acceptor,
    port: acceptor.addr.port,
    conns,
    failures,
    async close() {
      acceptor.close();
      await loop;
      for (const c of conns) c.close();
      await Promise.all(echoes);
      await acceptor.finished;
    },
  };
}

async function echo(c: TlsByteConn): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  try {
    for (;;) {
      const n = await c.read(buf);
      if (n === null) break;
      let off = 0;
      while (off < n) off += await c.write(buf.subarray(off, n));
    }
  } catch { /* peer gone */ }
  c.close();
}

interface Hello {
  socket: TLSSocket;
  subject: string | undefined;
  alpn: string | false | null;
}

/** A node:tls client handshake that trusts only `expect`'s certificate. */
function handshake(
  port: number,
  servername: string,
  o: { expect?: string; alpn?: string[] } = {},
): Promise<Hello> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: "127.0.0.1",
      port,
      ...(servername ? { servername } : {}), // none: no SNI (the host is an IP address)
      ca: certs.get(o.expect ?? servername)?.cert ?? certs.get("a.test")!.cert,
      ALPNProtocols: o.alpn ?? ["http/1.1"],
    });
    socket.setTimeout(10_000, () => socket.destroy(new Error("client timeout")));
    socket.once("secureConnect", () => {
      socket.setTimeout(0);
      const cn = socket.getPeerCertificate().subject?.CN;
      resolve({ socket, subject: Array.isArray(cn) ? cn[0] : cn, alpn: socket.alpnProtocol });
    });
    socket.once("error", reject);
  });
}

/** Sends `data` and reads the same number of bytes back. */
function roundTrip(socket: TLSSocket, data: Uint8Array): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const parts: Uint8Array[] = [];
    let got = 0;
    const onData = (b: Uint8Array) => {
      parts.push(b);
      got += b.length;
      if (got < data.length) return;
      socket.off("data", onData);
      const out = new Uint8Array(got);
      let o = 0;
      for (const p of parts) out.set(p, (o += p.length) - p.length);
      resolve(out);
    };
    socket.on("data", onData);
    socket.once("error", reject);
    socket.write(data);
  });
}

function closeSocket(s: TLSSocket): Promise<void> {
  return new Promise((r) => {
    s.once("close", () => r());
    s.destroy();
  });
}

/** Open descriptors of this process (through `ls`: Deno's permissions keep /proc/self from us). */
async function fdCount(): Promise<number> {
  const out = await new Deno.Command("ls", { args: [`/proc/${Deno.pid}/fd`], stdout: "piped" })
    .output();
  return new TextDecoder().decode(out.stdout).split("\n").filter((l) => l !== "").length;
}

/**
 * The count is the whole process's, and `deno test --parallel` runs other test
 * modules in this process: allow that many of theirs. A leak here is 2 per
 * connection, 6 or 8 in these tests.
 */
const FD_SLACK = 3;

/** The open descriptors once the count holds still for 100 ms (closing is asynchronous). */
async function settledFdCount(): Promise<number> {
  let last = await fdCount();
  for (let i = 0, same = 0; i < 100 && same < 5; i++) {
    await sleep(20);
    const now = await fdCount();
    same = now === last ? same + 1 : 0;
    last = now;
  }
  return last;
}

/** `p`, or a rejection after `ms`. */
async function within<T>(ms: number, p: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) =>
    timer = setTimeout(() => reject(new Error(`not within ${ms} ms`)), ms)
  );
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits (up to 2 s) for `cond`. */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i++) await sleep(10);
}

async function readExactly(c: Deno.Conn, n: number): Promise<Uint8Array | null> {
  const out = new Uint8Array(n);
  for (let off = 0; off < n;) {
    const k = await c.read(out.subarray(off));
    if (k === null) return null;
    off += k;
  }
  return out;
}

/**
 * A TCP relay to `target` that delivers the client's ClientHello record in
 * `pieces()` writes `gapMs()` apart (optionally re-cut into `records()` TLS
 * records first), then copies both ways.
 */
function splitRelay(
  target: number,
  cut: { pieces: () => number; gapMs: () => number; records?: () => number },
) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const sizes: number[] = [];
  const tasks = new Set<Promise<void>>();
  const run = async (c: Deno.Conn) => {
    const s = await Deno.connect({ hostname: "127.0.0.1", port: target });
    try {
      s.setNoDelay(true);
      const head = await readExactly(c, 5);
      if (!head) return;
      const body = await readExactly(c, (head[3]! << 8) | head[4]!);
      if (!body) return;
      sizes.push(5 + body.length);
      const wire = recut(head, body, cut.records?.() ?? 1);
      const pieces = cut.pieces();
      const step = Math.ceil(wire.length / pieces);
      for (let off = 0; off < wire.length; off += step) {
        if (off > 0) await sleep(cut.gapMs());
        await s.write(wire.subarray(off, Math.min(wire.length, off + step)));
      }
      await Promise.all([pump(c, s), pump(s, c)]);
    } catch {
      /* either side gone */
    } finally {
      for (const x of [c, s]) {
        try {
          x.close();
        } catch { /* closed */ }
      }
    }
  };
  const accepting = (async () => {
    for await (const c of listener) {
      const t = run(c);
      tasks.add(t);
      t.finally(() => tasks.delete(t));
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    sizes,
    async close() {
      listener.close();
      await accepting;
      await Promise.all(tasks);
    },
  };
}

/** The handshake payload of one record re-cut into `n` records (valid TLS). */
function recut(head: Uint8Array, body: Uint8Array, n: number): Uint8Array {
  if (n <= 1) {
    const out = new Uint8Array(5 + body.length);
    out.set(head);
    out.set(body, 5);
    return out;
  }
  const step = Math.ceil(body.length / n);
  const out = new Uint8Array(body.length + 5 * Math.ceil(body.length / step));
  let o = 0;
  for (let off = 0; off < body.length; off += step) {
    const part = body.subarray(off, Math.min(body.length, off + step));
    out.set([0x16, head[1]!, head[2]!, part.length >> 8, part.length & 0xff], o);
    out.set(part, o + 5);
    o += 5 + part.length;
  }
  return out;
}

async function pump(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(16 * 1024);
  try {
    for (;;) {
      const n = await from.read(buf);
      if (n === null) break;
      for (let off = 0; off < n;) off += await to.write(buf.subarray(off, n));
    }
    await to.closeWrite();
  } catch {
    try {
      to.close();
    } catch { /* closed */ }
  }
}

/** ALPN names that make a node ClientHello about 1.8 KB, like a post-quantum browser's. */
const PADDING_ALPN = Array.from({ length: 14 }, (_, i) => `x-pad-${i}-${"p".repeat(100)}`);

Deno.test("TlsAcceptor: the certificate by SNI, ALPN, data both ways", async () => {
  const h = start({ alpn: ["h2", "http/1.1"] });
  try {
    const a = await handshake(h.port, "a.test");
    assert.deepEqual(a.subject, "a.test");
    assert.deepEqual(a.alpn, "http/1.1");
    const b = await handshake(h.port, "B.TEST.", { expect: "b.test", alpn: ["h2", "http/1.1"] });
    assert.deepEqual(b.subject, "b.test");
    assert.deepEqual(b.alpn, "h2");
    await sleep(20);
    assert.deepEqual(h.conns.map((c) => [c.serverName, c.alpn]), [["a.test", "http/1.1"], [
      "b.test",
      "h2",
    ]]);
    assert.deepEqual(h.conns[0]!.remoteAddr.hostname, "127.0.0.1");
    assert.deepEqual(h.conns[0]!.remoteAddr.port, a.socket.localPort);
    assert.deepEqual(h.conns[0]!.localAddr.port, h.port);
    // Small and large (backpressure both ways) payloads come back intact.
    const small = new TextEncoder().encode("hello over TLS");
    assert.deepEqual(await roundTrip(a.socket, small), small);
    const big = crypto.getRandomValues(new Uint8Array(65536)).map((x, i) => x ^ i);
    const large = new Uint8Array(3 * 1024 * 1024);
    for (let o = 0; o < large.length; o += big.length) large.set(big, o);
    assert.deepEqual(await roundTrip(b.socket, large), large);
    // A client offering nothing we speak, and one offering no ALPN at all.
    await assert.rejects(() => handshake(h.port, "a.test", { alpn: ["spdy/3"] }));
    const none = await handshake(h.port, "a.test", { alpn: [] });
    await sleep(20);
    assert.deepEqual(h.conns.at(-1)!.alpn, null);
    await Promise.all([a, b, none].map((x) => closeSocket(x.socket)));
    assert.deepEqual(h.acceptor.handshakes, 3);
    assert.deepEqual(h.acceptor.failures.other, 1);
  } finally {
    await h.close();
  }
});

Deno.test("TlsAcceptor: unknown or missing SNI fails the handshake (no_certificate)", async () => {
  const h = start();
  try {
    await assert.rejects(() => handshake(h.port, "c.test", { expect: "a.test" }), /name/i);
    await assert.rejects(() => handshake(h.port, "", { expect: "a.test" }), /name/i);
    await until(() => h.failures.length === 2);
    assert.deepEqual(h.acceptor.failures.no_certificate, 2);
    assert.deepEqual(h.failures, ["no_certificate", "no_certificate"]);
    // Plain HTTP on the TLS port.
    const c = await Deno.connect({ hostname: "127.0.0.1", port: h.port });
    await c.write(new TextEncoder().encode("GET / HTTP/1.1\r\nhost: a.test\r\n\r\n"));
    assert.deepEqual(await c.read(new Uint8Array(16)), null);
    c.close();
    await until(() => h.failures.length === 3);
    assert.deepEqual(h.acceptor.failures.bad_client_hello, 1);
  } finally {
    await h.close();
  }
});

Deno.test("TlsAcceptor: ClientHellos split over 2-5 segments 1-50 ms apart, 100 of 100", async () => {
  const h = start();
  let n = 0;
  // Every 4th is also re-cut into 2-3 TLS records; half carry a ~1.8 KB ClientHello.
  const relay = splitRelay(h.port, {
    pieces: () => 2 + (n % 4),
    gapMs: () => 1 + Math.floor(Math.random() * 50),
    records: () => (n % 4 === 3 ? 2 + (n % 2) : 1),
  });
  try {
    const TOTAL = 100;
    const PARALLEL = 20;
    let ok = 0;
    const errors: string[] = [];
    const worker = async () => {
      while (n < TOTAL) {
        const i = n++;
        const name = i % 2 === 0 ? "a.test" : "b.test";
        const alpn = i % 4 < 2 ? [...PADDING_ALPN, "http/1.1"] : ["http/1.1"];
        try {
          const x = await handshake(relay.port, name, { alpn });
          if (x.subject === name && x.alpn === "http/1.1") ok++;
          else errors.push(`${name}: ${x.subject} ${x.alpn}`);
          await closeSocket(x.socket);
        } catch (e) {
          errors.push(`${name}: ${e}`);
        }
      }
    };
    await Promise.all(Array.from({ length: PARALLEL }, worker));
    assert.deepEqual(errors, []);
    assert.deepEqual(ok, TOTAL);
    assert.ok(Math.max(...relay.sizes) > 1700, `largest ClientHello ${Math.max(...relay.sizes)} B`);
    assert.deepEqual(h.failures, []);
  } finally {
    await relay.close();
    await h.close();
  }
});

Deno.test("TlsAcceptor: silent, half-ClientHello and stalled handshakes close at the deadline", async () => {
  const h = start({ handshakeTimeoutMs: 300 });
  try {
    // Warm up (first handshake loads node:tls) so the descriptor count is stable.
    await closeSocket((await handshake(h.port, "a.test")).socket);
    const hello = await captureClientHello();
    const before = await settledFdCount();
    const t0 = performance.now();
    const silent = await Deno.connect({ hostname: "127.0.0.1", port: h.port });
    const half = await Deno.connect({ hostname: "127.0.0.1", port: h.port });
    // The first 11 bytes of a ClientHello announcing 252 more.
    await half.write(new Uint8Array([0x16, 3, 1, 1, 0, 1, 0, 0, 0xfc, 3, 3]));
    // A whole ClientHello, then nothing: the deadline falls inside node's handshake.
    const stalled = await Deno.connect({ hostname: "127.0.0.1", port: h.port });
    await stalled.write(hello);
    await sleep(100);
    assert.deepEqual(h.acceptor.inProgress, 3);
    // When each sees EOF or a reset (server hello etc. before); Infinity if not in 3 s.
    const ended = await Promise.all([silent, half, stalled].map(async (c) => {
      const buf = new Uint8Array(4096);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const giveUp = new Promise<"late">((r) => timer = setTimeout(() => r("late"), 3000));
      try {
        for (;;) {
          const n = await Promise.race([c.read(buf), giveUp]);
          if (n === "late") return Infinity;
          if (n === null) break;
        }
      } catch {
        /* reset */
      } finally {
        clearTimeout(timer);
      }
      return performance.now() - t0;
    }));
    for (const ms of ended) assert.ok(ms >= 250 && ms < 1500, `closed after ${ms.toFixed(0)} ms`);
    assert.deepEqual(h.failures, ["timeout", "timeout", "timeout"]);
    assert.deepEqual(h.acceptor.inProgress, 0);
    for (const c of [silent, half, stalled]) c.close();
    assert.deepEqual(h.acceptor.inProgress, 0);
    const after = await settledFdCount();
    assert.ok(after <= before + FD_SLACK, `descriptors released: ${after} vs ${before}`);
  } finally {
    await h.close();
  }
});

Deno.test("TlsAcceptor: a connection closed by either side releases both descriptors", async () => {
  const h = start();
  try {
    await closeSocket((await handshake(h.port, "a.test")).socket);
    const before = await settledFdCount();
    const clients = await Promise.all([0, 1, 2, 3].map(() => handshake(h.port, "a.test")));
    for (const c of clients) {
      assert.deepEqual(
        await roundTrip(c.socket, new Uint8Array([1, 2, 3])),
        new Uint8Array([1, 2, 3]),
      );
    }
    assert.ok(await fdCount() >= before + 4 * 3, "client + two server descriptors each");
    // Two closed by the server (TlsByteConn.close), two by the client.
    const mine = h.conns.slice(-4);
    mine[0]!.close();
    mine[1]!.close();
    await Promise.all(
      clients.map((c, i) =>
        i < 2 ? within(2000, new Promise((r) => c.socket.once("close", r))) : closeSocket(c.socket)
      ),
    );
    const after = await settledFdCount();
    assert.ok(after <= before + FD_SLACK, `descriptors released: ${after} vs ${before}`);
  } finally {
    await h.close();
  }
});

Deno.test("TlsAcceptor: close() ends accept() and releases the port", async () => {
  const h = start();
  const port = h.port;
  const pending = h.acceptor.accept();
  h.acceptor.close();
  await assert.rejects(() => pending, Deno.errors.BadResource);
  await assert.rejects(() => h.acceptor.accept(), Deno.errors.BadResource);
  await h.close();
  await h.acceptor.finished;
  const l = Deno.listen({ hostname: "127.0.0.1", port });
  l.close();
});

/** The ClientHello node:tls sends for a.test (read by a listener that answers nothing). */
async function captureClientHello(): Promise<Uint8Array> {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = connect({
    host: "127.0.0.1",
    port: (l.addr as Deno.NetAddr).port,
    servername: "a.test",
    ALPNProtocols: ["http/1.1"],
  });
  client.on("error", () => {});
  const c = await l.accept();
  const head = (await readExactly(c, 5))!;
  const body = (await readExactly(c, (head[3]! << 8) | head[4]!))!;
  client.destroy();
  c.close();
  l.close();
  return recut(head, body, 1);
}

Deno.test("TlsAcceptor: beyond maxHandshakes new connections are closed at once", async () => {
  const failures: TlsFailureReason[] = [];
  const acceptor = new TlsAcceptor({
    hostname: "127.0.0.1",
    port: 0,
    lookup,
    maxHandshakes: 2,
    handshakeTimeoutMs: 300,
    onFailure: (r) => failures.push(r),
  });
  const conns = [];
  for (let i = 0; i < 3; i++) {
    conns.push(await Deno.connect({ hostname: "127.0.0.1", port: acceptor.addr.port }));
  }
  const t0 = performance.now();
  assert.deepEqual(await conns[2]!.read(new Uint8Array(1)), null);
  assert.ok(performance.now() - t0 < 200);
  assert.deepEqual(failures, ["too_many_handshakes"]);
  await until(() => failures.length === 3);
  assert.deepEqual(failures, ["too_many_handshakes", "timeout", "timeout"]);
  for (const c of conns) c.close();
  acceptor.close();
  await acceptor.finished;
});

Deno.test("TlsAcceptor: one address cannot hold more than maxHandshakesPerAddress; another still can", async () => {
  const failures: TlsFailureReason[] = [];
  const acceptor = new TlsAcceptor({
    hostname: "127.0.0.1",
    port: 0,
    lookup,
    maxHandshakesPerAddress: 2,
    handshakeTimeoutMs: 300,
    onFailure: (r) => failures.push(r),
  });
  const port = acceptor.addr.port;
  const conns = [];
  for (let i = 0; i < 3; i++) conns.push(await Deno.connect({ hostname: "127.0.0.1", port }));
  // The third from 127.0.0.1 is closed at once...
  assert.deepEqual(await conns[2]!.read(new Uint8Array(1)), null);
  assert.deepEqual(failures, ["too_many_handshakes_per_address"]);
  // ...while a caller on another address still gets a handshake slot (it times out silent).
  const other = nodeNet.connect({ host: "127.0.0.1", port, localAddress: "127.0.0.2" });
  await new Promise((r, j) => other.once("connect", r).once("error", j));
  await until(() => failures.length === 4);
  assert.deepEqual(failures.slice(1).sort(), ["timeout", "timeout", "timeout"]);
  other.destroy();
  for (const c of conns) c.close();
  acceptor.close();
  await acceptor.finished;
});

Deno.test("TlsAcceptor: out of descriptors (EMFILE), it backs off, counts and recovers", async () => {
  // A child process with 64 descriptors; its acceptor gets more connections than that.
  const script = `
    import { TlsAcceptor } from ${JSON.stringify(new URL("./tls.ts", import.meta.url).href)};
    const pair = JSON.parse(Deno.args[0]);
    const a = new TlsAcceptor({ hostname: "127.0.0.1", port: 0, lookup: async (n) => n === "a.test" ? pair : undefined, handshakeTimeoutMs: 500 });
    (async () => { for (;;) { const c = await a.accept(); c.close(); } })();
    console.log(JSON.stringify({ port: a.addr.port }));
    for await (const _ of Deno.stdin.readable) break;
    console.log(JSON.stringify({ acceptErrors: a.acceptErrors, failures: a.failures, handshakes: a.handshakes }));
    Deno.exit(0);`;
  const file = await Deno.makeTempFile({ suffix: ".ts" });
  await Deno.writeTextFile(file, script);
  const proc = new Deno.Command("prlimit", {
    args: [
      "--nofile=64",
      Deno.execPath(),
      "run",
      "-A",
      "--no-check",
      file,
      JSON.stringify(certs.get("a.test")),
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines = proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
  try {
    const first = JSON.parse((await lines.read()).value!) as { port: number };
    const flood: Deno.Conn[] = [];
    for (let i = 0; i < 100; i++) {
      flood.push(await Deno.connect({ hostname: "127.0.0.1", port: first.port }));
    }
    await sleep(300); // the child runs out of descriptors and backs off
    for (const c of flood) c.close();
    await sleep(700); // accepted ones time out, the rest arrive closed
    const ok = await handshake(first.port, "a.test");
    assert.deepEqual(ok.subject, "a.test");
    // The child closes what it accepts: the close means its side finished too.
    await new Promise((r) => ok.socket.once("close", r).resume());
    const w = proc.stdin.getWriter();
    await w.write(new Uint8Array([10]));
    await w.close();
    const last = JSON.parse((await lines.read()).value!) as {
      acceptErrors: number;
      handshakes: number;
    };
    assert.ok(last.acceptErrors > 0, JSON.stringify(last));
    assert.ok(last.handshakes >= 1, JSON.stringify(last));
    assert.ok((await proc.status).success);
  } finally {
    lines.releaseLock();
    await proc.stdout.cancel().catch(() => {});
    await proc.stderr.cancel();
    await Deno.remove(file);
  }
});

Deno.test("TlsAcceptor: a renewed certificate is served from the next handshake on", async () => {
  const h = start();
  try {
    const before = await handshake(h.port, "a.test");
    const old = certs.get("a.test")!;
    const renewed = await createSelfSignedCertificate(["a.test"]);
    certs.set("a.test", renewed);
    const after = await handshake(h.port, "a.test");
    assert.equal(after.subject, "a.test");
    assert.notEqual(
      after.socket.getPeerCertificate().fingerprint256,
      before.socket.getPeerCertificate().fingerprint256,
      "the new certificate, not a cached context of the old one",
    );
    certs.set("a.test", old);
    await Promise.all([before, after].map((x) => closeSocket(x.socket)));
  } finally {
    await h.close();
  }
});
