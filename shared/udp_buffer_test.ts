import { equal, ok } from "node:assert/strict";
import { PROBE_BATCHES, probeReceiveQueue, receiveBufferWarning } from "./udp_buffer.ts";

/** This host's net.core.rmem_default, read by `cat` (Deno reads /proc only with --allow-all). */
async function rmemDefault(): Promise<number | null> {
  try {
    const out = await new Deno.Command("cat", { args: ["/proc/sys/net/core/rmem_default"] })
      .output();
    const v = Number(new TextDecoder().decode(out.stdout).trim());
    return out.success && Number.isSafeInteger(v) ? v : null;
  } catch {
    return null;
  }
}

Deno.test("udp buffer: the probe holds a batch whole or stops at the first it could not hold", async () => {
  const p = await probeReceiveQueue();
  ok(p !== null, "a socket on 127.0.0.1 can be opened");
  ok(PROBE_BATCHES.includes(p.sent), `stopped at a batch: ${p.sent}`);
  ok(p.held > 0 && p.held <= p.sent, `held ${p.held} of ${p.sent}`);
  if (p.held < p.sent) {
    // Smaller batches than the one that overflowed all arrived: it holds at least those.
    const before = PROBE_BATCHES[PROBE_BATCHES.indexOf(p.sent) - 1] ?? 0;
    ok(p.held >= before, `held ${p.held}, below the batch before (${before}) that arrived whole`);
  }
});

Deno.test("udp buffer: a warning exactly when the kernel's default is below ~1 MiB", async (t) => {
  const rmem = await rmemDefault();
  if (rmem === null || (rmem > 640 * 1024 && rmem < 1024 * 1024)) {
    t.step({ name: "(no /proc value, or one near the bar: not decided)", ignore: true, fn() {} });
    return;
  }
  const w = await receiveBufferWarning();
  if (rmem <= 640 * 1024) {
    ok(w !== null, `rmem_default ${rmem}: expected a warning`);
    ok(w.includes("sysctl -w net.core.rmem_default=4194304"), w);
  } else {
    equal(w, null, `rmem_default ${rmem}: no warning`);
  }
});

Deno.test("udp buffer: another sender cannot hold the probe open or count as its datagrams", async () => {
  const flooder = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  let flooding = true;
  const flood = async (to: Deno.NetAddr) => {
    const d = new Uint8Array(100);
    while (flooding) {
      try {
        await flooder.send(d, to);
      } catch {
        return;
      }
      await new Promise((r) => setTimeout(r, 1)); // ~500/s: the socket never falls quiet
    }
  };
  let done: Promise<void> = Promise.resolve();
  const t0 = performance.now();
  try {
    const p = await probeReceiveQueue({ deadlineMs: 500, onOpen: (to) => done = flood(to) });
    const ms = performance.now() - t0;
    ok(ms < 1500, `the probe ended after ${ms.toFixed(0)} ms (deadline 500 ms)`);
    if (p !== null) ok(p.held <= p.sent, `held ${p.held} of ${p.sent}: only its own count`);
  } finally {
    flooding = false;
    await done;
    flooder.close();
  }
});
