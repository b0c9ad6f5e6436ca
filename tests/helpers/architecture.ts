/**
 * The repository's walls, checked on its real import graph (docs/architecture.md
 * explains the layers and why each wall is there).
 *
 * `readImportGraph` asks `deno info --json` for the graph of every module under a root
 * (one generated entry module imports them all, so one `deno info` run sees every file,
 * tests included); `checkArchitecture` turns that graph into violations: an import cycle
 * among non-test modules, or an import across a wall. Both halves are plain functions so
 * the test can feed them a synthetic graph, or a scratch tree on disk, that breaks a rule.
 *
 * Imports count whether they carry code or only types: a type import still ties one
 * layer's source to another's.
 */
import { relative } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

/** Root-relative path (with `/`) → the root-relative paths it imports. */
export type ImportGraph = Map<string, Set<string>>;

/** One broken rule: the importing and imported files, or for a cycle the loop. */
export type Violation =
  | { kind: "layer"; rule: string; from: string; to: string }
  | { kind: "cycle"; loop: string[]; members: string[] }
  | { kind: "graph"; file: string; error: string };

/**
 * Test code: `*_test.ts`, a `testing/` folder or `testing.ts` fixture module, and
 * everything under `tests/`. Cycles among these are tolerated, and some walls have a
 * door for them (named in the rule).
 */
export function isTestModule(path: string): boolean {
  return /_test\.[cm]?[jt]sx?$/.test(path) || /(^|\/)testing(\/|\.[cm]?[jt]sx?$)/.test(path) ||
    path.startsWith("tests/");
}

const under = (path: string, ...dirs: string[]) => dirs.some((d) => path.startsWith(`${d}/`));

/** A wall: which importers it binds and which imports it forbids them. */
export interface LayerRule {
  /** How the rule reads in a report. */
  rule: string;
  /** Whether `from` is bound by the rule. */
  applies(from: string): boolean;
  /** Whether importing `to` from `from` breaks the rule. */
  forbids(to: string, from: string): boolean;
}

/** The walls (docs/architecture.md, "Layers"). */
export const LAYER_RULES: readonly LayerRule[] = [
  {
    rule: "shared/ never imports server/, client/ or db/",
    applies: (from) => under(from, "shared"),
    forbids: (to) => under(to, "server", "client", "db"),
  },
  {
    rule: "shared/mux never imports shared/dtls (test fixtures may)",
    applies: (from) => under(from, "shared/mux") && !isTestModule(from),
    forbids: (to) => under(to, "shared/dtls"),
  },
  {
    rule: "client/ never imports server/ or db/",
    applies: (from) => under(from, "client"),
    forbids: (to) => under(to, "server", "db"),
  },
  {
    rule: "db/ never imports server/, client/ or shared/dtls",
    applies: (from) => under(from, "db"),
    forbids: (to) => under(to, "server", "client", "shared/dtls"),
  },
  {
    rule: "server/ imports the database only through db/mod.ts (tests also db/testing.ts)",
    applies: (from) => under(from, "server"),
    forbids: (to, from) =>
      under(to, "db") && to !== "db/mod.ts" && !(to === "db/testing.ts" && isTestModule(from)),
  },
];

/** Every violation in `graph`: walls first, then cycles, each in a stable order. */
export function checkArchitecture(graph: ImportGraph): Violation[] {
  const out: Violation[] = [];
  for (const from of [...graph.keys()].sort()) {
    for (const to of [...graph.get(from)!].sort()) {
      for (const r of LAYER_RULES) {
        if (r.applies(from) && r.forbids(to, from)) {
          out.push({ kind: "layer", rule: r.rule, from, to });
        }
      }
    }
  }
  for (const members of cycles(graph)) {
    out.push({ kind: "cycle", loop: loopThrough(graph, members), members });
  }
  return out;
}

/** A violation as one line: who imports what, and which rule that breaks. */
export function formatViolation(v: Violation): string {
  switch (v.kind) {
    case "layer":
      return `${v.from} imports ${v.to}: ${v.rule}`;
    case "cycle":
      return `import cycle among non-test modules: ${v.loop.join(" imports ")}` +
        (v.members.length > v.loop.length - 1 ? ` (all of: ${v.members.join(", ")})` : "");
    case "graph":
      return `${v.file} cannot be analysed: ${v.error}`;
  }
}

/**
 * The strongly connected components of the graph restricted to non-test modules that
 * hold a cycle (more than one module, or a module importing itself). Tarjan's algorithm,
 * iterative so a deep graph cannot overflow the stack.
 */
