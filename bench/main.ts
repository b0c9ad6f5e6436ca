/**
 * `deno task bench`: every benchmark, each printing its figures beside a baseline
 * measured in the same run (raw node:crypto, plain UDP, the memory link...).
 * Nothing here passes or fails. Pick parts with arguments: `deno task bench dtls mux`.
 * `ingress` and `forwarder` are the server's and the client's request paths in-process
 * (CPU per request beside mux-only and node:http-only baselines).
 *
 * The HTTP tunnel against direct access and `ssh -R` is measured by the shared
 * harness with our target file: see bench/targets/hopgate.sh. `deno task bench cluster`
 * (only when named) is the cluster relay's added latency, direct node against relayed node;
 * `deno task bench idle --tunnels 1000 --base DIR` (only when named) one node's cost per idle
 * tunnel and its reconnection after a restart, beside the checkout in DIR.
 */
const parts: Record<string, () => Promise<void>> = {
  dtls: async () => (await import("./dtls_bench.ts")).main(),
  mux: async () =>
    (await import("./mux_bench.ts")).main(Deno.args.filter((a) => a.startsWith("--"))),
  ingress: async () => (await import("./ingress_bench.ts")).main(["--requests", "50000"]),
  forwarder: async () => (await import("./forwarder_bench.ts")).main(["--requests", "30000"]),
  cluster: async () => (await import("./cluster_relay_bench.ts")).main(),
  idle: async () => (await import("./idle_tunnels.ts")).main(),
};

/**
 * Named only: they start PostgreSQL-backed server processes (bench/cluster_relay_bench.ts;
 * bench/idle_tunnels.ts, which also opens thousands of UDP sockets).
 */
const OPT_IN = new Set(["cluster", "idle"]);
const wanted = Deno.args.filter((a) => !a.startsWith("--"));
for (const name of wanted.length ? wanted : Object.keys(parts).filter((p) => !OPT_IN.has(p))) {
  const run = parts[name];
  if (!run) {
    console.error(`unknown bench "${name}"; known: ${Object.keys(parts).join(", ")}`);
    Deno.exit(2);
  }
  console.log(`\n## ${name}\n`);
  await run();
}
