/**
 * A receiver sends only ACKs, and a window update (MAX_STREAM_DATA, MAX_DATA) rides one
 * of them: when it is lost, nothing the receiver sends afterwards is acknowledged, so its
 * loss detection had only the probe timeout to go on while the sender sat blocked. The
 * packer now makes the next ACK-only packet after an update ack-eliciting (a PING), so
 * the update's loss is found by the time threshold, ~9/8 of a round trip after it left.
 * Fake clock, 50 ms round trip, 50 Mbit/s, no random loss; the receiver's first window
 * update during a download is dropped.
 */
import assert from "node:assert/strict";
import { decodeFrame, decodePacketHeader, FrameType } from "./frames.ts";
import { download, memoryPair } from "./testing/harness.ts";
import { Reader } from "./wire.ts";
import { TUNNEL_MUX_PARAMS } from "../tunnel_params.ts";

/** A window update alone (not the request, which announces its stream's window too). */
function isWindowUpdate(d: Uint8Array): boolean {
  const r = new Reader(d);
  decodePacketHeader(r);
  let update = false;
  while (r.remaining > 0 && r.error === null) {
    const f = decodeFrame(r);
    if (f === null || f.type === FrameType.STREAM) return false;
    if (f.type === FrameType.MAX_STREAM_DATA) update = true;
  }
  return update;
}

async function run(dropUpdate: boolean) {
  const p = memoryPair({ delayMs: 25, rateBytesPerMs: 6250, queueBytes: 470_000, seed: 1 }, {
    ...TUNNEL_MUX_PARAMS,
    initialStreamWindowBytes: 256 * 1024,
    startupFirstFlightRatio: 0,
  });
  let dropped = 0;
  const ab = p.link.ab; // the client (the download's receiver) to the server
  const transmit = ab.transmit.bind(ab);
  ab.transmit = (d: Uint8Array, mtu?: number) => {
    if (dropUpdate && dropped === 0 && isWindowUpdate(d)) {
      dropped++;
      return;
    }
    transmit(d, mtu);
  };
  try {
    await p.sleep(100);
    const r = await download(p, 2 << 20);
    return { ms: r.ms, gapMs: r.gapMs, dropped };
  } finally {
    await p.dispose();
  }
}

Deno.test("mux window updates: a lost MAX_STREAM_DATA is found within ~1.5 round trips, not a probe timeout", async () => {
  const clean = await run(false);
  const lost = await run(true);
  console.log(
    `2 MiB download: ${clean.ms.toFixed(0)} ms (longest read gap ${clean.gapMs.toFixed(0)} ms); ` +
      `first update lost: ${lost.ms.toFixed(0)} ms (longest read gap ${lost.gapMs.toFixed(0)} ms)`,
  );
  assert.equal(lost.dropped, 1);
  // The update is resent ~9/8 RTT after it left and takes half a round trip to arrive:
  // ~81 ms at most (the probe timeout took ~230).
  assert.ok(lost.ms - clean.ms < 90, `${lost.ms - clean.ms} ms more`);
  assert.ok(lost.gapMs < 100, `reads stopped for ${lost.gapMs} ms`);
});
