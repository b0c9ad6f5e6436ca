/**
 * One conformance suite for the mux, run over every transport (memory link on
 * fake time at several loss profiles, plain UDP, DTLS): pion's nettest idea.
 */
import assert from "node:assert/strict";
import { MuxSessionError, MuxStreamError } from "../errors.ts";
import type { MuxParams } from "../params.ts";
import type { MuxSession } from "../session.ts";
import type { MuxStream } from "../stream.ts";
import { prng } from "./fake_clock.ts";
import { randomBytes, readAll, type SessionPair, sha256, writeAll } from "./harness.ts";

export type PairFactory = (params?: Partial<MuxParams>) => Promise<SessionPair>;

export interface SuiteOptions {
  /** Bytes for the single-stream transfer (16 MiB in the full suite). */
  bigBytes: number;
  /** Concurrent streams and their largest size. */
  streams: number;
  maxStreamBytes: number;
  /** Deno.test sanitizers (real sockets need them on; they are). */
  sanitize?: boolean;
}

/** Echoes every accepted stream back to its sender. */
function echoServer(server: MuxSession): Promise<void> {
  return (async () => {
    for (;;) {
      const s = await server.acceptStream();
      if (s === null) return;
      s.readable.pipeTo(s.writable).catch(() => {});
    }
  })();
}

