/**
 * What a byte array costs in Deno: `new Uint8Array(n)` (each gets an ArrayBuffer of its own,
 * even at n = 0) against a slice of the shared slab (`transientBytes`, shared/bytes.ts), at the
 * sizes the per-request path uses (an empty read, a head, a stream's first send ring, a
 * datagram, a full record). The reason the per-request path shares an empty array, takes heads
 * and sealed records from the slab and reuses send rings (shared/mux/send_buffer.ts).
 *
 *   deno run bench/alloc_bench.ts [--rounds 3] [--n 200000]
 *
 * Prints µs per array for each way and the ratio, per round (the first round includes JIT
 * warm-up). Garbage collection is part of the figure: the arrays are dropped as they would be.
 */
import { parseArgs } from "node:util";
import { transientBytes } from "../shared/bytes.ts";

const { values } = parseArgs({
  options: { rounds: { type: "string", default: "3" }, n: { type: "string", default: "200000" } },
});
const rounds = Number(values.rounds);
const n = Number(values.n);

let sink = 0;
function timeIt(f: () => Uint8Array): number {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) sink += f().length;
  return (performance.now() - t0) * 1000 / n;
}

for (let r = 1; r <= rounds; r++) {
  const rows: string[] = [];
  for (const size of [0, 64, 300, 512, 1200, 16 * 1024]) {
    const fresh = timeIt(() => new Uint8Array(size));
    const slab = timeIt(() => transientBytes(size));
    rows.push(
      `${String(size).padStart(6)} B: new ${fresh.toFixed(3)} µs, slab ${slab.toFixed(3)} µs (${
        (fresh / slab).toFixed(1)
      }x)`,
    );
  }
  console.log(`round ${r}\n  ${rows.join("\n  ")}`);
}
if (sink < 0) console.log(sink);
