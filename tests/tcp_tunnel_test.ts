/**
 * The tunnel's TCP/TLS path end to end (docs/tcp-fallback.md), in one process on
 * real loopback sockets: the whole server (`runServer`, PostgreSQL) and the
 * client (`runClient`) with the "tcp" dialer: TLS to the HTTPS listener (the
 * debug certificate trusted as a CA), a WebSocket, our DTLS over it, the mux.
 * Requests through it: 50 MiB each way SHA-256-checked (timed against the DTLS
 * path in the same test), a WebSocket, SSE; through an HTTP CONNECT proxy this
 * test runs itself; plain HTTP; a WebSocket peer that never speaks DTLS is closed;
 * the DTLS server's per-address cap on half-open handshakes holds for WebSocket
 * peers; shutdown does not wait for the tunnel's own WebSocket.
 */
import { equal, match, ok, rejects } from "node:assert/strict";
import { createHash } from "node:crypto";
import { request } from "node:http";
import WebSocket from "ws";
import { runClient } from "../client/connector.ts";
import { dtlsDialer, type TunnelDialer } from "../client/dialer.ts";
import { racingDialer } from "../client/race.ts";
import type { BackoffOptions } from "../client/failure.ts";
import { tcpDialer, type TcpDialerOptions } from "../client/tcp_dialer.ts";
import {
  checkUpgradeResponse,
  clientUpgradeRequest,
  connStream,
  newClientKey,
  readResponseHead,
  TUNNEL_WS_PATH,
  WsConn,
} from "../shared/ws/mod.ts";
import {
  derivePsk,
  dtlsConnect,
  type PacketSocketFactory,
  type UdpHandler,
} from "../shared/dtls/mod.ts";
import { curl } from "./helpers/procs.ts";
import { startTestServer, type TestServer } from "./helpers/server.ts";

const DOMAIN = "app.tcp.test";
const MiB = 1024 * 1024;
const BIG = 50 * MiB;

/** The deterministic body /bytes serves: chunk i of 64 KiB filled from its index. */
function pattern(): Uint8Array {
  return new Uint8Array(64 * 1024).map((_, i) => (i * 31) & 0xff);
}
function patternSha(n: number): string {
  const h = createHash("sha256");
  const c = pattern();
  for (let sent = 0; sent < n; sent += c.length) {
    h.update(c.subarray(0, Math.min(c.length, n - sent)));
  }
  return h.digest("hex");
}

function startOrigin() {
  const ac = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    async (req) => {
      const url = new URL(req.url);
      if (req.headers.get("upgrade") === "websocket") {
        const { socket, response } = Deno.upgradeWebSocket(req);
        socket.onmessage = (e) => socket.send(e.data);
        return response;
      }
      if (url.pathname === "/bytes") {
        const n = Number(url.searchParams.get("n"));
        const chunk = pattern();
        let sent = 0;
        return new Response(
          new ReadableStream({
            pull(c) {
              if (sent >= n) return c.close();
              const part = chunk.slice(0, Math.min(chunk.length, n - sent));
              sent += part.length;
              c.enqueue(part);
            },
          }),
        );
      }
      if (url.pathname === "/sha") {
        const h = createHash("sha256");
        let n = 0;
        for await (const c of req.body!) {
          h.update(c);
          n += c.length;
        }
        return Response.json({ sha: h.digest("hex"), n });
      }
      if (url.pathname === "/sse") {
        let i = 0;
        return new Response(
          new ReadableStream({
            async pull(c) {
              if (i === 4) return c.close();
              await new Promise((r) => setTimeout(r, 150));
              c.enqueue(new TextEncoder().encode(`data: ${i++}\n\n`));
            },
          }),
          { headers: { "content-type": "text/event-stream" } },
        );
      }
      return new Response("hello over tcp\n");
    },
  );
  return { port: server.addr.port, close: () => (ac.abort(), server.finished) };
}

