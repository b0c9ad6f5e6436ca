/**
 * The connector with several server nodes, in one process: real DTLS tunnel
 * servers on 127.0.0.1 (client/testing/tunnel_server.ts), a real local service,
 * names resolved through an injected resolver (the seam for DNS answers with
 * several records). Dual-homing, replacing a lost node, single-homed failover,
 * and a bad key holding every node.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import { type ClientEvent, type ClientOptions, runClient } from "../client/connector.ts";
import type { Resolver } from "../client/nodes.ts";
import { startTestServer, type TestServer } from "../client/testing/tunnel_server.ts";
import { readAnswer, readBytes, requestHead, within } from "../client/testing/tunnel.ts";
import { encodeHead } from "../shared/protocol/mod.ts";
import type { MuxSession } from "../shared/mux/mod.ts";

const DOMAIN = "app.multihome.test";
const KEY = "k-multihome-0123456789";

/** Collects events; `until` waits for a predicate over all of them. */
class Events {
  readonly all: ClientEvent[] = [];
  #waiters: (() => void)[] = [];
  readonly push = (e: ClientEvent) => {
    this.all.push(e);
    for (const w of this.#waiters.splice(0)) w();
  };
  of<T extends ClientEvent["type"]>(type: T): Extract<ClientEvent, { type: T }>[] {
    return this.all.filter((e) => e.type === type) as Extract<ClientEvent, { type: T }>[];
  }
  async until(what: string, pred: () => boolean, ms = 15_000): Promise<void> {
    const end = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > end) {
        throw new Error(
          `timed out waiting for ${what}; events:\n${
            this.all.filter((e) => e.type !== "stats").map((e) => JSON.stringify(e)).join("\n")
          }`,
        );
      }
      await new Promise<void>((r) => {
        this.#waiters.push(r);
        setTimeout(r, 100);
      });
    }
  }
  /** The tunnels up according to the last connected/disconnected/failure event. */
  tunnels(): string[] {
    for (let i = this.all.length - 1; i >= 0; i--) {
      const e = this.all[i]!;
      if (e.type === "connected" || e.type === "disconnected" || e.type === "failure") {
        return e.tunnels.map((t) => t.node).sort();
      }
    }
    return [];
  }
}

function startOrigin() {
  const srv = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => new Response(`origin ${new URL(req.url).pathname}`),
  );
  return { url: new URL(`http://127.0.0.1:${srv.addr.port}`), close: () => srv.shutdown() };
}

/** Plays the public server: one request over `session`. */
async function request(session: MuxSession, path: string): Promise<string> {
  const s = session.openStream();
  const w = s.writable.getWriter();
  await w.write(encodeHead(requestHead({ url: path })));
  await w.close();
  const { head, body } = await readAnswer(s);
  equal(head.t === "res" && head.status, 200);
  return new TextDecoder().decode(await readBytes(body));
}

function start(o: Partial<ClientOptions> & Pick<ClientOptions, "target">) {
  const events = new Events();
  const ac = new AbortController();
  const done = runClient({
    domain: DOMAIN,
    apiKey: KEY,
    handshakeTimeoutMs: 1000,
    backoff: { initialMs: 100, maxMs: 400 },
    statsIntervalMs: 200,
    onEvent: events.push,
    ...o,
  }, ac.signal);
  return {
    events,
    async stop() {
      ac.abort();
      await within(done, 10_000, "runClient to stop");
    },
  };
}

const key = (s: TestServer) => `127.0.0.1:${s.port}`;

Deno.test("multihome: tunnels to two nodes at once; one lost, the other serves on; it comes back", async () => {
  const origin = startOrigin();
  let a = startTestServer({ keys: { [DOMAIN]: KEY } });
  const b = startTestServer({ keys: { [DOMAIN]: KEY } });
  const portA = a.port;
  // Both entries are names; the resolver says where they are, and counts the asking.
  const asked: string[] = [];
  const resolve: Resolver = (name) => {
    asked.push(name);
    return Promise.resolve(name.endsWith(".node.test") ? ["127.0.0.1"] : []);
  };
  const c = start({
    target: origin.url,
    servers: [{ hostname: "a.node.test", port: a.port }, { hostname: "b.node.test", port: b.port }],
    resolve,
  });
  try {
    const [sa, sb] = await within(
      Promise.all([a.nextSession(), b.nextSession()]),
      15_000,
      "a session on each node",
    );
    await c.events.until("two tunnels", () => c.events.tunnels().length === 2);
    deepEqual(c.events.tunnels(), [key(a), key(b)].sort());
    const connected = c.events.of("connected");
    deepEqual(connected.map((e) => e.server).sort(), [
      `a.node.test:${a.port} (127.0.0.1)`,
      `b.node.test:${b.port} (127.0.0.1)`,
    ]);
    equal(connected.at(-1)!.wanted, 2);
    equal(await request(sa!, "/via-a"), "origin /via-a");
    equal(await request(sb!, "/via-b"), "origin /via-b");

    // Node A goes away (its sessions closed): B keeps serving while the client retries A.
    const asksBefore = asked.filter((n) => n === "a.node.test").length;
    await a.close();
    await c.events.until("A's tunnel lost", () => c.events.tunnels().length === 1);
    deepEqual(c.events.tunnels(), [key(b)]);
    const lost = c.events.of("failure").find((f) => f.node === key(a))!;
    equal(lost.kind, "session_lost");
    deepEqual(lost.tunnels.map((t) => t.node), [key(b)]);
    equal(await request(sb!, "/still-b"), "origin /still-b");

    // A is back on its port: the client has two tunnels again, having resolved A's name again.
    a = startTestServer({ keys: { [DOMAIN]: KEY }, port: portA });
    const again = await within(a.nextSession(), 15_000, "A's session back");
    await c.events.until("two tunnels again", () => c.events.tunnels().length === 2);
    equal(await request(again, "/a-again"), "origin /a-again");
    ok(
      asked.filter((n) => n === "a.node.test").length > asksBefore,
      `resolved again to reconnect: ${asked.join(",")} (before: ${asksBefore}); ${
        JSON.stringify(c.events.all.filter((e) => e.type !== "stats"))
      }`,
    );
    // The stats say so too (they come every 200 ms).
    await c.events.until(
      "stats with two tunnels",
      () => c.events.of("stats").at(-1)?.tunnels === 2,
    );
  } finally {
    await c.stop();
    await a.close();
    await b.close();
    await origin.close();
  }
  // Stopping closed both tunnels.
  equal(c.events.of("disconnected").at(-1)!.tunnels.length, 0);
  equal(c.events.all.at(-1)?.type, "stopped");
});

