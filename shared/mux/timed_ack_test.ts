/**
 * Timed ACKs (packer.ts): an ACK for a run of packets read in one go carries, ahead of
 * itself, up to 8 ACK frames that each acknowledge up to one packet of the run with that
 * packet's own ACK delay, so the sender learns when they arrived. Fake clock, 50 ms RTT,
 * 50 Mbit/s: the receiver's ACKs during a download, decoded off the wire.
 */
import assert from "node:assert/strict";
import { decodeFrame, decodePacketHeader, FrameType } from "./frames.ts";
import { download, memoryPair } from "./testing/harness.ts";
import { Reader } from "./wire.ts";
import { TUNNEL_MUX_PARAMS } from "../tunnel_params.ts";

/** The ACK frames of a packet as [largest, delay ms]. */
function acks(d: Uint8Array): [number, number][] {
  const r = new Reader(d);
  decodePacketHeader(r);
  const out: [number, number][] = [];
  while (r.remaining > 0 && r.error === null) {
    const f = decodeFrame(r);
    if (f === null) break;
    if (f.type === FrameType.ACK) out.push([f.ranges[0]!, f.ackDelayUs / 1000]);
  }
  return out;
}

Deno.test("mux timed ACKs: the first runs' ACKs say when their packets arrived; later ones do not", async () => {
  const p = memoryPair(
    { delayMs: 25, rateBytesPerMs: 6250, queueBytes: 470_000 },
    TUNNEL_MUX_PARAMS,
  );
  const arrived = new Map<number, number>();
  const client = p.link.a; // the download's receiver
  const receive = client.receive.bind(client);
  client.receive = (d: Uint8Array) => {
    arrived.set(decodePacketHeader(new Reader(d)), p.clock.now());
    receive(d);
  };
  const timed: { at: number; frames: [number, number][] }[] = [];
  let plain = 0;
  const ab = p.link.ab;
  const transmit = ab.transmit.bind(ab);
  ab.transmit = (d: Uint8Array, mtu?: number) => {
    const frames = acks(d);
    if (frames.length > 1) timed.push({ at: p.clock.now(), frames });
    else if (frames.length === 1) plain++;
    transmit(d, mtu);
  };
  try {
    await p.sleep(100);
    await download(p, 4 << 20);
    assert.equal(p.server.stats.spuriousLosses, 0);
    assert.ok(timed.length > 0 && timed.length <= 8, `${timed.length} timed ACKs`);
    assert.ok(plain > 10 * timed.length, `${plain} plain ACKs`);
    for (const { at, frames } of timed) {
      assert.ok(frames.length <= 9);
      for (let i = 0; i < frames.length; i++) {
        const [pn, delay] = frames[i]!;
        if (i > 0) assert.ok(pn > frames[i - 1]![0], `ascending: ${JSON.stringify(frames)}`);
        // Each frame's delay is from its own packet's arrival (to the microsecond).
        const got = arrived.get(pn);
        assert.ok(
          got !== undefined && Math.abs(at - delay - got) < 0.001,
          `${pn}: ${at - delay} vs ${got}`,
        );
      }
    }
    const first = timed[0]!;
    console.log(
      `${timed.length} timed ACKs (${timed.map((t) => t.frames.length).join(", ")} frames), ` +
        `${plain} plain; the first says ${
          first.frames.map(([pn, d]) => `${pn} came ${d.toFixed(2)} ms before it`).join(", ")
        }`,
    );
  } finally {
    await p.dispose();
  }
});
