/**
 * Quiet-time read batching of the server's UDP socket (shared/dtls/udp.ts): real
 * loopback sockets. While nothing holds the socket, datagrams that arrive after a
 * wake-up wait for the batch interval and are read together; a hold (a handshake, a
 * request in progress) makes every datagram go up as it arrives, and so does the
 * linger after the last hold.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { UdpSocket } from "./udp.ts";
import { DtlsServer } from "./server.ts";
import { clientHello, helloVerifyCookie, Raw } from "../../tests/tools/dtls_raw.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function setup(batchMs: number, lingerMs: number) {
  const arrivals: number[] = [];
  const server = UdpSocket.bind("127.0.0.1", 0, () => arrivals.push(performance.now()), {
    quietBatchMs: batchMs,
    lingerMs,
  });
  const client = UdpSocket.bind("127.0.0.1", 0, () => {});
  const to = { transport: "udp" as const, hostname: "127.0.0.1", port: server.addr.port };
  /** Sends `n` datagrams `gapMs` apart; returns when each left. */
  const send = async (n: number, gapMs: number) => {
    const sent: number[] = [];
    for (let i = 0; i < n; i++) {
      if (i > 0 && gapMs > 0) await sleep(gapMs);
      sent.push(performance.now());
      client.send(new Uint8Array([i]), to);
    }
    return sent;
  };
  const waitFor = async (count: number) => {
    const end = performance.now() + 5000;
    while (arrivals.length < count && performance.now() < end) await sleep(2);
    assert.equal(arrivals.length, count, `only ${arrivals.length} of ${count} datagrams arrived`);
  };
  // The socket's first read is waiting (a datagram sent at once would find it reading).
  await sleep(20);
  return {
    server,
    arrivals,
    send,
    waitFor,
    async close() {
      server.close();
      client.close();
      await Promise.all([server.done, client.done]);
    },
  };
}

Deno.test("udp batching: while quiet, datagrams after a wake-up are read together after the interval", async () => {
  const t = await setup(150, 0);
  try {
    // The first wakes the socket at once; the next four (10 ms apart) wait for the batch.
    const [first] = await t.send(1, 0);
    await t.waitFor(1);
    assert.ok(t.arrivals[0]! - first! < 100, `first read ${t.arrivals[0]! - first!} ms late`);
    const sent = await t.send(4, 10);
    await t.waitFor(5);
    const batch = t.arrivals.slice(1);
    // Read no earlier than the interval after the wake-up, and within a moment of each other.
    assert.ok(batch[0]! - t.arrivals[0]! >= 140, `read ${batch[0]! - t.arrivals[0]!} ms after`);
    assert.ok(batch.at(-1)! - batch[0]! < 30, `spread over ${batch.at(-1)! - batch[0]!} ms`);
    assert.ok(batch[0]! >= sent.at(-1)!, "the batch was read before its last datagram left");
    assert.ok(t.server.batchWaits >= 1);
  } finally {
    await t.close();
  }
});

Deno.test("udp batching: a hold delivers each datagram as it arrives, the linger too, then batching resumes", async () => {
  const t = await setup(150, 300);
  try {
    const release = t.server.hold();
    const sent = await t.send(5, 30);
    await t.waitFor(5);
    for (let i = 0; i < 5; i++) {
      assert.ok(
        t.arrivals[i]! - sent[i]! < 100,
        `datagram ${i} read ${t.arrivals[i]! - sent[i]!} ms late`,
      );
    }
    const waits = t.server.batchWaits;
    assert.equal(waits, 0, "batched while held");
    // Released: still prompt during the linger.
    release();
    release(); // a second call does nothing
    const lingering = await t.send(3, 30);
    await t.waitFor(8);
    for (let i = 0; i < 3; i++) {
      assert.ok(t.arrivals[5 + i]! - lingering[i]! < 100, `lingering datagram ${i} late`);
    }
    // After the linger: batching again.
    await sleep(400);
    await t.send(1, 0);
    await t.waitFor(9);
    await t.send(3, 10);
    await t.waitFor(12);
    assert.ok(t.server.batchWaits >= 1, "no batching after the linger");
    assert.ok(
      t.arrivals[9]! - t.arrivals[8]! >= 140,
      "the datagrams after the linger were not batched",
    );
  } finally {
    await t.close();
  }
});

Deno.test("udp batching: a hold taken during a batch wait ends the wait at once", async () => {
  const t = await setup(2000, 0);
  try {
    await t.send(1, 0);
    await t.waitFor(1);
    await sleep(20); // the socket is now waiting out its 2 s batch
    const [sent] = await t.send(1, 0);
    await sleep(50);
    assert.equal(t.arrivals.length, 1, "read during the batch wait");
    const release = t.server.hold();
    await t.waitFor(2);
    assert.ok(t.arrivals[1]! - sent! < 500, `read ${t.arrivals[1]! - sent!} ms after it left`);
    release();
  } finally {
    await t.close();
  }
});

Deno.test("udp batching: after a burst the next wake-up reads on without waiting", async () => {
  // A long interval: the test's own steps may run late on a loaded machine, and the
  // 100 datagrams must still find the socket waiting.
  const t = await setup(1000, 0);
  try {
    await t.send(1, 0);
    await t.waitFor(1);
    // 100 datagrams gather during the wait and are read in one go: a burst.
    await t.send(100, 0);
    await t.waitFor(101);
    assert.equal(t.server.batchWaits, 1);
    await sleep(20);
    // The next one wakes the socket; after a burst it does not wait, so the following
    // datagrams are read as they come.
    const sent = await t.send(3, 30);
    await t.waitFor(104);
    assert.ok(t.arrivals[102]! - sent[1]! < 100, `read ${t.arrivals[102]! - sent[1]!} ms late`);
    assert.equal(t.server.batchWaits, 2, "the wake-up after the burst waited");
  } finally {
    await t.close();
  }
});

Deno.test("udp batching: a ClientHello makes the DTLS server's socket read promptly from then on", async () => {
  let sock: UdpSocket | undefined;
  const server = DtlsServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    lookupPsk: () => Promise.resolve(undefined),
    onConnection: () => {},
    socket: (h, p, handler) => sock = UdpSocket.bind(h, p, handler, { quietBatchMs: 300 }),
  });
  const raw = new Raw();
  try {
    await sleep(20);
    await raw.send(
      clientHello(new Uint8Array(randomBytes(32)), new Uint8Array(0), 0),
      server.addr.port,
    );
    const end = performance.now() + 2000;
    while (raw.got.length === 0 && performance.now() < end) await sleep(2);
    assert.ok(helloVerifyCookie(raw.got[0]!), "no HelloVerifyRequest");
    // Datagrams right after the hello are read as they come, not after a 300 ms batch.
    for (let i = 0; i < 3; i++) {
      const before = server.stats.dropped.noSession;
      const sent = performance.now();
      await raw.send(new Uint8Array(20), server.addr.port);
      while (server.stats.dropped.noSession === before && performance.now() - sent < 2000) {
        await sleep(2);
      }
      assert.ok(
        performance.now() - sent < 150,
        `datagram ${i} read ${performance.now() - sent} ms late`,
      );
      await sleep(20);
    }
    assert.equal(sock!.batchWaits, 0);
  } finally {
    await raw.close();
    await server.close();
  }
});
