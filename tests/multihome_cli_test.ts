/**
 * Clients that survive a node's death, with real processes: two server processes
 * sharing one PostgreSQL database (a private instance), each serving requests
 * through its own local tunnel, and the client CLI (the client task's exact
 * permissions, the key in its environment) with `--server-addr a,b`.
 *
 * Dual-homed: a tunnel to each server; `kill -9` one while a request loop runs
 * against the other (none may fail); the client shows one tunnel, and two again
 * once the killed server is back on its port; stopping the client drains both,
 * and a request in flight then is answered.
 * Single-homed (`--server-redundancy 1`): the node in use is killed, the client
 * is connected to the other; the seconds it took are printed. The TCP path:
 * `--transport tcp` with one `--server-tcp-addr` per node reaches both.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import {
  ADMIN_KEY,
  curl,
  freePort,
  Proc,
  ROOT,
  type ServerProc,
  startServerProc,
  taskFlags,
} from "./helpers/procs.ts";
import { startPgInstance } from "./helpers/pg_instance.ts";

const DUAL = "dual.multihome.test";
const SINGLE = "single.multihome.test";

/** The client CLI as the `client` task runs it; the key comes from the environment. */
function startClient(o: {
  servers: ServerProc[];
  domain: string;
  apiKey: string;
  target: string;
  metricsPort: number;
  args?: string[];
}): Proc {
  return new Proc([
    "run",
    "--config",
    `${ROOT}deno.json`,
    ...taskFlags("client"),
    "client/main.ts",
    "--server-addr",
    o.servers.map((s) => `127.0.0.1:${s.dtlsPort}`).join(","),
    "--domain",
    o.domain,
    "--local-target",
    o.target,
    "--metrics-listen",
    String(o.metricsPort),
    ...(o.args ?? []),
  ], { HOP_CLIENT_API_KEY: o.apiKey });
}

/** The client's tunnels up, by node, from its metrics endpoint. */
async function tunnelsUp(metricsPort: number): Promise<string[]> {
  const r = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
  const text = await r.text();
  const nodes: string[] = [];
  for (const m of text.matchAll(/^hopgate_client_tunnels\{node="([^"]+)",[^}]*\} (\d+)$/gm)) {
    if (Number(m[2]) > 0) nodes.push(m[1]!);
  }
  return nodes.sort();
}

