/**
 * One ACME order per name across a cluster (docs/cluster.md): three nodes in this
 * process on one PostgreSQL database, pebble as the CA (it validates HTTP-01
 * against node 1; every node answers challenges from the database). Ten first
 * TLS handshakes at once for a newly registered name, spread over the three nodes,
 * make exactly one order (`pg_try_advisory_lock`); the others wait for it and
 * serve the certificate it stored.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { randomBytes } from "node:crypto";
import { loadServerConfig } from "../server/config.ts";
import { MemoryLogger } from "../server/log.ts";
import { type RunningServer, runServer } from "../server/run.ts";
import { freePort, startPebble } from "./helpers/pebble.ts";
import { probeTls } from "./helpers/tls_probe.ts";
import { until } from "./helpers/cluster.ts";

const ADMIN_DSN = Deno.env.get("HOP_TEST_PG_DSN") ?? "postgres://postgres@127.0.0.1:5432/test";
const GATEWAY = "gateway.hop.test";
const NAME = "app.hop.test";

Deno.test("cluster ACME: ten first handshakes for a new name across three nodes make one order", async () => {
  const dbName = `hopgate_acme_${randomBytes(6).toString("hex")}`;
  const admin = postgres(ADMIN_DSN, { max: 1, onnotice: () => {} });
  await admin.unsafe(`CREATE DATABASE ${dbName}`);
  const dsn = new URL(ADMIN_DSN);
  dsn.pathname = `/${dbName}`;
  const httpPort = freePort();
  const pebble = await startPebble({ httpPort });
  const nodes: { server: RunningServer; logs: MemoryLogger }[] = [];
  const dataDir = await Deno.makeTempDir({ prefix: "hopgate-cluster-acme-" });
  try {
    for (let i = 0; i < 3; i++) {
      const config = loadServerConfig({
        HOP_SERVER_DOMAIN: GATEWAY,
        HOP_SERVER_HTTP_LISTEN: `127.0.0.1:${i === 0 ? httpPort : 0}`,
        HOP_SERVER_HTTPS_LISTEN: "127.0.0.1:0",
        HOP_SERVER_DTLS_LISTEN: "127.0.0.1:0",
        HOP_DB_DSN: dsn.href,
        HOP_DB_MAX_OPEN_CONNS: "4",
        HOP_DATA_DIR: dataDir,
        HOP_SECRET_KEY: "cluster-acme-secret-0123456789abcdef",
        HOP_ACME_CA_DIR: pebble.directoryUrl,
        HOP_ACME_CA_CERT: pebble.directoryCaFile,
        HOP_ACME_EMAIL: "ops@hop.test",
        HOP_CLUSTER_LISTEN: "127.0.0.1:0",
        HOP_CLUSTER_ADVERTISE: "127.0.0.1:1", // unused: no request is relayed here
      });
      const logs = new MemoryLogger();
      const server = await runServer(config, {
        logger: logs,
        certificates: { acmePollMinMs: 100, orderWaitPollMs: 200 },
      });
      nodes.push({ server, logs });
    }
    const orders = (name: string) =>
      nodes.reduce(
        (n, { logs }) =>
          n + logs.entries.filter((e) => e.msg === "certificate order" && e.fields.domain === name)
            .length,
        0,
      );
    // The server domain, ordered at every node's start-up: once.
    await until(
      "the gateway certificate on every node",
      () => nodes.every(({ server }) => server.certificates.hasCertificate(GATEWAY)),
      60_000,
    );
    assert.equal(orders(GATEWAY), 1);

    await nodes[1]!.server.storage.store.register(NAME, "cluster acme");
    const root = await pebble.root();
    // Ten first handshakes at once over the three nodes: each starts issuance there.
    await Promise.all(
      Array.from(
        { length: 10 },
        (_, i) => probeTls(nodes[i % 3]!.server.httpsAddr.port, NAME, root),
      ),
    );
    await until(
      "the certificate on every node",
      () => nodes.every(({ server }) => server.certificates.hasCertificate(NAME)),
      60_000,
    );
    assert.equal(orders(NAME), 1, "exactly one ACME order for the name");
    for (const { server } of nodes) {
      const p = await probeTls(server.httpsAddr.port, NAME, root);
      assert.equal(p.ok, true, p.error);
    }
    const waited = nodes.reduce(
      (n, { logs }) =>
        n +
        logs.entries.filter((e) =>
          e.msg === "certificate order on another node: waiting for it" && e.fields.domain === NAME
        ).length,
      0,
    );
    assert.ok(waited >= 1, "another node waited for the order");
  } finally {
    for (const { server } of nodes) await server.close();
    await pebble.close();
    await admin.unsafe(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).finally(() => admin.end());
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
});
