import assert from "node:assert/strict";
import { mulberry32, UdpRelay } from "./udp_relay.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A plain UDP socket on 127.0.0.1 that records what it receives. */
class Endpoint {
  readonly sock: Deno.DatagramConn;
  readonly port: number;
  readonly received: { text: string; from: Deno.NetAddr }[] = [];
  #waiters: (() => void)[] = [];
  #loop: Promise<void>;
  #closed = false;

  constructor() {
    this.sock = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    this.port = (this.sock.addr as Deno.NetAddr).port;
    this.#loop = this.#run();
  }

  async #run(): Promise<void> {
    const buf = new Uint8Array(2048);
    while (!this.#closed) {
      try {
        const [view, from] = await this.sock.receive(buf);
        this.received.push({ text: dec.decode(view), from: from as Deno.NetAddr });
        for (const w of this.#waiters.splice(0)) w();
      } catch {
        if (this.#closed) return;
      }
    }
  }

  async send(text: string, port: number): Promise<void> {
    await this.sock.send(enc.encode(text), { transport: "udp", hostname: "127.0.0.1", port });
  }

  texts(): string[] {
    return this.received.map((r) => r.text);
  }

  /** Resolves once `n` datagrams arrived; rejects after `ms` with what did arrive. */
  async waitFor(n: number, ms = 3000): Promise<void> {
    const deadline = Date.now() + ms;
    while (this.received.length < n) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `timed out waiting for ${n} datagrams, got ${JSON.stringify(this.texts())}`,
        );
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        timer = setTimeout(resolve, left);
        this.#waiters.push(resolve);
      });
      clearTimeout(timer);
    }
  }

  /** Waits `ms`, so that datagrams that should NOT arrive would have had time to. */
  async settle(ms = 150): Promise<void> {
    await new Promise((r) => setTimeout(r, ms));
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.sock.close();
    await this.#loop;
  }
}

/** Upstream + client endpoints around a relay. */
async function withRelay(
  opts: Omit<ConstructorParameters<typeof UdpRelay>[0], "upstream">,
  fn: (r: UdpRelay, client: Endpoint, server: Endpoint) => Promise<void>,
): Promise<void> {
  const server = new Endpoint();
  const client = new Endpoint();
  const relay = new UdpRelay({ ...opts, upstream: { hostname: "127.0.0.1", port: server.port } });
  try {
    await fn(relay, client, server);
  } finally {
    await relay.close();
    await client.close();
    await server.close();
  }
}

/** The relay's upstream-facing port, as seen by the server. */
function backPort(server: Endpoint): number {
  const first = server.received[0];
  assert.ok(first, "server has received nothing yet");
  return first.from.port;
}

Deno.test("relay forwards both ways and learns the client", async () => {
  await withRelay({}, async (relay, client, server) => {
    assert.equal(relay.addr.hostname, "127.0.0.1");
    assert.notEqual(relay.addr.port, server.port);
    for (let i = 0; i < 5; i++) await client.send(`c${i}`, relay.addr.port);
    await server.waitFor(5);
    assert.deepEqual(server.texts(), ["c0", "c1", "c2", "c3", "c4"]);
    assert.deepEqual(relay.client, { hostname: "127.0.0.1", port: client.port });
    const back = backPort(server);
    assert.notEqual(back, relay.addr.port, "the relay uses a separate upstream socket");
    for (let i = 0; i < 3; i++) await server.send(`s${i}`, back);
    await client.waitFor(3);
    assert.deepEqual(client.texts(), ["s0", "s1", "s2"]);
    // The client sees replies coming from the relay's address, not the server's.
    assert.equal(client.received[0]!.from.port, relay.addr.port);
    assert.equal(relay.counters.toServer.forwarded, 5);
    assert.equal(relay.counters.toClient.forwarded, 3);
    assert.equal(relay.counters.toServer.received, 5);
  });
});

Deno.test("relay ignores a second client", async () => {
  await withRelay({}, async (relay, client, server) => {
    await client.send("first", relay.addr.port);
    await server.waitFor(1);
    const stranger = new Endpoint();
    try {
      await stranger.send("stranger", relay.addr.port);
      await client.send("again", relay.addr.port);
      await server.waitFor(2);
      await server.settle();
      assert.deepEqual(server.texts(), ["first", "again"]);
    } finally {
      await stranger.close();
    }
  });
});

Deno.test("random loss is seeded: same seed, same pattern; other seed, other pattern", async () => {
  async function run(seed: number): Promise<string[]> {
    let got: string[] = [];
    await withRelay({ seed, toServer: { loss: 0.3 } }, async (relay, client, server) => {
      // Send one at a time so arrivals are in a known order, and end with a marker sent after
      // loss is switched off, to know when everything that survived has arrived.
      for (let i = 0; i < 100; i++) await client.send(`m${i}`, relay.addr.port);
      // Let the relay see all 100 before loss is switched off.
      const deadline = Date.now() + 3000;
      while (relay.counters.toServer.received < 100 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 5));
      }
      assert.equal(relay.counters.toServer.received, 100);
      relay.set("toServer", { loss: 0 });
      await client.send("end", relay.addr.port);
      const c = relay.counters.toServer;
      await server.waitFor(101 - c.droppedRandom);
      got = server.texts();
      assert.equal(got.at(-1), "end");
      assert.equal(c.forwarded + c.droppedRandom, 101);
      // 30 % of 100 with a fixed seed: far from 0 and from 100.
      assert.ok(c.droppedRandom > 10 && c.droppedRandom < 50, `dropped ${c.droppedRandom}`);
    });
    return got;
  }
  const a = await run(7);
  const b = await run(7);
  const c = await run(8);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
});

