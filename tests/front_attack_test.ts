/**
 * The public HTTP/1.1 front under attack, with real processes on loopback: the
 * server and client run as `deno run` processes with their tasks' flags, an
 * origin runs in this process, and a python3 attacker holds thousands of TCP
 * connections from 127.0.0.2–5 (its own fd limit raised). Timeouts are small
 * (HOP_SERVER_*_TIMEOUT_SECONDS) so the cases are quick. Every figure measured
 * is printed, one line each.
 *
 * 1. slowloris (2,000 connections dribbling a head), 2. each timeout by reason,
 * 3. fd exhaustion and the connection cap, 4. slow readers, 5. an origin that
 * answers at once without reading a 1 GiB upload, 6. request smuggling corpus,
 * 7. the admin API's HTTPS rule and the client address, 8. HTTPS, h2, wss.
 */
import { equal, ok } from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash, randomBytes } from "node:crypto";
import WebSocket from "ws";
import {
  ADMIN_KEY,
  curl,
  freePort,
  type ServerProc,
  startClientProc,
  startServerProc,
} from "./helpers/procs.ts";
import {
  Attacker,
  type AttackSummary,
  latin1Of,
  metric,
  percentile,
  procStats,
  rawExchange,
  scrape,
  sleep,
  waitUntil,
} from "./helpers/attack.ts";

const DOMAIN = "app.attack.test";
const EARLY = "early.attack.test";
const GATEWAY = "gateway.test";
const SOURCES = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];
const MiB = 1024 * 1024;

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const log = (label: string, value: unknown) =>
  console.log(`  ${label}: ${typeof value === "string" ? value : JSON.stringify(value)}`);

/** The local service behind the client: counts every request it sees. */
function startOrigin() {
  const ac = new AbortController();
  const seen: { method: string; path: string }[] = [];
  const chunk = new Uint8Array(64 * 1024).map((_, i) => i * 31);
  const server = Deno.serve(
    {
      hostname: "127.0.0.1",
      port: 0,
      signal: ac.signal,
      onListen() {},
      // A caller cut mid-body (the late smuggling case): no stack trace in the output.
      onError: () => new Response("origin error", { status: 500 }),
    },
    async (req) => {
      const url = new URL(req.url);
      seen.push({ method: req.method, path: url.pathname });
      if (req.headers.get("upgrade") === "websocket") {
        const { socket, response } = Deno.upgradeWebSocket(req);
        socket.onmessage = (e) => socket.send(e.data);
        return response;
      }
      switch (url.pathname) {
        case "/headers":
          return Response.json(Object.fromEntries(req.headers));
        case "/echo": {
          const body = new Uint8Array(await req.arrayBuffer());
          return new Response(body, { headers: { "x-sha256": sha256(body) } });
        }
        case "/bytes": {
          const n = Number(url.searchParams.get("n"));
          let sent = 0;
          return new Response(
            new ReadableStream({
              pull(c) {
                if (sent >= n) return c.close();
                const part = chunk.subarray(0, Math.min(chunk.length, n - sent));
                sent += part.length;
                c.enqueue(part);
              },
            }),
          );
        }
        default:
          return new Response("Hello, world!");
      }
    },
  );
  return {
    port: server.addr.port,
    seen,
    chunk,
    stop: async () => (ac.abort(), await server.finished),
  };
}

/**
 * An origin that answers every request at once with a never-ending chunked body
 * and never reads what follows the request head.
 */
function startEarlyOrigin() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  let requests = 0;
  let stopped = false;
  const serveOne = async (conn: Deno.Conn) => {
    conns.add(conn);
    try {
      const buf = new Uint8Array(16 * 1024);
      let head = "";
      while (!head.includes("\r\n\r\n")) {
        const n = await conn.read(buf);
        if (n === null) return;
        head += latin1Of(buf.subarray(0, n));
      }
      requests++;
      const enc = new TextEncoder();
      await conn.write(
        enc.encode(
          "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n",
        ),
      );
      const tick = enc.encode("5\r\ntick\n\r\n");
      while (!stopped) {
        await conn.write(tick);
        await sleep(100);
      }
    } catch {
      /* the client went away */
    } finally {
      conns.delete(conn);
      try {
        conn.close();
      } catch { /* closed */ }
    }
  };
  const loop = (async () => {
    for await (const conn of listener) serveOne(conn);
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    get requests() {
      return requests;
    },
    stop: async () => {
      stopped = true;
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await loop;
    },
  };
}

const get = (path: string, host = DOMAIN, extra = "") =>
  `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${extra}Connection: close\r\n\r\n`;

/** Request log lines the ingress wrote for `domain` (one per exchange that reached it). */
const requestLogs = (server: ServerProc, domain: string) =>
  server.proc.stdout.split("\n").filter((l) =>
    l.includes('"msg":"request"') && l.includes(`"domain":"${domain}"`)
  ).length;

/** A step that prints its runtime. */
function timed(name: string, fn: () => Promise<void>): () => Promise<void> {
  return async () => {
    console.log(`\n[${name}]`);
    const t0 = performance.now();
    try {
      await fn();
    } finally {
      log("runtime", `${((performance.now() - t0) / 1000).toFixed(1)} s`);
    }
  };
}

