/**
 * A whole tunnel in one process on fake time: the server's tunnel hub and the
 * client's connector, our DTLS on both ends, over the simulated network
 * (shared/testing/sim_net.ts) with a 10 ms one-way delay. Handshake, hello,
 * requests to a real local origin, loss, a vanished server, reconnection with
 * growing backoff and the tunnel back: minutes of fake time in seconds.
 *
 * Time moves in two ways. While a request is in flight the origin's real TCP
 * I/O must keep up, so `pump` moves fake time 1 ms per event-loop turn; while
 * nothing but timers is pending (backoff, timeouts), `runUntil` jumps to the
 * next timer.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import { type ClientEvent, runClient } from "../client/connector.ts";
import { dtlsDialer } from "../client/dialer.ts";
import { derivePsk } from "../shared/dtls/mod.ts";
import { sayHello } from "../shared/handshake/mod.ts";
import { MuxSession, MuxStreamError, StreamErrorCode } from "../shared/mux/mod.ts";
import {
  encodeHead,
  FEATURE_ACK_TIMESTAMPS,
  FEATURE_WARM_UP,
  readHead,
  readHeadFrom,
  type RequestHead,
} from "../shared/protocol/mod.ts";
import { FakeClock, runFor, runUntil } from "../shared/testing/fake_clock.ts";
import { pump, pumped } from "./helpers/fake_pump.ts";
import { SimNet, type SimNetOptions } from "../shared/testing/sim_net.ts";
import { TunnelRegistry } from "../server/registry.ts";
import { type Tunnel, TunnelHub, type TunnelHubOptions } from "../server/tunnels.ts";
import { zeroWarmUpCounts } from "../server/warm_ups.ts";
import type { Logger } from "../server/log.ts";

const DOMAIN = "app.sim.test";
const API_KEY = "sim-api-key-0123456789abcdef";
const SERVER = { hostname: "10.0.0.1", port: 443 };

const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {} };

function requestHead(id: string, url: string): RequestHead {
  return {
    t: "req",
    id,
    method: "GET",
    url,
    headers: [["host", DOMAIN]],
    client: "203.0.113.7",
    scheme: "https",
  };
}

/** Plays the ingress: one request on the tunnel, the answer's status and body. */
async function get(tunnel: Tunnel, id: string, url: string) {
  const s = tunnel.session.openStream();
  const w = s.writable.getWriter();
  await w.write(encodeHead(requestHead(id, url)));
  await w.close();
  const { head, body } = await readHead(s.readable);
  const text = await new Response(body).text();
  if (head.t !== "res") return { status: head.t, text };
  return { status: head.status, text };
}

/** One request with the head in the given form; the response head's form and status. */
async function getForm(tunnel: Tunnel, compact: boolean) {
  const s = tunnel.session.openStream();
  await s.write(encodeHead(requestHead(compact ? "c" : "j", "/form"), compact));
  s.close();
  const { head, compact: answeredCompact } = await readHeadFrom(s);
  return { compact: answeredCompact, status: head.t === "res" ? head.status : head.t };
}

