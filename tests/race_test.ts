/**
 * Racing the preferred transport against the fallback, and moving back
 * make-before-break, on fake time over the simulated network. The two
 * transports are two DTLS listeners of the same server (ports 443 and 8443,
 * one registry): what is under test is the client's choice between them and the
 * handover, which do not depend on what carries the datagrams.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import { type ClientEvent, type ClientOptions, runClient } from "../client/connector.ts";
import { dtlsDialer, type TunnelDialer } from "../client/dialer.ts";
import { racingDialer } from "../client/race.ts";
import { derivePsk } from "../shared/dtls/mod.ts";
import { encodeHead, readHead, type RequestHead } from "../shared/protocol/mod.ts";
import { FakeClock, runUntil } from "../shared/testing/fake_clock.ts";
import { pump, pumped } from "./helpers/fake_pump.ts";
import { SimNet } from "../shared/testing/sim_net.ts";
import { TunnelRegistry } from "../server/registry.ts";
import { type Tunnel, TunnelHub } from "../server/tunnels.ts";
import type { Logger } from "../server/log.ts";

const DOMAIN = "app.race.test";
const API_KEY = "race-api-key-0123456789abcdef";
const HOST = "10.0.0.1";
const UDP = { hostname: HOST, port: 443 };
const TCP = { hostname: HOST, port: 8443 };
const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {} };

/** Plays the ingress: picks a usable tunnel, counts the request in flight on it. */
async function get(registry: TunnelRegistry<Tunnel>, url: string) {
  const tunnel = [...registry.sessionsOf(DOMAIN)].find((t) => t.usable);
  if (!tunnel) return { status: 404, text: "", via: "" };
  tunnel.inFlight++;
  try {
    const s = tunnel.session.openStream();
    const w = s.writable.getWriter();
    const head: RequestHead = {
      t: "req",
      id: url,
      method: "GET",
      url,
      headers: [["host", DOMAIN]],
      client: "203.0.113.7",
      scheme: "https",
    };
    await w.write(encodeHead(head));
    await w.close();
    const r = await readHead(s.readable);
    const text = await new Response(r.body).text();
    return { status: r.head.t === "res" ? r.head.status : 502, text, via: tunnel.id };
  } catch (e) {
    return { status: 503, text: String(e), via: tunnel.id };
  } finally {
    tunnel.inFlight--;
  }
}

interface World {
  clock: FakeClock;
  net: SimNet;
  registry: TunnelRegistry<Tunnel>;
  hubs: TunnelHub[];
  origin: Deno.HttpServer<Deno.NetAddr>;
  /** UDP to port 443 is dropped while this is true (a firewall). */
  blockUdp: { on: boolean };
  /** How often each transport was dialled. */
  dials: { udp: number; tcp: number };
  dialer(key?: string): { preferred: TunnelDialer; fallback: TunnelDialer };
  close(): Promise<void>;
}

function world(): World {
  const clock = new FakeClock();
  // "/hang" answers only when the world closes.
  const hung = Promise.withResolvers<void>();
  const blockUdp = { on: false };
  const net = new SimNet({
    clock,
    delayMs: 10,
    seed: 11,
    filter: (_d, from, to) => !(blockUdp.on && (to.endsWith(":443") || from.endsWith(":443"))),
  });
  const registry = new TunnelRegistry<Tunnel>();
  const hubs = [UDP, TCP].map((a) =>
    new TunnelHub({
      hostname: a.hostname,
      port: a.port,
      lookupPsk: (id) => Promise.resolve(id === DOMAIN ? derivePsk(API_KEY) : undefined),
      registry,
      logger: quiet,
      clock,
      dtls: { socket: net.socket },
    })
  );
  const origin = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/slow") await new Promise((r) => setTimeout(r, 100));
    if (path === "/hang") await hung.promise;
    return new Response(`hello from ${path}`);
  });
  const dials = { udp: 0, tcp: 0 };
  let port = 40000;
  const counted = (d: TunnelDialer, which: "udp" | "tcp", transport: string): TunnelDialer => ({
    transport,
    dial(signal) {
      dials[which]++;
      return d.dial(signal);
    },
  });
  return {
    clock,
    net,
    registry,
    hubs,
    origin,
    blockUdp,
    dials,
    dialer(key = API_KEY) {
      const make = (server: typeof UDP) =>
        dtlsDialer({
          server,
          domain: DOMAIN,
          apiKey: key,
          handshakeTimeoutMs: 3_000,
          clock,
          socket: (_h, _p, handler) => net.socket("10.0.0.2", port++, handler),
        });
      return {
        preferred: counted(make(UDP), "udp", "dtls"),
        fallback: counted(make(TCP), "tcp", "tcp"),
      };
    },
    async close() {
      for (const h of hubs) {
        await pumped(clock, h.close({ abort: true }), 5_000, "hub").catch(() => {});
      }
      net.close();
      hung.resolve();
      await origin.shutdown();
    },
  };
}

