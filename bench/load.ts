/** A closed-loop load in-process: `n` calls of `one`, `concurrency` at a time. */
import process from "node:process";

export interface LoadResult {
  reqPerSec: number;
  /** Process CPU (user + system, all threads) per call, µs. */
  cpuUsPerReq: number;
}

export async function runLoad(
  n: number,
  one: () => Promise<void>,
  concurrency = 50,
): Promise<LoadResult> {
  let left = n;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (left-- > 0) await one();
  }));
  const ms = performance.now() - t0;
  const c = process.cpuUsage(c0);
  return { reqPerSec: n / ms * 1000, cpuUsPerReq: (c.user + c.system) / n };
}
