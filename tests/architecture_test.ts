/**
 * The layers' walls and the absence of import cycles, on the repository's real import
 * graph (`deno info --json` over every module). docs/architecture.md says what the walls
 * are and why; `helpers/architecture.ts` holds the rules. The later tests break each rule
 * on purpose, in a synthetic graph and in a scratch tree on disk, to show the check fails
 * when it should.
 */
import { deepEqual, equal, fail, ok } from "node:assert/strict";
import {
  checkArchitecture,
  formatViolation,
  type ImportGraph,
  isTestModule,
  readImportGraph,
  type Violation,
} from "./helpers/architecture.ts";
import { ROOT } from "./helpers/procs.ts";

const root = ROOT.replace(/\/$/, "");

const graphOf = (edges: Record<string, string[]>): ImportGraph => {
  const g: ImportGraph = new Map();
  for (const [from, tos] of Object.entries(edges)) {
    g.set(from, new Set(tos));
    for (const to of tos) if (!g.has(to)) g.set(to, new Set());
  }
  return g;
};
const lines = (vs: Violation[]) => vs.map(formatViolation);

Deno.test("the repository keeps its walls and has no import cycle", async () => {
  const { graph, errors } = await readImportGraph(root);
  // The graph is the real one: every entry point is in it, with its imports.
  for (const entry of ["server/main.ts", "client/main.ts", "db/mod.ts", "shared/mux/mod.ts"]) {
    ok((graph.get(entry)?.size ?? 0) > 0, `${entry} is in the graph with its imports`);
  }
  ok(graph.size > 150, `every module is in the graph (${graph.size})`);
  ok(graph.get("server/run.ts")?.has("db/mod.ts"), "server/run.ts imports db/mod.ts");

  const violations = [...errors, ...checkArchitecture(graph)];
  if (violations.length > 0) {
    for (const line of lines(violations)) console.error(`architecture: ${line}`);
    fail(`${violations.length} architecture violation(s):\n  ${lines(violations).join("\n  ")}`);
  }
});

Deno.test("each wall rejects an import across it, and lets through what it allows", () => {
  const cases: [from: string, to: string, broken: string | undefined][] = [
    ["shared/protocol/head.ts", "server/ingress.ts", "shared/ never imports server/"],
    ["shared/bytes.ts", "client/forwarder.ts", "shared/ never imports server/, client/"],
    ["shared/dtls/psk_test.ts", "db/mod.ts", "shared/ never imports server/, client/ or db/"],
    ["shared/mux/session.ts", "shared/dtls/mod.ts", "shared/mux never imports shared/dtls"],
    ["shared/mux/testing/dtls_pair.ts", "shared/dtls/mod.ts", undefined],
    ["shared/mux/dtls_test.ts", "shared/dtls/client.ts", undefined],
    ["shared/mux/session.ts", "shared/datagram.ts", undefined],
    ["client/connector.ts", "server/registry.ts", "client/ never imports server/ or db/"],
    ["client/forwarder_test.ts", "db/testing.ts", "client/ never imports server/ or db/"],
    ["client/connector.ts", "shared/dtls/mod.ts", undefined],
    [
      "db/domain_store.ts",
      "shared/dtls/psk.ts",
      "db/ never imports server/, client/ or shared/dtls",
    ],
    ["db/storage.ts", "server/config.ts", "db/ never imports server/"],
    ["db/domain_store.ts", "shared/credentials.ts", undefined],
    ["server/psk_store.ts", "db/domain_name.ts", "server/ imports the database only through"],
    ["server/run.ts", "db/testing.ts", "server/ imports the database only through"],
    ["server/run.ts", "db/mod.ts", undefined],
    ["server/psk_store_test.ts", "db/testing.ts", undefined],
    ["server/admin/testing.ts", "db/testing.ts", undefined],
    ["server/psk_store_test.ts", "db/schema.ts", "server/ imports the database only through"],
    ["tests/acme_pebble_test.ts", "db/schema.ts", undefined],
  ];
  for (const [from, to, broken] of cases) {
    const found = checkArchitecture(graphOf({ [from]: [to] }));
    if (broken === undefined) {
      deepEqual(lines(found), [], `${from} → ${to} is allowed`);
    } else {
      equal(found.length, 1, `${from} → ${to} breaks one rule: ${lines(found)}`);
      const [v] = found;
      ok(v?.kind === "layer" && v.from === from && v.to === to, `reported with both files`);
      ok(v.rule.startsWith(broken), `${from} → ${to}: "${v.rule}" starts with "${broken}"`);
      const line = formatViolation(v);
      ok(line.includes(from) && line.includes(to), `printed with both files: ${line}`);
    }
  }
});

