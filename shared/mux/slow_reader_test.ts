/**
 * Slow readers must not stall their session (flow.ts has the design): 50 streams whose
 * reader stopped, each with a sender trying to push 200 MiB, while new request/response
 * streams on the same session keep completing and the receiver's buffered bytes stay
 * under maxSessionWindowBytes. Memory link (10 ms RTT), fake clock, tunnel params.
 */
import assert from "node:assert/strict";
import { MuxStreamError } from "./errors.ts";
import { SessionReceiveWindow } from "./flow.ts";
import { resolveParams, WIRE_INITIAL_STREAM_WINDOW_BYTES } from "./params.ts";
import type { MuxSession } from "./session.ts";
import type { MuxStream } from "./stream.ts";
import { memoryPair, randomBytes, sha256 } from "./testing/harness.ts";
import { TUNNEL_MUX_PARAMS } from "../tunnel_params.ts";

const STALLED = 50;
const STALLED_BYTES = 200 * 1024 * 1024;
const EXCHANGES = 200;
const CHUNK = new Uint8Array(64 * 1024).fill(7);
const PARAMS = resolveParams(TUNNEL_MUX_PARAMS);
/** What a session's receive buffers may hold at most (flow.ts). */
const BOUND = PARAMS.maxSessionWindowBytes;

type Pair = ReturnType<typeof memoryPair>;

/** Ids of the streams the server must not read (or only as the test says). */
const stalledIds = new Set<number>();

/**
 * Opens a stream whose reader will stall and writes the same 64 KiB chunk on it until
 * `total` bytes or the stream fails; returns which.
 */
async function pump(client: MuxSession, total: number): Promise<number | unknown> {
  const s = client.openStream();
  stalledIds.add(s.id);
  let sent = 0;
  try {
    while (sent < total) {
      await s.write(CHUNK);
      sent += CHUNK.length;
    }
    s.close();
    return sent;
  } catch (e) {
    return e;
  }
}

async function readToEnd(s: MuxStream): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for (;;) {
    const c = await s.read();
    if (c === null) break;
    parts.push(c);
  }
  const out = new Uint8Array(parts.reduce((n, c) => n + c.length, 0));
  let pos = 0;
  for (const c of parts) out.set(c, pos), pos += c.length;
  return out;
}

/**
 * The server: streams opened by `pump` are handed to `onStalled` (which reads some or
 * none, then stops); every other one is a request, echoed if longer than 300 bytes, else
 * answered with `respBytes` bytes.
 */
function serve(server: MuxSession, onStalled: (s: MuxStream) => void, respBytes: number) {
  const response = randomBytes(99, respBytes);
  return (async () => {
    for (;;) {
      const s = await server.acceptStream();
      if (s === null) return;
      if (stalledIds.has(s.id)) {
        onStalled(s);
        continue;
      }
      void (async () => {
        const req = await readToEnd(s);
        if (req.length === 0) throw new Error("empty request");
        await s.write(req.length > 300 ? req : response);
        s.close();
      })().catch(() => {});
    }
  })();
}

/** One request/response on a new stream; returns its fake-time latency in ms. */
async function exchange(p: Pair, respBytes: number): Promise<number> {
  const t0 = p.clock.now();
  const s = p.client.openStream();
  await s.write(randomBytes(1, 300));
  s.close();
  const got = await p.wait(readToEnd(s), "response", 30_000);
  assert.equal(got.length, respBytes);
  return p.clock.now() - t0;
}

/** Sends `n` bytes on a new stream, which the server echoes; returns fake ms taken. */
async function bulk(p: Pair, n: number): Promise<number> {
  const t0 = p.clock.now();
  const data = randomBytes(5, n);
  const s = p.client.openStream();
  const writing = (async () => {
    for (let i = 0; i < n; i += 256 * 1024) await s.write(data.subarray(i, i + 256 * 1024));
    s.close();
  })();
  const got = await p.wait(readToEnd(s), "bulk echo", 60_000);
  await writing;
  assert.equal(sha256(got), sha256(data));
  return Math.round(p.clock.now() - t0);
}

function quantile(sorted: number[], f: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(f * sorted.length))]!;
}

/** Starts the 50 stalled streams and lets the receiver fill whatever it will hold. */
async function stallFifty(p: Pair, stalled: MuxStream[]) {
  const pumps: Promise<unknown>[] = [];
  for (let i = 0; i < STALLED; i++) pumps.push(pump(p.client, STALLED_BYTES));
  await p.until(() => stalled.length === STALLED, "stalled streams accepted", 10_000);
  await p.sleep(3000);
  return pumps;
}

