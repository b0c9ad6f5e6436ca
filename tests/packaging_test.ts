/**
 * Packaging stays consistent where CI cannot build it (no `denort` download here):
 * no task runs with -A; the compile task, the Dockerfile and the README carry the
 * run tasks' exact flags; `.env.example` names every variable the code reads; the shell
 * scripts (`.ci/run`, bench/) parse.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import { CLIENT_ENV_NAMES } from "../client/config.ts";
import { SERVER_ENV_NAMES } from "../server/config.ts";
import { ROOT } from "./helpers/procs.ts";

const read = (p: string) => Deno.readTextFileSync(`${ROOT}${p}`);
const tasks = (JSON.parse(read("deno.json")) as { tasks: Record<string, string> }).tasks;

/** The flags of one `deno run|compile ... entry.ts` command. */
function flagsOf(command: string, entry: string): string[] {
  const words = command.trim().split(/\s+/);
  const end = words.indexOf(entry);
  ok(end > 0, `${entry} in "${command}"`);
  return words.slice(2, end).filter((w, i, a) =>
    !(w === "-o" || a[i - 1] === "-o" || w === "--include" || a[i - 1] === "--include")
  );
}

Deno.test("packaging: no task runs with -A or --allow-all", () => {
  for (const [name, cmd] of Object.entries(tasks)) {
    ok(!/(^|\s)(-A|--allow-all)(\s|$)/.test(cmd), `task ${name}`);
  }
});

Deno.test("packaging: the compile task bakes in the server and client tasks' exact flags", () => {
  const [server, client] = tasks.compile!.split("&&");
  deepEqual(flagsOf(server!, "server/main.ts"), flagsOf(tasks.server!, "server/main.ts"));
  deepEqual(flagsOf(client!, "client/main.ts"), flagsOf(tasks.client!, "client/main.ts"));
  ok(server!.includes("-o dist/hopgate-server") && client!.includes("-o dist/hopgate-client"));
  ok(server!.includes("--include db/migrations"), "migrations are read at start-up");
  ok(
    server!.includes("--include db/pglite_template.tar.gz"),
    "a new embedded database is extracted from the template at run time",
  );
});

Deno.test("packaging: the Dockerfile runs the server task's flags (paths under /app)", () => {
  const cmd = /^CMD (\[.*\])$/m.exec(read("Dockerfile"));
  ok(cmd, "a CMD in exec form");
  const words = JSON.parse(cmd[1]!) as string[];
  const docker = flagsOf(words.join(" "), "server/main.ts");
  const task = flagsOf(tasks.server!, "server/main.ts").map((f) =>
    f.replace("--allow-read=.", "--allow-read=/app").replace("=./data", "=/app/data")
  );
  deepEqual(docker, task);
  const dockerfile = read("Dockerfile");
  ok(/^USER (?!root)\S+/m.test(dockerfile), "runs as a non-root user");
  ok(/^EXPOSE 80\/tcp 443\/tcp 443\/udp$/m.test(dockerfile));
  equal(dockerfile.match(/^FROM /gm)?.length, 2, "two stages");
});

Deno.test("packaging: the README's permission tables name every flag of the run tasks", () => {
  const readme = read("README.md");
  for (const task of ["server", "client"] as const) {
    for (const flag of flagsOf(tasks[task]!, `${task}/main.ts`)) {
      const name = flag.split("=")[0]!;
      const shown = flag.length > 30 ? `\`${name}=` : `\`${flag}\``;
      ok(readme.includes(shown), `README explains ${flag} (${task})`);
    }
  }
});

Deno.test("packaging: .env.example covers every server and client variable", () => {
  const example = read(".env.example");
  for (const name of [...SERVER_ENV_NAMES, ...CLIENT_ENV_NAMES]) {
    ok(new RegExp(`^#? ?${name}=`, "m").test(example), `${name} in .env.example`);
  }
});

Deno.test("packaging: every shell script in the repo parses (bash -n)", async () => {
  const scripts = [".ci/run"];
  for (const dir of ["bench", "bench/targets"]) {
    for (const e of Deno.readDirSync(`${ROOT}${dir}`)) {
      if (e.isFile && e.name.endsWith(".sh")) scripts.push(`${dir}/${e.name}`);
    }
  }
  ok(scripts.includes("bench/quick.sh"), scripts.join(", "));
  for (const s of scripts) {
    const out = await new Deno.Command("bash", { args: ["-n", `${ROOT}${s}`], stderr: "piped" })
      .output();
    equal(out.code, 0, `${s}: ${new TextDecoder().decode(out.stderr)}`);
  }
});