Deno.test("whole tunnel on fake time: connect, serve, survive loss, reconnect after an outage", async () => {
  const clock = new FakeClock();
  const net = new SimNet({ clock, delayMs: 10, seed: 7 });

  // The local service: a real HTTP server on loopback, in this process.
  const origin = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => new Response(`hello from ${new URL(req.url).pathname}`),
  );
  const registry = new TunnelRegistry<Tunnel>();
  const hub = new TunnelHub({
    hostname: SERVER.hostname,
    port: SERVER.port,
    lookupPsk: (id) => Promise.resolve(id === DOMAIN ? derivePsk(API_KEY) : undefined),
    registry,
    logger: quiet,
    clock,
    dtls: { socket: net.socket },
  });

  const events: { at: number; e: ClientEvent }[] = [];
  const ac = new AbortController();
  const client = runClient({
    server: SERVER,
    domain: DOMAIN,
    apiKey: API_KEY,
    target: new URL(`http://127.0.0.1:${origin.addr.port}`),
    dialer: dtlsDialer({
      server: SERVER,
      domain: DOMAIN,
      apiKey: API_KEY,
      handshakeTimeoutMs: 3_000,
      clock,
      socket: (_h, port, handler) => net.socket("10.0.0.2", port, handler),
    }),
    clock,
    random: () => 0.5,
    backoff: { initialMs: 500, maxMs: 8_000 },
    statsIntervalMs: 60_000,
    onEvent: (e) => events.push({ at: clock.now(), e }),
  }, ac.signal);
  // The tunnel the ingress would pick.
  const live = () => hub.pick(DOMAIN);
  const count = (type: ClientEvent["type"]) => events.filter((x) => x.e.type === type).length;

  try {
    // Handshake and hello: DTLS with a cookie exchange (6 one-way trips of 10 ms) and
    // the hello's round trip: 80 ms of fake time, with nothing resent.
    const t0 = clock.now();
    await pump(clock, () => count("connected") === 1 && live() !== undefined, 2_000, "connect");
    const took = clock.now() - t0;
    ok(took >= 80 && took < 90, `connected after ${took} ms of fake time`);

    // Requests through the tunnel to the real origin.
    const r = await pumped(clock, get(live()!, "r1", "/one"), 2_000, "first request");
    deepEqual(r, { status: 200, text: "hello from /one" });
    // The client asked for compact heads, and answers each head in its own form.
    ok(live()!.compactHeads);
    // The client listed ACK timestamps and read the welcome's: it dates its ACKs.
    ok(live()!.session.stats.timestampsReceived > 0, "the server got dated ACKs");
    for (const compact of [true, false]) {
      const f = await pumped(clock, getForm(live()!, compact), 2_000, "compact or not");
      deepEqual(f, { compact, status: 200 });
    }
    const many = await pumped(
      clock,
      Promise.all(Array.from({ length: 20 }, (_, i) => get(live()!, `m${i}`, `/m${i}`))),
      5_000,
      "20 concurrent requests",
    );
    deepEqual(many.map((x) => x.text), Array.from({ length: 20 }, (_, i) => `hello from /m${i}`));

    // 10 % loss each way: requests still complete (the mux retransmits on fake time).
    net.loss = 0.1;
    const lossy = await pumped(
      clock,
      Promise.all(Array.from({ length: 20 }, (_, i) => get(live()!, `l${i}`, `/l${i}`))),
      20_000,
      "20 requests at 10 % loss",
    );
    equal(lossy.filter((x) => x.status === 200).length, 20);
    ok(net.dropped > 0, "the network dropped datagrams");
    net.loss = 0;

    // The server vanishes (every datagram dropped): the client notices when its next
    // keepalive PING goes unanswered (shared/tunnel_params.ts), waits a random part of
    // the reconnect spread (it may be one of many clients the server dropped at once),
    // then retries with growing waits until the network is back.
    net.blackhole = true;
    await runUntil(clock, () => count("failure") >= 4, 120_000, "four failures");
    const failures = events.filter((x) => x.e.type === "failure").map((x) =>
      x.e as Extract<ClientEvent, { type: "failure" }>
    );
    equal(failures[0]!.kind, "session_lost");
    ok(failures.slice(1).every((f) => f.kind === "unreachable"), JSON.stringify(failures));
    const waits = failures.map((f) => f.retryInMs);
    // random() = 0.5: halfway between 250 ms and the spread (3 s).
    equal(waits[0], 1625);
    for (let i = 2; i < waits.length; i++) {
      ok(waits[i]! > waits[i - 1]!, `waits grow: ${waits.join(", ")}`);
    }
    // The client really waited: each attempt starts no sooner than its announced wait.
    const connecting = events.filter((x) => x.e.type === "connecting").map((x) => x.at);
    const failedAt = events.filter((x) => x.e.type === "failure").map((x) => x.at);
    for (let i = 0; i < 3; i++) {
      const next = connecting.find((t) => t > failedAt[i]!)!;
      ok(next - failedAt[i]! >= waits[i]!, `attempt ${i + 2} waited ${next - failedAt[i]!} ms`);
    }

    // The network is back: the client reconnects and requests work again. The server
    // still holds the tunnel the client gave up during the outage (it sends no
    // keepalives: 30 s of silence tell it), but the new tunnel made it PING the old one,
    // and requests go to the new one meanwhile.
    const stale = [...registry.sessionsOf(DOMAIN)];
    equal(stale.length, 1);
    net.blackhole = false;
    await pump(clock, () => count("connected") === 2 && live() !== stale[0], 20_000, "reconnect");
    equal([...registry.sessionsOf(DOMAIN)].length, 2, "the stale tunnel is still registered");
    ok(stale[0]!.usable && stale[0]!.verifying);
    for (let i = 0; i < 4; i++) {
      const again = await pumped(clock, get(live()!, `r${i}`, "/again"), 2_000, "request after");
      deepEqual(again, { status: 200, text: "hello from /again" });
    }
    // Its PING goes unanswered: closed within 10 s (unansweredTimeoutMs) at the latest.
    await runUntil(clock, () => stale[0]!.session.isClosed, 10_500, "the stale tunnel closed");
  } finally {
    ac.abort();
    await pumped(clock, client, 5_000, "client stop").catch(() => {});
    await pumped(clock, hub.close({ abort: true }), 5_000, "hub close").catch(() => {});
    net.close();
    await origin.shutdown();
  }
});