/** Races UDP against the fallback with a 1.5 s head start and a 20 s re-probe. */
function slowRace(w: World, preferred: TunnelDialer, fallback: TunnelDialer) {
  return racingDialer({
    preferred,
    fallback,
    fallbackDelayMs: 1_500,
    reprobeIntervalMs: 20_000,
    clock: w.clock,
  });
}

function start(
  w: World,
  dialer: TunnelDialer,
  events: { at: number; e: ClientEvent }[],
  extra: Partial<ClientOptions> = {},
) {
  const ac = new AbortController();
  const done = runClient({
    server: UDP,
    domain: DOMAIN,
    apiKey: API_KEY,
    target: new URL(`http://127.0.0.1:${w.origin.addr.port}`),
    dialer,
    clock: w.clock,
    random: () => 0.5,
    backoff: { initialMs: 500, maxMs: 8_000 },
    statsIntervalMs: 600_000,
    onEvent: (e) => events.push({ at: w.clock.now(), e }),
    ...extra,
  }, ac.signal);
  return {
    ac,
    done,
    async stop() {
      ac.abort();
      await pumped(w.clock, done, 10_000, "client stop").catch(() => {});
    },
  };
}

const connected = (events: { e: ClientEvent }[]) =>
  events.map((x) => x.e).filter((e): e is Extract<ClientEvent, { type: "connected" }> =>
    e.type === "connected"
  );

Deno.test("race: UDP dropped, the fallback carries the tunnel 1.5 s after start; UDP back, the tunnel moves make-before-break with no failed request", async () => {
  const w = world();
  const events: { at: number; e: ClientEvent }[] = [];
  w.blockUdp.on = true;
  const { preferred, fallback } = w.dialer();
  const client = start(
    w,
    slowRace(w, preferred, fallback),
    events,
  );
  try {
    const t0 = w.clock.now();
    await pump(w.clock, () => connected(events).length === 1, 5_000, "connect over the fallback");
    const took = w.clock.now() - t0;
    equal(connected(events)[0]!.transport, "tcp");
    ok(took >= 1_500 && took < 1_700, `serving over the fallback ${took} ms after start`);
    deepEqual(w.dials, { udp: 1, tcp: 1 });

    // UDP is allowed again. A request loop runs across the re-probe (20 s) and the
    // handover; one slow request is in flight on the old tunnel when it is drained.
    w.blockUdp.on = false;
    const results: { status: number; text: string; via: string }[] = [];
    let stop = false;
    const loop = (async () => {
      for (let i = 0; !stop && i < 5_000; i++) {
        results.push(await get(w.registry, `/r${i}`));
        // A failure comes back at once: give the event loop (and fake time) a turn.
        if (results.at(-1)!.status !== 200) await new Promise((r) => setTimeout(r, 0));
      }
    })();
    let slow: Promise<{ status: number; text: string; via: string }> | undefined;
    await pump(
      w.clock,
      () => {
        // Just before the re-probe: a request that takes 100 ms (real, origin) on the old tunnel.
        if (!slow && w.clock.now() - t0 >= 21_400) slow = get(w.registry, "/slow");
        return connected(events).length === 2;
      },
      30_000,
      "move back to UDP",
    );
    equal(connected(events)[1]!.transport, "dtls");
    const tunnels = () => [...w.registry.sessionsOf(DOMAIN)];
    // The old tunnel closes once the slow request is done; then only the UDP one is left.
    // (Fake time runs ~80x faster than real here: the slow request's 100 real ms are
    // several fake seconds.)
    await pump(w.clock, () => tunnels().length === 1, 120_000, "old tunnel drained");
    stop = true;
    await pumped(w.clock, loop, 5_000, "request loop");
    const slowResult = await pumped(w.clock, slow!, 5_000, "slow request");
    equal(slowResult.status, 200, "the request in flight on the old tunnel finished");
    equal(slowResult.text, "hello from /slow");
    const failed = results.filter((r) => r.status !== 200);
    ok(results.length > 50, `${results.length} requests in the loop`);
    deepEqual(failed, [], `no request failed of ${results.length}`);
    ok(new Set(results.map((r) => r.via)).size === 2, "the loop used both tunnels");
    const old = connected(events)[0]!.sessionId;
    equal(slowResult.via.length > 0 && tunnels()[0]!.id !== old, true, "the UDP tunnel is left");
    equal(events.filter((x) => x.e.type === "failure").length, 0, "no failure event");
    deepEqual(w.dials, { udp: 2, tcp: 1 });
  } finally {
    await client.stop();
    await w.close();
  }
});

