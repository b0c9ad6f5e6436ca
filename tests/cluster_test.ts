/**
 * A HopGate cluster with real processes on loopback (docs/cluster.md): three
 * server nodes on one PostgreSQL database, a real client process holding its
 * tunnel on one node, curl and npm ws as callers on every node. Relays between
 * the nodes are checked for bodies (SHA-256 both ways), SSE and WebSocket; the
 * relay listener against unauthenticated and wrong-key peers and against a
 * second hop; and a key rotation, then an unregister, on one node evicting the tunnel
 * on another (NOTIFY), each measured against the 1 s the issue asks for.
 */
import { equal, match, ok } from "node:assert/strict";
import { randomBytes } from "node:crypto";
import WebSocket from "ws";
import { curl, Proc, ROOT, startClientProc, taskFlags } from "./helpers/procs.ts";
import {
  CLUSTER_SECRET,
  type ClusterNodeProc,
  startTestCluster,
  until,
} from "./helpers/cluster.ts";
import { patternBytes, sha256, startOrigin } from "./helpers/origin.ts";
import { keyFromSecret, SecretBox } from "../db/mod.ts";
import { line, RELAY_KEY_INFO, relayProof } from "../server/cluster/relay_wire.ts";
import { encodeHead, readHeadFrom } from "../shared/protocol/mod.ts";
import { ConnReader } from "../server/cluster/relay_wire.ts";

const DOMAIN = "app.cluster.test";
const host = ["-H", `Host: ${DOMAIN}`, "--max-time", "30"];
const url = (n: ClusterNodeProc, path: string) => `http://127.0.0.1:${n.httpPort}${path}`;

/** The `name{labels} value` of a metric in a scrape, 0 when absent. */
function metric(text: string, series: string): number {
  for (const l of text.split("\n")) {
    if (l.startsWith(series + " ")) return Number(l.slice(series.length + 1));
  }
  return 0;
}

/** Opens a raw relay connection and reads the receiver's greeting. */
async function relayConn(n: ClusterNodeProc) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: n.relayPort });
  const reader = new ConnReader(conn);
  const greeting = await reader.readLine();
  const [magic, challenge, receiver] = greeting.split(" ");
  return { conn, reader, magic: magic!, challenge: challenge!, receiver: receiver! };
}