/** A public request through the server's HTTP listener (Host = the tunnel's domain). */
function publicRequest(
  t: TestServer,
  method: string,
  path: string,
  body?: (write: (c: Uint8Array) => Promise<void>) => Promise<void>,
): Promise<{ status: number; sha: string; n: number; text: string; ms: number }> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const req = request({
      host: "127.0.0.1",
      port: t.server.httpAddr.port,
      path,
      method,
      headers: { host: DOMAIN },
    }, (res) => {
      const h = createHash("sha256");
      let n = 0;
      let text = "";
      res.on("data", (c: Uint8Array) => {
        h.update(c);
        n += c.length;
        if (text.length < 4096) text += new TextDecoder().decode(c);
      });
      res.on("end", () =>
        resolve({
          status: res.statusCode ?? 0,
          sha: h.digest("hex"),
          n,
          text,
          ms: performance.now() - started,
        }));
      res.on("error", reject);
    });
    req.on("error", reject);
    if (!body) req.end();
    else {
      body((c) =>
        new Promise<void>((r) => {
          if (req.write(c)) r();
          else req.once("drain", () => r());
        })
      ).then(() => req.end(), reject);
    }
  });
}

/** Runs a client with `dialer` until the returned stop() is called. */
async function startClient(
  t: TestServer,
  apiKey: string,
  origin: number,
  dialer: TunnelDialer,
  backoff?: BackoffOptions,
) {
  const ac = new AbortController();
  let up!: () => void;
  const connected = new Promise<void>((r) => up = r);
  const failures: string[] = [];
  const connects: number[] = [];
  const running = runClient({
    server: { hostname: "127.0.0.1", port: t.dtlsPort },
    domain: DOMAIN,
    apiKey,
    target: new URL(`http://127.0.0.1:${origin}`),
    dialer,
    ...(backoff ? { backoff } : {}),
    onEvent: (e) => {
      if (e.type === "connected") {
        connects.push(performance.now());
        up();
      }
      if (e.type === "failure") failures.push(e.message);
    },
  }, ac.signal);
  const timeout = setTimeout(() => up(), 15_000);
  await connected;
  clearTimeout(timeout);
  return {
    failures,
    /** When each "connected" event came (performance.now()). */
    connects,
    async stop() {
      ac.abort();
      await running;
    },
  };
}

async function setup(env: Record<string, string> = {}) {
  const t = await startTestServer(env, { tunnelWs: { handshakeTimeoutMs: 1500, sweepMs: 100 } });
  const apiKey = await t.register(DOMAIN);
  // Debug mode issues the server domain's self-signed certificate as it starts.
  let cert = await t.server.certificates.lookup("gateway.test");
  for (let i = 0; i < 100 && !cert; i++) {
    await new Promise((r) => setTimeout(r, 100));
    cert = await t.server.certificates.lookup("gateway.test");
  }
  ok(cert, "debug mode has a certificate for the server domain");
  return { t, apiKey, cert: cert.cert };
}

function tcpOptions(t: TestServer, apiKey: string, ca: string): TcpDialerOptions {
  return {
    server: { hostname: "127.0.0.1", port: t.server.httpsAddr.port },
    serverName: "gateway.test",
    caCerts: [ca],
    domain: DOMAIN,
    apiKey,
  };
}

