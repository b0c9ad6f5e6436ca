/**
 * Observability end to end, with the server and client as real processes under
 * their task flags: `/metrics` passes `promtool check metrics` after traffic and
 * its counters move with traffic; every request gives one JSON log line without
 * query string or secret; the request id reaches the origin; health endpoints.
 */
import { equal, match, ok } from "node:assert/strict";
import { createHmac } from "node:crypto";
import { ADMIN_KEY, curl, freePort, startClientProc, startServerProc } from "./helpers/procs.ts";

const DOMAIN = "obs.e2e.test";
const METRICS_TOKEN = "metrics-token-0123456789abcdef";

function startOrigin() {
  const ac = new AbortController();
  const requestIds: (string | null)[] = [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    (req) => {
      requestIds.push(req.headers.get("x-request-id"));
      const url = new URL(req.url);
      if (url.pathname === "/missing") return new Response("nope", { status: 404 });
      return new Response("x".repeat(1000));
    },
  );
  return {
    port: server.addr.port,
    requestIds,
    stop: async () => (ac.abort(), await server.finished),
  };
}

/** Sample value of `name{labels}` in exposition text (labels as written, in order). */
function sample(text: string, series: string): number {
  for (const line of text.split("\n")) {
    if (line.startsWith(series + " ")) return Number(line.slice(series.length + 1));
  }
  return NaN;
}

