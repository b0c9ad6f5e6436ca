/**
 * The tunnel hub's limits with real sessions (our DTLS both ends, mux, hello) on the
 * simulated network and fake time: tunnels per domain (server_busy, shown by the
 * client as it is), concurrent hellos that must not overshoot the cap, sessions
 * waiting for their hello, and one deadline for the whole hello.
 */
import { equal, ok } from "node:assert/strict";
import { type ClientEvent, runClient } from "../client/connector.ts";
import { type DialedTunnel, dtlsDialer } from "../client/dialer.ts";
import { derivePsk, newStats } from "../shared/dtls/mod.ts";
import { HelloRejectedError, sayHello } from "../shared/handshake/mod.ts";
import { MuxSession } from "../shared/mux/mod.ts";
import { FakeClock, runUntil, settle } from "../shared/testing/fake_clock.ts";
import { SimNet } from "../shared/testing/sim_net.ts";
import { loadServerConfig } from "./config.ts";
import type { Logger } from "./log.ts";
import { ServerMetrics } from "./metrics.ts";
import { TunnelRegistry } from "./registry.ts";
import { DEFAULT_MAX_TUNNELS_PER_DOMAIN, type Tunnel, TunnelHub } from "./tunnels.ts";

const DOMAIN = "app.limits.test";
const API_KEY = "limits-api-key-0123456789abcdef";
const SERVER = { hostname: "10.0.0.1", port: 443 };

function setup(opts: { maxTunnelsPerDomain?: number; helloTimeoutMs?: number } = {}) {
  const clock = new FakeClock();
  const net = new SimNet({ clock, delayMs: 10, seed: 5 });
  const registry = new TunnelRegistry<Tunnel>();
  const logs: string[] = [];
  const log = (level: string) => (msg: string, fields?: Record<string, unknown>) =>
    logs.push(`${level} ${msg} ${JSON.stringify(fields ?? {})}`);
  const logger = {
    debug: log("debug"),
    info: log("info"),
    warn: log("warn"),
    error: log("error"),
  } as unknown as Logger;
  const hub = new TunnelHub({
    ...SERVER,
    lookupPsk: (id) => Promise.resolve(id === DOMAIN ? derivePsk(API_KEY) : undefined),
    registry,
    logger,
    clock,
    dtls: { socket: net.socket },
    ...opts,
  });
  let host = 1;
  const dialer = () =>
    dtlsDialer({
      server: SERVER,
      domain: DOMAIN,
      apiKey: API_KEY,
      clock,
      socket: (_h, port, handler) => net.socket(`10.0.1.${host++}`, port, handler),
    });
  /** A DTLS session to the hub, wrapped in a mux session, no hello yet. */
  const open = async () => {
    let dialed: DialedTunnel | undefined;
    dialer().dial(new AbortController().signal).then((d) => dialed = d);
    await runUntil(clock, () => dialed !== undefined, 5_000, "dtls");
    return {
      dialed: dialed!,
      session: new MuxSession(dialed!.conn, { role: "client", clock }),
    };
  };
  /** Starts the hello on `session`; the result lands in the returned record. */
  const hello = (session: MuxSession) => {
    const r: { ok?: boolean; error?: unknown } = {};
    sayHello(session, { client: "test", domain: DOMAIN, target: "http://x" }, 10_000, clock)
      .then(() => r.ok = true, (e) => r.error = e);
    return r;
  };
  const live = () => [...registry.sessionsOf(DOMAIN)].length;
  const done = async (sessions: MuxSession[]) => {
    for (const s of sessions) s.abort(0, "test done");
    const closing = hub.close({ abort: true });
    let closed = false;
    closing.then(() => closed = true, () => closed = true);
    await runUntil(clock, () => closed, 10_000, "hub close");
    net.close();
  };
  return { clock, net, hub, registry, logs, dialer, open, hello, live, done };
}