Deno.test("tcp path: 50 MiB both ways checked, WebSocket and SSE through the tunnel; vs DTLS", async () => {
  const { t, apiKey, cert } = await setup();
  const origin = startOrigin();
  const timings: Record<string, number> = {};
  try {
    // The DTLS path first, for the comparison.
    const dtls = await startClient(
      t,
      apiKey,
      origin.port,
      dtlsDialer({
        server: { hostname: "127.0.0.1", port: t.dtlsPort },
        domain: DOMAIN,
        apiKey,
      }),
    );
    const d1 = await publicRequest(t, "GET", `/bytes?n=${BIG}`);
    equal(d1.sha, patternSha(BIG));
    timings.dtlsDown = d1.ms;
    await dtls.stop();

    const client = await startClient(
      t,
      apiKey,
      origin.port,
      tcpDialer(tcpOptions(t, apiKey, cert)),
    );
    const live = t.server.registry.live();
    equal(live.length, 1);
    equal(live[0]!.transport, "ws");
    equal(t.server.wsTunnel!.size, 1);

    const small = await publicRequest(t, "GET", "/");
    equal(small.status, 200);
    equal(small.text, "hello over tcp\n");

    const down = await publicRequest(t, "GET", `/bytes?n=${BIG}`);
    equal(down.status, 200);
    equal(down.n, BIG);
    equal(down.sha, patternSha(BIG));
    timings.tcpDown = down.ms;

    const up = await publicRequest(t, "POST", "/sha", async (write) => {
      const c = pattern();
      for (let sent = 0; sent < BIG; sent += c.length) await write(c.slice());
    });
    equal(up.status, 200);
    const got = JSON.parse(up.text);
    equal(got.n, BIG);
    equal(got.sha, patternSha(BIG));
    timings.tcpUp = up.ms;

    // A WebSocket through the tunnel (spliced over a mux stream over DTLS over a WebSocket).
    const ws = new WebSocket(`ws://127.0.0.1:${t.server.httpAddr.port}/chat`, {
      headers: { host: DOMAIN },
    });
    await new Promise((r, j) => {
      ws.once("open", r);
      ws.once("error", j);
    });
    for (const m of ["one", "two", "x".repeat(100_000)]) {
      const echoed = new Promise<string>((r) => ws.once("message", (d: Buffer) => r(d.toString())));
      ws.send(m);
      equal(await echoed, m);
    }
    ws.close();

    // SSE: events arrive as the origin sends them, not at the end.
    const arrivals: number[] = [];
    const sse = await new Promise<string>((resolve, reject) => {
      const req = request({
        host: "127.0.0.1",
        port: t.server.httpAddr.port,
        path: "/sse",
        headers: { host: DOMAIN },
      }, (res) => {
        let text = "";
        res.on("data", (c: Uint8Array) => {
          arrivals.push(performance.now());
          text += new TextDecoder().decode(c);
        });
        res.on("end", () => resolve(text));
      });
      req.on("error", reject);
      req.end();
    });
    equal(sse, "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\n");
    ok(arrivals.length >= 4, `events arrived in ${arrivals.length} pieces`);
    ok(arrivals.at(-1)! - arrivals[0]! >= 300, "the events were not buffered");

    const stats = t.server.wsTunnel!.stats;
    ok(stats.datagramsIn > 1000 && stats.datagramsOut > 1000);
    const text = await t.server.metrics.render();
    const metric = (series: string) =>
      Number(new RegExp(`^${series.replace(/[{}]/g, "\\$&")} (\\S+)$`, "m").exec(text)?.[1]);
    equal(metric("hopgate_tunnel_ws_connections"), 1);
    ok(metric(`hopgate_tunnel_ws_datagrams_total{direction="in"}`) >= stats.datagramsIn - 10);
    equal(metric(`hopgate_tunnel_ws_upgrades_total{result="accepted"}`), stats.accepted);
    equal(
      metric(`hopgate_tunnel_ws_datagrams_dropped_total{reason="queue_full"}`),
      stats.dropped.queueFull,
    );
    equal(client.failures.length, 0, client.failures.join("; "));
    await client.stop();
    console.log(
      `50 MiB on loopback: DTLS down ${
        (BIG / MiB / (timings.dtlsDown! / 1000)).toFixed(0)
      } MiB/s, ` +
        `TCP down ${(BIG / MiB / (timings.tcpDown! / 1000)).toFixed(0)} MiB/s, ` +
        `TCP up ${(BIG / MiB / (timings.tcpUp! / 1000)).toFixed(0)} MiB/s; ` +
        `ws dropped ${JSON.stringify(stats.dropped)}`,
    );
    // The session ends with the client: the WebSocket goes with it.
    for (let i = 0; i < 50 && t.server.wsTunnel!.size > 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    equal(t.server.wsTunnel!.size, 0);
  } finally {
    await origin.close();
    await t.close();
  }
});

/** A CONNECT proxy: the target's host:port, with optional Basic credentials. */
function startProxy(credentials?: string) {
  const seen: { target: string; auth: string | undefined }[] = [];
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const serve = async () => {
    for await (const c of listener) {
      conns.add(c);
      (async () => {
        const head = await readRequestHead(c);
        const [method, target] = head.line.split(" ");
        const auth = head.headers.get("proxy-authorization");
        seen.push({ target: target!, auth });
        const want = credentials ? `Basic ${btoa(credentials)}` : undefined;
        if (method !== "CONNECT" || (want && auth !== want)) {
          await c.write(new TextEncoder().encode(
            "HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n",
          ));
          c.close();
          return;
        }
        const [host, port] = [
          target!.slice(0, target!.lastIndexOf(":")),
          target!.split(":").at(-1),
        ];
        const up = await Deno.connect({ hostname: host, port: Number(port) });
        conns.add(up);
        await c.write(new TextEncoder().encode("HTTP/1.1 200 Connection established\r\n\r\n"));
        await Promise.allSettled([
          c.readable.pipeTo(up.writable),
          up.readable.pipeTo(c.writable),
        ]);
      })().catch(() => {}).finally(() => conns.delete(c));
    }
  };
  const serving = serve().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    seen,
    /** Cuts every connection through the proxy (a middlebox dropping them). */
    cut() {
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      conns.clear();
    },
    async close() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await serving;
    },
  };
}

