import { equal, ok } from "node:assert/strict";
import { newStats } from "../shared/dtls/stats.ts";
import type { MuxSession } from "../shared/mux/mod.ts";
import { Secret } from "./config.ts";
import { createMetricsHandler, ServerMetrics } from "./metrics.ts";

function value(text: string, series: string): number {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  const v = line?.slice(series.length + 1);
  return v === "+Inf" ? Infinity : v === undefined ? NaN : Number(v);
}

/** Just what the metrics read of a session. */
function fakeSession(srttMs: number) {
  let close!: () => void;
  const closed = new Promise<void>((r) => close = r);
  const stats = {
    bytesSent: 0,
    bytesReceived: 0,
    packetsSent: 0,
    packetsReceived: 0,
    packetsLost: 0,
    framesRetransmitted: 0,
    bytesRetransmitted: 0,
    openWindowsLimited: 0,
    activeStreams: 1,
  };
  const session = { stats, closed, rtt: { smoothedMs: srttMs } } as unknown as MuxSession;
  return { session, stats, close };
}

Deno.test("tunnel counters keep what closed sessions carried (never go down)", async () => {
  const m = new ServerMetrics();
  const a = fakeSession(20);
  const live = [{ domain: "a.example.com", inFlight: 2, session: a.session }];
  m.bindTunnels({ dtlsStats: newStats(), live: () => live });
  m.trackSession(a.session);
  a.stats.bytesSent = 1000;
  a.stats.packetsLost = 3;
  a.stats.packetsReceived = 7;
  a.stats.openWindowsLimited = 2;
  let text = await m.render();
  equal(value(text, "hopgate_tunnel_stream_windows_limited_total"), 2);
  equal(value(text, 'hopgate_tunnel_bytes_total{direction="sent"}'), 1000);
  equal(value(text, "hopgate_tunnel_packets_lost_total"), 3);
  equal(value(text, "hopgate_tunnel_sessions"), 1);
  equal(value(text, "hopgate_http_requests_in_flight"), 2);
  equal(value(text, 'hopgate_tunnel_srtt_seconds_bucket{le="0.025"}'), 1);
  a.stats.bytesSent = 1500;
  a.close();
  live.pop();
  await Promise.resolve();
  text = await m.render();
  equal(value(text, 'hopgate_tunnel_bytes_total{direction="sent"}'), 1500);
  equal(value(text, "hopgate_tunnel_packets_lost_total"), 3);
  equal(value(text, 'hopgate_tunnel_packets_total{direction="received"}'), 7);
  equal(value(text, "hopgate_tunnel_sessions"), 0);
  ok(!text.includes("a.example.com"), "no domain label by default");
});

Deno.test("requests by class and method; domain labels only when opted in", async () => {
  const plain = new ServerMetrics();
  plain.request({ method: "GET", status: 204, durationMs: 5, bytes: 0, domain: "a.example.com" });
  plain.request({ method: "BREW", status: 502, durationMs: 5, bytes: 10, domain: undefined });
  plain.request({ method: "GET", status: 200, durationMs: 2000, bytes: 0, domain: undefined });
  let text = await plain.render();
  equal(value(text, 'hopgate_http_requests_total{code_class="2xx",method="GET"}'), 2);
  equal(
    value(text, 'hopgate_http_request_duration_seconds_count{code_class="2xx",method="GET"}'),
    2,
  );
  equal(
    value(text, 'hopgate_http_request_duration_seconds_sum{code_class="2xx",method="GET"}'),
    2.005,
  );
  equal(value(text, 'hopgate_http_requests_total{code_class="5xx",method="OTHER"}'), 1);
  equal(value(text, "hopgate_http_response_bytes_total"), 10);
  ok(!text.includes("a.example.com"));
  const labelled = new ServerMetrics({ domainLabels: true });
  labelled.request({
    method: "GET",
    status: 200,
    durationMs: 5,
    bytes: 0,
    domain: "a.example.com",
  });
  text = await labelled.render();
  equal(
    value(
      text,
      'hopgate_http_requests_total{code_class="2xx",method="GET",domain="a.example.com"}',
    ),
    1,
  );
});

Deno.test("admin calls by route template; ACME results; certificate expiry", async () => {
  let now = 0;
  const m = new ServerMetrics({ now: () => now });
  m.adminCall("POST", "/domains/register", 200);
  m.adminCall("GET", "/domains/", 200);
  m.adminCall("GET", "/domains/whatever-secret", 404);
  m.acmeResult("renew", "failure");
  let text = await m.render();
  equal(
    value(text, 'hopgate_admin_requests_total{route="POST /domains/register",status="200"}'),
    1,
  );
  equal(value(text, 'hopgate_admin_requests_total{route="GET /domains",status="200"}'), 1);
  equal(value(text, 'hopgate_admin_requests_total{route="other",status="404"}'), 1);
  ok(!text.includes("whatever-secret"));
  equal(value(text, 'hopgate_acme_orders_total{kind="renew",result="failure"}'), 1);
  equal(value(text, 'hopgate_acme_orders_total{kind="issue",result="success"}'), 0);
  equal(value(text, "hopgate_certificate_expiry_seconds"), Infinity);
  m.certificateExpiry("a.example.com", new Date(10 * 86_400_000));
  m.certificateExpiry("b.example.com", new Date(3 * 86_400_000));
  now = 86_400_000;
  text = await m.render();
  equal(value(text, "hopgate_certificate_expiry_seconds"), 2 * 86_400);
  equal(value(text, "hopgate_certificates"), 2);
});

Deno.test("the /metrics handler wants the bearer token when one is set", async () => {
  const h = createMetricsHandler(() => Promise.resolve("x 1\n"), new Secret("t0ken-0123456789abc"));
  equal((await h(new Request("http://h/metrics"))).status, 401);
  const wrong = { headers: { authorization: "Bearer t0ken-0123456789abd" } };
  equal((await h(new Request("http://h/metrics", wrong))).status, 401);
  const right = { headers: { authorization: "Bearer t0ken-0123456789abc" } };
  const ok200 = await h(new Request("http://h/metrics", right));
  equal(ok200.status, 200);
  equal(await ok200.text(), "x 1\n");
  equal((await h(new Request("http://h/other", right))).status, 404);
  const open = createMetricsHandler(() => Promise.resolve("x 1\n"));
  equal((await open(new Request("http://h/metrics"))).status, 200);
});
