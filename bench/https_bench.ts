/**
 * HTTPS requests per second: HopGate's SNI listener (`SniHttpsServer`: Deno's
 * SNI resolver + Deno.serve's engine) against single-certificate `Deno.serve`,
 * and node:https with `SNICallback` for reference, in one run on one machine.
 * Each server answers "ok" from this process; wrk (no certificate checks)
 * connects to https://localhost, so the SNI is "localhost" and our resolver picks
 * its certificate out of several.
 *
 *   deno run -A bench/https_bench.ts [--duration 5] [--connections 50] [--threads 2] [--rounds 2]
 */
import { createServer } from "node:https";
import { createSecureContext } from "node:tls";
import { parseArgs } from "node:util";
import { createSelfSignedCertificate } from "../server/certs/self_signed.ts";
import { SniHttpsServer } from "../server/tls_server.ts";

interface Target {
  name: string;
  start(): Promise<{ port: number; stop(): Promise<void> }>;
}

export interface BenchResult {
  name: string;
  requestsPerSecond: number[];
}

async function wrk(port: number, o: { duration: number; connections: number; threads: number }) {
  const out = await new Deno.Command("wrk", {
    args: [
      `-t${o.threads}`,
      `-c${o.connections}`,
      `-d${o.duration}s`,
      `https://localhost:${port}/`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const m = /Requests\/sec:\s+([\d.]+)/.exec(text);
  if (!out.success || !m) {
    throw new Error(`wrk failed: ${text}${new TextDecoder().decode(out.stderr)}`);
  }
  if (/Non-2xx|Socket errors/.test(text)) console.error(text);
  return Number(m[1]);
}

export async function main(args: string[] = Deno.args): Promise<BenchResult[]> {
  const { values } = parseArgs({
    args,
    options: {
      duration: { type: "string", default: "5" },
      connections: { type: "string", default: "50" },
      threads: { type: "string", default: "2" },
      rounds: { type: "string", default: "2" },
    },
  });
  const o = {
    duration: Number(values.duration),
    connections: Number(values.connections),
    threads: Number(values.threads),
  };
  const local = await createSelfSignedCertificate(["localhost"]);
  const others = await Promise.all(
    ["a.example.com", "b.example.com", "c.example.com"].map((n) =>
      createSelfSignedCertificate([n])
    ),
  );
  const byName = new Map([
    ["localhost", local],
    ...others.map((c, i) =>
      [
        ["a", "b", "c"][i] + ".example.com",
        c,
      ] as const
    ),
  ]);
  const body = new TextEncoder().encode("ok\n");

  const targets: Target[] = [
    {
      name: "Deno.serve, one certificate",
      start: () => {
        const s = Deno.serve({
          hostname: "127.0.0.1",
          port: 0,
          cert: local.cert,
          key: local.key,
          onListen: () => {},
        }, () => new Response(body));
        return Promise.resolve({ port: s.addr.port, stop: () => s.shutdown() });
      },
    },
    {
      name: "SniHttpsServer, certificate by SNI",
      start: () => {
        const s = new SniHttpsServer({
          hostname: "127.0.0.1",
          port: 0,
          lookup: (n) => Promise.resolve(byName.get(n)),
          handler: () => new Response(body),
        });
        return Promise.resolve({ port: s.addr.port, stop: () => s.close() });
      },
    },
    {
      name: "node:https, SNICallback",
      start: async () => {
        const contexts = new Map(
          [...byName].map(([n, c]) => [n, createSecureContext({ cert: c.cert, key: c.key })]),
        );
        const s = createServer({
          SNICallback: (n, cb) => {
            const ctx = contexts.get(n);
            ctx ? cb(null, ctx) : cb(new Error("unknown name"));
          },
        }, (_req, res) => res.end("ok\n"));
        await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
        const port = (s.address() as { port: number }).port;
        return {
          port,
          stop: () =>
            new Promise<void>((r) => {
              s.close(() => r());
              s.closeAllConnections();
            }),
        };
      },
    },
  ];

  const results: BenchResult[] = targets.map((t) => ({ name: t.name, requestsPerSecond: [] }));
  for (let round = 0; round < Number(values.rounds); round++) {
    for (const [i, t] of targets.entries()) {
      const s = await t.start();
      try {
        await wrk(s.port, { ...o, duration: 1 }); // warm-up
        results[i]!.requestsPerSecond.push(await wrk(s.port, o));
      } finally {
        await s.stop();
      }
    }
  }
  console.log(
    `HTTPS req/s, wrk -t${o.threads} -c${o.connections} -d${o.duration}s, ` +
      `${
        Number(values.rounds)
      } rounds, Deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} CPUs`,
  );
  for (const r of results) {
    const best = Math.max(...r.requestsPerSecond);
    const runs = r.requestsPerSecond.map((v) => v.toFixed(0)).join(", ");
    console.log(`  ${r.name.padEnd(38)} ${best.toFixed(0).padStart(8)}  (runs: ${runs})`);
  }
  return results;
}

if (import.meta.main) await main();