Deno.test("an import cycle among non-test modules is reported with its loop; test cycles are not", () => {
  const found = checkArchitecture(graphOf({
    "client/forwarder.ts": ["client/ws_bridge.ts", "client/origin/pool.ts"],
    "client/ws_bridge.ts": ["client/splice.ts"],
    "client/splice.ts": ["client/forwarder.ts"],
    "client/origin/pool.ts": ["client/origin/parser.ts"],
    "server/a.ts": ["server/a.ts"],
    // among test code only: not a violation
    "client/testing/tunnel.ts": ["client/testing/tunnel_server.ts"],
    "client/testing/tunnel_server.ts": ["client/testing/tunnel.ts"],
    "tests/helpers/x.ts": ["tests/helpers/y.ts"],
    "tests/helpers/y.ts": ["tests/helpers/x.ts"],
  }));
  deepEqual(lines(found), [
    "import cycle among non-test modules: client/forwarder.ts imports client/ws_bridge.ts " +
    "imports client/splice.ts imports client/forwarder.ts",
    "import cycle among non-test modules: server/a.ts imports server/a.ts",
  ]);
  deepEqual(checkArchitecture(graphOf({ "a.ts": ["b.ts"], "b.ts": ["c.ts"] })), []);
});

Deno.test("isTestModule: tests, fixtures and test folders, nothing else", () => {
  for (const p of ["db/testing.ts", "server/admin/testing.ts", "shared/mux/testing/x.ts"]) {
    ok(isTestModule(p), p);
  }
  for (const p of ["tests/helpers/procs.ts", "client/forwarder_test.ts"]) ok(isTestModule(p), p);
  for (const p of ["server/run.ts", "shared/testing_not.ts", "bench/mux_bench.ts"]) {
    ok(!isTestModule(p), p);
  }
});

Deno.test("on disk: deno info's graph of a tree that breaks the walls fails the check", async () => {
  const dir = await Deno.makeTempDir({ prefix: "hopgate_arch_test_" });
  try {
    const files: Record<string, string> = {
      "shared/a.ts": `import { b } from "../server/b.ts";\nexport const a = b;\n`,
      "server/b.ts": `import type { C } from "../db/c.ts";\nexport const b: C = 1;\n`,
      "db/c.ts": `export type C = number;\n`,
      "db/mod.ts": `export type { C } from "./c.ts";\n`,
      "client/x.ts": `import { y } from "./y.ts";\nexport const x = () => y;\n`,
      "client/y.ts": `import { x } from "./x.ts";\nexport const y = () => x;\n`,
      "client/ok.ts": `import { a } from "../shared/a.ts";\nexport const ok = a;\n`,
    };
    for (const [path, text] of Object.entries(files)) {
      await Deno.mkdir(`${dir}/${path.replace(/\/[^/]*$/, "")}`, { recursive: true });
      await Deno.writeTextFile(`${dir}/${path}`, text);
    }
    const { graph, errors } = await readImportGraph(dir);
    deepEqual(errors, []);
    deepEqual(lines(checkArchitecture(graph)), [
      "server/b.ts imports db/c.ts: server/ imports the database only through db/mod.ts " +
      "(tests also db/testing.ts)",
      "shared/a.ts imports server/b.ts: shared/ never imports server/, client/ or db/",
      "import cycle among non-test modules: client/x.ts imports client/y.ts imports client/x.ts",
    ]);

    // A module deno cannot read is reported, not silently left out of the graph.
    await Deno.writeTextFile(`${dir}/client/ok.ts`, `import "./missing.ts";\n`);
    await Deno.writeTextFile(`${dir}/client/bad.ts`, `const = ;\n`);
    const broken = await readImportGraph(dir);
    const unread = broken.errors.map((e) => e.kind === "graph" ? e.file : "").sort();
    deepEqual(unread, ["client/bad.ts", "client/missing.ts"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