/** A tunnel hub on the simulated network, and a way to dial it as a bare mux session. */
function hubOnSimNet(
  seed: number,
  path: Omit<SimNetOptions, "clock" | "seed"> = {},
  hubOptions: Partial<TunnelHubOptions> = {},
) {
  const clock = new FakeClock();
  const net = new SimNet({ clock, delayMs: 10, seed, ...path });
  const registry = new TunnelRegistry<Tunnel>();
  const hub = new TunnelHub({
    ...hubOptions,
    hostname: SERVER.hostname,
    port: SERVER.port,
    lookupPsk: (id) => Promise.resolve(id === DOMAIN ? derivePsk(API_KEY) : undefined),
    registry,
    logger: quiet,
    clock,
    dtls: { socket: net.socket },
  });
  const conns: { close(): void }[] = [];
  let host = 2;
  /** DTLS to the hub from a new address, a client mux session on it (no hello yet). */
  const dial = async () => {
    const conn = await pumped(
      clock,
      dtlsDialer({
        server: SERVER,
        domain: DOMAIN,
        apiKey: API_KEY,
        clock,
        socket: (_h, port, handler) => net.socket(`10.0.0.${host++}`, port, handler),
      }).dial(new AbortController().signal),
      2_000,
      "dtls",
    );
    conns.push(conn.conn);
    return new MuxSession(conn.conn, { role: "client", clock });
  };
  const close = async (sessions: MuxSession[]) => {
    for (const s of sessions) s.abort(0, "test done");
    await pumped(clock, hub.close({ abort: true }), 5_000, "hub close").catch(() => {});
    for (const c of conns) c.close();
    net.close();
  };
  return { clock, net, registry, hub, dial, close };
}

