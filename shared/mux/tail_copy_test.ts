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

Deno.test("mux tail copies: a bulk answer's tail is copied as its ACKs make room, so its last round trip's losses cost less", async () => {
  // P2 of the WAN lab: 50 ms, 50 Mbit/s, 1 % random loss each way; 2 MiB answers on tunnels
  // that already carried a download. When such an answer's last bytes go out the pipe is
  // full (nothing fits beside them); the copies go as the ACKs of its last round trip come.
  const SIZE = 2 << 20;
  const bdp = 6250 * 50;
  const run = async (params: Partial<MuxParams>) => {
    const times: number[] = [];
    let copied = 0;
    for (let seed = 1; seed <= 4; seed++) {
      const link = { delayMs: 25, rateBytesPerMs: 6250, queueBytes: 470_000, loss: 0.01, seed };
      const p = memoryPair(link, { ...TUNNEL_MUX_PARAMS, ...params });
      try {
        await download(p, 4 << 20);
        const c0 = p.server.stats.tailCopyBytes;
        for (let i = 0; i < 8; i++) times.push((await download(p, SIZE, i)).ms);
        copied += p.server.stats.tailCopyBytes - c0;
      } finally {
        await p.dispose();
      }
    }
    times.sort((a, b) => a - b);
    const mean = times.reduce((a, b) => a + b) / times.length;
    return { mean, worst: times.at(-1)!, copiedPerAnswer: copied / times.length };
  };
  const on = await run({});
  const off = await run({ tailCopyLossRatio: 1 });
  const f = (r: typeof on) =>
    `mean ${r.mean.toFixed(1)} ms, worst ${r.worst.toFixed(1)} ms, ` +
    `${(r.copiedPerAnswer / 1024).toFixed(0)} KiB copied per answer`;
  console.log(`with tail copies: ${f(on)}\nwithout:          ${f(off)}`);
  // ~395 ms if nothing were lost; a loss in the last round trip costs up to one more.
  assert.ok(on.mean < off.mean - 6, `mean ${on.mean} against ${off.mean}`);
  assert.ok(on.worst < off.worst, `worst ${on.worst} against ${off.worst}`);
  // Half a round trip of the answer at most: what was sent in the last srtt/2.
  assert.ok(
    on.copiedPerAnswer > 0.2 * bdp && on.copiedPerAnswer < 0.6 * bdp,
    `${on.copiedPerAnswer} bytes`,
  );
});
