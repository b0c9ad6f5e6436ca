/** Path MTU discovery: the search itself, and sessions on a memory link whose path MTU is below the ceiling. */
import assert from "node:assert/strict";
import { PathMtu } from "./pmtud.ts";
import { memoryPair, randomBytes, readAll, sha256, transfer, writeAll } from "./testing/harness.ts";

function search(mtu: number, ceiling = 16384): PathMtu {
  const pm = new PathMtu({
    baseBytes: 1200,
    ceilingBytes: ceiling,
    maxProbes: 3,
    granularityBytes: 16,
    raiseIntervalMs: 600_000,
    blackHoleLostPackets: 6,
  });
  for (let i = 0; i < 200; i++) {
    const size = pm.probeSize(0);
    if (size === 0) break;
    pm.onProbeSent(size);
    if (size <= mtu) pm.onProbeAcked(size, 0);
    else pm.onProbeLost(size, 0);
  }
  return pm;
}

Deno.test("mux pmtud: the search converges to the largest size within granularity of the path MTU", () => {
  for (const mtu of [1200, 1452, 1500, 3000, 9000, 16383, 16384, 20000]) {
    const pm = search(mtu);
    const want = Math.min(mtu, 16384);
    assert.ok(pm.size <= want && pm.size > want - 16, `mtu ${mtu}: size ${pm.size}`);
    assert.equal(pm.searching, false);
    assert.equal(pm.probeSize(1000), 0, "no probes until the raise timer");
  }
  assert.equal(search(20000).probesSent, 1, "an open path takes one probe");
  const small = search(16384, 576);
  assert.equal(small.size, 576, "base is capped at the ceiling");
  assert.equal(small.probesSent, 0);
});

Deno.test("mux pmtud: full-size packets lost in a row fall back to base and search again", () => {
  const pm = search(9000);
  const found = pm.size;
  for (let i = 0; i < 5; i++) assert.equal(pm.onPacketLost(found, 0), false);
  pm.onPacketAcked(found); // one got through: not a black hole
  for (let i = 0; i < 5; i++) assert.equal(pm.onPacketLost(found, 0), false);
  assert.equal(pm.onPacketLost(found, 0), false, "congestion: nothing small got through either");
  pm.onPacketAcked(1000); // a small packet did
  assert.equal(pm.onPacketLost(found, 0), true);
  assert.equal(pm.size, 1200);
  assert.equal(pm.blackHoles, 1);
  const next = pm.probeSize(0);
  assert.ok(next > 1200 && next < found, `re-search below the failed size: ${next}`);
});

async function transferBytes(p: ReturnType<typeof memoryPair>, bytes: number, seed: number) {
  const ss = await transfer(p, randomBytes(seed, bytes));
  ss.writable.close().catch(() => {});
}

Deno.test("mux pmtud: a session that sends only small messages never probes; on an open path the first bulk transfer reaches the ceiling", async () => {
  const p = memoryPair({ mtu: 16384 });
  try {
    // Small exchanges only (what an idle tunnel does): nothing fills a packet.
    const s = p.client.openStream();
    const w = writeAll(s, randomBytes(1, 500));
    const ss = await p.wait(p.server.acceptStream(), "accept");
    assert.ok(ss);
    assert.equal((await p.wait(readAll(ss.readable), "read")).bytes, 500);
    await p.wait(w, "write");
    await p.sleep(50); // 5 round trips of 10 ms
    assert.equal(p.client.stats.mtuProbesSent, 0, "no probe from the client");
    assert.equal(p.server.stats.mtuProbesSent, 0, "no probe from the server");
    assert.equal(p.client.packetSize, 1200);
    assert.equal(p.link.ab.stats.largestDelivered <= 1200, true);
    // Bulk: the first full packet starts the search, which ends at the ceiling.
    await transferBytes(p, 1024 * 1024, 1);
    assert.equal(p.client.packetSize, 16384);
    assert.equal(p.client.stats.mtuProbesSent, 1, "an open path takes one probe");
    assert.equal(p.link.ab.stats.largestDelivered, 16384);
    assert.equal(p.server.stats.mtuProbesSent, 0, "the server sent nothing big");
  } finally {
    await p.dispose();
  }
});

Deno.test("mux pmtud: at 1% loss under a 16 KiB ceiling, converges to the path MTU and stays under it", async () => {
  const p = memoryPair({ mtu: 16384, pathMtu: 3000, loss: 0.01, seed: 8 });
  try {
    await transferBytes(p, 2 * 1024 * 1024, 2);
    await p.until(() => !p.client.stats.mtuSearching, "search done", 60_000);
    const size = p.client.packetSize;
    assert.ok(size <= 3000 && size > 3000 - 16, `converged to ${size}`);
    assert.equal(p.client.stats.mtuBlackHoles, 0);
    const dropsAfter = p.link.ab.stats.pathMtuDrops;
    await transferBytes(p, 2 * 1024 * 1024, 3);
    assert.equal(
      p.link.ab.stats.pathMtuDrops,
      dropsAfter,
      "nothing above the path MTU after convergence",
    );
    assert.equal(p.link.ab.stats.largestDelivered, size);
    // Lost probes are not congestion: they are not counted as lost packets.
    assert.ok(p.client.stats.mtuProbesLost >= 3);
  } finally {
    await p.dispose();
  }
});

Deno.test("mux pmtud: a path MTU that drops mid-transfer is a black hole: fall back, find the new MTU", async () => {
  const p = memoryPair({ mtu: 16384 });
  try {
    await transferBytes(p, 256 * 1024, 5); // converges during it
    assert.equal(p.client.packetSize, 16384);
    const data = randomBytes(4, 4 * 1024 * 1024);
    const s = p.client.openStream();
    const w = writeAll(s, data);
    const ss = await p.wait(p.server.acceptStream(), "accept");
    assert.ok(ss);
    const reading = readAll(ss.readable);
    await p.sleep(30);
    p.link.ab.pathMtu = 1400; // the route changed
    const got = await p.wait(reading, "read");
    await p.wait(w, "write");
    assert.equal(got.sha, sha256(data));
    assert.ok(p.client.stats.mtuBlackHoles >= 1);
    await p.sleep(2000);
    const size = p.client.packetSize;
    assert.ok(size <= 1400 && size > 1400 - 16, `re-converged to ${size}`);
  } finally {
    await p.dispose();
  }
});
