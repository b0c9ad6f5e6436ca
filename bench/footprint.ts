/**
 * One server node's memory, as the kernel counts it (`/proc/<pid>/status`), for a
 * real `deno run` with the `server` task's exact flags in debug mode:
 *
 * - **PGlite, first start**: a fresh data directory, so the embedded database is
 *   created (initdb) before the server starts;
 * - **PGlite, restart**: the same data directory again;
 * - **PostgreSQL**: `HOP_DB_DSN` to a new database on the test server (the reference).
 *
 * For each: the time to the "server started" line, the peak resident set up to then
 * and over the whole run (`VmHWM`), and the resident set after `--idle` seconds with
 * nothing to do (`VmRSS`, split into anonymous and file-backed). Each `--tree` is a
 * checkout started with its own deno.json flags, so an older commit is measured by
 * the same code in the same run (e.g. `git worktree add /tmp/foot-base <commit>`);
 * the trees alternate within each round. Nothing here passes or fails: the bounds
 * are in tests/footprint_test.ts.
 *
 *   deno run --allow-net --allow-read --allow-write=/tmp,./data --allow-env --allow-run \
 *     --allow-sys bench/footprint.ts [--tree /tmp/foot-base] [--tree .] [--idle 20] \
 *     [--rounds 1] [--no-pg]
 */
import postgres from "postgres";
import { randomBytes } from "node:crypto";
import { resolve } from "node:path";
import {
  type MemoryStatus,
  mib,
  serverTaskArgs,
  startMeasuredServer,
} from "../tests/helpers/footprint.ts";
import { baseEnv, ROOT } from "../tests/helpers/procs.ts";

const ADMIN_DSN = Deno.env.get("HOP_TEST_PG_DSN") ?? "postgres://postgres@127.0.0.1:5432/test";

function args() {
  const trees: string[] = [];
  let idleS = 20;
  let rounds = 1;
  let pg = true;
  for (let i = 0; i < Deno.args.length; i++) {
    const a = Deno.args[i]!;
    const next = () => {
      const v = Deno.args[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === "--tree") trees.push(resolve(next()));
    else if (a === "--idle") idleS = Number(next());
    else if (a === "--rounds") rounds = Number(next());
    else if (a === "--no-pg") pg = false;
    else throw new Error(`unknown argument ${a}`);
  }
  return { trees: trees.length ? trees : [ROOT.replace(/\/$/, "")], idleS, rounds, pg };
}

interface Row {
  tree: string;
  mode: string;
  startedMs: number;
  /** VmHWM when "server started" was printed. */
  startPeak: MemoryStatus;
  /** After the idle wait. */
  steady: MemoryStatus;
  /** VmRSS once a second during the idle wait, MiB. */
  curve: number[];
}

async function measure(
  tree: string,
  mode: string,
  dataDir: string,
  idleS: number,
  env: Record<string, string> = {},
): Promise<Row> {
  const server = startMeasuredServer({ root: tree, dataDir, env });
  try {
    const startedMs = await server.started(120_000);
    const startPeak = await server.memory();
    const curve: number[] = [];
    for (let s = 0; s < idleS; s++) {
      await new Promise((r) => setTimeout(r, 1000));
      curve.push(Math.round((await server.memory()).rssKiB / 1024));
    }
    return { tree, mode, startedMs, startPeak, steady: await server.memory(), curve };
  } finally {
    await server.stop();
  }
}

async function withDatabase<T>(run: (dsn: string) => Promise<T>): Promise<T> {
  const name = `hopgate_footprint_${randomBytes(5).toString("hex")}`;
  const admin = postgres(ADMIN_DSN, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`CREATE DATABASE ${name}`);
    const dsn = new URL(ADMIN_DSN);
    dsn.pathname = `/${name}`;
    return await run(dsn.href);
  } finally {
    await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => {});
    await admin.end();
  }
}

/** Installs node_modules and fills deno's caches for a tree, then one unmeasured start. */
async function warmUp(tree: string, pg: boolean): Promise<void> {
  const config = serverTaskArgs(tree)[2]!;
  const cached = await new Deno.Command(Deno.execPath(), {
    args: ["cache", "--config", config, "server/main.ts"],
    cwd: tree,
    env: baseEnv(),
    clearEnv: true,
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!cached.success) {
    throw new Error(`deno cache in ${tree}: ${new TextDecoder().decode(cached.stderr)}`);
  }
  if (!pg) return;
  const dataDir = "./data/footprint-warm-up";
  await withDatabase((dsn) => measure(tree, "warm-up", dataDir, 0, { HOP_DB_DSN: dsn }));
  await Deno.remove(resolve(tree, dataDir), { recursive: true }).catch(() => {});
}

function print(rows: Row[], idleS: number): void {
  const head = [
    "tree",
    "mode",
    "started ms",
    "peak at start MiB",
    "peak overall MiB",
    `RSS after ${idleS} s MiB`,
    "anon MiB",
    "file MiB",
  ];
  console.log(`| ${head.join(" | ")} |`);
  console.log(`|${head.map(() => "---").join("|")}|`);
  for (const r of rows) {
    console.log(
      `| ${r.tree} | ${r.mode} | ${r.startedMs} | ${mib(r.startPeak.hwmKiB)} | ${
        mib(r.steady.hwmKiB)
      } | ${mib(r.steady.rssKiB)} | ${mib(r.steady.anonKiB)} | ${mib(r.steady.fileKiB)} |`,
    );
  }
  console.log("\nRSS once a second while idle (MiB):");
  for (const r of rows) console.log(`  ${r.tree} ${r.mode}: ${r.curve.join(" ")}`);
}

if (import.meta.main) {
  const { trees, idleS, rounds, pg } = args();
  for (const tree of trees) await warmUp(tree, pg);
  const rows: Row[] = [];
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? trees : [...trees].reverse();
    for (const tree of order) {
      const dataDir = `./data/footprint-${crypto.randomUUID()}`;
      try {
        rows.push(await measure(tree, "pglite first start", dataDir, idleS));
        rows.push(await measure(tree, "pglite restart", dataDir, idleS));
      } finally {
        await Deno.remove(resolve(tree, dataDir), { recursive: true }).catch(() => {});
      }
      if (pg) {
        rows.push(
          await withDatabase((dsn) =>
            measure(tree, "postgresql", dataDir, idleS, { HOP_DB_DSN: dsn })
          ),
        );
        await Deno.remove(resolve(tree, dataDir), { recursive: true }).catch(() => {});
      }
      console.error(`round ${round + 1}: ${tree} done`);
    }
  }
  print(rows, idleS);
}
