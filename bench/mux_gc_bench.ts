/**
 * How much of the mux's per-request garbage outlives a minor GC. Runs C concurrent
 * request/response loops (400 bytes up, 200 down, one stream each) over the
 * in-memory link or our DTLS on loopback for a few seconds in a child process with
 * V8's --trace-gc, and prints requests/s, scavenges, their mean pause, and the
 * bytes each scavenge promoted to the old generation per 1,000 requests. Objects that
 * die young cost a scavenge almost nothing; promoted ones cost a copy now and a
 * mark-compact later, so "promoted KB per 1k requests" is the figure to push down.
 *
 * Run: deno run --allow-run --allow-read --allow-env --allow-net=127.0.0.1 bench/mux_gc_bench.ts
 *      [--transport=memory|dtls] [--concurrency=50] [--seconds=6] [--params='{"maxAckDelayMs":5}']
 */
import { parseArgs } from "node:util";
import { realClock } from "../shared/clock.ts";
import type { MuxParams } from "../shared/mux/params.ts";
import { MuxSession } from "../shared/mux/session.ts";
import { createLinkPair } from "../shared/mux/testing/lossy_link.ts";
import { createDtlsPair, DTLS_SUITES } from "../shared/mux/testing/dtls_pair.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    transport: { type: "string", default: "memory" },
    concurrency: { type: "string", default: "50" },
    seconds: { type: "string", default: "6" },
    child: { type: "boolean", default: false },
    params: { type: "string", default: "{}" },
  },
});
const transport = values.transport!;
const concurrency = Number(values.concurrency);
const seconds = Number(values.seconds);
if (!["memory", "dtls"].includes(transport) || !(concurrency > 0) || !(seconds > 0)) {
  console.error("usage: mux_gc_bench.ts [--transport=memory|dtls] [--concurrency=N] [--seconds=S]");
  Deno.exit(2);
}

if (values.child) await child();
else await parent();

async function parent() {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net=127.0.0.1",
      "--allow-read",
      "--allow-env",
      `--v8-flags=--trace-gc${Deno.env.get("GC_BENCH_V8") ?? ""}`,
      new URL(import.meta.url).pathname,
      "--child",
      `--transport=${transport}`,
      `--concurrency=${concurrency}`,
      `--seconds=${seconds}`,
      `--params=${values.params}`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const lines = text.split("\n");
  // V8 writes its trace to the same stdout, sometimes in the middle of our lines.
  const start = lines.findIndex((l) => l.includes("LOAD START"));
  const end = lines.findIndex((l) => l.includes("LOAD END"));
  const result = /RESULT (\d+)/.exec(text);
  if (!out.success || start < 0 || end < 0 || !result) {
    console.error(text.slice(-2000));
    Deno.exit(1);
  }
  const requests = Number(result[1]);
  // "Scavenge 40.9 (67.8) -> 16.9 (68.8) MB, pooled: 3.0 MB, 1.08 / 0.00 ms": heap in use
  // before and after; the growth of "after" across scavenges is what they promoted.
  const re =
    /Scavenge[^\d]*([\d.]+) \([\d.]+\) -> ([\d.]+) \([\d.]+\) MB, pooled: [\d.]+ MB, ([\d.]+) \/ [\d.]+ ms/;
  let scavenges = 0, pauseMs = 0, promotedMb = 0, majors = 0;
  let lastAfter: number | undefined;
  for (const l of lines.slice(start, end)) {
    const m = re.exec(l);
    if (m) {
      scavenges++;
      pauseMs += Number(m[3]);
      const after = Number(m[2]);
      if (lastAfter !== undefined && after > lastAfter) promotedMb += after - lastAfter;
      lastAfter = after;
    } else if (/Mark-Compact/.test(l)) {
      majors++;
      const m2 = /-> ([\d.]+) \(/.exec(l);
      lastAfter = m2 ? Number(m2[1]) : undefined;
    }
  }
  const perK = (x: number) => (x * 1000 / requests).toFixed(1);
  console.log(
    `${transport} c${concurrency}: ${(requests / seconds).toFixed(0)} req/s; ` +
      `${scavenges} scavenges, mean pause ${(pauseMs / Math.max(1, scavenges)).toFixed(2)} ms; ` +
      `${majors} mark-compacts; promoted ${perK(promotedMb * 1024)} KB per 1k requests`,
  );
}

async function child() {
  let a, b, close = () => Promise.resolve();
  if (transport === "memory") {
    const l = createLinkPair({ clock: realClock, immediate: true, mtu: 1200 });
    a = l.a;
    b = l.b;
  } else {
    const d = await createDtlsPair({ suite: DTLS_SUITES[0]!, maxDatagramSize: 1200 });
    a = d.a;
    b = d.b;
    close = d.close;
  }
  const params = JSON.parse(values.params!) as Partial<MuxParams>;
  const client = new MuxSession(a, { role: "client", params });
  const server = new MuxSession(b, { role: "server", params });
  const req = new Uint8Array(400).fill(65);
  const res = new Uint8Array(200).fill(66);
  (async () => {
    for (;;) {
      const s = await server.acceptStream();
      if (!s) return;
      (async () => {
        while (await s.read() !== null) { /* drain */ }
        await s.write(res);
        s.close();
      })().catch(() => {});
    }
  })();
  const loop = async (until: number) => {
    let n = 0;
    while (performance.now() < until) {
      const s = client.openStream();
      await s.write(req);
      s.close();
      while (await s.read() !== null) { /* drain */ }
      n++;
    }
    return n;
  };
  // Warm up (JIT, windows), then the measured phase between two markers.
  const warm = performance.now() + 1500;
  await Promise.all(Array.from({ length: concurrency }, () => loop(warm)));
  console.log("LOAD START");
  const end = performance.now() + seconds * 1000;
  const counts = await Promise.all(Array.from({ length: concurrency }, () => loop(end)));
  console.log("LOAD END");
  console.log(`RESULT ${counts.reduce((x, y) => x + y, 0)}`);
  client.abort(0, "done");
  server.abort(0, "done");
  await close();
}