/** 200 exchanges, sequential (a request loop); returns latencies and the largest buffer seen. */
async function requestLoop(p: Pair, label: string) {
  let maxBuffered = p.server.stats.recvBufferedBytes;
  const times: number[] = [];
  for (let i = 0; i < EXCHANGES; i++) {
    times.push(await exchange(p, 2000));
    maxBuffered = Math.max(maxBuffered, p.server.stats.recvBufferedBytes);
  }
  times.sort((a, b) => a - b);
  const p50 = Math.round(quantile(times, 0.5) * 10) / 10;
  const p99 = Math.round(quantile(times, 0.99) * 10) / 10;
  console.log(
    `  ${label}: ${EXCHANGES} exchanges p50 ${p50} ms, p99 ${p99} ms, max ${
      Math.round(times.at(-1)! * 10) / 10
    } ms ` +
      `(RTT 10 ms); receiver buffers up to ${maxBuffered} B (bound ${BOUND} B)`,
  );
  assert.ok(p99 < 1000, `p99 ${p99} ms`);
  assert.ok(maxBuffered <= BOUND, `receiver buffered ${maxBuffered} > bound ${BOUND}`);
  return { p50, p99, maxBuffered };
}

for (
  const [label, link] of [
    ["", { delayMs: 5 }],
    [" (1% loss)", { delayMs: 5, loss: 0.01, seed: 11 }],
  ] as const
) {
  Deno.test(`mux slow readers: 50 streams never read do not stall new request/response streams${label}`, async () => {
    stalledIds.clear();
    const p = memoryPair(link, TUNNEL_MUX_PARAMS);
    const stalled: MuxStream[] = [];
    const serving = serve(p.server, (s) => stalled.push(s), 2000);
    try {
      const base = await requestLoop(p, "no stalled streams");
      await bulk(p, 8 << 20); // warms up cwnd and RTT, as the session is later
      const baseBulk = await bulk(p, 8 << 20);
      const pumps = await stallFifty(p, stalled);
      const parked = p.server.stats.recvBufferedBytes;
      // A stream nobody reads keeps the wire's initial credit, no more.
      assert.equal(parked, STALLED * WIRE_INITIAL_STREAM_WINDOW_BYTES);
      const r = await requestLoop(p, `beside ${STALLED} streams never read`);
      if (link.loss === undefined) assert.ok(r.p99 <= 2 * base.p99, `p99 ${r.p99} ms`);
      // A bulk stream still gets its window.
      const ms = await bulk(p, 8 << 20);
      console.log(`  8 MiB echoed in ${baseBulk} ms alone, ${ms} ms beside them`);
      assert.ok(ms < 1.5 * baseBulk, `bulk took ${ms} ms`);
      assert.ok(p.server.stats.recvBufferedBytes <= BOUND);
      for (const s of stalled) s.abort(0x10);
      await p.wait(Promise.all(pumps), "pumps end", 10_000);
    } finally {
      await p.dispose();
      await serving;
    }
  });
}

Deno.test("mux slow readers: stalled streams that grew their windows first do not stall the session", async () => {
  // Worst case for the pool: streams that each had the session to themselves read 16 MiB
  // (their windows grew, to 1-4 MiB on this link), then stopped, one after another until
  // the pool is spent; the rest of the 50 never read at all.
  stalledIds.clear();
  const p = memoryPair({ delayMs: 5 }, TUNNEL_MUX_PARAMS);
  const stalled: MuxStream[] = [];
  const grown = 10;
  let readersDone = 0;
  const serving = serve(p.server, (s) => {
    stalled.push(s);
    if (stalled.length > grown) return;
    void (async () => {
      let got = 0;
      while (got < 16 << 20) got += (await s.read())?.length ?? Infinity;
      readersDone++;
    })().catch(() => {});
  }, 2000);
  try {
    const pumps: Promise<unknown>[] = [];
    for (let i = 0; i < STALLED; i++) {
      pumps.push(pump(p.client, STALLED_BYTES));
      if (i < grown) await p.until(() => readersDone === i + 1, `reader ${i} stops`, 60_000);
    }
    await p.until(() => stalled.length === STALLED, "stalled streams accepted", 10_000);
    await p.sleep(3000);
    const st = p.server.stats;
    const pool = PARAMS.maxSessionWindowBytes * (1 - PARAMS.streamWindowReserveRatio) -
      PARAMS.initialSessionWindowBytes;
    console.log(
      `  ${grown} streams grew then stopped, ${STALLED - grown} never read: receiver holds ` +
        `${st.recvBufferedBytes} B (stream credit ${st.recvStreamCreditBytes} B, pool ${pool} B)`,
    );
    assert.ok(st.recvStreamCreditBytes > pool * 0.9, "the pool is spent");
    assert.ok(st.recvBufferedBytes <= BOUND);
    await requestLoop(p, `beside ${grown} grown + ${STALLED - grown} unread stalled streams`);
    // A new bulk stream is down to the 64 KiB floor per RTT, but moves.
    const ms = await bulk(p, 1 << 20);
    console.log(`  1 MiB echoed beside them in ${ms} ms`);
    assert.ok(p.server.stats.recvBufferedBytes <= BOUND);
    for (const s of stalled) s.abort(0x10);
    await p.wait(Promise.all(pumps), "pumps end", 10_000);
  } finally {
    await p.dispose();
    await serving;
  }
});