async function readRequestHead(c: Deno.Conn) {
  const buf = new Uint8Array(8192);
  let n = 0;
  for (;;) {
    const got = await c.read(buf.subarray(n));
    if (got === null) throw new Error("closed");
    n += got;
    const text = new TextDecoder().decode(buf.subarray(0, n));
    const end = text.indexOf("\r\n\r\n");
    if (end < 0) continue;
    const lines = text.slice(0, end).split("\r\n");
    const headers = new Map<string, string>();
    for (const l of lines.slice(1)) {
      const i = l.indexOf(":");
      headers.set(l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim());
    }
    return { line: lines[0]!, headers };
  }
}

Deno.test("tcp path through an HTTP CONNECT proxy with credentials; a wrong password is refused without showing it; a cut connection is redialled at once", async () => {
  const { t, apiKey, cert } = await setup();
  const origin = startOrigin();
  const proxy = startProxy("user:s3cret-pass");
  try {
    const target = `127.0.0.1:${t.server.httpsAddr.port}`;
    // Wrong credentials: the dial fails with the proxy's answer, never the password.
    const bad = tcpDialer({
      ...tcpOptions(t, apiKey, cert),
      proxy: new URL(`http://user:wrong-pass@127.0.0.1:${proxy.port}`),
    });
    await rejects(bad.dial(new AbortController().signal), (e: Error) => {
      match(e.message, /407/);
      ok(!e.message.includes("wrong-pass") && !e.message.includes("user:"), e.message);
      return true;
    });

    const client = await startClient(
      t,
      apiKey,
      origin.port,
      tcpDialer({
        ...tcpOptions(t, apiKey, cert),
        proxy: new URL(`http://user:s3cret-pass@127.0.0.1:${proxy.port}`),
      }),
      // The first retry after a lost tunnel waits a random 0.25-3 s by default (the spread
      // that keeps a node's clients from coming back at once), which this test is not about.
      { reconnectSpreadMs: 500 },
    );
    const r = await publicRequest(t, "GET", "/");
    equal(r.text, "hello over tcp\n");
    const d = await publicRequest(t, "GET", `/bytes?n=${4 * MiB}`);
    equal(d.sha, patternSha(4 * MiB));
    equal(proxy.seen.at(-1)!.target, target);
    equal(proxy.seen.at(-1)!.auth, `Basic ${btoa("user:s3cret-pass")}`);
    equal(t.server.registry.live()[0]!.transport, "ws");

    // The proxy drops the connection: both ends end their DTLS session at once (not
    // at the mux's idle timeout) and the client reconnects through the proxy.
    const cutAt = performance.now();
    proxy.cut();
    for (let i = 0; i < 100 && client.connects.length < 2; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    equal(client.connects.length, 2, "reconnected");
    const after = client.connects[1]! - cutAt;
    ok(after < 3000, `reconnected ${after.toFixed(0)} ms after the cut`);
    equal((await publicRequest(t, "GET", "/")).text, "hello over tcp\n");
    equal(t.server.wsTunnel!.stats.closed.peer, 1);
    console.log(`proxy cut: reconnected after ${after.toFixed(0)} ms`);
    await client.stop();
  } finally {
    await proxy.close();
    await origin.close();
    await t.close();
  }
});

Deno.test("plain HTTP listener (not redirected to HTTPS); wrong certificate refused; a WebSocket that never speaks DTLS is closed", async () => {
  const { t, apiKey } = await setup({ HOP_SERVER_HTTPS_REDIRECT: "true" });
  const origin = startOrigin();
  try {
    // Without the debug certificate trusted, TLS fails: the certificate is verified.
    const untrusted = tcpDialer({
      server: { hostname: "127.0.0.1", port: t.server.httpsAddr.port },
      serverName: "gateway.test",
      domain: DOMAIN,
      apiKey,
    });
    await rejects(untrusted.dial(new AbortController().signal), /TLS with gateway.test failed/);

    // Plain HTTP to the HTTP listener (a TLS-terminating proxy's case).
    const client = await startClient(
      t,
      apiKey,
      origin.port,
      tcpDialer({
        server: { hostname: "127.0.0.1", port: t.server.httpAddr.port },
        tls: false,
        serverName: "gateway.test",
        domain: DOMAIN,
        apiKey,
      }),
    );
    equal(t.server.registry.live()[0]?.transport, "ws");
    // Public plain HTTP is redirected here: the request goes over HTTPS.
    const port = t.server.httpsAddr.port;
    const r = await curl([
      "-k",
      "--resolve",
      `${DOMAIN}:${port}:127.0.0.1`,
      `https://${DOMAIN}:${port}/`,
    ]);
    equal(r.body, "hello over tcp\n");
    await client.stop();

    // A WebSocket upgrade that sends nothing after the 101: closed at the handshake
    // timeout (1.5 s here, 10 s by default) with 1008.
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port: t.server.httpAddr.port });
    const key = newClientKey();
    await connStream(tcp).write(
      clientUpgradeRequest({ host: "gateway.test", path: TUNNEL_WS_PATH, key }),
    );
    const head = await readResponseHead((p) => tcp.read(p));
    checkUpgradeResponse(head, key);
    const started = performance.now();
    const ws = new WsConn(connStream(tcp), { role: "client", initial: head.rest, onMessage() {} });
    const info = await ws.done;
    const waited = performance.now() - started;
    equal(info.code, 1008);
    ok(waited >= 1200 && waited < 5000, `closed after ${waited.toFixed(0)} ms`);
    equal(t.server.wsTunnel!.stats.closed.handshakeTimeout, 1);

    // Not an upgrade: the server domain's usual answer (here the redirect to HTTPS);
    // another host: the tunnel path is not served.
    const plain = await curl(["-H", "Host: gateway.test", `${t.httpUrl}${TUNNEL_WS_PATH}`]);
    equal(plain.status, 308);
    const other = await curl(["-H", "Host: nobody.test", `${t.httpUrl}${TUNNEL_WS_PATH}`]);
    equal(other.status, 404);
  } finally {
    await origin.close();
    await t.close();
  }
});