Deno.test("tunnels per domain: one beyond the cap is refused with server_busy, counted; a freed slot is taken again", async () => {
  const t = setup({ maxTunnelsPerDomain: 2 });
  const sessions: MuxSession[] = [];
  for (let i = 0; i < 2; i++) {
    const { session } = await t.open();
    sessions.push(session);
    const r = t.hello(session);
    await runUntil(t.clock, () => r.ok !== undefined || r.error !== undefined, 5_000, "hello");
    ok(r.ok, `hello ${i}: ${r.error}`);
  }
  equal(t.live(), 2);

  const { session: third } = await t.open();
  sessions.push(third);
  const r = t.hello(third);
  await runUntil(t.clock, () => r.error !== undefined || r.ok !== undefined, 5_000, "third hello");
  ok(r.error instanceof HelloRejectedError, `third: ${r.error ?? "welcomed"}`);
  equal(r.error.code, "server_busy");
  ok(r.error.message.includes("already has 2 tunnels connected"), r.error.message);
  ok(r.error.message.includes("HOP_SERVER_MAX_TUNNELS_PER_DOMAIN=2"), r.error.message);
  console.log(`refusal the client gets: ${r.error.message}`);
  equal(t.hub.sessionsRefused.tunnelsPerDomain, 1);
  equal(t.live(), 2);
  // The server closes the refused session shortly after the reject.
  await runUntil(t.clock, () => third.isClosed, 2_000, "refused session closed");

  // One of the two leaves: the next client gets in.
  sessions[0]!.abort(0, "client stopping");
  await runUntil(t.clock, () => t.live() === 1, 20_000, "slot freed");
  const { session: fourth } = await t.open();
  sessions.push(fourth);
  const r4 = t.hello(fourth);
  await runUntil(t.clock, () => r4.ok !== undefined || r4.error !== undefined, 5_000, "hello 4");
  ok(r4.ok, `fourth: ${r4.error}`);
  equal(t.live(), 2);

  // Metrics export the refusal by reason.
  const m = new ServerMetrics();
  m.bindTunnels({
    dtlsStats: t.hub.dtlsStats,
    sessionsRefused: t.hub.sessionsRefused,
    live: () => t.registry.live(),
  });
  const text = await m.render();
  ok(text.includes('hopgate_tunnel_sessions_refused_total{reason="tunnels_per_domain"} 1'), text);
  await t.done(sessions);
});

Deno.test("tunnels per domain: the client shows the server's reason (runClient's failure event)", async () => {
  const t = setup({ maxTunnelsPerDomain: 1 });
  const { session } = await t.open();
  const r = t.hello(session);
  await runUntil(t.clock, () => r.ok !== undefined || r.error !== undefined, 5_000, "hello");
  ok(r.ok);
  const events: ClientEvent[] = [];
  const ac = new AbortController();
  const client = runClient({
    server: SERVER,
    domain: DOMAIN,
    apiKey: API_KEY,
    target: new URL("http://127.0.0.1:9"),
    dialer: t.dialer(),
    clock: t.clock,
    random: () => 0.5,
    statsIntervalMs: 60_000,
    onEvent: (e) => events.push(e),
  }, ac.signal);
  await runUntil(t.clock, () => events.some((e) => e.type === "failure"), 5_000, "failure");
  const failure = events.find((e) => e.type === "failure") as Extract<
    ClientEvent,
    { type: "failure" }
  >;
  console.log(`client says: ${failure.message}`);
  equal(failure.kind, "server_busy");
  ok(failure.message.startsWith("Server busy: app.limits.test already has 1 tunnel connected"));
  ac.abort();
  let stopped = false;
  client.then(() => stopped = true);
  await runUntil(t.clock, () => stopped, 5_000, "client stopped");
  await t.done([session]);
});

Deno.test("tunnels per domain: concurrent hellos do not overshoot the cap", async () => {
  const t = setup({ maxTunnelsPerDomain: 3 });
  const sessions: MuxSession[] = [];
  const helloAll = async (group: MuxSession[]) => {
    const results = group.map((s) => t.hello(s));
    await runUntil(
      t.clock,
      () => results.every((r) => r.ok !== undefined || r.error !== undefined),
      5_000,
      "hellos",
    );
    const busy =
      results.filter((r) => r.error instanceof HelloRejectedError && r.error.code === "server_busy")
        .length;
    return { welcomed: results.filter((r) => r.ok).length, busy };
  };
  // Two tunnels up, then three sessions say their hellos at the same moment: one slot.
  for (let i = 0; i < 2; i++) sessions.push((await t.open()).session);
  const first = await helloAll(sessions.slice(0, 2));
  equal(first.welcomed, 2);
  const racing: MuxSession[] = [];
  for (let i = 0; i < 3; i++) racing.push((await t.open()).session);
  sessions.push(...racing);
  const second = await helloAll(racing);
  equal(second.welcomed, 1);
  equal(second.busy, 2);
  equal(t.live(), 3);
  equal(t.hub.sessionsRefused.tunnelsPerDomain, 2);
  await t.done(sessions);
});

