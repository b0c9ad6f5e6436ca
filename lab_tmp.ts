import {
  memoryPair,
  randomBytes,
  readAll,
  sha256,
  transfer,
  writeAll,
} from "./shared/mux/testing/harness.ts";
import { TUNNEL_MUX_PARAMS } from "./shared/tunnel_params.ts";
async function echo(p: any, size: number) {
  const t0 = p.clock.now();
  const data = randomBytes(7, size);
  const s = p.client.openStream();
  const server = (async () => {
    const ss = await p.server.acceptStream();
    for (;;) {
      const c = await ss.read();
      if (c === null) break;
      await ss.write(c);
    }
    ss.close();
  })();
  await p.wait(Promise.all([server, writeAll(s, data), readAll(s.readable)]), "echo", 120000);
  return p.clock.now() - t0;
}
const [delayMs, rate, loss] = (Deno.args[0] ?? "25,6250,0.01").split(",").map(Number);
const warm = Deno.args[1] === "warm";
const pick = (x: any) =>
  `st=${x.congestionState} hi=${(x.inflightHiBytes / 1000) | 0}k cwnd=${
    (x.cwndBytes / 1000) | 0
  }k bw=${(x.maxBandwidthBytesPerSecond / 1000 / rate).toFixed(3)} loss=${
    x.randomLossRatio.toFixed(4)
  }`;
for (const seed of [1, 2, 3]) {
  const p = memoryPair({
    delayMs,
    rateBytesPerMs: rate,
    queueBytes: Math.round(3 * rate * delayMs),
    loss,
    seed,
  }, { ...TUNNEL_MUX_PARAMS });
  await p.sleep(100);
  if (warm) await p.wait(Promise.all([p.client.warmUp(), p.server.warmUp()]), "warm");
  await p.sleep(1000);
  const gets = [], posts = [];
  for (let i = 0; i < 3; i++) {
    const t0 = p.clock.now();
    await transfer(p, randomBytes(i, 20 << 20));
    gets.push(p.clock.now() - t0);
  }
  const before = pick(p.server.stats);
  for (let i = 0; i < 3; i++) {
    posts.push(await echo(p, 10 << 20));
    if (i === 0) console.log("   echoer after first:", pick(p.server.stats));
  }
  console.log(
    seed,
    warm ? "warm" : "cold",
    "GET",
    gets.map((x) => x.toFixed(0)).join(" "),
    "POST",
    posts.map((x) => x.toFixed(0)).join(" "),
    "| echoer before:",
    before,
  );
  await p.dispose();
}