async function promtool(text: string): Promise<{ code: number; out: string }> {
  const child = new Deno.Command("promtool", {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(text));
  await w.close();
  const out = await child.output();
  const dec = new TextDecoder();
  return { code: out.code, out: dec.decode(out.stdout) + dec.decode(out.stderr) };
}

Deno.test("observability: /metrics (promtool, counters move), JSON request logs without secrets, request ids, health", async (t) => {
  const origin = startOrigin();
  const server = await startServerProc({
    HOP_LOG_LEVEL: "debug",
    HOP_METRICS_TOKEN: METRICS_TOKEN,
  });
  const base = `http://127.0.0.1:${server.httpPort}`;
  const gw = ["-H", "Host: gateway.test"];
  const auth = ["-H", `Authorization: Bearer ${METRICS_TOKEN}`];
  const scrape = async () => {
    const r = await curl([...gw, ...auth, `${base}/metrics`]);
    equal(r.status, 200, r.body);
    return r.body;
  };
  let client: ReturnType<typeof startClientProc> | undefined;
  try {
    const apiKey = await server.register(DOMAIN);
    const pskHex = createHmac("sha256", apiKey).update("hopgate/dtls-psk/v1").digest("hex");
    const clientMetricsPort = freePort("tcp");
    client = startClientProc({
      dtlsPort: server.dtlsPort,
      domain: DOMAIN,
      apiKey,
      target: `127.0.0.1:${origin.port}`,
      args: ["--metrics-listen", String(clientMetricsPort)],
    });
    await client.waitFor("connected to");

    await t.step("health: /healthz and /readyz on the server domain", async () => {
      const h = await curl([...gw, `${base}/healthz`]);
      equal(h.status, 200);
      equal(JSON.parse(h.body).status, "ok");
      const r = await curl([...gw, `${base}/readyz`]);
      equal(r.status, 200, r.body);
      const j = JSON.parse(r.body);
      equal(j.status, "ready");
      equal(j.database.ok, true);
      equal(j.listeners.http, true);
      equal(j.listeners.dtls, true);
    });

    await t.step("/metrics wants the bearer token when one is set", async () => {
      equal((await curl([...gw, `${base}/metrics`])).status, 401);
      equal(
        (await curl([...gw, "-H", "Authorization: Bearer wrong", `${base}/metrics`])).status,
        401,
      );
    });

    const before = await scrape();
    const sent = () => sample(before, 'hopgate_tunnel_bytes_total{direction="sent"}');

    await t.step("counters move with traffic", async () => {
      for (let i = 0; i < 5; i++) {
        const r = await curl(["-H", `Host: ${DOMAIN}`, `${base}/page?secret_q=${i}`]);
        equal(r.status, 200);
      }
      equal(
        (await curl(["-H", `Host: ${DOMAIN}`, "-X", "POST", "-d", "a=1", `${base}/missing`]))
          .status,
        404,
      );
      equal((await curl(["-H", "Host: nobody.test", `${base}/`])).status, 404);
      const after = await scrape();
      const get2xx = 'hopgate_http_requests_total{code_class="2xx",method="GET"}';
      const post4xx = 'hopgate_http_requests_total{code_class="4xx",method="POST"}';
      equal(
        (sample(after, get2xx) || 0) - (sample(before, get2xx) || 0),
        5,
        after,
      );
      equal((sample(after, post4xx) || 0) - (sample(before, post4xx) || 0), 1);
      ok(
        sample(
          after,
          'hopgate_http_request_duration_seconds_count{code_class="2xx",method="GET"}',
        ) >=
          5,
      );
      ok(sample(after, "hopgate_http_response_bytes_total") >= 5000);
      ok(sample(after, 'hopgate_tunnel_bytes_total{direction="sent"}') > sent());
      ok(
        sample(after, 'hopgate_tunnel_bytes_total{direction="received"}') >
          sample(before, 'hopgate_tunnel_bytes_total{direction="received"}'),
      );
      equal(sample(after, "hopgate_tunnel_sessions"), 1);
      ok(sample(after, 'hopgate_dtls_handshakes_total{result="completed"}') >= 1);
      ok(sample(after, "hopgate_tunnel_srtt_seconds_count") >= 1);
      ok(sample(after, 'hopgate_process_memory_bytes{kind="rss"}') > 0);
      equal(sample(after, "hopgate_database_up"), 1);
      ok(
        sample(
          after,
          'hopgate_admin_requests_total{route="POST /domains/register",status="200"}',
        ) === 1,
      );
      ok(!/domain=/.test(after), "no per-domain labels by default");
    });

    await t.step("promtool check metrics passes on the live output", async () => {
      const text = await scrape();
      const r = await promtool(text);
      equal(r.code, 0, `${r.out}\n${text}`);
    });

    await t.step(
      "the Grafana dashboard queries parse and name only metrics that exist",
      async () => {
        const text = await scrape();
        const dash = JSON.parse(
          await Deno.readTextFile(new URL("../docs/grafana-dashboard.json", import.meta.url)),
        );
        const exprs: string[] = dash.panels.flatMap((p: { targets: { expr: string }[] }) =>
          p.targets.map((t) => t.expr.replaceAll("$__rate_interval", "5m").replaceAll("$job", ".*"))
        );
        for (const name of new Set(exprs.flatMap((e) => e.match(/hopgate_[a-z_]+/g) ?? []))) {
          ok(text.includes(`\n${name}`) || text.includes(`\n${name}{`), `${name} is exported`);
        }
        const rules = await Deno.makeTempFile({ suffix: ".yml" });
        try {
          const groups = [{
            name: "dashboard",
            rules: exprs.map((expr, i) => ({ record: `dashboard:q${i}`, expr })),
          }];
          await Deno.writeTextFile(rules, JSON.stringify({ groups }));
          const out = await new Deno.Command("promtool", { args: ["check", "rules", rules] })
            .output();
          const dec = new TextDecoder();
          equal(out.code, 0, dec.decode(out.stdout) + dec.decode(out.stderr));
        } finally {
          await Deno.remove(rules);
        }
      },
    );

    await t.step("the client's opt-in metrics: promtool passes, counters moved", async () => {
      const r = await curl([`http://127.0.0.1:${clientMetricsPort}/metrics`]);
      equal(r.status, 200);
      equal(sample(r.body, "hopgate_client_connected"), 1);
      equal(sample(r.body, 'hopgate_client_connects_total{transport="dtls"}'), 1);
      equal(sample(r.body, 'hopgate_client_transport{transport="dtls"}'), 1);
      ok(sample(r.body, 'hopgate_client_requests_total{outcome="2xx"}') >= 5, r.body);
      equal(sample(r.body, 'hopgate_client_requests_total{outcome="4xx"}'), 1);
      // Connections to the origin come with the next status report (every second).
      let body = r.body;
      for (let i = 0; i < 30 && !(sample(body, "hopgate_client_local_connects_total") >= 1); i++) {
        await new Promise((res) => setTimeout(res, 100));
        body = (await curl([`http://127.0.0.1:${clientMetricsPort}/metrics`])).body;
      }
      ok(sample(body, "hopgate_client_local_connects_total") >= 1, body);
      ok(sample(body, 'hopgate_client_local_connections{state="idle"}') >= 1, body);
      const p = await promtool(r.body);
      equal(p.code, 0, `${p.out}\n${r.body}`);
    });

    await t.step(
      "one JSON line per request, no query string, no secret; id reaches the origin",
      async () => {
        const given = "req-abc-123";
        const r = await curl([
          "-H",
          `Host: ${DOMAIN}`,
          "-H",
          `X-Request-Id: ${given}`,
          `${base}/page?token=hidden-q`,
        ]);
        equal(r.status, 200);
        equal(origin.requestIds.at(-1), given);
        // A request without an id gets one, which the origin sees.
        await curl(["-H", `Host: ${DOMAIN}`, `${base}/page`]);
        const generated = origin.requestIds.at(-1);
        match(generated ?? "", /^[0-9a-f-]{36}$/);
        await server.proc.waitFor(generated!);

        const lines = server.proc.stdout.split("\n").filter((l) => l.trim() !== "");
        const entries = lines.map((l) => {
          try {
            return JSON.parse(l) as Record<string, unknown>;
          } catch {
            throw new Error(`not a JSON log line: ${l}`);
          }
        });
        for (const e of entries) {
          equal(typeof e.ts, "string");
          equal(typeof e.level, "string");
          equal(typeof e.msg, "string");
          equal(typeof e.component, "string", JSON.stringify(e));
        }
        const requests = entries.filter((e) => e.msg === "request" && e.domain === DOMAIN);
        const mine = requests.filter((e) => e.request_id === given);
        equal(mine.length, 1, "exactly one line for the request");
        const line = mine[0]!;
        equal(line.path, "/page");
        equal(line.method, "GET");
        equal(line.status, 200);
        equal(line.bytes, 1000);
        equal(typeof line.duration_ms, "number");
        equal(requests.filter((e) => e.request_id === generated).length, 1);
        // No secret and no query string anywhere in either process's output.
        const all = server.proc.output + client!.output;
        for (const secret of [ADMIN_KEY, apiKey, pskHex, METRICS_TOKEN, "hidden-q", "secret_q"]) {
          ok(!all.includes(secret), `output contains ${secret.slice(0, 6)}...`);
        }
      },
    );
  } finally {
    if (Deno.env.get("OBS_DEBUG")) console.log(server.proc.output);
    await client?.stop();
    await server.stop();
    await origin.stop();
  }
});
