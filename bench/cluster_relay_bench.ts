/**
 * The cluster relay's added latency (docs/cluster.md): three server processes on
 * one PostgreSQL database, one client process holding the tunnel on node 1, an
 * origin in this process. The same requests go to node 1 (direct: the tunnel is
 * there) and to node 2 (relayed to node 1), alternating in rounds so that both
 * see the same machine load, at concurrency 1, 10 and 50; then c50 spread over
 * the three nodes round robin (DNS-style) against c50 on node 1 alone. Kept-alive
 * HTTP/1.1 from node:http. Prints p50/p99 latency, requests/s and the ratio
 * relayed/direct. Nothing here passes or fails.
 *
 *   deno run -A bench/cluster_relay_bench.ts [--requests 2000] [--rounds 3]
 */
import http from "node:http";
import { startClientProc } from "../tests/helpers/procs.ts";
import { type ClusterNodeProc, startTestCluster, until } from "../tests/helpers/cluster.ts";
import { startOrigin } from "../tests/helpers/origin.ts";

const DOMAIN = "bench.cluster.test";
const arg = (name: string, fallback: number) => {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Number(Deno.args[i + 1]) : fallback;
};
const REQUESTS = arg("--requests", 2000);
const ROUNDS = arg("--rounds", 3);

/** One GET / with Host DOMAIN on a kept-alive agent; resolves with its latency in ms. */
function get(agent: http.Agent, port: number): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: "127.0.0.1", port, path: "/", agent, headers: { host: DOMAIN } },
      (res) => {
        res.on("data", () => {});
        res.on("end", () => {
          if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`));
          else resolve(performance.now() - t0);
        });
      },
    );
    req.on("error", reject);
    req.end();
  });
}

interface Figures {
  p50: number;
  p99: number;
  rps: number;
}

/** `n` requests, `concurrency` at a time, each to the next port of `ports` (round robin). */
async function load(ports: number[], n: number, concurrency: number): Promise<Figures> {
  const agents = ports.map(() => new http.Agent({ keepAlive: true, maxSockets: concurrency }));
  const lat: number[] = [];
  let left = n;
  let k = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (left-- > 0) {
      const i = k++ % ports.length;
      lat.push(await get(agents[i]!, ports[i]!));
    }
  }));
  const ms = performance.now() - t0;
  for (const a of agents) a.destroy();
  lat.sort((a, b) => a - b);
  const q = (p: number) => lat[Math.min(lat.length - 1, Math.floor(lat.length * p))]!;
  return { p50: q(0.5), p99: q(0.99), rps: n / ms * 1000 };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Runs `a` and `b` alternately for ROUNDS rounds; the median of each figure per side. */
async function compare(a: () => Promise<Figures>, b: () => Promise<Figures>) {
  const fa: Figures[] = [];
  const fb: Figures[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    fa.push(await a());
    fb.push(await b());
  }
  const m = (fs: Figures[]) => ({
    p50: median(fs.map((f) => f.p50)),
    p99: median(fs.map((f) => f.p99)),
    rps: median(fs.map((f) => f.rps)),
  });
  return [m(fa), m(fb)] as const;
}

const fmt = (f: Figures) =>
  `p50 ${f.p50.toFixed(2)} ms  p99 ${f.p99.toFixed(2)} ms  ${f.rps.toFixed(0)} req/s`;

export async function main(): Promise<void> {
  const origin = startOrigin();
  const cluster = await startTestCluster(3);
  const [a, b, c] = cluster.nodes as [ClusterNodeProc, ClusterNodeProc, ClusterNodeProc];
  const client = { proc: undefined as ReturnType<typeof startClientProc> | undefined };
  try {
    const reg = await a.admin("domains/register", { domain: DOMAIN });
    client.proc = startClientProc({
      dtlsPort: a.dtlsPort,
      domain: DOMAIN,
      apiKey: reg.json.client_api_key as string,
      target: `127.0.0.1:${origin.port}`,
    });
    await client.proc.waitFor("connected to");
    await until("node 2 relays", async () => {
      try {
        await get(new http.Agent(), b.httpPort);
        return true;
      } catch {
        return false;
      }
    });
    // Warm both paths (JIT, pools).
    await load([a.httpPort], 500, 10);
    await load([b.httpPort], 500, 10);
    console.log(
      `${REQUESTS} GET / per run, ${ROUNDS} alternating rounds, medians; ` +
        `direct = node 1 (holds the tunnel), relayed = node 2 -> node 1\n`,
    );
    for (const conc of [1, 10, 50]) {
      const n = conc === 1 ? Math.max(200, Math.floor(REQUESTS / 4)) : REQUESTS;
      const [direct, relayed] = await compare(
        () => load([a.httpPort], n, conc),
        () => load([b.httpPort], n, conc),
      );
      console.log(`c${conc}  direct   ${fmt(direct)}`);
      console.log(`c${conc}  relayed  ${fmt(relayed)}`);
      console.log(
        `c${conc}  ratio relayed/direct: p50 ${(relayed.p50 / direct.p50).toFixed(2)}x  ` +
          `p99 ${(relayed.p99 / direct.p99).toFixed(2)}x  ` +
          `throughput ${(relayed.rps / direct.rps).toFixed(2)}x\n`,
      );
    }
    const [one, rr] = await compare(
      () => load([a.httpPort], REQUESTS, 50),
      () => load([a.httpPort, b.httpPort, c.httpPort], REQUESTS, 50),
    );
    console.log(`c50  node 1 only          ${fmt(one)}`);
    console.log(`c50  3 nodes round robin  ${fmt(rr)}`);
    console.log(
      `c50  ratio round robin/one node: p50 ${(rr.p50 / one.p50).toFixed(2)}x  ` +
        `throughput ${(rr.rps / one.rps).toFixed(2)}x`,
    );
    console.log(
      "\n(one client process and one origin serve every request; on a 2-core machine the " +
        "three servers, the client and this process share the cores)",
    );
  } finally {
    await client.proc?.stop();
    await cluster.close();
    await origin.close();
  }
}

if (import.meta.main) await main();