Deno.test("tunnel hub on fake time: a stream the client opens after the hello is refused at once", async () => {
  const { clock, registry, dial, close } = hubOnSimNet(3);
  const session = await dial();
  try {
    await pumped(
      clock,
      sayHello(session, { client: "test", domain: DOMAIN, target: "http://x" }, 10_000, clock),
      2_000,
      "hello",
    );
    // An extra stream with data: the server resets it and stops it at once, instead of
    // keeping it (and its data) in an accept queue nobody reads.
    const extra = session.openStream();
    await extra.write(new Uint8Array(32 * 1024));
    let refused: unknown;
    extra.sendClosed.then(() => refused = "closed", (e) => refused = e);
    await pumped(clock, extra.read().catch((e) => e), 2_000, "the refusal");
    await pump(clock, () => refused !== undefined, 2_000, "send half stopped");
    ok(refused instanceof MuxStreamError, `send half: ${refused}`);
    equal((refused as MuxStreamError).code, StreamErrorCode.REFUSED);
    // The tunnel itself still serves.
    ok([...registry.sessionsOf(DOMAIN)].some((t) => t.usable));
    // A hello without features (an older client): request heads go to it as JSON, and no
    // ACK of the server's is dated (a TIMESTAMP frame would have failed its session).
    ok([...registry.sessionsOf(DOMAIN)].every((t) => !t.compactHeads));
    equal(session.stats.timestampsReceived, 0);
    ok(!session.isClosed);
  } finally {
    await close([session]);
  }
});

Deno.test("tunnel hub on fake time: ACK timestamps go only to a side that listed them", async () => {
  const { clock, registry, dial, close } = hubOnSimNet(4);
  const session = await dial();
  try {
    const { welcome } = await pumped(
      clock,
      sayHello(
        session,
        {
          client: "test",
          domain: DOMAIN,
          target: "http://x",
          features: [FEATURE_ACK_TIMESTAMPS],
        },
        10_000,
        clock,
      ),
      2_000,
      "hello",
    );
    ok(welcome.features?.includes(FEATURE_ACK_TIMESTAMPS), JSON.stringify(welcome));
    const tunnel = [...registry.sessionsOf(DOMAIN)][0]!;
    // Data both ways (the server refuses the stream: a reset and a STOP_SENDING back).
    const probe = async () => {
      const extra = session.openStream();
      await extra.write(new Uint8Array(32 * 1024));
      await pumped(clock, extra.read().catch((e) => e), 2_000, "the refusal");
      await runFor(clock, 200);
    };
    // The server dates its ACKs from the welcome on; this client has not said it will.
    await probe();
    ok(session.stats.timestampsReceived > 0, "the client got dated ACKs");
    equal(tunnel.session.stats.timestampsReceived, 0);
    session.sendAckTimestamps();
    await probe();
    ok(tunnel.session.stats.timestampsReceived > 0, "the server got dated ACKs");
    ok(!session.isClosed && tunnel.usable);
  } finally {
    await close([session]);
  }
});

/** A 10 Mbit/s bottleneck with a queue of 1.5 BDP (20 ms round trips). */
const NARROW = { rateBytesPerMs: 1250, queueBytes: 37_500 };

/** Says hello on `session` listing `features`; the welcome. */
async function hello(clock: FakeClock, session: MuxSession, features: string[]) {
  const { welcome } = await pumped(
    clock,
    sayHello(
      session,
      { client: "test", domain: DOMAIN, target: "http://x", features },
      10_000,
      clock,
    ),
    2_000,
    "hello",
  );
  return welcome;
}

