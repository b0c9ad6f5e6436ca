/**
 * A PostgreSQL server of the test's own (initdb into a temporary directory, on its
 * own port), so a test can stop it, freeze it (SIGSTOP) and bring it back without
 * touching the shared test server. Uses the binaries in /usr/lib/postgresql/<v>/bin
 * (or HOP_TEST_PG_BIN). PostgreSQL refuses to run as root: as root, the server
 * runs as the `postgres` user through `setpriv`, which execs it, so the process
 * id the test holds is the postmaster's. Every process it signals is the
 * postmaster it started or one of that postmaster's children, by id.
 */
import { freePort } from "./procs.ts";

export interface PgInstance extends AsyncDisposable {
  /** DSN of the `postgres` database (trust auth, user postgres). */
  readonly dsn: string;
  readonly port: number;
  /** Whether the postmaster is running (started and not stopped). */
  readonly running: boolean;
  /** Starts the server (again, on the same port and data) and waits until it accepts connections. */
  start(): Promise<void>;
  /** Fast shutdown (SIGINT to the postmaster): connections are cut; waits for the exit. */
  stop(): Promise<void>;
  /** SIGSTOP (freeze) or SIGCONT (thaw) the postmaster and all its children. */
  freeze(): Promise<void>;
  thaw(): Promise<void>;
  /** Stops the server and removes its directory. */
  destroy(): Promise<void>;
}

async function pgBinDir(): Promise<string> {
  const env = Deno.env.get("HOP_TEST_PG_BIN");
  if (env) return env;
  const versions: number[] = [];
  for await (const e of Deno.readDir("/usr/lib/postgresql")) {
    if (e.isDirectory && /^\d+$/.test(e.name)) versions.push(Number(e.name));
  }
  if (versions.length === 0) throw new Error("no PostgreSQL in /usr/lib/postgresql");
  return `/usr/lib/postgresql/${Math.max(...versions)}/bin`;
}

async function run(cmd: string[], what: string): Promise<void> {
  const out = await new Deno.Command(cmd[0]!, {
    args: cmd.slice(1),
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  if (!out.success) {
    throw new Error(`${what} failed: ${new TextDecoder().decode(out.stderr).slice(0, 2000)}`);
  }
}

/** The ids of `pid`'s direct children (PostgreSQL's backends and workers). */
async function childrenOf(pid: number): Promise<number[]> {
  // ps, not /proc: Deno reads /proc only with --allow-all.
  const out = await new Deno.Command("ps", {
    args: ["-o", "pid=", "--ppid", String(pid)],
    stdout: "piped",
    stderr: "null",
  }).output();
  return new TextDecoder().decode(out.stdout).split(/\s+/).filter((w) => w !== "").map(Number);
}

/** Creates a data directory and starts a PostgreSQL server on a free port. */
export async function startPgInstance(): Promise<PgInstance> {
  const bin = await pgBinDir();
  const root = Deno.uid() === 0;
  const asPg = (args: string[]) =>
    root ? ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", ...args] : args;
  const dir = await Deno.makeTempDir({ prefix: "hopgate-pg-" });
  if (root) await run(["chown", "postgres:postgres", dir], "chown");
  const data = `${dir}/data`;
  await run(
    asPg([`${bin}/initdb`, "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"]),
    "initdb",
  );
  const port = freePort("tcp");
  let child: Deno.ChildProcess | undefined;
  let exited: Promise<Deno.CommandStatus> | undefined;

  const accepting = async () => {
    const end = Date.now() + 30_000;
    while (Date.now() < end) {
      try {
        const c = await Deno.connect({ hostname: "127.0.0.1", port });
        c.close();
        const ok = await new Deno.Command(`${bin}/pg_isready`, {
          args: ["-h", "127.0.0.1", "-p", String(port), "-U", "postgres"],
          stdout: "null",
          stderr: "null",
        }).output();
        if (ok.success) return;
      } catch { /* not yet */ }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error("the test PostgreSQL did not start in 30 s");
  };

  const self: PgInstance = {
    dsn: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    get running() {
      return child !== undefined;
    },
    async start() {
      if (child) return;
      const cmd = asPg([
        `${bin}/postgres`,
        "-D",
        data,
        "-p",
        String(port),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        `unix_socket_directories=${dir}`,
        "-c",
        "fsync=off",
        "-c",
        "max_connections=40",
      ]);
      child = new Deno.Command(cmd[0]!, { args: cmd.slice(1), stdout: "null", stderr: "null" })
        .spawn();
      exited = child.status;
      await accepting();
    },
    async stop() {
      if (!child) return;
      await self.thaw();
      child.kill("SIGINT");
      await exited;
      child = undefined;
    },
    async freeze() {
      if (!child) return;
      const pid = child.pid;
      Deno.kill(pid, "SIGSTOP");
      for (const kid of await childrenOf(pid)) {
        try {
          Deno.kill(kid, "SIGSTOP");
        } catch { /* gone */ }
      }
    },
    async thaw() {
      if (!child) return;
      const pid = child.pid;
      for (const kid of await childrenOf(pid)) {
        try {
          Deno.kill(kid, "SIGCONT");
        } catch { /* gone */ }
      }
      Deno.kill(pid, "SIGCONT");
    },
    async destroy() {
      await self.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
    [Symbol.asyncDispose]() {
      return self.destroy();
    },
  };
  try {
    await self.start();
  } catch (e) {
    await self.destroy();
    throw e;
  }
  return self;
}