async function waitTunnels(port: number, want: (nodes: string[]) => boolean, what: string) {
  const end = Date.now() + 30_000;
  let last: string[] = [];
  while (Date.now() < end) {
    try {
      last = await tunnelsUp(port);
      if (want(last)) return last;
    } catch { /* not listening yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}; tunnels up: ${last.join(", ") || "none"}`);
}

/** GET / for `domain` through a server's public HTTP listener. */
function get(s: ServerProc, domain: string) {
  return curl(["-H", `Host: ${domain}`, "--max-time", "10", `http://127.0.0.1:${s.httpPort}/`]);
}

/** The domain's tunnels a server holds, from its admin API. */
async function sessionsOn(s: ServerProc, domain: string): Promise<number> {
  const r = await curl([
    "-H",
    "Host: gateway.test",
    "-H",
    `Authorization: Bearer ${ADMIN_KEY}`,
    `http://127.0.0.1:${s.httpPort}/api/v1/admin/sessions?domain=${domain}`,
  ]);
  return (JSON.parse(r.body).sessions as unknown[]).length;
}

const node = (s: ServerProc) => `127.0.0.1:${s.dtlsPort}`;

Deno.test("multihome processes: two servers on one database; dual-homed survives kill -9, single-homed moves", async () => {
  const pg = await startPgInstance();
  const originPort = freePort("tcp");
  const origin = Deno.serve(
    { hostname: "127.0.0.1", port: originPort, onListen() {} },
    async (req) => {
      // /slow answers after 1.5 s: a request still in flight when the client is stopped.
      if (new URL(req.url).pathname === "/slow") await new Promise((r) => setTimeout(r, 1500));
      return new Response(`hello ${req.headers.get("host")}\n`);
    },
  );
  const servers: ServerProc[] = [];
  const clients: Proc[] = [];
  try {
    // One after the other: the first migrates the shared database.
    servers.push(await startServerProc({}, { dsn: pg.dsn }));
    servers.push(await startServerProc({}, { dsn: pg.dsn }));
    const [a, b] = servers as [ServerProc, ServerProc];
    const dualKey = await a.register(DUAL);
    const singleKey = await b.register(SINGLE);

    // ---- dual-homed
    const dualMetrics = freePort("tcp");
    const dual = startClient({
      servers: [a, b],
      domain: DUAL,
      apiKey: dualKey,
      target: `127.0.0.1:${originPort}`,
      metricsPort: dualMetrics,
    });
    clients.push(dual);
    deepEqual(
      await waitTunnels(dualMetrics, (n) => n.length === 2, "two tunnels"),
      [node(a), node(b)].sort(),
    );
    for (const s of [a, b]) {
      const r = await get(s, DUAL);
      equal(r.status, 200, r.body);
      equal(r.body, `hello ${DUAL}\n`);
      equal(await sessionsOn(s, DUAL), 1, "each server holds one tunnel of the domain");
    }

    // A steady request loop against B while A is killed.
    const statuses: number[] = [];
    let stop = false;
    const loop = (async () => {
      while (!stop) statuses.push((await get(b, DUAL)).status);
    })();
    await new Promise((r) => setTimeout(r, 500));
    const killedAt = performance.now();
    await a.proc.stop("SIGKILL");
    deepEqual(
      await waitTunnels(dualMetrics, (n) => n.length === 1, "one tunnel after the kill"),
      [node(b)],
    );
    const lostMs = performance.now() - killedAt;
    const restartAt = performance.now();
    await a.restart();
    const startedMs = performance.now() - restartAt;
    deepEqual(
      await waitTunnels(dualMetrics, (n) => n.length === 2, "two tunnels after the restart"),
      [node(a), node(b)].sort(),
    );
    const backMs = performance.now() - restartAt;
    stop = true;
    await loop;
    ok(statuses.length >= 20, `${statuses.length} requests in the loop`);
    equal(
      statuses.filter((s) => s !== 200).length,
      0,
      `statuses against the surviving server: ${statuses.join(",")}`,
    );
    equal((await get(a, DUAL)).status, 200, "the restarted server serves through its new tunnel");
    console.log(
      `dual-homed: ${statuses.length} requests to the surviving server during the kill, all 200; ` +
        `the client saw the tunnel lost ${(lostMs / 1000).toFixed(1)} s after kill -9 ` +
        `(mux idle timeout 10 s); the server restarted in ${(startedMs / 1000).toFixed(1)} s ` +
        `and the client had two tunnels ${(backMs / 1000).toFixed(1)} s after the restart began`,
    );

    // Stopping the client drains both tunnels: each server hears the drain, and a request
    // in flight when the client is told to stop is answered.
    const inFlight = curl([
      "-H",
      `Host: ${DUAL}`,
      "--max-time",
      "10",
      `http://127.0.0.1:${a.httpPort}/slow`,
    ]);
    await new Promise((r) => setTimeout(r, 500));
    await dual.stop();
    const late = await inFlight;
    equal(late.status, 200, `the request in flight at the stop: ${late.status} ${late.body}`);
    equal((await dual.exited).code, 0, dual.output);
    for (const s of [a, b]) await s.proc.waitFor('"tunnel draining"', 10_000);
    ok(dual.output.includes("stopped after"), dual.output);
    ok(!dual.output.includes(dualKey), "the key is never printed");

    // ---- single-homed
    const singleMetrics = freePort("tcp");
    const single = startClient({
      servers: [a, b],
      domain: SINGLE,
      apiKey: singleKey,
      target: `127.0.0.1:${originPort}`,
      metricsPort: singleMetrics,
      args: ["--server-redundancy", "1"],
    });
    clients.push(single);
    const [inUse] = await waitTunnels(singleMetrics, (n) => n.length === 1, "one tunnel");
    await new Promise((r) => setTimeout(r, 500));
    equal((await tunnelsUp(singleMetrics)).length, 1, "single-homed: one tunnel only");
    const [victim, other] = inUse === node(a) ? [a, b] : [b, a];
    // The baseline for the dual-homed loop: the same loop against the node that survives,
    // for a domain whose only tunnel is on the node killed.
    const baseline: number[] = [];
    let stopBaseline = false;
    const baselineLoop = (async () => {
      while (!stopBaseline) baseline.push((await get(other, SINGLE)).status);
    })();
    const singleKilledAt = Date.now();
    await victim.proc.stop("SIGKILL");
    deepEqual(
      await waitTunnels(singleMetrics, (n) => n.length === 1 && n[0] === node(other), "the move"),
      [node(other)],
    );
    stopBaseline = true;
    await baselineLoop;
    // The client's own timestamps (it logs plain lines when not on a terminal).
    const at = (re: RegExp) => {
      const line = single.output.split("\n").find((l) => re.test(l));
      ok(line, `a line matching ${re} in:\n${single.output}`);
      return Date.parse(line.split(" ")[0]!);
    };
    const lostAt = at(new RegExp(`Connection to ${node(victim).replaceAll(".", "\\.")} lost`));
    const movedAt = at(new RegExp(`connected to ${node(other).replaceAll(".", "\\.")} over`));
    const noticedMs = lostAt - singleKilledAt;
    const movedMs = movedAt - lostAt;
    const r = await get(other, SINGLE);
    equal(r.status, 200, r.body);
    console.log(
      `single-homed: kill -9 of the node in use noticed after ${(noticedMs / 1000).toFixed(1)} s ` +
        `(mux idle timeout 10 s); connected to the other node ${(movedMs / 1000).toFixed(2)} s ` +
        `later (it had not failed, so it is tried at once; the lost node waits its backoff); ` +
        `the same request loop against the surviving server meanwhile: ` +
        `${baseline.filter((s) => s !== 200).length} of ${baseline.length} failed ` +
        `(statuses ${[...new Set(baseline)].join(", ")})`,
    );
    await victim.restart();
    await single.stop();

    // ---- the TCP path, per node: each --server-tcp-addr entry reaches its own server.
    const tcpMetrics = freePort("tcp");
    const tcp = startClient({
      servers: [a, b],
      domain: DUAL,
      apiKey: dualKey,
      target: `127.0.0.1:${originPort}`,
      metricsPort: tcpMetrics,
      args: [
        "--transport",
        "tcp",
        "--server-tcp-addr",
        `http://127.0.0.1:${a.httpPort},http://127.0.0.1:${b.httpPort}`,
        "--server-name",
        "gateway.test",
      ],
    });
    clients.push(tcp);
    await waitTunnels(tcpMetrics, (n) => n.length === 2, "two tunnels over TCP");
    const text = await (await fetch(`http://127.0.0.1:${tcpMetrics}/metrics`)).text();
    equal(
      text.match(/^hopgate_client_tunnels\{[^}]*transport="tcp \(websocket\)"\} 1$/gm)?.length,
      2,
    );
    for (const s of [a, b]) {
      equal((await get(s, DUAL)).status, 200);
      equal(await sessionsOn(s, DUAL), 1);
    }
  } finally {
    for (const c of clients) await c.stop();
    for (const s of servers) await s.stop();
    await origin.shutdown();
    await pg.destroy();
  }
});
