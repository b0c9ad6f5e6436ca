/**
 * A rolling restart of a three-node cluster (docs/cluster.md) under a steady
 * request loop: a dual-homed client (`--server-addr a,c`) holds tunnels to two
 * nodes, each node in turn is stopped gracefully (SIGTERM) and started
 * again, and no request sent to a node that is up fails (a load balancer's health
 * check keeps callers off the node being restarted; requests to it are not sent,
 * or not counted when it began stopping while one was on its way). While a node
 * drains, its tunnels still serve relays; when they close, its placements go
 * (NOTIFY), and its row when it exits; the new process joins under a new id.
 */
import { equal } from "node:assert/strict";
import postgres from "postgres";
import { curl, startClientProc } from "./helpers/procs.ts";
import { type ClusterNodeProc, startTestCluster, until } from "./helpers/cluster.ts";
import { startOrigin } from "./helpers/origin.ts";

const DOMAIN = "app.rolling.test";
const get = (n: ClusterNodeProc) =>
  curl(["-H", `Host: ${DOMAIN}`, "--max-time", "5", `http://127.0.0.1:${n.httpPort}/`]);

Deno.test("cluster: a rolling restart of all three nodes loses no request for a domain held on two nodes", async () => {
  const origin = startOrigin();
  await using cluster = await startTestCluster(3);
  const [a, b, c] = cluster.nodes as [ClusterNodeProc, ClusterNodeProc, ClusterNodeProc];
  const reg = await b.admin("domains/register", { domain: DOMAIN });
  const apiKey = reg.json.client_api_key as string;
  const target = `127.0.0.1:${origin.port}`;
  const dual = startClientProc({
    dtlsPort: [a.dtlsPort, c.dtlsPort],
    domain: DOMAIN,
    apiKey,
    target,
  });
  const tunnels = async (n: ClusterNodeProc) =>
    ((await n.admin("sessions")).json.sessions as unknown[] | undefined)?.length ?? 0;
  let restarting: ClusterNodeProc | undefined;
  let stop = false;
  const failures: string[] = [];
  let served = 0;
  try {
    await dual.waitFor("connected to");
    await until("b sees both tunnels", async () => (await tunnels(b)) === 2);
    const loop = (async () => {
      while (!stop) {
        for (const n of cluster.nodes) {
          if (n === restarting) continue;
          const r = await get(n);
          // A node that began stopping after the request was sent may refuse the connection.
          if (n === restarting) continue;
          if (r.status === 200) served++;
          else failures.push(`${n.name}: ${r.status} ${r.body.slice(0, 160)}`);
        }
      }
    })();
    for (const n of [a, b, c]) {
      restarting = n;
      await n.restart();
      restarting = undefined;
      // Its client (if any) is back, and every node sees both tunnels again.
      try {
        await until(`both tunnels after ${n.name} restarted`, async () => {
          for (const m of cluster.nodes) if ((await tunnels(m)) !== 2) return false;
          return true;
        }, 30_000);
      } catch (e) {
        const counts = await Promise.all(
          cluster.nodes.map(async (m) => `${m.name}: ${await tunnels(m)}`),
        );
        const sql = postgres(cluster.dsn, { max: 1, onnotice: () => {} });
        const rows = await sql`select n.id, n.heartbeat_at > now() - interval '6 seconds' as fresh,
          (select count(*)::int from tunnel_placements p where p.node_id = n.id) as placements
          from cluster_nodes n`.finally(() => sql.end());
        const stats = await Promise.all(cluster.nodes.map(async (m) =>
          `${m.name} (${m.nodeId}): ` +
          (await m.metrics()).split("\n").filter((l) => /^hopgate_cluster_(nodes|remote)/.test(l))
            .join(" ")
        ));
        counts.push(`\ndatabase ${JSON.stringify(rows)}\n${stats.join("\n")}`);
        throw new Error(
          `${(e as Error).message}\ntunnels ${counts.join(", ")}\nclient:\n${
            dual.output.slice(-3000)
          }`,
        );
      }
    }
    stop = true;
    await loop;
    equal(failures.length, 0, `failed requests:\n${failures.join("\n")}`);
    console.log(`${served} requests answered during the rolling restart`);
  } finally {
    stop = true;
    await dual.stop();
    await origin.close();
  }
});