Deno.test("shutdown with a tunnel over TCP: the request in flight finishes, then the WebSocket closes, no deadline wait", async () => {
  const { t, apiKey, cert } = await setup();
  const origin = startOrigin();
  try {
    const client = await startClient(
      t,
      apiKey,
      origin.port,
      tcpDialer(tcpOptions(t, apiKey, cert)),
    );
    const streaming = publicRequest(t, "GET", "/sse"); // four events over ~600 ms
    await new Promise((r) => setTimeout(r, 150));
    const started = performance.now();
    await t.server.close();
    const took = performance.now() - started;
    const r = await streaming;
    equal(r.status, 200);
    equal(r.text, "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\n");
    // The tunnel's own WebSocket does not hold the drain until HOP_SHUTDOWN_TIMEOUT_SECONDS (30).
    ok(took < 10_000, `shutdown took ${took.toFixed(0)} ms`);
    const stopped = t.logs.entries.find((e) => e.msg === "server stopped");
    equal(stopped?.fields.drained, true);
    equal(t.server.wsTunnel!.size, 0);
    await client.stop();
  } finally {
    await origin.close();
    await t.close();
  }
});

Deno.test({
  name: "UDP dropped (a sink that never answers): racing DTLS against the tcp path serves over TCP",
}, async () => {
  const { t, apiKey, cert } = await setup();
  const origin = startOrigin();
  // Takes every datagram, answers none: a network that drops UDP.
  const sink = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const sinking = (async () => {
    try {
      for (;;) await sink.receive();
    } catch { /* closed */ }
  })();
  try {
    const started = performance.now();
    const client = await startClient(
      t,
      apiKey,
      origin.port,
      racingDialer({
        preferred: dtlsDialer({
          server: { hostname: "127.0.0.1", port: (sink.addr as Deno.NetAddr).port },
          domain: DOMAIN,
          apiKey,
        }),
        fallback: tcpDialer(tcpOptions(t, apiKey, cert)),
        fallbackDelayMs: 500,
      }),
    );
    const took = performance.now() - started;
    equal(t.server.registry.live()[0]?.transport, "ws");
    ok(took >= 450 && took < 5000, `connected over TCP after ${took.toFixed(0)} ms`);
    equal((await publicRequest(t, "GET", "/")).text, "hello over tcp\n");
    await client.stop();
  } finally {
    sink.close();
    await sinking;
    await origin.close();
    await t.close();
  }
});