function cycles(graph: ImportGraph): string[][] {
  const nodes = [...graph.keys()].filter((p) => !isTestModule(p)).sort();
  const edges = (v: string) =>
    [...(graph.get(v) ?? [])].filter((w) => graph.has(w) && !isTestModule(w)).sort();
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  let next = 0;
  for (const root of nodes) {
    if (index.has(root)) continue;
    const work: { v: string; out: string[]; i: number }[] = [];
    const enter = (v: string) => {
      index.set(v, next);
      low.set(v, next++);
      stack.push(v);
      onStack.add(v);
      work.push({ v, out: edges(v), i: 0 });
    };
    enter(root);
    while (work.length > 0) {
      const top = work.at(-1)!;
      if (top.i < top.out.length) {
        const w = top.out[top.i++]!;
        if (!index.has(w)) enter(w);
        else if (onStack.has(w)) low.set(top.v, Math.min(low.get(top.v)!, index.get(w)!));
        continue;
      }
      work.pop();
      const parent = work.at(-1);
      if (parent) low.set(parent.v, Math.min(low.get(parent.v)!, low.get(top.v)!));
      if (low.get(top.v) !== index.get(top.v)) continue;
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== top.v);
      if (component.length > 1 || edges(top.v).includes(top.v)) found.push(component.sort());
    }
  }
  return found.sort((a, b) => a[0]!.localeCompare(b[0]!));
}

/** One concrete loop inside a cycle's members, from its first member back to it (BFS). */
function loopThrough(graph: ImportGraph, members: string[]): string[] {
  const inside = new Set(members);
  const start = members[0]!;
  const cameFrom = new Map<string, string>();
  const queue = [start];
  while (queue.length > 0) {
    const v = queue.shift()!;
    for (const w of [...(graph.get(v) ?? [])].sort()) {
      if (!inside.has(w)) continue;
      if (w === start) {
        const path = [v];
        while (path[0] !== start) path.unshift(cameFrom.get(path[0]!)!);
        return [...path, start];
      }
      if (!cameFrom.has(w)) {
        cameFrom.set(w, v);
        queue.push(w);
      }
    }
  }
  return [start, start]; // unreachable for a real component
}

const SKIP_DIRS = new Set(["node_modules", "data", "dist"]);

/** Every TypeScript/JavaScript module under `root`, root-relative, skipping dependencies, data and build output. */
export async function listModules(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string) => {
    for await (const e of Deno.readDir(`${root}/${dir}`)) {
      const path = dir ? `${dir}/${e.name}` : e.name;
      if (e.isDirectory) {
        if (!e.name.startsWith(".") && !SKIP_DIRS.has(e.name)) await walk(path);
      } else if (e.isFile && /\.[cm]?[jt]sx?$/.test(e.name) && !e.name.endsWith(".d.ts")) {
        out.push(path);
      }
    }
  };
  await walk("");
  return out.sort();
}

/**
 * The import graph of every module under `root` (from `deno info --json`), and the
 * modules `deno info` could not read (a syntax error, an import that resolves nowhere):
 * a graph with holes would hide edges, so they are violations too. `root`'s deno.json,
 * if any, supplies the import map.
 */
export async function readImportGraph(
  root: string,
): Promise<{ graph: ImportGraph; errors: Violation[] }> {
  const files = await listModules(root);
  const entry = await Deno.makeTempFile({ prefix: "hopgate_arch_", suffix: ".ts" });
  try {
    await Deno.writeTextFile(
      entry,
      files.map((f) => `import ${JSON.stringify(pathToFileURL(`${root}/${f}`).href)};\n`).join(""),
    );
    let config = ["--no-config"];
    try {
      await Deno.stat(`${root}/deno.json`);
      config = ["--config", `${root}/deno.json`];
    } catch { /* no config: plain relative imports only */ }
    const res = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", ...config, entry],
      cwd: root,
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!res.success) {
      throw new Error(`deno info failed: ${new TextDecoder().decode(res.stderr)}`);
    }
    return parseDenoInfo(JSON.parse(new TextDecoder().decode(res.stdout)), root);
  } finally {
    await Deno.remove(entry);
  }
}

interface InfoDependency {
  specifier: string;
  code?: { specifier?: string; error?: string };
  type?: { specifier?: string; error?: string };
}
interface InfoModule {
  specifier: string;
  error?: string;
  dependencies?: InfoDependency[];
}

/** `deno info --json` output → the graph of modules under `root`. */
export function parseDenoInfo(
  info: { modules: InfoModule[] },
  root: string,
): { graph: ImportGraph; errors: Violation[] } {
  const local = (specifier: string): string | undefined => {
    if (!specifier.startsWith("file:")) return undefined;
    const path = relative(root, fileURLToPath(specifier)).replaceAll("\\", "/");
    return path.startsWith("..") ? undefined : path;
  };
  const graph: ImportGraph = new Map();
  const errors: Violation[] = [];
  for (const m of info.modules) {
    const from = local(m.specifier);
    if (from === undefined) continue;
    if (m.error) errors.push({ kind: "graph", file: from, error: m.error });
    const deps = new Set<string>();
    for (const d of m.dependencies ?? []) {
      for (const r of [d.code, d.type]) {
        if (r?.error) {
          errors.push({ kind: "graph", file: from, error: `${d.specifier}: ${r.error}` });
        }
        const to = r?.specifier ? local(r.specifier) : undefined;
        if (to !== undefined) deps.add(to);
      }
    }
    graph.set(from, deps);
  }
  return { graph, errors };
}