Deno.test("front attack: slowloris, timeouts, smuggling, slow readers, early answer, HTTPS", async (t) => {
  const origin = startOrigin();
  const httpsPort = freePort("tcp");
  const metricsPort = freePort("tcp");
  const server = await startServerProc({
    HOP_SERVER_HTTPS_LISTEN: `127.0.0.1:${httpsPort}`,
    HOP_METRICS_LISTEN: `127.0.0.1:${metricsPort}`,
    HOP_SERVER_HEADER_TIMEOUT_SECONDS: "2",
    HOP_SERVER_IDLE_TIMEOUT_SECONDS: "1",
    HOP_SERVER_TLS_HANDSHAKE_TIMEOUT_SECONDS: "1.5",
    HOP_SERVER_WRITE_TIMEOUT_SECONDS: "3",
    HOP_SERVER_BODY_TIMEOUT_SECONDS: "10",
  });
  const pid = server.proc.child.pid;
  const port = server.httpPort;
  const key = await server.register(DOMAIN);
  const client = startClientProc({
    dtlsPort: server.dtlsPort,
    domain: DOMAIN,
    apiKey: key,
    target: `127.0.0.1:${origin.port}`,
  });
  const cut = (text: string, reason: string, listener = "http") =>
    metric(text, "hopgate_http_connections_cut_total", { listener, reason });
  try {
    await client.waitFor("connected to");
    const warm = await rawExchange(port, get("/"));
    equal(warm.status, 200, warm.head);

    await t.step(
      "1. slowloris: 2,000 connections dribbling a head are cut at the header timeout",
      timed("slowloris", async () => {
        const m0 = await scrape(metricsPort);
        await sleep(300);
        const base = await procStats(pid);
        const attacker = new Attacker({
          mode: "slowloris",
          port,
          count: 2000,
          sources: SOURCES,
          batch: 250,
          batchGapMs: 40,
          settleMs: 200,
          payload: `GET / HTTP/1.1\r\nHost: ${DOMAIN}\r\nX-Slow: ${"a".repeat(4000)}`,
          dripMs: 1000,
          maxSeconds: 15,
        });
        let done = false;
        let peak = base;
        let peakOpen = 0;
        const latencies: number[] = [];
        const statuses: number[] = [];
        const sampler = (async () => {
          while (!done) {
            const s = await procStats(pid);
            if (s.fds > peak.fds) peak = s;
            const m = await scrape(metricsPort).catch(() => "");
            peakOpen = Math.max(
              peakOpen,
              metric(m, "hopgate_http_connections", { listener: "http" }),
            );
            await sleep(150);
          }
        })();
        const prober = (async () => {
          while (!done) {
            const r = await rawExchange(port, get("/"), { timeoutMs: 5000 });
            latencies.push(r.ms);
            statuses.push(r.status);
            await sleep(150);
          }
        })();
        let opened: AttackSummary;
        let fin: AttackSummary;
        try {
          opened = await attacker.next("opened", 20_000);
          fin = await attacker.next("done", 30_000);
        } finally {
          done = true;
          await Promise.all([sampler, prober]);
          await attacker.stop();
        }
        const backToBase = await waitUntil(
          async () => Math.abs((await procStats(pid)).fds - base.fds) <= 5,
          5000,
        );
        const after = await procStats(pid);
        const m1 = await scrape(metricsPort);
        const cuts = cut(m1, "header_timeout") - cut(m0, "header_timeout");
        const perAddr = cut(m1, "max_connections_per_address") -
          cut(m0, "max_connections_per_address");
        log("attacker fd limit (setrlimit)", opened.nofile);
        log("opened / connected at full attack", `${opened.opened} / ${opened.connected}`);
        log("open connections gauge (peak)", peakOpen);
        log("connections closed by the server", `${fin.closedByPeer} / ${fin.connected}`);
        log("still open when the attacker stopped", fin.open);
        log("lifetime from connect ms (min/p50/p99/max)", fin.lifeMs);
        log("how they ended", fin.ends);
        log("attack bytes dribbled", fin.bytesSent);
        log("tunneled probes during the attack", statuses.length);
        log(
          "probe latency ms (min/p50/p99/max)",
          [0, 50, 99, 100].map((p) => Math.round(percentile(latencies, p))),
        );
        log("server fds baseline / peak / after", `${base.fds} / ${peak.fds} / ${after.fds}`);
        log("server RSS MiB baseline / peak-fd sample / after", [
          base.rssKiB >> 10,
          peak.rssKiB >> 10,
          after.rssKiB >> 10,
        ]);
        log(
          "server RSS per held connection KiB ((peak - baseline) / 2000)",
          Math.round((peak.rssKiB - base.rssKiB) / 2000),
        );
        log("cut header_timeout (delta)", cuts);
        log("cut max_connections_per_address (delta)", perAddr);
        equal(fin.connected, 2000, "every attack connection was accepted by TCP");
        equal(fin.open, 0, "every attack connection was closed by the server");
        ok(fin.lifeMs.min! >= 1900, `cut before the header timeout: ${fin.lifeMs.min} ms`);
        ok(fin.lifeMs.max! <= 4000, `not cut within header timeout + 2 s: ${fin.lifeMs.max} ms`);
        ok(statuses.length >= 5, "probes ran during the attack");
        ok(statuses.every((s) => s === 200), `a probe failed: ${statuses}`);
        ok(percentile(latencies, 100) < 2000, "a probe took 2 s or more");
        ok(backToBase, `fds did not return to ${base.fds} ±5: ${after.fds}`);
        ok(cuts >= 1990 && cuts <= 2010, `header_timeout cuts: ${cuts}`);
        equal(perAddr, 0);
      }),
    );

    await t.step(
      "2. idle keep-alive, silent TCP on HTTP and HTTPS, half ClientHello: cut by reason",
      timed("timeouts", async () => {
        const m0 = await scrape(metricsPort);
        const waitClose = async (conn: Deno.Conn, from: number) => {
          const buf = new Uint8Array(4096);
          try {
            while (await conn.read(buf) !== null) { /* discard */ }
          } catch { /* reset */ }
          const ms = performance.now() - from;
          conn.close();
          return ms;
        };
        const idle = (async () => {
          const conn = await Deno.connect({ hostname: "127.0.0.1", port });
          await conn.write(new TextEncoder().encode(`GET / HTTP/1.1\r\nHost: ${DOMAIN}\r\n\r\n`));
          const buf = new Uint8Array(4096);
          let got = "";
          while (!/\r\n\r\n[\s\S]{13}$/.test(got)) {
            const n = await conn.read(buf);
            if (n === null) throw new Error(`closed before the response: ${got}`);
            got += latin1Of(buf.subarray(0, n));
          }
          ok(got.startsWith("HTTP/1.1 200"), got);
          return waitClose(conn, performance.now());
        })();
        const silent = async (p: number) => {
          const t0 = performance.now();
          return waitClose(await Deno.connect({ hostname: "127.0.0.1", port: p }), t0);
        };
        const halfHello = (async () => {
          const t0 = performance.now();
          const conn = await Deno.connect({ hostname: "127.0.0.1", port: httpsPort });
          // A TLS record of 512 bytes announced, a ClientHello started, 43 bytes sent.
          const part = new Uint8Array([
            0x16,
            0x03,
            0x01,
            0x02,
            0x00,
            0x01,
            0x00,
            0x01,
            0xfc,
            0x03,
            0x03,
            ...randomBytes(32),
          ]);
          await conn.write(part);
          return waitClose(conn, t0);
        })();
        const [idleMs, silentHttpMs, silentHttpsMs, halfMs] = await Promise.all([
          idle,
          silent(port),
          silent(httpsPort),
          halfHello,
        ]);
        await sleep(100);
        const m1 = await scrape(metricsPort);
        const d = (r: string) => cut(m1, r) - cut(m0, r);
        const tls = (r: string) =>
          metric(m1, "hopgate_tls_handshake_failures_total", { reason: r }) -
          metric(m0, "hopgate_tls_handshake_failures_total", { reason: r });
        log("idle keep-alive closed after ms (idle timeout 1 s)", Math.round(idleMs));
        log("silent TCP on HTTP closed after ms (header timeout 2 s)", Math.round(silentHttpMs));
        log("silent TCP on HTTPS closed after ms (TLS timeout 1.5 s)", Math.round(silentHttpsMs));
        log("half ClientHello closed after ms (TLS timeout 1.5 s)", Math.round(halfMs));
        log("cut idle_timeout / header_timeout (delta)", [d("idle_timeout"), d("header_timeout")]);
        log("tls handshake failures timeout (delta)", tls("timeout"));
        log("tls handshake failures bad_client_hello (delta)", tls("bad_client_hello"));
        ok(idleMs >= 950 && idleMs < 2000, `idle: ${idleMs}`);
        ok(silentHttpMs >= 1950 && silentHttpMs < 3000, `header: ${silentHttpMs}`);
        ok(silentHttpsMs >= 1450 && silentHttpsMs < 2500, `tls silent: ${silentHttpsMs}`);
        ok(halfMs >= 1450 && halfMs < 2500, `tls half hello: ${halfMs}`);
        equal(d("idle_timeout"), 1);
        equal(d("header_timeout"), 1);
        equal(tls("timeout"), 2);
      }),
    );

    await t.step(
      "6. smuggling corpus: every request refused, nothing reaches the origin",
      timed("smuggling", async () => {
        const H = `Host: ${DOMAIN}\r\n`;
        const corpus: [string, string, number[]][] = [
          [
            "CL.TE",
            `POST / HTTP/1.1\r\n${H}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG`,
            [400],
          ],
          [
            "TE.CL",
            `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n`,
            [400],
          ],
          [
            "TE.TE twice",
            `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n`,
            [400],
          ],
          [
            "TE.TE xchunked",
            `POST / HTTP/1.1\r\n${H}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n`,
            [501],
          ],
          [
            "TE.TE chunked, identity",
            `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n`,
            [501],
          ],
          [
            "TE.TE space before colon",
            `POST / HTTP/1.1\r\n${H}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n`,
            [400],
          ],
          [
            "TE.TE tab value",
            `POST / HTTP/1.1\r\n${H}Transfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n`,
            [400],
          ],
          [
            "TE.TE vertical tab",
            `POST / HTTP/1.1\r\n${H}Transfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n`,
            [400],
          ],
          [
            "TE.TE quoted",
            `POST / HTTP/1.1\r\n${H}Transfer-Encoding: "chunked"\r\n\r\n0\r\n\r\n`,
            [400],
          ],
          [
            "TE.TE obs-fold",
            `POST / HTTP/1.1\r\n${H}Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n`,
            [400],
          ],
          [
            "TE in HTTP/1.0",
            `POST / HTTP/1.0\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
            [400],
          ],
          [
            "duplicate Content-Length (equal)",
            `POST / HTTP/1.1\r\n${H}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello`,
            [400],
          ],
          [
            "Content-Length list",
            `POST / HTTP/1.1\r\n${H}Content-Length: 5, 5\r\n\r\nhello`,
            [400],
          ],
          ["Content-Length +5", `POST / HTTP/1.1\r\n${H}Content-Length: +5\r\n\r\nhello`, [400]],
          [
            "Content-Length 16 digits",
            `POST / HTTP/1.1\r\n${H}Content-Length: 1000000000000000\r\n\r\nhello`,
            [400],
          ],
          [
            "chunk-size overflow (17 hex digits)",
            `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n`,
            [400],
          ],
          [
            "chunk-size above 2^53",
            `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n`,
            [400],
          ],
          [
            "chunk data longer than its size",
            `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n`,
            [400],
          ],
          [
            "NUL in a field name",
            `GET / HTTP/1.1\r\n${H}X-A\x00b: c\r\n\r\n`,
            [400],
          ],
          ["NUL in a value", `GET / HTTP/1.1\r\n${H}X-A: b\x00c\r\n\r\n`, [400]],
          ["CR in a value", `GET / HTTP/1.1\r\n${H}X-A: b\rc\r\n\r\n`, [400]],
          ["CR in a name", `GET / HTTP/1.1\r\n${H}X-A\r: b\r\n\r\n`, [400]],
          ["LF in a value (bare LF)", `GET / HTTP/1.1\r\n${H}X-A: b\nc\r\n\r\n`, [400]],
          ["obs-fold", `GET / HTTP/1.1\r\n${H}X-A: b\r\n c\r\n\r\n`, [400]],
          [
            "absolute-form vs Host mismatch",
            `GET http://other.attack.test/ HTTP/1.1\r\n${H}\r\n`,
            [400],
          ],
          [
            "absolute-form to our domain, other Host",
            `GET http://${DOMAIN}/ HTTP/1.1\r\nHost: other.attack.test\r\n\r\n`,
            [400],
          ],
          ["Host: a b", `GET / HTTP/1.1\r\nHost: a b\r\n\r\n`, [400]],
          ["Host: x:abc", `GET / HTTP/1.1\r\nHost: ${DOMAIN}:abc\r\n\r\n`, [400]],
          ["Host with userinfo", `GET / HTTP/1.1\r\nHost: u@${DOMAIN}\r\n\r\n`, [400]],
          ["missing Host", `GET / HTTP/1.1\r\nX-A: b\r\n\r\n`, [400]],
          ["double Host", `GET / HTTP/1.1\r\n${H}${H}\r\n`, [400]],
          ["double Host (other)", `GET / HTTP/1.1\r\n${H}Host: other.attack.test\r\n\r\n`, [400]],
          ["empty Host", `GET / HTTP/1.1\r\nHost: \r\n\r\n`, [400]],
          ["bare LF line ends", `GET / HTTP/1.1\n${H.replace("\r\n", "\n")}\n`, [400]],
          ["bare LF after the request line", `GET / HTTP/1.1\n${H}\r\n`, [400]],
          ["HTTP/2.0 request line", `GET / HTTP/2.0\r\n${H}\r\n`, [505]],
          ["HTTP/1.2 request line", `GET / HTTP/1.2\r\n${H}\r\n`, [505]],
          ["two spaces in the request line", `GET  / HTTP/1.1\r\n${H}\r\n`, [400]],
          ["space in the target", `GET /a b HTTP/1.1\r\n${H}\r\n`, [400]],
          ["asterisk for GET", `GET * HTTP/1.1\r\n${H}\r\n`, [400]],
          [
            "CONNECT with a body",
            `CONNECT ${DOMAIN}:80 HTTP/1.1\r\n${H}Content-Length: 1\r\n\r\nx`,
            [
              400,
            ],
          ],
          ["Expect other than 100-continue", `GET / HTTP/1.1\r\n${H}Expect: 200-ok\r\n\r\n`, [417]],
        ];
        const seen0 = origin.seen.length;
        const logs0 = requestLogs(server, DOMAIN);
        const m0 = await scrape(metricsPort);
        const failures: string[] = [];
        for (const [name, req, want] of corpus) {
          const r = await rawExchange(port, req, { timeoutMs: 3000 });
          const good = want.includes(r.status) && r.closed;
          console.log(
            `  ${good ? "ok " : "BAD"} ${name}: ${r.status || "no answer"}${
              r.closed ? ", closed" : ", left open"
            } (${r.body.length > 0 ? latin1Of(r.body).trim().slice(0, 60) : ""})`,
          );
          if (!good) failures.push(`${name}: got ${r.status} closed=${r.closed}`);
        }
        await sleep(300);
        const seen1 = origin.seen.length;
        const logs1 = requestLogs(server, DOMAIN);
        const m1 = await scrape(metricsPort);
        const bad = cut(m1, "bad_request") - cut(m0, "bad_request");
        log("corpus size", corpus.length);
        log("requests the origin saw (delta)", seen1 - seen0);
        log("ingress request log lines (delta)", logs1 - logs0);
        log("cut bad_request (delta)", bad);

        // The same kind of body error, but arriving after the head was handed on.
        const late = await rawExchange(port, [
          `POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n`,
          "10000000000000005\r\nhello\r\n0\r\n\r\n",
        ], { timeoutMs: 3000, pieceGapMs: 300 });
        await sleep(300);
        const lateSeen = origin.seen.length - seen1;
        const m2 = await scrape(metricsPort);
        log(
          "chunk-size overflow after the head (split): answer",
          `${late.status || "none"}${late.closed ? ", closed" : ", open"}`,
        );
        log("  …requests the origin saw (delta)", lateSeen);
        log("  …origin paths seen", origin.seen.slice(seen1).map((s) => s.path));
        log("  …cut bad_request (delta)", cut(m2, "bad_request") - cut(m1, "bad_request"));

        const valid = await rawExchange(port, get("/"), { timeoutMs: 3000 });
        log("valid request on a new connection after the refusals", valid.status);
        equal(failures.length, 0, failures.join("\n"));
        equal(seen1 - seen0, 0, "a refused request reached the origin");
        equal(logs1 - logs0, 0, "a refused request reached the ingress");
        ok(bad >= corpus.length - 1, `bad_request cuts ${bad}`);
        equal(valid.status, 200);
        equal(latin1Of(valid.body), "Hello, world!");
        ok(late.closed && late.status !== 200, "the late bad chunk was answered 200");
        ok(lateSeen <= 1, "more than the one request reached the origin");
        ok(!origin.seen.slice(seen1).some((s) => s.path !== "/echo" && s.path !== "/"));
      }),
    );

    await t.step(
      "4. slow readers: 50 callers of 200 MiB who never read; others still answered; cut at write timeout",
      timed("slow readers", async () => {
        const m0 = await scrape(metricsPort);
        const rss0 = (await procStats(pid)).rssKiB;
        const n = 200 * MiB;
        const slow: Deno.Conn[] = [];
        for (let i = 0; i < 50; i++) {
          const c = await Deno.connect({ hostname: "127.0.0.1", port });
          await c.write(new TextEncoder().encode(get(`/bytes?n=${n}`)));
          slow.push(c);
        }
        const tStart = performance.now();
        let sampling = true;
        let rssMax = rss0;
        let firstCutAt = 0;
        const sampler = (async () => {
          while (sampling) {
            rssMax = Math.max(rssMax, (await procStats(pid)).rssKiB);
            if (!firstCutAt) {
              const m = await scrape(metricsPort).catch(() => "");
              if (cut(m, "write_timeout") - cut(m0, "write_timeout") > 0) {
                firstCutAt = performance.now();
              }
            }
            await sleep(100);
          }
        })();
        const lat: number[] = [];
        const statuses: number[] = [];
        let beforeCut = 0;
        for (let i = 0; i < 200; i++) {
          const r = await rawExchange(port, get("/"), { timeoutMs: 10_000 });
          lat.push(r.ms);
          statuses.push(r.status);
          if (!firstCutAt) beforeCut++;
        }
        const loopMs = performance.now() - tStart;
        const rssDuring = rssMax;
        const cutAll = await waitUntil(
          async () => {
            const m = await scrape(metricsPort);
            return cut(m, "write_timeout") - cut(m0, "write_timeout") >= 50;
          },
          20_000,
          250,
        );
        const cutMs = performance.now() - tStart;
        sampling = false;
        await sampler;
        // Their sockets: what is buffered, then the end the server wrote.
        const drained = await Promise.all(slow.map(async (c) => {
          const buf = new Uint8Array(256 * 1024);
          let bytes = 0;
          let closed = false;
          const end = Date.now() + 3000;
          try {
            while (Date.now() < end) {
              const k = await Promise.race([c.read(buf), sleep(1000).then(() => -1)]);
              if (k === null) {
                closed = true;
                break;
              }
              if (k === -1) break;
              bytes += k;
            }
          } catch {
            closed = true;
          }
          try {
            c.close();
          } catch { /* closed */ }
          return { bytes, closed };
        }));
        await sleep(1000);
        const rssAfter = (await procStats(pid)).rssKiB;
        const m1 = await scrape(metricsPort);
        const wt = cut(m1, "write_timeout") - cut(m0, "write_timeout");
        const bytes = drained.map((d) => d.bytes);
        log(
          "tunneled requests answered during the hold",
          `${statuses.filter((s) => s === 200).length}/200`,
        );
        log("…of which before the first write-timeout cut", beforeCut);
        log("loop duration ms", Math.round(loopMs));
        log(
          "latency ms p50 / p99 / max",
          [50, 99, 100].map((p) => Math.round(percentile(lat, p))),
        );
        log("first cut / all 50 cut after ms", [
          firstCutAt ? Math.round(firstCutAt - tStart) : null,
          Math.round(cutMs),
        ]);
        log("cut write_timeout (delta)", wt);
        log("slow sockets closed by the server", drained.filter((d) => d.closed).length);
        log(
          "bytes each slow caller had received, MiB min/max",
          [
            Math.min(...bytes) / MiB,
            Math.max(...bytes) / MiB,
          ].map((x) => x.toFixed(2)),
        );
        log("server RSS MiB before / peak during / after", [
          rss0 >> 10,
          rssDuring >> 10,
          rssAfter >> 10,
        ]);
        ok(statuses.every((s) => s === 200), `failed: ${statuses.filter((s) => s !== 200)}`);
        ok(percentile(lat, 99) < 2000, `p99 ${percentile(lat, 99)} ms`);
        ok(cutAll, `only ${wt} write_timeout cuts`);
        ok(wt >= 50 && wt <= 52, `write_timeout cuts ${wt}`);
        ok(drained.every((d) => d.closed), "a slow caller's socket is still open");
        ok(Math.max(...bytes) < 64 * MiB, "a slow caller got far more than the buffers hold");
      }),
    );

    await t.step(
      "5. early-answering origin: a 1 GiB upload is held back, memory bounded",
      timed("early answer", async () => {
        const early = startEarlyOrigin();
        const ekey = await server.register(EARLY);
        const eclient = startClientProc({
          dtlsPort: server.dtlsPort,
          domain: EARLY,
          apiKey: ekey,
          target: `127.0.0.1:${early.port}`,
        });
        try {
          await eclient.waitFor("connected to");
          await sleep(500);
          const rss0 = (await procStats(pid)).rssKiB;
          let rssMax = rss0;
          let sampling = true;
          const sampler = (async () => {
            while (sampling) {
              rssMax = Math.max(rssMax, (await procStats(pid)).rssKiB);
              await sleep(100);
            }
          })();
          const conn = await Deno.connect({ hostname: "127.0.0.1", port });
          const GiB = 1024 * MiB;
          await conn.write(
            new TextEncoder().encode(
              `POST /upload HTTP/1.1\r\nHost: ${EARLY}\r\nContent-Length: ${GiB}\r\n\r\n`,
            ),
          );
          let response = "";
          let responseBytes = 0;
          let firstResponseAt = 0;
          const t0 = performance.now();
          const reader = (async () => {
            const buf = new Uint8Array(64 * 1024);
            try {
              for (;;) {
                const k = await conn.read(buf);
                if (k === null) break;
                if (!firstResponseAt) firstResponseAt = performance.now();
                responseBytes += k;
                if (response.length < 200) response += latin1Of(buf.subarray(0, k));
              }
            } catch { /* closed by us */ }
          })();
          const block = new Uint8Array(MiB).fill(0x61);
          let accepted = 0;
          let blocked = false;
          let longestWriteMs = 0;
          while (accepted < GiB && performance.now() - t0 < 10_000) {
            const w0 = performance.now();
            let timer: ReturnType<typeof setTimeout> | undefined;
            const r = await Promise.race([
              conn.write(block.subarray(0, Math.min(block.length, GiB - accepted))),
              new Promise<"blocked">((res) => timer = setTimeout(() => res("blocked"), 3000)),
            ]).catch(() => "error" as const);
            clearTimeout(timer);
            longestWriteMs = Math.max(longestWriteMs, performance.now() - w0);
            if (r === "blocked") {
              blocked = true;
              break;
            }
            if (r === "error") break;
            accepted += r;
          }
          const elapsed = performance.now() - t0;
          sampling = false;
          await sampler;
          const rssPeak = rssMax;
          conn.close();
          await reader;
          await sleep(500);
          log("origin requests", early.requests);
          log(
            "response started after ms",
            firstResponseAt ? Math.round(firstResponseAt - t0) : null,
          );
          log("response head", response.split("\r\n")[0]);
          log("response bytes read while uploading", responseBytes);
          log("upload bytes the socket accepted, MiB", (accepted / MiB).toFixed(1));
          log("writes blocked > 3 s", blocked);
          log("upload phase ms", Math.round(elapsed));
          log("server RSS MiB baseline / peak / growth", [
            rss0 >> 10,
            rssPeak >> 10,
            (rssPeak - rss0) >> 10,
          ]);
          log("server RSS MiB after", (await procStats(pid)).rssKiB >> 10);
          ok(response.startsWith("HTTP/1.1 200"), `no early answer: ${response}`);
          ok(accepted < 256 * MiB, `the upload was not held back: ${accepted} bytes`);
          ok(rssPeak - rss0 < 64 * 1024, `RSS grew ${(rssPeak - rss0) >> 10} MiB`);
        } finally {
          await eclient.stop();
          await early.stop();
        }
      }),
    );

    await t.step(
      "8. HTTPS (self-signed by SNI): GET/POST 10 MiB bit-exact, --http2, wss echo",
      timed("https", async () => {
        const u = (path: string) => `https://${DOMAIN}:${httpsPort}${path}`;
        const tls = ["-k", "--resolve", `${DOMAIN}:${httpsPort}:127.0.0.1`, "--max-time", "20"];
        const h = await curl([...tls, u("/headers")]);
        equal(h.status, 200, h.body);
        log("x-forwarded-proto over HTTPS", JSON.parse(h.body)["x-forwarded-proto"]);
        equal(JSON.parse(h.body)["x-forwarded-proto"], "https");

        const dir = await Deno.makeTempDir({ prefix: "hop-front-attack-" });
        try {
          const up = randomBytes(10 * MiB);
          await Deno.writeFile(`${dir}/up`, up);
          const p = await curl([
            ...tls,
            "-H",
            "Expect:",
            "--data-binary",
            `@${dir}/up`,
            "-o",
            `${dir}/echo`,
            u("/echo"),
          ]);
          equal(p.status, 200);
          const echoed = await Deno.readFile(`${dir}/echo`);
          log("POST 10 MiB sha256 sent / origin / echoed", [
            sha256(up).slice(0, 16),
            /x-sha256: (\w{16})/.exec(p.headers)?.[1],
            sha256(echoed).slice(0, 16),
          ]);
          ok(p.headers.includes(`x-sha256: ${sha256(up)}`), "origin saw the exact upload");
          equal(sha256(echoed), sha256(up));

          const g = await curl([...tls, "-o", `${dir}/down`, u(`/bytes?n=${10 * MiB}`)]);
          equal(g.status, 200);
          const down = await Deno.readFile(`${dir}/down`);
          const want = new Uint8Array(10 * MiB);
          for (let o = 0; o < want.length; o += origin.chunk.length) want.set(origin.chunk, o);
          log("GET 10 MiB bytes / sha256 equal", [down.length, sha256(down) === sha256(want)]);
          equal(sha256(down), sha256(want));
        } finally {
          await Deno.remove(dir, { recursive: true });
        }

        const h2 = await curl([...tls, "--http2", u("/")]);
        log("curl --http2 over TLS: response status line", h2.headers.split("\r\n")[0]);
        equal(h2.status, 200);
        ok(h2.body.startsWith("Hello, world!"), h2.body);
        ok(/^HTTP\/2 200/m.test(h2.headers), `not HTTP/2: ${h2.headers}`);
        const h1 = await curl([...tls, "--http1.1", u("/")]);
        ok(/^HTTP\/1\.1 200/m.test(h1.headers), `not HTTP/1.1: ${h1.headers}`);
        const alpn = await new Deno.Command("curl", {
          args: [...tls, "-sv", "--http2", "-o", "/dev/null", u("/")],
          stdout: "null",
          stderr: "piped",
        }).output();
        const alpnLine = new TextDecoder().decode(alpn.stderr).split("\n").filter((l) =>
          /ALPN/.test(l)
        );
        log("curl --http2 ALPN lines", alpnLine.map((l) => l.trim()));
        const h2c = await curl([
          "--http2",
          "-H",
          `Host: ${DOMAIN}`,
          `http://127.0.0.1:${port}/`,
        ]);
        log(
          "curl --http2 over plain HTTP (h2c upgrade offer): response status line",
          h2c.headers.split("\r\n")[0],
        );
        equal(h2c.status, 200);
        ok(/^HTTP\/1\.1 200/m.test(h2c.headers), "h2c upgrade was not declined");

        const ws = new WebSocket(`wss://127.0.0.1:${httpsPort}/ws`, {
          headers: { host: DOMAIN },
          servername: DOMAIN,
          rejectUnauthorized: false,
        });
        const got: string[] = [];
        await new Promise<void>((resolve, reject) => {
          ws.on("open", () => {
            ws.send("over wss");
            ws.send(Buffer.from([7, 8, 9]));
          });
          ws.on("message", (d: Buffer, binary: boolean) => {
            got.push(binary ? `bin:${[...d].join(",")}` : d.toString());
            if (got.length === 2) ws.close(1000);
          });
          ws.on("close", () => resolve());
          ws.on("error", reject);
        });
        log("wss echo", got);
        equal(got[0], "over wss");
        equal(got[1], "bin:7,8,9");
      }),
    );
  } finally {
    await client.stop();
    await server.stop();
    await origin.stop();
  }
});