Deno.test("DTLS hardening applies to WebSocket peers: half-open handshakes capped per caller IP", async () => {
  const { t, apiKey, cert } = await setup();
  const origin = startOrigin();
  const opened: WsConn[] = [];
  try {
    // 20 WebSockets from 127.0.0.1, each a DTLS client that passes the cookie
    // exchange (its first two datagrams go out) and then falls silent.
    const attempts: Promise<unknown>[] = [];
    for (let i = 0; i < 20; i++) {
      const tcp = await Deno.connect({ hostname: "127.0.0.1", port: t.server.httpAddr.port });
      const key = newClientKey();
      await connStream(tcp).write(
        clientUpgradeRequest({ host: "gateway.test", path: TUNNEL_WS_PATH, key }),
      );
      const head = await readResponseHead((p) => tcp.read(p));
      checkUpgradeResponse(head, key);
      let handler: UdpHandler | undefined;
      const peer: Deno.NetAddr = { transport: "udp", hostname: "127.0.0.1", port: 1 };
      const ws = new WsConn(connStream(tcp), {
        role: "client",
        initial: head.rest,
        onMessage: (d) => handler?.(d, peer),
      });
      opened.push(ws);
      let sent = 0;
      const socket: PacketSocketFactory = (_h, _p, h) => {
        handler = h;
        return {
          addr: { hostname: "127.0.0.1", port: 0 },
          send: (d) => {
            if (sent++ < 2) ws.sendBinary(d);
          },
          close: () => ws.abort(),
          done: ws.done.then(() => {}),
        };
      };
      attempts.push(
        dtlsConnect({
          hostname: "127.0.0.1",
          port: 1,
          identity: DOMAIN,
          psk: derivePsk(apiKey),
          maxDatagramSize: 16 * 1024,
          handshakeTimeoutMs: 3000,
          socket,
        }).catch((e) => e),
      );
    }
    const ws = t.server.hub.listeners.find((l) => l.name === "ws")!;
    for (let i = 0; i < 50 && ws.stats.handshakesStarted < 20; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    equal(ws.stats.handshakesStarted, 20);
    // maxHandshakesPerAddress (16): the oldest four were evicted for the newer ones.
    equal(ws.stats.handshakesEvicted.addressCap, 4);
    ok(ws.connectionCount <= 16, `${ws.connectionCount} half-open`);
    // A real client from the same address still gets in.
    const client = await startClient(
      t,
      apiKey,
      origin.port,
      tcpDialer(tcpOptions(t, apiKey, cert)),
    );
    equal(t.server.registry.live()[0]?.transport, "ws");
    await client.stop();
    for (const e of await Promise.all(attempts)) ok(e instanceof Error);
  } finally {
    for (const w of opened) w.abort();
    await origin.close();
    await t.close();
  }
});