Deno.test("cluster: any of three nodes serves the domain, relays stream both ways, stay one hop, and evict on rotation", async (t) => {
  const origin = startOrigin();
  await using cluster = await startTestCluster(3);
  const [a, b, c] = cluster.nodes as [ClusterNodeProc, ClusterNodeProc, ClusterNodeProc];
  const reg = await b.admin("domains/register", { domain: DOMAIN });
  equal(reg.status, 200, JSON.stringify(reg.json));
  const apiKey = reg.json.client_api_key as string;
  const client = startClientProc({
    dtlsPort: a.dtlsPort,
    domain: DOMAIN,
    apiKey,
    target: `127.0.0.1:${origin.port}`,
  });
  try {
    await client.waitFor("connected to");
    // Every node learns the placement (NOTIFY), then routes without a query.
    await until("every node routes the domain", async () => {
      for (const n of cluster.nodes) {
        if ((await curl([...host, url(n, "/")])).status !== 200) return false;
      }
      return true;
    });

    await t.step("a request on any node is answered by the one origin", async () => {
      for (const n of cluster.nodes) {
        const r = await curl([...host, url(n, "/")]);
        equal(r.status, 200, `${n.name}: ${r.body}`);
        equal(r.body, "hello from origin\n");
      }
    });

    await t.step("sessions lists the tunnel with its node on every node", async () => {
      for (const n of cluster.nodes) {
        const s = await n.admin("sessions");
        const sessions = s.json.sessions as { domain: string; node: string }[];
        equal(sessions.length, 1, JSON.stringify(s.json));
        equal(sessions[0]!.domain, DOMAIN);
        equal(sessions[0]!.node, a.nodeId);
      }
    });

    await t.step("/readyz on each node names the node and counts the live ones", async () => {
      for (const n of cluster.nodes) {
        const r = await curl(["-s", "-H", "Host: gateway.test", url(n, "/readyz")]);
        equal(r.status, 200, r.body);
        const cl = JSON.parse(r.body).cluster;
        equal(cl.node_id, n.nodeId);
        equal(cl.live_nodes, 3);
        equal(cl.database, "ok");
      }
      const leaders = await Promise.all(
        cluster.nodes.map(async (n) => /^hopgate_cluster_leader 1$/m.test(await n.metrics())),
      );
      equal(leaders.filter(Boolean).length, 1, `one elected node: ${leaders}`);
    });

    await t.step("50 MiB down and 50 MiB up through a relay are bit-exact", async () => {
      const n = 50 * 1024 * 1024;
      const out = await Deno.makeTempFile();
      try {
        const r = await curl([...host, "-o", out, url(b, `/bytes?n=${n}`)]);
        equal(r.status, 200);
        const got = await Deno.readFile(out);
        equal(got.length, n);
        equal(sha256(got), sha256(patternBytes(n)));
        const up = randomBytes(n);
        await Deno.writeFile(out, up);
        const e = await curl([
          ...host,
          "-H",
          "Expect:",
          "--data-binary",
          `@${out}`,
          "-o",
          "/dev/null",
          url(c, "/echo"),
        ]);
        equal(e.status, 200);
        ok(e.headers.includes(`x-sha256: ${sha256(up)}`), "the origin saw the exact upload");
      } finally {
        await Deno.remove(out);
      }
    });

    await t.step("SSE events arrive one by one through a relay", async () => {
      const p = new Deno.Command("curl", {
        args: ["-sN", ...host, url(c, "/sse?n=5")],
        stdout: "piped",
      }).spawn();
      const times: number[] = [];
      let buf = "";
      for await (const chunk of p.stdout.pipeThrough(new TextDecoderStream())) {
        buf += chunk;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          buf = buf.slice(i + 2);
          times.push(performance.now());
        }
      }
      await p.status;
      equal(times.length, 5);
      // The origin spaces them 150 ms apart: a relay that buffered would bunch them.
      ok(times[4]! - times[0]! > 400, `events were bunched: spread ${times[4]! - times[0]!} ms`);
    });

    await t.step("WebSocket echo through a relay", async () => {
      const ws = new WebSocket(`ws://127.0.0.1:${b.httpPort}/ws`, { headers: { host: DOMAIN } });
      const got: string[] = [];
      await new Promise<void>((resolve, reject) => {
        ws.on("open", () => {
          ws.send("one");
          ws.send("two");
        });
        ws.on("message", (d: unknown) => {
          got.push(String(d));
          if (got.length === 2) resolve();
        });
        ws.on("error", reject);
      });
      ws.close();
      equal(got.join(","), "one,two");
    });

    const key = new SecretBox(keyFromSecret(CLUSTER_SECRET)).deriveKey(RELAY_KEY_INFO);

    await t.step("an unauthenticated or wrong-key relay is refused and counted", async () => {
      const before = metric(
        await b.metrics(),
        'hopgate_cluster_relay_errors_total{reason="in_auth_failed"}',
      );
      // Right form, wrong key.
      const wrong = new SecretBox(keyFromSecret("another-secret-key-0123456789abcdef"))
        .deriveKey(RELAY_KEY_INFO);
      const r1 = await relayConn(b);
      equal(r1.magic, "HOPGATE-RELAY/1");
      equal(r1.receiver, b.nodeId);
      const proof = relayProof(wrong, r1.challenge, r1.receiver, "intruder");
      await r1.conn.write(line(`intruder ${proof}`));
      match(await r1.reader.readLine(), /^ERR auth_failed /);
      equal(await r1.reader.read(), null, "closed after the refusal");
      r1.conn.close();
      // No proof at all.
      const r2 = await relayConn(b);
      await r2.conn.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
      match(await r2.reader.readLine(), /^ERR bad_greeting /);
      r2.conn.close();
      // A proof replayed on another connection (another challenge) fails too.
      const r3 = await relayConn(b);
      const r4 = await relayConn(b);
      const good3 = relayProof(key, r3.challenge, r3.receiver, "n");
      await r4.conn.write(line(`n ${good3}`));
      match(await r4.reader.readLine(), /^ERR auth_failed /);
      r3.conn.close();
      r4.conn.close();
      const m = await b.metrics();
      equal(
        metric(m, 'hopgate_cluster_relay_errors_total{reason="in_auth_failed"}') - before,
        2,
      );
      ok(metric(m, 'hopgate_cluster_relay_errors_total{reason="in_bad_greeting"}') >= 1);
      ok(!b.proc.output.includes(CLUSTER_SECRET), "the secret is never logged");
    });

    await t.step("a relayed request is never relayed again", async () => {
      // b has no tunnel of its own: an authenticated relay to b must not go on to a.
      const r = await relayConn(b);
      const proof = relayProof(key, r.challenge, r.receiver, "tester");
      await r.conn.write(line(`tester ${proof}`));
      await r.conn.write(line(DOMAIN));
      match(await r.reader.readLine(), /^ERR no_tunnel /);
      r.conn.close();
      // The same to a, which holds the tunnel: spliced onto it and answered.
      const r2 = await relayConn(a);
      const proof2 = relayProof(key, r2.challenge, r2.receiver, "tester");
      await r2.conn.write(line(`tester ${proof2}`));
      await r2.conn.write(line(DOMAIN));
      await r2.conn.write(encodeHead({
        t: "req",
        id: "relay-test",
        method: "GET",
        url: "/",
        headers: [["host", DOMAIN]],
        client: "127.0.0.1",
        scheme: "http",
      }));
      await r2.conn.closeWrite();
      equal(await r2.reader.readLine(), "OK");
      const { head, rest } = await readHeadFrom(r2.reader);
      equal(head.t, "res");
      let body = rest ? new TextDecoder().decode(rest) : "";
      for (let v; (v = await r2.reader.read()) !== null;) body += new TextDecoder().decode(v);
      equal(body, "hello from origin\n");
      r2.conn.close();
      const m = await b.metrics();
      ok(metric(m, 'hopgate_cluster_relayed_requests_total{direction="out"}') >= 1);
      // b relayed to a before: connections to a are kept ready for the next requests.
      ok(metric(m, 'hopgate_cluster_relay_connections{direction="ready"}') >= 1, m);
      equal(metric(m, "hopgate_cluster_nodes"), 3);
    });

    let newKey = "";
    await t.step("rotating the key on node 3 evicts the tunnel held on node 1", async () => {
      const started = performance.now();
      const r = await c.admin("domains/rotate", { domain: DOMAIN });
      newKey = r.json.client_api_key as string;
      equal(r.status, 200, JSON.stringify(r.json));
      equal(r.json.closed_sessions, 1);
      await until(
        "node 1 closes the tunnel",
        () => a.proc.output.includes("evicted by another cluster node"),
        5000,
      );
      const ms = performance.now() - started;
      console.log(`eviction on the holding node ${ms.toFixed(0)} ms after the rotate call`);
      ok(ms < 1000, `evicted after ${ms} ms`);
      // Every node forgets the placement: no tunnel any more.
      await until("no node routes the domain", async () => {
        for (const n of cluster.nodes) {
          if ((await curl([...host, url(n, "/")])).status === 200) return false;
        }
        return true;
      });
    });

    await t.step("unregistering on node 2 evicts the tunnel held on node 1", async () => {
      // The old client retries with the old key in vain; one with the new key connects.
      const again = startClientProc({
        dtlsPort: a.dtlsPort,
        domain: DOMAIN,
        apiKey: newKey,
        target: `127.0.0.1:${origin.port}`,
      });
      try {
        await again.waitFor("connected to");
        await until(
          "node 2 routes the domain",
          async () => (await curl([...host, url(b, "/")])).status === 200,
        );
        const evictions = () => a.proc.output.split("evicted by another cluster node").length;
        const before = evictions();
        const started = performance.now();
        const r = await b.admin("domains/unregister", { domain: DOMAIN, client_api_key: newKey });
        equal(r.status, 200, JSON.stringify(r.json));
        equal(r.json.closed_sessions, 1);
        await until("node 1 closes the tunnel", () => evictions() > before, 5000);
        const ms = performance.now() - started;
        console.log(`eviction on the holding node ${ms.toFixed(0)} ms after the unregister call`);
        ok(ms < 1000, `evicted after ${ms} ms`);
      } finally {
        await again.stop();
      }
    });
  } finally {
    await client.stop();
    await origin.close();
  }
});

Deno.test("cluster settings with the embedded PGlite stop start-up with a clear error", async () => {
  // Never created: the configuration is refused before anything is opened.
  const dataDir = `./data/cluster-pglite-${randomBytes(4).toString("hex")}`;
  const proc = new Proc([
    "run",
    "--config",
    `${ROOT}deno.json`,
    ...taskFlags("server"),
    "server/main.ts",
  ], {
    HOP_SERVER_DEBUG: "true",
    HOP_SERVER_HTTP_LISTEN: "127.0.0.1:0",
    HOP_SERVER_HTTPS_LISTEN: "127.0.0.1:0",
    HOP_SERVER_DTLS_LISTEN: "127.0.0.1:0",
    HOP_DATA_DIR: dataDir,
    HOP_CLUSTER_LISTEN: "127.0.0.1:7443",
  });
  try {
    const status = await proc.exited;
    equal(status.code, 2);
    match(
      proc.output,
      /HOP_CLUSTER_LISTEN: cluster mode needs PostgreSQL \(HOP_DB_DSN\); the embedded PGlite database is single-node/,
    );
  } finally {
    await proc.stop();
    await Deno.remove(`${ROOT}${dataDir}`, { recursive: true }).catch(() => {});
  }
});
