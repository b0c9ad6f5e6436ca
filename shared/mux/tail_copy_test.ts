/**
 * Tail copies (packer.ts, `tailCopyLossRatio`): on a path losing packets at random, what a
 * stream sent in its last half round trip goes out once more when the send queue runs
 * empty, so a loss there costs no round trip. Fake clock, tunnel params, the WAN lab's P3
 * path (100 ms, 20 Mbit/s, 3 % random loss each way), 40 KiB answers one after another on
 * a tunnel that already carried a download.
 */
import assert from "node:assert/strict";
import { TUNNEL_MUX_PARAMS } from "../tunnel_params.ts";
import type { MuxParams } from "./params.ts";
import { download, memoryPair } from "./testing/harness.ts";

const SIZE = 40 * 1024;
const COUNT = 20;

async function answers(loss: number, params: Partial<MuxParams>) {
  const times: number[] = [];
  let copied = 0;
  let sent = 0;
  for (let seed = 3; seed <= 6; seed++) {
    const link = { delayMs: 50, rateBytesPerMs: 2500, queueBytes: 375_000, loss, seed };
    const p = memoryPair(link, { ...TUNNEL_MUX_PARAMS, ...params });
    try {
      await download(p, 4 << 20);
      const s0 = p.server.stats;
      for (let i = 0; i < COUNT; i++) times.push((await download(p, SIZE, i)).ms);
      copied += p.server.stats.tailCopyBytes - s0.tailCopyBytes;
      sent += p.server.stats.bytesSent - s0.bytesSent;
    } finally {
      await p.dispose();
    }
  }
  times.sort((a, b) => a - b);
  const mean = times.reduce((a, b) => a + b) / times.length;
  const median = times[times.length >> 1]!;
  return { mean, median, copied, sentRatio: sent / (times.length * SIZE) };
}

const fmt = (r: Awaited<ReturnType<typeof answers>>) =>
  `mean ${r.mean.toFixed(0)} ms, median ${r.median.toFixed(0)} ms, ` +
  `${r.sentRatio.toFixed(2)}x the answers' bytes sent, ${r.copied} bytes copied`;

Deno.test("mux tail copies: at 3 % random loss a 40 KiB answer's losses cost no round trip, for twice the bytes", async () => {
  const on = await answers(0.03, {});
  const off = await answers(0.03, { tailCopyLossRatio: 1 });
  console.log(`with tail copies: ${fmt(on)}\nwithout:          ${fmt(off)}`);
  // A round trip is 100 ms; an answer takes ~117 ms when nothing is lost. Without copies
  // about two answers in three lose a packet and take a round trip more.
  assert.ok(on.mean < 0.8 * off.mean, `mean ${on.mean} against ${off.mean}`);
  assert.ok(on.median < 140 && off.median > 200, `medians ${on.median}, ${off.median}`);
  assert.ok(on.copied > 0 && off.copied === 0);
  assert.ok(on.sentRatio < 2.2, `${on.sentRatio}x sent`);
});

Deno.test("mux tail copies: none on a clean path, none with NewReno (it takes every loss for congestion)", async () => {
  const clean = await answers(0, {});
  const reno = await answers(0.03, { congestionControl: "newreno" });
  console.log(`clean, bbr: ${fmt(clean)}\n3 % loss, newreno: ${fmt(reno)}`);
  assert.equal(clean.copied, 0);
  assert.ok(clean.sentRatio < 1.05, `${clean.sentRatio}x sent`);
  assert.equal(reno.copied, 0);
});