Deno.test("mux slow readers: resetting the stalled streams frees their buffers, the session goes on", async () => {
  stalledIds.clear();
  const p = memoryPair({ delayMs: 5 }, TUNNEL_MUX_PARAMS);
  const stalled: MuxStream[] = [];
  const serving = serve(p.server, (s) => stalled.push(s), 2000);
  try {
    const pumps = await stallFifty(p, stalled);
    assert.ok(p.server.stats.recvBufferedBytes > 0);
    // The callers left: the server abandons their streams (RESET + STOP_SENDING).
    for (const s of stalled) s.abort(0x10);
    assert.equal(p.server.stats.recvBufferedBytes, 0, "dropped at once");
    const results = await p.wait(Promise.all(pumps), "senders see the reset", 10_000);
    for (const r of results) assert.ok(r instanceof MuxStreamError && r.code === 0x10, String(r));
    await p.until(
      () => p.client.activeStreams === 0 && p.server.activeStreams === 0,
      "stalled streams freed",
      10_000,
    );
    assert.equal(p.server.stats.recvBufferedBytes, 0);
    assert.equal(p.server.stats.recvStreamCreditBytes, 0);
    assert.equal(p.client.stats.sendBufferedBytes, 0);
    // Everything continues: requests, and bulk both ways.
    for (let i = 0; i < 20; i++) assert.ok((await exchange(p, 2000)) <= 20);
    const ms = await bulk(p, 8 << 20);
    console.log(`  after the reset, 8 MiB echoed in ${ms} ms`);
    await p.until(() => p.server.activeStreams === 0, "all freed", 10_000);
    assert.equal(p.server.stats.bufferedBytes, 0);
    assert.equal(p.server.stats.recvStreamCreditBytes, 0);
  } finally {
    await p.dispose();
    await serving;
  }
});

Deno.test("mux slow readers: stream windows share the session pool", () => {
  const p = PARAMS;
  const sw = new SessionReceiveWindow({
    maxBytes: p.maxSessionWindowBytes,
    headroomBytes: p.initialSessionWindowBytes,
    reserveBytes: p.maxSessionWindowBytes * p.streamWindowReserveRatio,
    shareRatio: p.streamWindowShareRatio,
    floorBytes: WIRE_INITIAL_STREAM_WINDOW_BYTES,
  });
  // Alone, a stream may reach the per-stream maximum: bulk throughput as before.
  assert.ok(sw.streamCap(0) >= p.maxStreamWindowBytes, `lone cap ${sw.streamCap(0)}`);
  // Streams that took their share and stalled leave less to the next, never below 64 KiB.
  let held = 0;
  for (let i = 0; i < 50; i++) {
    const cap = Math.min(p.maxStreamWindowBytes, sw.streamCap(0));
    sw.streamCredit += cap;
    held += cap;
  }
  assert.equal(sw.streamCap(0), WIRE_INITIAL_STREAM_WINDOW_BYTES);
  // Even then the session limit leaves the headroom to new streams, within the cap.
  const before = sw.update();
  assert.ok(before - sw.consumed <= p.maxSessionWindowBytes);
  assert.ok(before - sw.consumed >= held + p.initialSessionWindowBytes - 1);
});

Deno.test("mux slow readers: our streams count against the pool once the peer may know of them", async () => {
  const p = memoryPair({ delayMs: 5 }, TUNNEL_MUX_PARAMS);
  try {
    const opened = Array.from({ length: 300 }, () => p.client.openStream());
    // Each is announced with the initial window while the at-open budget (a quarter of
    // the pool, over all our streams the peer has not sent on yet) holds; then one with
    // what is left of it, then the rest with the wire default.
    const pool = PARAMS.maxSessionWindowBytes * (1 - PARAMS.streamWindowReserveRatio) -
      PARAMS.initialSessionWindowBytes;
    const windows: number[] = [];
    let budget = pool / 4;
    for (let i = 0; i < opened.length; i++) {
      const extra = Math.min(
        PARAMS.initialStreamWindowBytes - WIRE_INITIAL_STREAM_WINDOW_BYTES,
        budget,
      );
      windows.push(WIRE_INITIAL_STREAM_WINDOW_BYTES + extra);
      budget -= extra;
    }
    assert.ok(
      windows[0] === PARAMS.initialStreamWindowBytes &&
        windows.at(-1) === WIRE_INITIAL_STREAM_WINDOW_BYTES,
    );
    const sum = (n: number) => windows.slice(0, n).reduce((a, b) => a + b, 0);
    // Before the peer's MAX_STREAMS arrives only the wire's 4 streams may go out.
    assert.equal(p.client.stats.recvStreamCreditBytes, sum(4));
    await p.sleep(100);
    assert.equal(p.client.stats.recvStreamCreditBytes, sum(PARAMS.maxIncomingStreams));
    for (const s of opened) s.abort(1);
    await p.until(() => p.client.activeStreams === 0, "freed", 10_000);
    assert.equal(p.client.stats.recvStreamCreditBytes, 0);
  } finally {
    await p.dispose();
  }
});
