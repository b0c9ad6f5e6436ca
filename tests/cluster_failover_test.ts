/**
 * A cluster losing a node, and losing its database, with real processes
 * (docs/cluster.md "Failure behaviour"):
 * - `kill -9` of the node that holds a single-homed client's tunnel
 *   (`--server-addr a,c --server-redundancy 1`): the other nodes answer a clean 503
 *   (never a hang) until the client is on c, then 200; the dead node's placements
 *   go once its heartbeat is stale;
 * - `kill -9` of one of the two nodes a dual-homed client (`--server-addr a,c`)
 *   holds tunnels to: no request fails;
 * - a 60 s database outage (a PostgreSQL instance of the test's own, stopped): the
 *   established tunnel keeps answering on every node from the placements in
 *   memory, a client that restarts mid-outage gets in again (the PSK read before),
 *   and after it the rows are written back and a new node joins and serves.
 */
import { equal, ok } from "node:assert/strict";
import postgres from "postgres";
import { curl, startClientProc } from "./helpers/procs.ts";
import { type ClusterNodeProc, startTestCluster, until } from "./helpers/cluster.ts";
import { startOrigin } from "./helpers/origin.ts";
import { startPgInstance } from "./helpers/pg_instance.ts";

const DOMAIN = "app.failover.test";
const get = (n: ClusterNodeProc) =>
  curl(["-H", `Host: ${DOMAIN}`, "--max-time", "5", `http://127.0.0.1:${n.httpPort}/`]);