Deno.test("tunnels per domain: sessions waiting for their hello are bounded per domain too", async () => {
  const t = setup({ maxTunnelsPerDomain: 2, helloTimeoutMs: 5_000 });
  const a = await t.open(), b = await t.open(), c = await t.open();
  // Two wait for their hello; the third is closed at once.
  await runUntil(t.clock, () => c.session.isClosed, 1_000, "third session closed");
  equal(a.session.isClosed, false);
  equal(b.session.isClosed, false);
  equal(t.hub.sessionsRefused.pendingPerDomain, 1);
  await t.done([a.session, b.session, c.session]);
});

Deno.test("hello deadline: helloTimeoutMs in all, not once for the stream and again for the hello", async () => {
  const helloTimeoutMs = 4_000;
  const t = setup({ helloTimeoutMs });
  const { session } = await t.open();
  const t0 = t.clock.now();
  // The control stream shows up just before the deadline, with half a hello length.
  await runUntil(t.clock, () => t.clock.now() - t0 >= helloTimeoutMs - 500, 10_000, "wait");
  const control = session.openStream();
  const w = control.writable.getWriter();
  w.write(new Uint8Array([0, 0])).catch(() => {});
  await runUntil(t.clock, () => session.isClosed, 3 * helloTimeoutMs, "session closed");
  const took = t.clock.now() - t0;
  console.log(`session without a hello closed after ${took} ms (helloTimeoutMs ${helloTimeoutMs})`);
  ok(took < helloTimeoutMs + 500, `closed after ${took} ms`);
  equal(t.hub.sessionsRefused.helloTimeout, 1);
  ok(t.logs.some((l) => l.includes(`no hello within ${helloTimeoutMs} ms`)));
  await settle();
  await t.done([session]);
});

Deno.test("HOP_SERVER_MAX_TUNNELS_PER_DOMAIN: default 8 (the hub's), range checked", () => {
  equal(loadServerConfig({ HOP_SERVER_DEBUG: "true" }).maxTunnelsPerDomain, 8);
  equal(DEFAULT_MAX_TUNNELS_PER_DOMAIN, 8);
  equal(
    loadServerConfig({ HOP_SERVER_DEBUG: "true", HOP_SERVER_MAX_TUNNELS_PER_DOMAIN: "32" })
      .maxTunnelsPerDomain,
    32,
  );
  for (const bad of ["0", "-1", "many", "1.5"]) {
    let message = "";
    try {
      loadServerConfig({ HOP_SERVER_DEBUG: "true", HOP_SERVER_MAX_TUNNELS_PER_DOMAIN: bad });
    } catch (e) {
      message = (e as Error).message;
    }
    ok(message.includes("HOP_SERVER_MAX_TUNNELS_PER_DOMAIN"), `${bad}: ${message}`);
  }
});

Deno.test("metrics: DTLS evictions and withheld retransmissions are exported by reason", async () => {
  const stats = newStats();
  stats.handshakesEvicted.addressCap = 984;
  stats.handshakesEvicted.globalCap = 3;
  stats.handshakeRetransmitsWithheld = 16;
  const m = new ServerMetrics();
  m.bindTunnels({ dtlsStats: stats, live: () => [] });
  const text = await m.render();
  ok(text.includes('hopgate_dtls_handshakes_evicted_total{reason="address_cap"} 984'), text);
  ok(text.includes('hopgate_dtls_handshakes_evicted_total{reason="global_cap"} 3'), text);
  ok(text.includes("hopgate_dtls_handshake_retransmits_withheld_total 16"), text);
});
