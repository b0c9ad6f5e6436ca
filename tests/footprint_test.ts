/**
 * One node's footprint: the embedded default must fit the small VPS many
 * self-hosters use. A real server process with the `server` task's exact flags,
 * in debug mode on a fresh data directory (so the embedded database is created:
 * the worst case; a restart peaks and settles lower), measured by the kernel:
 * `VmHWM` is its peak resident set since it began, `VmRSS` the resident set once
 * idle. Figures and the bench that produced them: docs/operations.md, "Footprint".
 */
import { ok } from "node:assert/strict";
import { mib, startMeasuredServer } from "./helpers/footprint.ts";
import { ROOT } from "./helpers/procs.ts";

/** A 512 MB VPS (the bound): the first start must never peak above it. */
const PEAK_BOUND_KIB = 512 * 1024;
/**
 * Idle, after a first start: measured 168-171 MiB (a restart ~163, PostgreSQL
 * mode ~100; before the template, 267-307). 200 MiB is the issue's target and
 * leaves ~30 MiB for differences between runs and machines; what regressed before
 * crosses it: V8's optimizing tier for PGlite's wasm (+47), PGlite's own initdb
 * (+100), 16 MB of shared buffers instead of 8 (+8 on top of either).
 */
const STEADY_BOUND_KIB = 200 * 1024;
/** How long the server idles before its resident set is read (one readiness ping falls in it). */
const IDLE_MS = 6_000;

Deno.test("footprint: a first start on the embedded database peaks under 512 MiB and idles under 200 MiB", async () => {
  const dataDir = `./data/footprint-${crypto.randomUUID()}`;
  const server = startMeasuredServer({ root: ROOT, dataDir });
  try {
    const startedMs = await server.started(30_000);
    const atStart = await server.memory();
    await new Promise((r) => setTimeout(r, IDLE_MS));
    const idle = await server.memory();
    const figures = `started in ${startedMs} ms; peak ${mib(idle.hwmKiB)} MiB ` +
      `(${mib(atStart.hwmKiB)} at start); idle RSS ${mib(idle.rssKiB)} MiB ` +
      `(anon ${mib(idle.anonKiB)}, file ${mib(idle.fileKiB)})`;
    console.log(`footprint: ${figures}`);
    ok(idle.hwmKiB < PEAK_BOUND_KIB, `peak above ${PEAK_BOUND_KIB / 1024} MiB: ${figures}`);
    ok(idle.rssKiB < STEADY_BOUND_KIB, `idle above ${STEADY_BOUND_KIB / 1024} MiB: ${figures}`);
  } finally {
    await server.stop();
    await Deno.remove(`${ROOT}${dataDir.slice(2)}`, { recursive: true }).catch(() => {});
  }
});