/**
 * A server whose fd limit is lowered to 1024 (prlimit on its PID), with a client
 * and origin. `metricsListen`: HOP_METRICS_LISTEN on its own port; else /metrics
 * is read through the front (Host: the server domain).
 */
async function fdLimitedServer(env: Record<string, string>, metricsListen: boolean) {
  const origin = startOrigin();
  const metricsPort = freePort("tcp");
  const httpsPort = freePort("tcp");
  const server = await startServerProc({
    HOP_SERVER_HTTPS_LISTEN: `127.0.0.1:${httpsPort}`,
    ...(metricsListen ? { HOP_METRICS_LISTEN: `127.0.0.1:${metricsPort}` } : {}),
    HOP_SERVER_HEADER_TIMEOUT_SECONDS: "60",
    ...env,
  });
  const pid = server.proc.child.pid;
  const key = await server.register(DOMAIN);
  const client = startClientProc({
    dtlsPort: server.dtlsPort,
    domain: DOMAIN,
    apiKey: key,
    target: `127.0.0.1:${origin.port}`,
  });
  await client.waitFor("connected to");
  const lim = await new Deno.Command("prlimit", {
    args: ["--pid", String(pid), "--nofile=1024:1024"],
  }).output();
  equal(lim.code, 0, new TextDecoder().decode(lim.stderr));
  const show = await new Deno.Command("prlimit", {
    args: ["--pid", String(pid), "--nofile", "--raw", "--noheadings", "--output=SOFT,HARD"],
  }).output();
  return {
    origin,
    server,
    client,
    pid,
    httpsPort,
    metricsPort,
    limit: new TextDecoder().decode(show.stdout).trim().replace(/\s+/g, " "),
    scrape: async (): Promise<string> => {
      if (metricsListen) return await scrape(metricsPort);
      const r = await curl([
        "-H",
        `Host: ${GATEWAY}`,
        `http://127.0.0.1:${server.httpPort}/metrics`,
      ]);
      if (r.status !== 200) throw new Error(`metrics through the front: ${r.status}`);
      return r.body;
    },
    stop: async () => {
      await client.stop();
      await server.stop();
      await origin.stop();
    },
  };
}