Deno.test("race: a retired tunnel whose request never ends holds neither a reconnect nor the client's stop (drain timeout)", async () => {
  const w = world();
  const events: { at: number; e: ClientEvent }[] = [];
  w.blockUdp.on = true;
  const { preferred, fallback } = w.dialer();
  const { ac, done } = start(
    w,
    slowRace(w, preferred, fallback),
    events,
    { drainTimeoutMs: 3_000 },
  );
  let hanging: Promise<{ status: number }> | undefined;
  try {
    await pump(w.clock, () => connected(events).length === 1, 5_000, "connect over the fallback");
    equal(connected(events)[0]!.transport, "tcp");
    hanging = get(w.registry, "/hang");
    w.blockUdp.on = false;
    await pump(w.clock, () => connected(events).length === 2, 30_000, "move back to UDP");
    equal(connected(events)[1]!.transport, "dtls");
    const tunnels = () => [...w.registry.sessionsOf(DOMAIN)];
    await pump(w.clock, () => tunnels().some((t) => t.draining), 5_000, "old tunnel draining");
    equal(tunnels().length, 2, "the old tunnel drains while its request hangs");

    // The tunnel in use ends (the server closes it): the client dials again at once,
    // while the old one still drains.
    const inUse = tunnels().find((t) => t.usable)!;
    const lostAt = w.clock.now();
    inUse.session.abort(0, "test: tunnel in use closed");
    await pump(w.clock, () => connected(events).length === 3, 10_000, "reconnect");
    const reconnectMs = w.clock.now() - lostAt;
    ok(reconnectMs < 3_000, `reconnected ${reconnectMs} ms after the tunnel in use ended`);
    equal(tunnels().filter((t) => t.draining).length, 1, "the old tunnel still drains");

    // Stopping: the retired tunnel is cut after the drain timeout (3 s here), not
    // after the server's 5 minutes.
    const stopAt = w.clock.now();
    ac.abort();
    await pumped(w.clock, done, 10_000, "client stop");
    const stopMs = w.clock.now() - stopAt;
    ok(stopMs >= 3_000 && stopMs < 4_000, `stopped ${stopMs} ms after the stop`);
    await pump(w.clock, () => tunnels().length === 0, 5_000, "server sees both tunnels end");
    const r = await pumped(w.clock, hanging, 5_000, "hanging request ends");
    ok(r.status !== 200, "the hung request was cut, not answered");
  } finally {
    ac.abort();
    await pumped(w.clock, done, 20_000, "client stop").catch(() => {});
    await w.close();
  }
});

Deno.test("race: with UDP working the fallback is never dialled", async () => {
  const w = world();
  const events: { at: number; e: ClientEvent }[] = [];
  const { preferred, fallback } = w.dialer();
  const client = start(w, racingDialer({ preferred, fallback, clock: w.clock }), events);
  try {
    await pump(w.clock, () => connected(events).length === 1, 5_000, "connect");
    await runUntil(w.clock, () => false, 10_000, "idle").catch(() => {});
    equal(connected(events)[0]!.transport, "dtls");
    deepEqual(w.dials, { udp: 1, tcp: 0 });
  } finally {
    await client.stop();
    await w.close();
  }
});

Deno.test("race: a bad key answered over UDP fails at once, without dialling the fallback", async () => {
  const w = world();
  const events: { at: number; e: ClientEvent }[] = [];
  const { preferred, fallback } = w.dialer("not-the-key-0123456789abcdef");
  const client = start(w, racingDialer({ preferred, fallback, clock: w.clock }), events);
  try {
    await pump(w.clock, () => events.some((x) => x.e.type === "failure"), 5_000, "failure");
    const f = events.find((x) => x.e.type === "failure")!.e as Extract<
      ClientEvent,
      { type: "failure" }
    >;
    equal(f.kind, "bad_api_key");
    equal(w.dials.tcp, 0, "the fallback was not dialled");
  } finally {
    await client.stop();
    await w.close();
  }
});

Deno.test("race: both transports unreachable, one failure line names both", async () => {
  const w = world();
  w.net.blackhole = true;
  const events: { at: number; e: ClientEvent }[] = [];
  const { preferred, fallback } = w.dialer();
  const client = start(w, racingDialer({ preferred, fallback, clock: w.clock }), events);
  try {
    await runUntil(w.clock, () => events.some((x) => x.e.type === "failure"), 10_000, "failure");
    const f = events.find((x) => x.e.type === "failure")!.e as Extract<
      ClientEvent,
      { type: "failure" }
    >;
    equal(f.kind, "unreachable");
    ok(/no DTLS answer in time.*; over tcp: /.test(f.message), f.message);
    deepEqual(w.dials, { udp: 1, tcp: 1 });
  } finally {
    await client.stop();
    await w.close();
  }
});