Deno.test("mulberry32 is deterministic and in [0, 1)", () => {
  const a = mulberry32(42);
  const b = mulberry32(42);
  for (let i = 0; i < 1000; i++) {
    const x = a();
    assert.equal(x, b());
    assert.ok(x >= 0 && x < 1);
  }
});

Deno.test("dropNext drops exactly the next N in that direction only", async () => {
  await withRelay({}, async (relay, client, server) => {
    await client.send("hello", relay.addr.port);
    await server.waitFor(1);
    relay.dropNext("toServer", 5);
    relay.dropNext("toClient", 2);
    for (let i = 0; i < 8; i++) await client.send(`c${i}`, relay.addr.port);
    await server.waitFor(4);
    for (let i = 0; i < 4; i++) await server.send(`s${i}`, backPort(server));
    await client.waitFor(2);
    await server.settle();
    assert.deepEqual(server.texts(), ["hello", "c5", "c6", "c7"]);
    assert.deepEqual(client.texts(), ["s2", "s3"]);
    assert.equal(relay.counters.toServer.droppedBurst, 5);
    assert.equal(relay.counters.toClient.droppedBurst, 2);
    assert.equal(relay.burstRemaining("toServer"), 0);
  });
});

Deno.test("duplicate = 1 sends every datagram twice", async () => {
  await withRelay({ toServer: { duplicate: 1 } }, async (relay, client, server) => {
    for (let i = 0; i < 3; i++) await client.send(`d${i}`, relay.addr.port);
    await server.waitFor(6);
    await server.settle();
    assert.deepEqual(server.texts(), ["d0", "d0", "d1", "d1", "d2", "d2"]);
    assert.equal(relay.counters.toServer.duplicated, 3);
    assert.equal(relay.counters.toServer.forwarded, 6);
  });
});

Deno.test("reorder = 1 swaps each pair; a lone held datagram is released after the hold", async () => {
  await withRelay(
    { toServer: { reorder: 1, reorderHoldMs: 100 } },
    async (relay, client, server) => {
      for (const t of ["a", "b", "c", "d", "e"]) await client.send(t, relay.addr.port);
      await server.waitFor(5);
      // a held, b sent then a; c held, d sent then c; e held until its timer fires.
      assert.deepEqual(server.texts(), ["b", "a", "d", "c", "e"]);
      assert.equal(relay.counters.toServer.reordered, 3);
    },
  );
});

Deno.test("delay holds datagrams at least delayMs", async () => {
  await withRelay({ toClient: { delayMs: 120 } }, async (_relay, client, server) => {
    await client.send("x", _relay.addr.port);
    await server.waitFor(1);
    const t0 = performance.now();
    await server.send("y", backPort(server));
    await client.waitFor(1);
    assert.ok(performance.now() - t0 >= 100, "arrived before the delay");
    assert.deepEqual(client.texts(), ["y"]);
  });
});

Deno.test("intercept can replace or drop; inject sends raw datagrams; trace records", async () => {
  await withRelay({
    trace: true,
    intercept: (dir, d) => {
      const t = dec.decode(d);
      if (t === "drop-me") return null;
      return dir === "toServer" ? enc.encode(t.toUpperCase()) : d;
    },
  }, async (relay, client, server) => {
    await client.send("abc", relay.addr.port);
    await client.send("drop-me", relay.addr.port);
    await client.send("def", relay.addr.port);
    await server.waitFor(2);
    relay.inject("toServer", enc.encode("injected"));
    relay.inject("toClient", enc.encode("to-client"));
    await server.waitFor(3);
    await client.waitFor(1);
    await server.settle();
    assert.deepEqual(server.texts(), ["ABC", "DEF", "injected"]);
    assert.deepEqual(client.texts(), ["to-client"]);
    assert.equal(relay.counters.toServer.droppedIntercept, 1);
    assert.equal(relay.counters.toServer.injected, 1);
    assert.ok(relay.trace.some((e) => e.action === "drop-intercept"));
    assert.ok(relay.trace.some((e) => e.action === "inject" && e.dir === "toClient"));
    assert.match(relay.formatTrace(), /toServer\s+forward/);
  });
});

Deno.test("inject toClient before any client is known is refused", async () => {
  await withRelay({}, (relay) => {
    assert.throws(() => relay.inject("toClient", new Uint8Array(1)), /no client/);
    return Promise.resolve();
  });
});

Deno.test("settings are validated", async () => {
  await withRelay({}, (relay) => {
    assert.throws(() => relay.set("toServer", { loss: 1.5 }), RangeError);
    assert.throws(() => relay.set("toClient", { duplicate: -0.1 }), RangeError);
    assert.throws(() => relay.dropNext("toClient", 1.5), RangeError);
    assert.equal(relay.settings("toServer").loss, 0);
    return Promise.resolve();
  });
});

Deno.test("close stops forwarding and cancels held and delayed datagrams", async () => {
  const server = new Endpoint();
  const client = new Endpoint();
  const relay = new UdpRelay({
    upstream: { hostname: "127.0.0.1", port: server.port },
    toServer: { delayMs: 200 },
  });
  try {
    await client.send("late", relay.addr.port);
    // Wait until the relay holds it, then close before the delay expires.
    const deadline = Date.now() + 2000;
    while (relay.counters.toServer.received < 1 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.equal(relay.counters.toServer.received, 1);
    await relay.close();
    assert.ok(relay.closed);
    await relay.close(); // idempotent
    await server.settle(300);
    assert.deepEqual(server.texts(), []);
    assert.throws(() => relay.inject("toServer", new Uint8Array(1)), /closed/);
  } finally {
    await relay.close();
    await client.close();
    await server.close();
  }
});