/** Whether the process still runs (and is not a zombie). */
async function alive(pid: number): Promise<boolean> {
  return (await procStats(pid)).alive;
}

/** Tunneled requests until one answers 200; ms it took, or -1. */
async function untilAnswer(port: number, ms: number): Promise<number> {
  const t0 = performance.now();
  while (performance.now() - t0 < ms) {
    const r = await rawExchange(port, get("/"), { timeoutMs: 1000 }).catch(() => null);
    if (r?.status === 200) return performance.now() - t0;
    await sleep(100);
  }
  return -1;
}

Deno.test("front attack: fd exhaustion under a 1024 fd limit, and the connection cap", async (t) => {
  await t.step(
    "3a. 1,200 silent connections past the fd limit: the server survives and recovers",
    timed("fd exhaustion", async () => {
      const s = await fdLimitedServer({
        HOP_SERVER_MAX_CONNECTIONS: "100000",
        HOP_SERVER_MAX_CONNECTIONS_PER_IP: "100000",
      }, false);
      const port = s.server.httpPort;
      let attacker: Attacker | undefined;
      try {
        const base = await procStats(s.pid);
        log("server fd limit (soft hard)", s.limit);
        log("server fds baseline", base.fds);
        attacker = new Attacker({
          mode: "hold",
          port,
          count: 1200,
          sources: ["127.0.0.1"],
          batch: 100,
          batchGapMs: 20,
          settleMs: 1500,
        });
        const opened = await attacker.next("opened", 20_000);
        const during = await procStats(s.pid);
        log("attacker connected / pending / closed by server", [
          opened.connected,
          opened.pending,
          opened.closedByPeer,
        ]);
        log("server fds during", during.fds);
        const [probe, tlsProbe] = await Promise.all([
          rawExchange(port, get("/"), { timeoutMs: 2000 }),
          rawExchange(s.httpsPort, "\x16", { timeoutMs: 2000 }),
        ]);
        log(
          "tunneled request during exhaustion",
          probe.status ? `${probe.status} in ${Math.round(probe.ms)} ms` : "no answer in 2 s",
        );
        log("a TCP connection to HTTPS during exhaustion closed", tlsProbe.closed);
        const samePid = (await alive(s.pid)) && s.server.proc.child.pid === s.pid;
        log("server PID alive during", samePid);
        const closed = await attacker.command("close");
        log("attack connections closed by the server before we closed them", closed.closedByPeer);
        const back = await untilAnswer(port, 10_000);
        log("tunneled request answers again after ms", Math.round(back));
        if (!(await alive(s.pid))) {
          log("SERVER PROCESS GONE; exit status", await s.server.proc.exited);
          log("server output (tail)", "\n" + s.server.proc.output.slice(-2000));
        }
        const fdsAfter = await waitUntil(
          async () => (await procStats(s.pid)).fds <= base.fds + 5,
          5000,
        );
        log("server fds after", (await procStats(s.pid)).fds);
        const https = await curl([
          "-k",
          "--max-time",
          "5",
          "--resolve",
          `${DOMAIN}:${s.httpsPort}:127.0.0.1`,
          `https://${DOMAIN}:${s.httpsPort}/`,
        ]);
        log("HTTPS tunneled request after", https.status);
        const m = await s.scrape();
        const acceptErrors = metric(m, "hopgate_http_accept_errors_total", { listener: "http" });
        const acceptErrorsTls = metric(m, "hopgate_http_accept_errors_total", {
          listener: "https",
        });
        log("hopgate_http_accept_errors_total{http} / {https}", [acceptErrors, acceptErrorsTls]);
        const ready = await curl(["-H", `Host: ${GATEWAY}`, `http://127.0.0.1:${port}/readyz`]);
        log("/readyz after", ready.status);
        ok(during.fds >= 1000, `the fd limit was not reached: ${during.fds}`);
        ok(samePid && (await alive(s.pid)), "the server process died");
        ok(acceptErrors > 0, "no accept error counted");
        ok(back >= 0 && back < 5000, `no answer within 5 s after the connections closed: ${back}`);
        ok(fdsAfter, "fds did not return to the baseline");
        equal(https.status, 200);
        equal(ready.status, 200);
      } finally {
        await attacker?.stop();
        await s.stop();
      }
    }),
  );

  await t.step(
    "3b. HOP_SERVER_MAX_CONNECTIONS=500: the excess is refused at once, counted max_connections",
    timed("connection cap", async () => {
      const s = await fdLimitedServer({
        HOP_SERVER_MAX_CONNECTIONS: "500",
        HOP_SERVER_MAX_CONNECTIONS_PER_IP: "100000",
      }, true);
      const port = s.server.httpPort;
      let attacker: Attacker | undefined;
      try {
        const m0 = await scrape(s.metricsPort);
        const base = await procStats(s.pid);
        attacker = new Attacker({
          mode: "hold",
          port,
          count: 1200,
          sources: ["127.0.0.1"],
          batch: 100,
          batchGapMs: 20,
          settleMs: 1000,
        });
        const opened = await attacker.next("opened", 20_000);
        const during = await procStats(s.pid);
        const mDuring = await scrape(s.metricsPort);
        const probe = await rawExchange(port, get("/"), { timeoutMs: 2000 });
        const closed = await attacker.command("close");
        const back = await untilAnswer(port, 10_000);
        await sleep(300);
        const m1 = await scrape(s.metricsPort);
        const refused = metric(m1, "hopgate_http_connections_cut_total", {
          listener: "http",
          reason: "max_connections",
        }) - metric(m0, "hopgate_http_connections_cut_total", {
          listener: "http",
          reason: "max_connections",
        });
        const acceptErrors = metric(m1, "hopgate_http_accept_errors_total", { listener: "http" });
        log("attacker connected / closed by server within 1 s / held", [
          opened.connected,
          opened.closedByPeer,
          opened.open,
        ]);
        log("how the refused ones ended", opened.ends);
        log(
          "open connections gauge during",
          metric(mDuring, "hopgate_http_connections", {
            listener: "http",
          }),
        );
        log("server fds baseline / during", [base.fds, during.fds]);
        log(
          "tunneled request while 500 are held",
          probe.status ? `${probe.status}` : `refused (closed: ${probe.closed})`,
        );
        log(
          "held connections closed by server before we closed",
          closed.closedByPeer - opened.closedByPeer,
        );
        log("cut max_connections (delta)", refused);
        log("accept errors", acceptErrors);
        log("answers again after ms", Math.round(back));
        equal(opened.connected, 1200);
        equal(opened.open, 500, "500 held");
        equal(opened.closedByPeer, 700, "700 refused at once");
        ok(refused >= 700 && refused <= 702, `max_connections cuts ${refused}`);
        equal(acceptErrors, 0);
        equal(probe.status, 0, "a request past the cap was served");
        ok(back >= 0 && back < 3000, `no answer after the connections closed: ${back}`);
        ok(await alive(s.pid));
      } finally {
        await attacker?.stop();
        await s.stop();
      }
    }),
  );

  await t.step(
    "3c. HOP_METRICS_LISTEN scraped while fds are exhausted: the server survives",
    timed("metrics listener under EMFILE", async () => {
      const s = await fdLimitedServer({
        HOP_SERVER_MAX_CONNECTIONS: "100000",
        HOP_SERVER_MAX_CONNECTIONS_PER_IP: "100000",
      }, true);
      let attacker: Attacker | undefined;
      try {
        attacker = new Attacker({
          mode: "hold",
          port: s.server.httpPort,
          count: 1200,
          sources: ["127.0.0.1"],
          batch: 100,
          batchGapMs: 20,
          settleMs: 1500,
        });
        await attacker.next("opened", 20_000);
        log("server fds during", (await procStats(s.pid)).fds);
        // Out of descriptors, the metrics listener cannot accept: the scrape waits in
        // the kernel's queue (and times out here); what matters is that nothing dies.
        const during = await scrape(s.metricsPort, 2000).then(() => "answered", (e) => `${e}`);
        log("scrape of HOP_METRICS_LISTEN during exhaustion", during);
        await sleep(1000);
        const aliveAfter = await alive(s.pid);
        log("server alive 1 s later", aliveAfter);
        if (!aliveAfter) {
          log("exit status", await s.server.proc.exited);
          log(
            "its error",
            // deno-lint-ignore no-control-regex
            s.server.proc.output.replace(/\x1b\[[0-9;]*m/g, "").split("\n").find((l) =>
              l.includes("Uncaught")
            ),
          );
        }
        await attacker.command("close");
        const after = aliveAfter &&
          await waitUntil(() => scrape(s.metricsPort).then(() => true, () => false), 3000);
        log("HOP_METRICS_LISTEN answers after the connections closed", after);
        ok(aliveAfter, "the server process died: see above");
        ok(after, "the metrics listener did not come back");
      } finally {
        await attacker?.stop();
        await s.stop();
      }
    }),
  );
});

Deno.test("front attack: admin HTTPS rule and the client address (trusted proxy 127.0.0.2)", async (t) => {
  const origin = startOrigin();
  const server = await startServerProc({
    HOP_SERVER_DEBUG: "false",
    HOP_SERVER_HTTPS_LISTEN: `127.0.0.1:${freePort("tcp")}`,
    HOP_METRICS_LISTEN: `127.0.0.1:${freePort("tcp")}`,
    // ACME orders go nowhere (nothing listens there): no certificate, no redirect.
    HOP_ACME_CA_DIR: "https://127.0.0.1:9/directory",
    HOP_TRUSTED_PROXIES: "127.0.0.2/32",
  });
  const port = server.httpPort;
  const key = await server.register(DOMAIN);
  const client = startClientProc({
    dtlsPort: server.dtlsPort,
    domain: DOMAIN,
    apiKey: key,
    target: `127.0.0.1:${origin.port}`,
  });
  const auth = ["-H", `Authorization: Bearer ${ADMIN_KEY}`];
  const absolute = (from: string, extra: string[] = []) =>
    curl([
      "--interface",
      from,
      "--request-target",
      `https://${GATEWAY}/api/v1/admin/sessions`,
      "-H",
      `Host: ${GATEWAY}`,
      ...auth,
      ...extra,
      `http://127.0.0.1:${port}/`,
    ]);
  try {
    await client.waitFor("connected to");
    await t.step(
      "7a. an absolute https:// target on the plain port is not HTTPS",
      timed("admin https rule", async () => {
        const viaProxy = await absolute("127.0.0.2", ["-H", "X-Forwarded-For: 203.0.113.5"]);
        log(
          "GET https://gateway.test/api/v1/admin/sessions on :http, from 203.0.113.5 via trusted proxy",
          `${viaProxy.status} ${viaProxy.body}`,
        );
        const viaProxyXfp = await absolute("127.0.0.2", [
          "-H",
          "X-Forwarded-For: 203.0.113.5",
          "-H",
          "X-Forwarded-Proto: https",
        ]);
        log("…the same with X-Forwarded-Proto: https from the proxy", viaProxyXfp.status);
        const audit = server.proc.stdout.split("\n").filter((l) =>
          l.includes('"event":"admin.audit"') && l.includes("203.0.113.5")
        );
        log("admin audit lines naming 203.0.113.5", audit.length);
        const proxyItself = await absolute("127.0.0.2");
        log("…from the proxy itself (127.0.0.2, loopback, no XFF)", proxyItself.status);
        const untrusted = await absolute("127.0.0.1", ["-H", "X-Forwarded-For: 203.0.113.5"]);
        log("…from untrusted 127.0.0.1 with X-Forwarded-For: 203.0.113.5", untrusted.status);
        equal(viaProxy.status, 403, viaProxy.body);
        ok(viaProxy.body.includes("requires HTTPS"), viaProxy.body);
        // A trusted proxy that terminated TLS says so; the admin API believes it.
        equal(viaProxyXfp.status, 200, viaProxyXfp.body);
        ok(audit.length >= 1, "the admin API did not see 203.0.113.5");
        equal(proxyItself.status, 200, proxyItself.body);
        equal(untrusted.status, 200, untrusted.body);
      }),
    );

    await t.step(
      "7b. the origin gets x-real-ip = the real client; a caller's Forwarded/X-Real-IP replaced",
      timed("client address", async () => {
        const spoof = [
          "-H",
          "X-Forwarded-For: 203.0.113.5",
          "-H",
          "X-Real-IP: 6.6.6.6",
          "-H",
          "Forwarded: for=6.6.6.6;proto=https",
        ];
        const call = async (from: string) => {
          const r = await curl([
            "--interface",
            from,
            "-H",
            `Host: ${DOMAIN}`,
            ...spoof,
            `http://127.0.0.1:${port}/headers`,
          ]);
          equal(r.status, 200, r.body);
          return JSON.parse(r.body) as Record<string, string>;
        };
        const trusted = await call("127.0.0.2");
        const direct = await call("127.0.0.1");
        const pick = (h: Record<string, string>) => ({
          "x-real-ip": h["x-real-ip"],
          forwarded: h["forwarded"],
          "x-forwarded-for": h["x-forwarded-for"],
        });
        log("from trusted proxy 127.0.0.2", pick(trusted));
        log("from untrusted 127.0.0.1", pick(direct));
        equal(trusted["x-real-ip"], "203.0.113.5");
        equal(trusted["forwarded"], `for=203.0.113.5;host="${DOMAIN}";proto=http`);
        equal(trusted["x-forwarded-for"], "203.0.113.5, 127.0.0.2");
        equal(direct["x-real-ip"], "127.0.0.1");
        equal(direct["forwarded"], `for=127.0.0.1;host="${DOMAIN}";proto=http`);
        equal(direct["x-forwarded-for"], "203.0.113.5, 127.0.0.1");
        ok(
          !JSON.stringify([trusted, direct]).includes("6.6.6.6"),
          "a spoofed value reached the origin",
        );
      }),
    );
  } finally {
    await client.stop();
    await server.stop();
    await origin.stop();
  }
});