Deno.test("cluster: kill -9 of the node holding the tunnel gives a clean 503 until the client is on another node", async () => {
  const origin = startOrigin();
  await using cluster = await startTestCluster(3);
  const [a, b, c] = cluster.nodes as [ClusterNodeProc, ClusterNodeProc, ClusterNodeProc];
  const reg = await b.admin("domains/register", { domain: DOMAIN });
  const apiKey = reg.json.client_api_key as string;
  const target = `127.0.0.1:${origin.port}`;
  // Single-homed, a first: its tunnel is on a until a dies, then on c.
  const first = startClientProc({
    dtlsPort: [a.dtlsPort, c.dtlsPort],
    domain: DOMAIN,
    apiKey,
    target,
    args: ["--server-redundancy", "1"],
  });
  const sql = postgres(cluster.dsn, { max: 1, onnotice: () => {} });
  try {
    await first.waitFor("connected to");
    await until(
      "b and c route the domain",
      async () => (await get(b)).status === 200 && (await get(c)).status === 200,
    );

    await a.kill9();
    // 503 each time (within the curl bound) until the client is on c, 200 from then on.
    const started = performance.now();
    let answers = 0;
    let movedAt = -1;
    while (performance.now() - started < 60_000) {
      for (const n of [b, c]) {
        const t0 = performance.now();
        const r = await get(n);
        ok(performance.now() - t0 < 4000, "answered, not hung");
        if (movedAt < 0 && r.status === 200) movedAt = performance.now();
        const want = movedAt < 0 ? 503 : 200;
        equal(r.status, want, `${n.name} after the kill: ${r.status} ${r.body.slice(0, 200)}`);
        answers++;
      }
      if (movedAt >= 0 && performance.now() - movedAt > 2000) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    ok(movedAt >= 0, `the client never moved to c:\n${first.output.slice(-2000)}`);
    ok(answers >= 10);
    console.log(
      `single-homed: 503 for ${((movedAt - started) / 1000).toFixed(1)} s after the kill, ` +
        `then served through c (${answers} answers checked)`,
    );
    // a's heartbeat is stale by now: its rows are gone, and no node lists its tunnel.
    await until("a's rows are removed", async () => {
      const rows = await sql`select
        (select count(*)::int from cluster_nodes where id = ${a.nodeId}) as n,
        (select count(*)::int from tunnel_placements where node_id = ${a.nodeId}) as p`;
      return rows[0]?.n === 0 && rows[0]?.p === 0;
    });
    const s = await b.admin("sessions");
    const sessions = s.json.sessions as { node?: string }[];
    equal(sessions.length, 1, JSON.stringify(s.json));
    equal(sessions[0]!.node, c.nodeId, "the one tunnel is on c");
    equal((await get(b)).status, 200);
    const m = await b.metrics();
    // The relays to the dead node before its heartbeat went stale: refused at connect.
    ok(/^hopgate_cluster_relay_errors_total\{reason="connect_failed"\} [1-9]/m.test(m), m);
    ok(/^hopgate_cluster_nodes 2$/m.test(m), "two live nodes");
  } finally {
    await sql.end();
    await first.stop();
    await origin.close();
  }
});

Deno.test("cluster: a domain with tunnels on two nodes loses no request when one of them is killed", async () => {
  const origin = startOrigin();
  await using cluster = await startTestCluster(3);
  const [a, b, c] = cluster.nodes as [ClusterNodeProc, ClusterNodeProc, ClusterNodeProc];
  const reg = await b.admin("domains/register", { domain: DOMAIN });
  const apiKey = reg.json.client_api_key as string;
  const target = `127.0.0.1:${origin.port}`;
  // One dual-homed client: a tunnel to a and one to c.
  const dual = startClientProc({
    dtlsPort: [a.dtlsPort, c.dtlsPort],
    domain: DOMAIN,
    apiKey,
    target,
  });
  try {
    await dual.waitFor("connected to");
    await until("b sees both tunnels", async () => {
      const s = await b.admin("sessions");
      return (s.json.sessions as unknown[]).length === 2;
    });
    await a.kill9();
    // Every request that starts after the kill is answered: a relay that cannot
    // connect to a tries c before anything of the request is sent.
    const started = performance.now();
    let served = 0;
    while (performance.now() - started < 7000) {
      const rs = await Promise.all([get(b), get(b), get(c)]);
      for (const r of rs) {
        equal(r.status, 200, `after the kill: ${r.status} ${r.body.slice(0, 200)}`);
      }
      served += rs.length;
    }
    ok(served >= 30);
    ok(
      /^hopgate_cluster_relay_errors_total\{reason="connect_failed"\} [1-9]/m.test(
        await b.metrics(),
      ),
    );
  } finally {
    await dual.stop();
    await origin.close();
  }
});

Deno.test("cluster: a 60 s database outage keeps the tunnel serving on every node; afterwards rows come back and a new node serves", async () => {
  const origin = startOrigin();
  await using pg = await startPgInstance();
  await using cluster = await startTestCluster(2, pg.dsn);
  const [a, b] = cluster.nodes as [ClusterNodeProc, ClusterNodeProc];
  const reg = await b.admin("domains/register", { domain: DOMAIN });
  const apiKey = reg.json.client_api_key as string;
  const startClient = () =>
    startClientProc({
      dtlsPort: a.dtlsPort,
      domain: DOMAIN,
      apiKey,
      target: `127.0.0.1:${origin.port}`,
    });
  let client = startClient();
  try {
    await client.waitFor("connected to");
    await until("b routes the domain", async () => (await get(b)).status === 200);

    await pg.stop();
    // Mid-outage the client restarts: a new handshake on a, with the PSK a read before
    // (the outage cache), and the nodes keep routing to a.
    const restart = (async () => {
      await new Promise((r) => setTimeout(r, 20_000));
      await client.stop();
      client = startClient();
      await client.waitFor("connected to");
    })();
    // 60 s, ten times the staleness bound (6 s): nothing is expired while the database
    // is away, and every node keeps routing from the placements in memory.
    const started = performance.now();
    let served = 0;
    let reconnected = false;
    restart.then(() => reconnected = true);
    while (performance.now() - started < 60_000) {
      for (const n of [a, b]) {
        const r = await get(n);
        // Between the client's stop and its new tunnel, nothing can answer 200.
        if (reconnected || performance.now() - started < 19_000) {
          equal(r.status, 200, `${n.name} during the outage: ${r.status} ${r.body.slice(0, 200)}`);
          served++;
        }
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
    await restart;
    ok(reconnected, "the client did not reconnect during the outage");
    ok(served >= 30);
    ok(/^hopgate_cluster_heartbeat_failures_total [1-9]/m.test(await a.metrics()));

    await pg.start();
    const sql = postgres(pg.dsn, { max: 1, onnotice: () => {} });
    try {
      // a writes its heartbeat again (no node was removed: every heartbeat was as old as
      // the outage), and its placement is still there.
      await until("a heartbeats again", async () => {
        const rows = await sql`select
          (select count(*)::int from cluster_nodes
            where id = ${a.nodeId} and heartbeat_at > now() - interval '3 seconds') as fresh,
          (select count(*)::int from tunnel_placements where node_id = ${a.nodeId}) as placed`
          .catch(() => []);
        return rows[0]?.fresh === 1 && rows[0]?.placed === 1;
      }, 30_000);
    } finally {
      await sql.end();
    }
    // Requests kept working through the reconciliation, on both nodes.
    for (const n of [a, b]) {
      const r = await get(n);
      equal(r.status, 200, `${n.name} after the outage: ${r.status} ${r.body.slice(0, 200)}`);
    }
    const late = await cluster.addNode();
    await until("the new node serves the domain", async () => (await get(late)).status === 200);
  } finally {
    await client.stop();
    await origin.close();
  }
});
