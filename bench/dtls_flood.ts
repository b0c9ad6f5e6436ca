/**
 * A cookieless ClientHello flood at full speed against a real server with one tunnel
 * serving a request loop: how the loop fares before and during the flood.
 *
 *   deno run -A --unstable-net bench/dtls_flood.ts [seconds]
 *
 * Starts a server (PostgreSQL at 127.0.0.1:5432, as the tests use), a client, an
 * origin; a second process floods the DTLS port from four sockets on 127.0.0.1
 * (one source address) with ClientHellos without a cookie. Prints requests per
 * second, latency quantiles, non-200 answers and tunnel reconnects, and the
 * server's DTLS drop counters. Compare commits by running it from each worktree.
 */
import { curl, freePort, startClientProc, startServerProc } from "../tests/helpers/procs.ts";
import { clientHello } from "../tests/tools/dtls_raw.ts";

const DOMAIN = "app.flood.bench";

if (Deno.args[0] === "--flood") {
  const port = Number(Deno.args[1]), secs = Number(Deno.args[2]);
  const socks = Array.from(
    { length: 4 },
    () => Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 }),
  );
  const hello = clientHello(new Uint8Array(32).fill(3), new Uint8Array(0), 0);
  const to = { transport: "udp" as const, hostname: "127.0.0.1", port };
  const end = Date.now() + secs * 1000;
  let sent = 0;
  await Promise.all(socks.map(async (s) => {
    while (Date.now() < end) {
      const ps = [];
      for (let i = 0; i < 64; i++) ps.push(s.send(hello, to).catch(() => {}));
      await Promise.all(ps);
      sent += 64;
    }
  }));
  for (const s of socks) s.close();
  console.log(JSON.stringify({ sent, perSecond: Math.round(sent / secs) }));
  Deno.exit(0);
}

const secs = Number(Deno.args[0] ?? 10);
const originPort = freePort("tcp");
const origin = Deno.serve(
  { hostname: "127.0.0.1", port: originPort, onListen() {} },
  () => new Response("hello\n"),
);
const metricsPort = freePort("tcp");
const server = await startServerProc({ HOP_METRICS_LISTEN: `127.0.0.1:${metricsPort}` });
const key = await server.register(DOMAIN);
const client = startClientProc({
  dtlsPort: server.dtlsPort,
  domain: DOMAIN,
  apiKey: key,
  target: `127.0.0.1:${originPort}`,
});
try {
  await client.waitFor(/connected to \S+ over dtls/, 20_000);
  const samples: { t: number; ms: number; status: number }[] = [];
  let stop = false;
  const loop = (async () => {
    while (!stop) {
      const t = performance.now();
      const r = await curl([
        "-m",
        "30",
        "-H",
        `Host: ${DOMAIN}`,
        `http://127.0.0.1:${server.httpPort}/`,
      ]);
      samples.push({ t, ms: performance.now() - t, status: r.status });
    }
  })();
  await new Promise((r) => setTimeout(r, 3000));
  const t0 = performance.now();
  const flood = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--unstable-net",
      import.meta.filename!,
      "--flood",
      String(server.dtlsPort),
      String(secs),
    ],
    stdout: "piped",
  }).output();
  const t1 = performance.now();
  stop = true;
  await loop;
  const q = (a: number[], p: number) =>
    a.length ? [...a].sort((x, y) => x - y)[Math.floor((a.length - 1) * p)]!.toFixed(0) : "-";
  const show = (name: string, s: typeof samples, seconds: number) => {
    const ms = s.map((x) => x.ms);
    console.log(
      `${name}: ${(s.length / seconds).toFixed(1)} req/s, p50 ${q(ms, 0.5)} ms, p99 ${
        q(ms, 0.99)
      } ms, ` +
        `max ${q(ms, 1)} ms, non-200 ${s.filter((x) => x.status !== 200).length}`,
    );
  };
  show("before", samples.filter((x) => x.t < t0), 3);
  show("during", samples.filter((x) => x.t >= t0 && x.t < t1), (t1 - t0) / 1000);
  console.log(`flood: ${new TextDecoder().decode(flood.stdout).trim()}`);
  console.log(`tunnel reconnects: ${(client.output.match(/connected to/g) ?? []).length - 1}`);
  const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  for (const line of metrics.split("\n")) {
    if (
      /^hopgate_dtls_(dropped_records_total|handshakes_total)\{/.test(line) && !/ 0$/.test(line)
    ) {
      console.log(line);
    }
  }
} finally {
  await client.stop();
  await server.stop();
  await origin.shutdown();
}
