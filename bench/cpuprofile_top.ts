/**
 * Summarizes a V8 `.cpuprofile` (from `deno run --cpu-prof`): self time per function,
 * idle excluded. `deno run --allow-read bench/cpuprofile_top.ts FILE [N]`
 */
interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
const [file, n = "30"] = Deno.args;
if (!file) {
  console.error("usage: cpuprofile_top.ts FILE.cpuprofile [N]");
  Deno.exit(2);
}
const p = JSON.parse(await Deno.readTextFile(file)) as {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
};
const nodes = new Map(p.nodes.map((x) => [x.id, x]));
const self = new Map<string, number>();
let total = 0;
p.samples.forEach((id, i) => {
  const cf = nodes.get(id)!.callFrame;
  if (cf.functionName === "(idle)") return;
  const key = `${cf.functionName || "(anon)"} ${cf.url.split("/").at(-1)}:${cf.lineNumber}`;
  const d = p.timeDeltas[i] ?? 0;
  self.set(key, (self.get(key) ?? 0) + d);
  total += d;
});
console.log(`busy ${(total / 1e6).toFixed(2)} s`);
for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, Number(n))) {
  console.log(`${(v / total * 100).toFixed(1).padStart(5)}% ${k}`);
}