Deno.test("tunnel hub on fake time: warm-ups go to clients that asked, a few at a time", async () => {
  const { clock, registry, hub, dial, close } = hubOnSimNet(5, NARROW, {
    warmUps: { concurrency: 1, holdMs: 1_000 },
  });
  const sessions: MuxSession[] = [];
  try {
    // Three clients ask at once: the node's one grant goes to one of them; the others go
    // without, both ways (their welcomes do not list the feature).
    for (let i = 0; i < 3; i++) sessions.push(await dial());
    const welcomes = await Promise.all(sessions.map((s) => hello(clock, s, [FEATURE_WARM_UP])));
    const granted = welcomes.map((w) => w.features?.includes(FEATURE_WARM_UP) ?? false);
    equal(granted.filter(Boolean).length, 1, JSON.stringify(welcomes));
    // A client that did not ask gets none.
    const plain = await dial();
    sessions.push(plain);
    ok(!(await hello(clock, plain, [])).features?.includes(FEATURE_WARM_UP));
    await runFor(clock, 5_000);
    deepEqual(hub.warmUps!.counts, { ...zeroWarmUpCounts(), modelled: 1, skipped: 2 });
    const sent = [...registry.sessionsOf(DOMAIN)].map((t) => t.session.stats.warmUpBytesSent);
    equal(sent.filter((b) => b > 0).length, 1, `warm-up bytes per tunnel: ${sent}`);
    equal(hub.warmUps!.bytesSent, sent.reduce((a, b) => a + b));
    // The warmed tunnel knows its path's rate (10 Mbit/s) before any request.
    for (const t of registry.sessionsOf(DOMAIN)) {
      if (t.session.stats.warmUpBytesSent === 0) continue;
      const bw = t.session.stats.maxBandwidthBytesPerSecond / 1_250_000;
      ok(bw > 0.9 && bw < 1.1, `max_bw ${bw} x the bottleneck`);
    }
    // The grant is free again: the next client that asks gets one.
    const later = await dial();
    sessions.push(later);
    ok((await hello(clock, later, [FEATURE_WARM_UP])).features?.includes(FEATURE_WARM_UP));
    await runFor(clock, 3_000);
    equal(hub.warmUps!.counts.modelled, 2);
    for (const s of sessions) ok(!s.isClosed);
  } finally {
    await close(sessions);
  }
});

Deno.test("tunnel hub on fake time: a hub without warm-ups does not offer them", async () => {
  const { clock, registry, hub, dial, close } = hubOnSimNet(6, NARROW, { warmUps: false });
  const session = await dial();
  try {
    const welcome = await hello(clock, session, [FEATURE_WARM_UP]);
    ok(!welcome.features?.includes(FEATURE_WARM_UP), JSON.stringify(welcome));
    await runFor(clock, 2_000);
    equal(hub.warmUps, undefined);
    equal([...registry.sessionsOf(DOMAIN)][0]!.session.stats.warmUpBytesSent, 0);
  } finally {
    await close([session]);
  }
});

Deno.test("whole tunnel on fake time: the client and the server warm the path up both ways, unless the client says not to", async () => {
  for (const warmUp of [true, false]) {
    const { clock, net, hub, close } = hubOnSimNet(8, NARROW);
    const ac = new AbortController();
    const client = runClient({
      server: SERVER,
      domain: DOMAIN,
      apiKey: API_KEY,
      target: new URL("http://127.0.0.1:9"),
      dialer: dtlsDialer({
        server: SERVER,
        domain: DOMAIN,
        apiKey: API_KEY,
        clock,
        socket: (_h, port, handler) => net.socket("10.0.0.2", port, handler),
      }),
      clock,
      random: () => 0.5,
      statsIntervalMs: 60_000,
      warmUp,
    }, ac.signal);
    try {
      await pump(clock, () => hub.pick(DOMAIN) !== undefined, 2_000, "connect");
      await runFor(clock, 3_000);
      const s = hub.pick(DOMAIN)!.session.stats;
      if (warmUp) {
        equal(hub.warmUps!.counts.modelled, 1, JSON.stringify(hub.warmUps!.counts));
        ok(s.warmUpBytesSent > 50_000, `server's warm-up: ${s.warmUpBytesSent} bytes`);
        ok(s.bytesReceived > 50_000, `client's warm-up: the server read ${s.bytesReceived} bytes`);
      } else {
        equal(hub.warmUps!.bytesSent, 0);
        equal(s.warmUpBytesSent, 0);
        ok(s.bytesReceived < 5_000, `the server read ${s.bytesReceived} bytes`);
      }
    } finally {
      ac.abort();
      await pumped(clock, client, 5_000, "client stop").catch(() => {});
      await close([]);
    }
  }
});