Deno.test("multihome: with three nodes, a lost tunnel is replaced by the third node at once", async () => {
  const origin = startOrigin();
  const servers = [0, 1, 2].map(() => startTestServer({ keys: { [DOMAIN]: KEY } }));
  const [a, b, third] = servers as [TestServer, TestServer, TestServer];
  const c = start({
    target: origin.url,
    servers: servers.map((s) => ({ hostname: "127.0.0.1", port: s.port })),
    // A long backoff: A is not retried within this test, so only the third node can replace it.
    backoff: { initialMs: 20_000, maxMs: 20_000 },
  });
  try {
    await c.events.until("two tunnels", () => c.events.tunnels().length === 2);
    deepEqual(c.events.tunnels(), [key(a), key(b)].sort(), "the first two entries first");
    equal(third.sessions.length, 0, "no tunnel to the third node while two are up");
    const lostAt = performance.now();
    await a.close();
    const s3 = await within(third.nextSession(), 10_000, "a tunnel to the third node");
    const ms = performance.now() - lostAt;
    await c.events.until(
      "B and the third node",
      () => c.events.tunnels().join() === [key(b), key(third)].sort().join(),
    );
    equal(await request(s3, "/third"), "origin /third");
    console.log(`node lost -> tunnel to the third node in ${ms.toFixed(0)} ms`);
  } finally {
    await c.stop();
    for (const s of servers) await s.close();
    await origin.close();
  }
});

Deno.test("multihome: single-homed (redundancy 1) holds one tunnel and moves to the next node when it is lost", async () => {
  const origin = startOrigin();
  const a = startTestServer({ keys: { [DOMAIN]: KEY } });
  const b = startTestServer({ keys: { [DOMAIN]: KEY } });
  const c = start({
    target: origin.url,
    servers: [{ hostname: "127.0.0.1", port: a.port }, { hostname: "127.0.0.1", port: b.port }],
    redundancy: 1,
  });
  try {
    await within(a.nextSession(), 10_000, "the tunnel to A");
    await c.events.until("one tunnel", () => c.events.tunnels().length === 1);
    await new Promise((r) => setTimeout(r, 300));
    equal(b.sessions.length, 0, "single-homed: no tunnel to B while A serves");
    equal(c.events.of("connected").at(-1)!.wanted, 1);
    const lostAt = performance.now();
    await a.close();
    const sb = await within(b.nextSession(), 10_000, "the tunnel to B");
    const ms = performance.now() - lostAt;
    equal(await request(sb, "/moved"), "origin /moved");
    deepEqual(c.events.tunnels(), [key(b)]);
    console.log(`single-homed: A closed -> serving through B after ${ms.toFixed(0)} ms`);
  } finally {
    await c.stop();
    await a.close();
    await b.close();
    await origin.close();
  }
});

Deno.test("multihome: a bad key from one node holds every node for the long wait", async () => {
  const bad = startTestServer({ keys: { [DOMAIN]: "another-key" } });
  const good = startTestServer({ keys: { [DOMAIN]: KEY } });
  const c = start({
    target: new URL("http://127.0.0.1:9"),
    servers: [{ hostname: "127.0.0.1", port: bad.port }, {
      hostname: "127.0.0.1",
      port: good.port,
    }],
    redundancy: 1,
    backoff: { initialMs: 100, maxMs: 20_000 },
  });
  try {
    await c.events.until("the bad key", () => c.events.of("failure").length > 0);
    const f = c.events.of("failure")[0]!;
    equal(f.kind, "bad_api_key");
    ok(f.retryInMs >= 10_000, `retry in ${f.retryInMs} ms`);
    // The other node would take the key the same way (one database): it is not tried meanwhile.
    await new Promise((r) => setTimeout(r, 1000));
    equal(c.events.of("connecting").length, 1, "no second attempt during the wait");
    equal(good.sessions.length, 0);
  } finally {
    await c.stop();
    await bad.close();
    await good.close();
  }
});
