/** Session behaviour on the fake-clock memory link: timeouts, keepalive, limits, GOAWAY. */
import assert from "node:assert/strict";
import { MuxSessionError, SessionErrorCode } from "./errors.ts";
import type { MuxStream } from "./stream.ts";
import { FakeClock } from "./testing/fake_clock.ts";
import {
  memoryPair,
  randomBytes,
  readAll,
  sessionPair,
  sha256,
  transfer,
  writeAll,
} from "./testing/harness.ts";
import { createLinkPair } from "./testing/lossy_link.ts";

Deno.test("mux session: one small stream round trip, ping measures the RTT", async () => {
  const p = memoryPair({ delayMs: 7 });
  await transfer(p, randomBytes(1, 5000));
  const rtt = await p.wait(p.client.ping(), "ping");
  assert.ok(rtt >= 14 && rtt <= 14 + p.client.params.maxAckDelayMs, `rtt ${rtt}`);
  assert.ok(Math.abs(p.client.rtt.smoothedMs - 14) < 5, `srtt ${p.client.rtt.smoothedMs}`);
  await p.dispose();
});

Deno.test("mux session: an idle session with keepalive stays open past the idle timeout", async () => {
  const p = memoryPair({}, { idleTimeoutMs: 2000, keepAliveIntervalMs: 500 });
  await p.sleep(20_000);
  assert.equal(p.client.isClosed, false);
  assert.equal(p.server.isClosed, false);
  assert.ok(p.client.stats.packetsSent > 10, "keepalive PINGs were sent");
  await p.dispose();
});

Deno.test("mux session: a vanished peer is detected (keepalive unanswered, idle timeout)", async () => {
  const p = memoryPair({}, { idleTimeoutMs: 2000, keepAliveIntervalMs: 500 });
  const s = p.client.openStream();
  const reading = readAll(s.readable).then(() => null, (e) => e);
  await p.sleep(1000);
  p.link.ab.blackhole = true;
  p.link.ba.blackhole = true;
  const t0 = p.clock.now();
  const info = await p.wait(p.client.closed, "client detects dead peer", 10_000);
  const took = p.clock.now() - t0;
  assert.equal(info.code, SessionErrorCode.IDLE_TIMEOUT);
  assert.equal(info.remote, false);
  assert.ok(took <= 2000, `took ${took} ms`);
  const err = await p.wait(reading, "stream fails");
  assert.ok(err instanceof MuxSessionError && err.code === SessionErrorCode.IDLE_TIMEOUT);
  await p.dispose();
});

Deno.test("mux session: idle timeout closes a session whose peer never answers", async () => {
  const clock = new FakeClock();
  const l = createLinkPair({ clock });
  l.ab.blackhole = true;
  l.ba.blackhole = true;
  const p = sessionPair(l.a, l.b, {
    clock,
    params: { idleTimeoutMs: 3000, keepAliveIntervalMs: 1000 },
  });
  const info = await p.wait(p.client.closed, "idle", 10_000);
  assert.equal(info.code, SessionErrorCode.IDLE_TIMEOUT);
  assert.ok(clock.now() - 1000 >= 3000);
  await p.dispose();
});

Deno.test("mux session: the peer may not exceed the concurrent stream limit", async () => {
  const p = memoryPair({}, { maxIncomingStreams: 4 });
  let open = 0;
  let maxOpen = 0;
  const served: Promise<void>[] = [];
  const acceptor = (async () => {
    for (;;) {
      const s = await p.server.acceptStream();
      if (s === null) return;
      open++;
      maxOpen = Math.max(maxOpen, open);
      served.push(
        s.readable.pipeTo(s.writable).then(() => {
          open--;
        }),
      );
    }
  })();
  const jobs: Promise<void>[] = [];
  for (let i = 0; i < 12; i++) {
    const s = p.client.openStream();
    const data = randomBytes(i + 1, 20_000);
    jobs.push((async () => {
      const w = writeAll(s, data);
      const got = await readAll(s.readable);
      await w;
      assert.equal(got.sha, sha256(data));
    })());
  }
  await p.wait(Promise.all(jobs), "12 streams through a limit of 4");
  assert.ok(maxOpen <= 4, `server saw ${maxOpen} streams at once`);
  assert.ok(maxOpen >= 2, "streams did run concurrently");
  await p.dispose();
  await acceptor;
});

Deno.test("mux session: GOAWAY stops new streams, existing ones finish", async () => {
  const p = memoryPair();
  const s = p.client.openStream();
  const data = randomBytes(9, 300_000);
  const w = writeAll(s, data);
  const ss = await p.wait(p.server.acceptStream(), "accept");
  assert.ok(ss);
  p.server.goAway();
  await p.wait(p.client.goAwayReceived, "goaway arrives");
  assert.throws(() => p.client.openStream(), MuxSessionError);
  const got = await p.wait(readAll(ss.readable), "existing stream completes");
  await p.wait(w, "write");
  assert.equal(got.sha, sha256(data));
  await p.dispose();
});

Deno.test("mux session: datagrams never exceed maxDatagramSize", async () => {
  const p = memoryPair({ mtu: 300 });
  await transfer(p, randomBytes(4, 100_000));
  assert.equal(p.link.ab.stats.oversize, 0);
  assert.equal(p.link.ba.stats.oversize, 0);
  assert.ok(p.link.ab.stats.sent > 100_000 / 300);
  await p.dispose();
});

Deno.test("mux session: a slower link (bottleneck) is not flooded: few queue drops", async () => {
  // 1 MB/s link with a 64 KiB queue; cwnd + pacing must keep drops to a trickle.
  const p = memoryPair({ delayMs: 10, rateBytesPerMs: 1000, queueBytes: 64 * 1024 });
  await transfer(p, randomBytes(4, 4 * 1024 * 1024));
  const st = p.link.ab.stats;
  assert.ok(st.queueDrops < st.sent * 0.03, `${st.queueDrops} drops of ${st.sent}`);
  await p.dispose();
});

Deno.test("mux session: control frames jump the queue (window update under a full send queue)", async () => {
  // Many streams saturate the sender; a RESET on one of them must still reach the
  // peer within a few RTTs rather than after the queued data.
  const p = memoryPair({ delayMs: 10, rateBytesPerMs: 2000, queueBytes: 256 * 1024 });
  const streams: MuxStream[] = [];
  const pumps: Promise<unknown>[] = [];
  for (let i = 0; i < 8; i++) {
    const s = p.client.openStream();
    streams.push(s);
    pumps.push(writeAll(s, randomBytes(i, 2 * 1024 * 1024)).catch((e) => e));
  }
  const accepted: MuxStream[] = [];
  await p.until(() => {
    void p.server.acceptStream().then((s) => s && accepted.push(s));
    return accepted.length >= 1;
  }, "first stream");
  await p.sleep(200);
  const victim = streams[0]!;
  const t0 = p.clock.now();
  const sv = accepted.find((s) => s.id === victim.id);
  assert.ok(sv);
  const failed = readAll(sv.readable).then(() => false, () => true);
  victim.reset(9);
  assert.equal(await p.wait(failed, "reset arrives"), true);
  const took = p.clock.now() - t0;
  assert.ok(took < 500, `RESET took ${took} ms behind queued data`);
  await p.dispose();
  await Promise.all(pumps);
});
