/**
 * In-process server (fresh PostgreSQL database) and client: the separate metrics
 * listener, and a database that goes away while a tunnel is connected: the
 * tunnel keeps serving, /readyz and hopgate_database_up say so, and both recover.
 */
import { equal, match, ok } from "node:assert/strict";
import postgres from "postgres";
import { runClient } from "../client/connector.ts";
import { curl } from "./helpers/procs.ts";
import { startTestServer } from "./helpers/server.ts";

const ADMIN_DSN = Deno.env.get("HOP_TEST_PG_DSN") ?? "postgres://postgres@127.0.0.1:5432/test";
const DOMAIN = "ready.e2e.test";

async function waitUntil(what: string, cond: () => Promise<boolean>) {
  for (let i = 0; i < 200; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting until ${what}`);
}

Deno.test("readiness: the database goes away; the tunnel keeps serving, /readyz says why, both recover", async () => {
  const origin = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response("hello"),
  );
  await using ts = await startTestServer(
    { HOP_METRICS_LISTEN: "127.0.0.1:0" },
    { health: { intervalMs: 100 } },
  );
  const sql = postgres(ADMIN_DSN, { max: 1, onnotice: () => {} });
  const ac = new AbortController();
  let running: Promise<void> | undefined;
  try {
    const apiKey = await ts.register(DOMAIN);
    let connected!: () => void;
    const up = new Promise<void>((r) => connected = r);
    running = runClient({
      server: { hostname: "127.0.0.1", port: ts.dtlsPort },
      domain: DOMAIN,
      apiKey,
      target: new URL(`http://127.0.0.1:${origin.addr.port}`),
      onEvent: (e) => e.type === "connected" && connected(),
    }, ac.signal);
    await up;
    const metricsBase = `http://127.0.0.1:${ts.server.metricsAddr!.port}`;
    const readyz = async () => {
      const r = await fetch(`${metricsBase}/readyz`);
      return { status: r.status, body: await r.json() };
    };
    const metric = async (name: string) => {
      const text = await (await fetch(`${metricsBase}/metrics`)).text();
      return Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1]);
    };
    // fetch cannot set Host: curl can.
    const viaTunnel = () => curl(["-H", `Host: ${DOMAIN}`, `${ts.httpUrl}/`]);

    // The separate listener answers /metrics and probes for any Host; the server
    // domain no longer serves /metrics.
    equal((await readyz()).status, 200);
    equal(await metric("hopgate_database_up"), 1);
    equal((await curl(["-H", "Host: gateway.test", `${ts.httpUrl}/metrics`])).status, 404);

    await sql.unsafe(`ALTER DATABASE ${ts.dbName} ALLOW_CONNECTIONS false`);
    await sql.unsafe(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${ts.dbName}'`,
    );
    await waitUntil("/readyz reports the database", async () => (await readyz()).status === 503);
    const down = await readyz();
    equal(down.body.status, "not ready");
    match(down.body.reasons[0], /^database: /);
    equal(await metric("hopgate_database_up"), 0);
    const served = await viaTunnel();
    equal(served.status, 200);
    equal(served.body, "hello");

    await sql.unsafe(`ALTER DATABASE ${ts.dbName} ALLOW_CONNECTIONS true`);
    await waitUntil("/readyz recovers", async () => (await readyz()).status === 200);
    equal(await metric("hopgate_database_up"), 1);
    ok(ts.logs.entries.some((e) => e.msg === "database unreachable"));
    ok(ts.logs.entries.some((e) => e.msg === "database reachable again"));
  } finally {
    ac.abort();
    await running;
    await sql.unsafe(`ALTER DATABASE ${ts.dbName} ALLOW_CONNECTIONS true`).catch(() => {});
    await sql.end();
    await origin.shutdown();
  }
});
