/**
 * A server process's memory as the kernel counts it: a real `deno run` with the
 * `server` task's exact flags (read from the deno.json of the tree it runs in, so
 * the bench can start an older checkout with the same code), and its
 * `/proc/<pid>/status` lines. `VmHWM` is the kernel's own peak of the resident
 * set since the process began, so a short peak between two samples is not missed.
 */
import { baseEnv, freePort } from "./procs.ts";

/** Resident memory of one process, in KiB (the units of /proc/<pid>/status). */
export interface MemoryStatus {
  /** Peak resident set since the process started (`VmHWM`). */
  hwmKiB: number;
  /** Resident set now (`VmRSS` = anonymous + file-backed + shared). */
  rssKiB: number;
  /** Anonymous resident memory now (`RssAnon`): heaps, wasm memory, compiled code. */
  anonKiB: number;
  /** File-backed resident memory now (`RssFile`): the mapped deno binary and libraries. */
  fileKiB: number;
}

/**
 * Reads `/proc/<pid>/status`; throws if the process is gone. Through `cat`: Deno
 * lets only `--allow-all` read another process's /proc files, and the tests run
 * with `--allow-run` but not `-A`.
 */
export async function readMemory(pid: number): Promise<MemoryStatus> {
  const out = await new Deno.Command("cat", {
    args: [`/proc/${pid}/status`],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`cannot read /proc/${pid}/status: ${new TextDecoder().decode(out.stderr)}`);
  }
  const text = new TextDecoder().decode(out.stdout);
  const kib = (name: string): number => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB$`, "m").exec(text);
    if (!m) throw new Error(`no ${name} in /proc/${pid}/status`);
    return Number(m[1]);
  };
  return {
    hwmKiB: kib("VmHWM"),
    rssKiB: kib("VmRSS"),
    anonKiB: kib("RssAnon"),
    fileKiB: kib("RssFile"),
  };
}

/** KiB as MiB with one decimal, for messages and tables. */
export const mib = (kib: number): string => (kib / 1024).toFixed(1);

/** `deno run FLAGS... server/main.ts` of the `server` task in `<root>/deno.json`. */
export function serverTaskArgs(root: string): string[] {
  const config = `${root.replace(/\/$/, "")}/deno.json`;
  const cfg = JSON.parse(Deno.readTextFileSync(config)) as { tasks: Record<string, string> };
  const words = (cfg.tasks.server ?? "").split(/\s+/);
  if (words[0] !== "deno" || words[1] !== "run" || words.at(-1) !== "server/main.ts") {
    throw new Error(`task server in ${config} is not "deno run FLAGS... server/main.ts"`);
  }
  return ["run", "--config", config, ...words.slice(2)];
}

/** A server process started by `startMeasuredServer`. */
export interface MeasuredServer {
  readonly pid: number;
  /** Everything it printed so far (stdout and stderr). */
  readonly output: () => string;
  /** Milliseconds from spawn to the "server started" line; throws on exit or timeout. */
  started(timeoutMs: number): Promise<number>;
  /** Its memory now. */
  memory(): Promise<MemoryStatus>;
  /** SIGTERM (SIGKILL after 5 s) and waits for the exit. */
  stop(): Promise<void>;
}

/**
 * Starts `server/main.ts` in `root` as `deno task server` would: debug mode
 * (loopback, self-signed certificates), ports of its own, `HOP_DATA_DIR=dataDir`
 * (relative to `root`, under the task's `--allow-write=./data`), plus `env`
 * (e.g. `HOP_DB_DSN`). No other variable is passed.
 */
export function startMeasuredServer(
  o: { root: string; dataDir: string; env?: Record<string, string> },
): MeasuredServer {
  const child = new Deno.Command(Deno.execPath(), {
    args: serverTaskArgs(o.root),
    cwd: o.root,
    clearEnv: true,
    env: {
      ...baseEnv(),
      HOP_SERVER_DEBUG: "true",
      HOP_SERVER_HTTP_LISTEN: `127.0.0.1:${freePort("tcp")}`,
      HOP_SERVER_HTTPS_LISTEN: `127.0.0.1:${freePort("tcp")}`,
      HOP_SERVER_DTLS_LISTEN: `127.0.0.1:${freePort("udp")}`,
      HOP_DATA_DIR: o.dataDir,
      ...o.env,
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const spawnedAt = performance.now();
  let out = "";
  let exited = false;
  const drain = async (r: ReadableStream<Uint8Array>) => {
    const d = new TextDecoder();
    for await (const c of r) out += d.decode(c, { stream: true });
  };
  const reading = Promise.all([drain(child.stdout), drain(child.stderr)]);
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  return {
    pid: child.pid,
    output: () => out,
    async started(timeoutMs) {
      const end = spawnedAt + timeoutMs;
      while (!out.includes('"server started"')) {
        if (exited || performance.now() > end) {
          throw new Error(
            `server ${exited ? "exited" : "not started"} after ${
              Math.round(performance.now() - spawnedAt)
            } ms; output:\n${out}`,
          );
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      return Math.round(performance.now() - spawnedAt);
    },
    memory: () => readMemory(child.pid),
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      const t = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }, 5000);
      await status;
      clearTimeout(t);
      await reading;
    },
  };
}
