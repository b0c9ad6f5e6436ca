/**
 * Summarizes a V8 `.cpuprofile` (from `deno run --cpu-prof`): self time per function,
 * idle excluded. `deno run --allow-read bench/cpuprofile_top.ts FILE [N] [--last SECONDS]
 * [--by-file] [--inclusive]`: `--last` keeps only the final SECONDS of the profile (e.g. the
 * load phase, not start-up); `--window FROM,TO` keeps the samples between FROM and TO
 * seconds after the profile's start; `--by-file` sums per script instead of per function;
 * `--inclusive` counts each sample for every function on its stack (once per function),
 * so a caller's share includes all it called: what a code path costs in all.
 *
 * Self time of a syscall op (op_net_send_udp, writeLatin1String) includes time the
 * process spent preempted inside it (the sampler runs on wall time): on a loaded
 * machine compare CPU seconds from /proc, as bench/quick.sh prints, not these shares.
 */
import { parseArgs } from "node:util";

interface Node {
  id: number;
  children?: number[];
  callFrame: { functionName: string; url: string; lineNumber: number };
}
const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    last: { type: "string" },
    window: { type: "string" },
    "by-file": { type: "boolean" },
    inclusive: { type: "boolean" },
  },
});
const [file, n = "30"] = positionals;
if (!file || !/^\d+$/.test(n)) {
  console.error(
    "usage: cpuprofile_top.ts FILE.cpuprofile [N] [--last S | --window FROM,TO] [--by-file] [--inclusive]",
  );
  // A glob over a profile directory also matches workers' profiles (*.worker-N.cpuprofile).
  if (file) console.error(`N must be a number, got "${n}": pass one profile file`);
  Deno.exit(2);
}
const p = JSON.parse(await Deno.readTextFile(file)) as {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
  endTime: number;
  startTime: number;
};
const nodes = new Map(p.nodes.map((x) => [x.id, x]));
const parent = new Map<number, number>();
for (const x of p.nodes) for (const c of x.children ?? []) parent.set(c, x.id);
const keyOf = (cf: Node["callFrame"]) => {
  const script = cf.url ? cf.url.split("/").slice(-2).join("/") : cf.functionName;
  return values["by-file"]
    ? script
    : `${cf.functionName || "(anon)"} ${cf.url.split("/").at(-1)}:${cf.lineNumber}`;
};
const [winFrom, winTo] = (values.window ?? "").split(",").map(Number);
const from = values.last
  ? p.endTime - Number(values.last) * 1e6
  : values.window
  ? p.startTime + winFrom! * 1e6
  : -Infinity;
const to = values.window ? p.startTime + winTo! * 1e6 : Infinity;
const self = new Map<string, number>();
let total = 0;
let t = p.startTime;
p.samples.forEach((id, i) => {
  const d = p.timeDeltas[i] ?? 0;
  t += d;
  if (t < from || t > to) return;
  const cf = nodes.get(id)!.callFrame;
  if (cf.functionName === "(idle)") return;
  total += d;
  if (!values.inclusive) {
    const key = keyOf(cf);
    self.set(key, (self.get(key) ?? 0) + d);
    return;
  }
  const seen = new Set<string>();
  for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
    const key = keyOf(nodes.get(at)!.callFrame);
    if (key === "(root) :-1" || seen.has(key)) continue;
    seen.add(key);
    self.set(key, (self.get(key) ?? 0) + d);
  }
});
console.log(`busy ${(total / 1e6).toFixed(2)} s`);
for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, Number(n))) {
  console.log(`${(v / total * 100).toFixed(1).padStart(5)}% ${k}`);
}