export function defineConformanceSuite(label: string, make: PairFactory, o: SuiteOptions): void {
  const test = (name: string, fn: () => Promise<void>) =>
    Deno.test({ name: `mux/${label}: ${name}`, fn });

  test(`${o.bigBytes >> 20} MiB through one stream, SHA-256 intact`, async () => {
    const p = await make();
    try {
      const data = randomBytes(11, o.bigBytes);
      const s = p.client.openStream();
      const w = writeAll(s, data);
      const ss = await p.wait(p.server.acceptStream(), "accept");
      assert.ok(ss);
      const got = await p.wait(readAll(ss.readable), "read all");
      await p.wait(w, "writer done");
      await ss.writable.close(); // a stream is freed once both directions finished
      await p.wait(readAll(s.readable), "client sees FIN");
      assert.equal(got.bytes, data.length);
      assert.equal(got.sha, sha256(data));
      // Both sides free the stream once FIN and data are acknowledged.
      await p.until(
        () => p.client.activeStreams === 0 && p.server.activeStreams === 0,
        "streams freed",
      );
      assert.equal(p.client.stats.bufferedBytes, 0);
      assert.equal(p.server.stats.bufferedBytes, 0);
    } finally {
      await p.dispose();
    }
  });

  test(`${o.streams} concurrent streams of random sizes, echoed, none starves`, async () => {
    const p = await make();
    try {
      const echo = echoServer(p.server);
      const rand = prng(5);
      const start = p.client.stats;
      void start;
      const firstByteAt: number[] = [];
      const doneAt: number[] = [];
      const t0 = performance.now();
      let clockNow = () => performance.now() - t0;
      const jobs: Promise<void>[] = [];
      for (let i = 0; i < o.streams; i++) {
        const size = Math.floor(rand() * o.maxStreamBytes);
        const data = randomBytes(100 + i, size);
        const s = p.client.openStream();
        jobs.push((async () => {
          const w = writeAll(s, data, 16 * 1024);
          const h = await readAllTimed(s, () => {
            if (firstByteAt[i] === undefined) firstByteAt[i] = clockNow();
          });
          await w;
          doneAt[i] = clockNow();
          assert.equal(h.bytes, size, `stream ${i} length`);
          assert.equal(h.sha, sha256(data), `stream ${i} SHA-256`);
        })());
      }
      if (p.fake) {
        // Deterministic fake time: measure progress in mux packets received.
        clockNow = () => p.client.stats.packetsReceived;
      }
      await p.wait(Promise.all(jobs), "all streams echoed");
      assert.equal(doneAt.filter((x) => x !== undefined).length, o.streams);
      if (p.fake) {
        // No head-of-line blocking: every non-empty stream got bytes back before
        // the transfer was half done (a FIFO scheduler would fail this).
        const end = Math.max(...doneAt);
        for (let i = 0; i < o.streams; i++) {
          if (firstByteAt[i] !== undefined) {
            assert.ok(
              firstByteAt[i]! < end * 0.5,
              `stream ${i} starved until ${firstByteAt[i]} of ${end}`,
            );
          }
        }
      }
      await p.until(
        () => p.client.activeStreams === 0 && p.server.activeStreams === 0,
        "streams freed",
      );
      await p.dispose();
      await echo;
    } finally {
      await p.dispose();
    }
  });

  test("slow reader: sender's buffered bytes stay bounded by the windows", async () => {
    const params: Partial<MuxParams> = {
      initialStreamWindowBytes: 64 * 1024,
      maxStreamWindowBytes: 256 * 1024,
      initialSessionWindowBytes: 256 * 1024,
      maxSessionWindowBytes: 512 * 1024,
      streamSendBufferBytes: 128 * 1024,
    };
    const p = await make(params);
    try {
      const data = randomBytes(21, 4 * 1024 * 1024);
      const s = p.client.openStream();
      let accepted = 0;
      const w = (async () => {
        const writer = s.writable.getWriter();
        writer.closed.catch(() => {});
        for (let i = 0; i < data.length; i += 16 * 1024) {
          await writer.write(data.subarray(i, i + 16 * 1024));
          accepted = i + 16 * 1024;
        }
        await writer.close();
      })();
      const ss = await p.wait(p.server.acceptStream(), "accept");
      assert.ok(ss);
      // Nobody reads for a while: the sender must stop at window + send buffer (what
      // was sent waits for its ACK; what was not is at most the send buffer's limit).
      await p.sleep(2000);
      const sendLimit = params.streamSendBufferBytes!;
      const window = params.initialStreamWindowBytes!;
      assert.ok(
        p.client.stats.streamBytesSent <= window,
        `sent ${p.client.stats.streamBytesSent} > window`,
      );
      assert.ok(
        p.client.stats.sendBufferedBytes <= window + sendLimit,
        `sender buffers ${p.client.stats.sendBufferedBytes}`,
      );
      assert.ok(
        p.server.stats.recvBufferedBytes <= window,
        `receiver buffers ${p.server.stats.recvBufferedBytes}`,
      );
      assert.ok(accepted <= window + sendLimit + 16 * 1024, `writer got ahead: ${accepted}`);
      // Now read slowly and check the bounds all along.
      const reader = ss.readable.getReader();
      const chunks: Uint8Array[] = [];
      let maxSend = 0;
      let maxRecv = 0;
      for (;;) {
        const r = await p.wait(reader.read(), "slow read");
        if (r.done) break;
        chunks.push(r.value);
        maxSend = Math.max(maxSend, p.client.stats.sendBufferedBytes);
        maxRecv = Math.max(maxRecv, p.server.stats.recvBufferedBytes);
        if (chunks.length % 8 === 0) await p.sleep(5);
      }
      await p.wait(w, "writer done");
      const got = new Uint8Array(data.length);
      let pos = 0;
      for (const c of chunks) {
        got.set(c, pos);
        pos += c.length;
      }
      assert.equal(pos, data.length);
      assert.equal(sha256(got), sha256(data));
      const maxHeld = sendLimit + params.maxStreamWindowBytes!;
      assert.ok(maxSend <= maxHeld, `sender buffered ${maxSend} > ${maxHeld}`);
      assert.ok(maxRecv <= params.maxStreamWindowBytes!, `receiver buffered ${maxRecv}`);
    } finally {
      await p.dispose();
    }
  });

  test("RESET mid-transfer fails both ends and frees both sides' state", async () => {
    const p = await make();
    try {
      const s = p.client.openStream();
      const writer = s.writable.getWriter();
      const big = randomBytes(31, 64 * 1024);
      const pump = (async () => {
        for (;;) await writer.write(big);
      })();
      const ss = await p.wait(p.server.acceptStream(), "accept");
      assert.ok(ss);
      const reader = ss.readable.getReader();
      let got = 0;
      while (got < 200 * 1024) {
        const r = await p.wait(reader.read(), "read before reset");
        assert.ok(!r.done);
        got += r.value.length;
      }
      s.abort(42); // RESET_STREAM(42) + STOP_SENDING(42)
      await assert.rejects(
        p.wait(pump, "pump fails"),
        (e: unknown) => e instanceof MuxStreamError && e.code === 42,
      );
      await assert.rejects(
        p.wait(drain(reader), "reader fails"),
        (e: unknown) => e instanceof MuxStreamError && e.code === 42 && e.remote,
      );
      // The peer's send half was stopped by STOP_SENDING: its writes fail too.
      await assert.rejects(
        p.wait(ss.writable.getWriter().write(new Uint8Array(1)), "server write fails"),
        (e: unknown) => e instanceof MuxStreamError && e.code === 42 && e.remote,
      );
      await p.until(
        () => p.client.activeStreams === 0 && p.server.activeStreams === 0,
        "state freed",
      );
      assert.equal(p.client.stats.bufferedBytes, 0);
      assert.equal(p.server.stats.bufferedBytes, 0);
      // The session is still healthy.
      await roundTrip(p, 5000);
    } finally {
      await p.dispose();
    }
  });

  test("STOP_SENDING mid-transfer resets the sender and frees state", async () => {
    const p = await make();
    try {
      const s = p.client.openStream();
      const writer = s.writable.getWriter();
      const big = randomBytes(41, 64 * 1024);
      const pump = (async () => {
        for (;;) await writer.write(big);
      })();
      const ss = await p.wait(p.server.acceptStream(), "accept");
      assert.ok(ss);
      const reader = ss.readable.getReader();
      const r = await p.wait(reader.read(), "first read");
      assert.ok(!r.done);
      await reader.cancel(7); // STOP_SENDING(7)
      await assert.rejects(
        p.wait(pump, "pump fails"),
        (e: unknown) => e instanceof MuxStreamError && e.code === 7 && e.remote,
      );
      // The other direction still works and finishes normally.
      const back = randomBytes(3, 3000);
      const bw = writeAll(ss, back);
      const got = await p.wait(readAll(s.readable), "other direction");
      await p.wait(bw, "other direction written");
      assert.equal(got.sha, sha256(back));
      await p.until(
        () => p.client.activeStreams === 0 && p.server.activeStreams === 0,
        "state freed",
      );
      assert.equal(p.client.stats.bufferedBytes, 0);
      await roundTrip(p, 100);
    } finally {
      await p.dispose();
    }
  });

  test("graceful close drains written data, then both ends close", async () => {
    const p = await make();
    try {
      const data = randomBytes(51, 512 * 1024);
      const s = p.client.openStream();
      const w = writeAll(s, data);
      const accepted = p.server.acceptStream();
      await p.wait(w, "writes buffered");
      const closing = p.client.close("bye");
      const ss = await p.wait(accepted, "accept");
      assert.ok(ss);
      const got = await p.wait(readAll(ss.readable), "read all");
      assert.equal(got.sha, sha256(data));
      const info = await p.wait(closing, "client closed");
      assert.equal(info.code, 0);
      assert.equal(info.remote, false);
      const peer = await p.wait(p.server.closed, "server closed");
      assert.equal(peer.code, 0);
      assert.equal(peer.remote, true);
      assert.equal(peer.reason, "bye");
      assert.throws(() => p.client.openStream(), MuxSessionError);
    } finally {
      await p.dispose();
    }
  });
}

async function readAllTimed(s: MuxStream, onFirst: () => void) {
  const chunks: Uint8Array[] = [];
  let n = 0;
  for await (const c of s.readable) {
    if (c.length > 0) onFirst();
    chunks.push(c);
    n += c.length;
  }
  const all = new Uint8Array(n);
  let pos = 0;
  for (const c of chunks) {
    all.set(c, pos);
    pos += c.length;
  }
  return { bytes: n, sha: sha256(all) };
}

async function drain(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<void> {
  for (;;) {
    const r = await reader.read();
    if (r.done) return;
  }
}

/** Opens a stream, sends `n` bytes, expects them echoed by a one-shot echo. */
async function roundTrip(p: SessionPair, n: number): Promise<void> {
  const data = randomBytes(n, n);
  const s = p.client.openStream();
  const w = writeAll(s, data);
  const ss = await p.wait(p.server.acceptStream(), "accept");
  assert.ok(ss);
  void ss.readable.pipeTo(ss.writable).catch(() => {});
  const got = await p.wait(readAll(s.readable), "echo");
  await p.wait(w, "write");
  assert.equal(got.sha, sha256(data));
}
