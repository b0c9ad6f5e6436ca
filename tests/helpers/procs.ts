/**
 * Server and client as real `deno run` processes, with exactly the permission
 * flags of the `server` and `client` tasks in deno.json, for end-to-end tests.
 * Each gets a fresh PostgreSQL database and ephemeral ports; `stop()` ends the
 * process (SIGTERM, then SIGKILL) and drops the database.
 */
import postgres from "postgres";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const CONFIG = `${ROOT}deno.json`;
const ADMIN_DSN = Deno.env.get("HOP_TEST_PG_DSN") ?? "postgres://postgres@127.0.0.1:5432/test";
export const ADMIN_KEY = "e2e-admin-key-0123456789";

/** A task's flags from deno.json: "deno run FLAGS... entry.ts". */
export function taskFlags(task: "server" | "client"): string[] {
  const cfg = JSON.parse(Deno.readTextFileSync(CONFIG)) as { tasks: Record<string, string> };
  const words = cfg.tasks[task]!.split(/\s+/);
  if (words[0] !== "deno" || words[1] !== "run" || words.at(-1) !== `${task}/main.ts`) {
    throw new Error(`task ${task} is not "deno run FLAGS... ${task}/main.ts": ${cfg.tasks[task]}`);
  }
  return words.slice(2, -1);
}

/** Only what deno itself needs to find its cache: tests pass everything else explicitly. */
export function baseEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const k of ["PATH", "HOME", "DENO_DIR", "XDG_CACHE_HOME", "TMPDIR"]) {
    const v = Deno.env.get(k);
    if (v !== undefined) env[k] = v;
  }
  return env;
}

/** A port free right now on 127.0.0.1 (TCP or UDP). */
/**
 * A port that is free now, chosen below the kernel's ephemeral range (32768+):
 * a server restarted on its old port must not lose it to some other test's
 * outgoing connection (the attack suite opens thousands), which the kernel
 * numbers from that range.
 */
export function freePort(transport: "tcp" | "udp"): number {
  const tryBind = (port: number): number | undefined => {
    try {
      if (transport === "tcp") {
        const l = Deno.listen({ hostname: "127.0.0.1", port });
        const got = (l.addr as Deno.NetAddr).port;
        l.close();
        return got;
      }
      const s = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port });
      const got = (s.addr as Deno.NetAddr).port;
      s.close();
      return got;
    } catch {
      return undefined;
    }
  };
  for (let i = 0; i < 50; i++) {
    const port = tryBind(20_000 + Math.floor(Math.random() * 12_000));
    if (port !== undefined) return port;
  }
  return tryBind(0)!;
}

/** A child `deno run` process whose output the test reads. */
export class Proc {
  readonly child: Deno.ChildProcess;
  output = "";
  /** Standard output alone (the server's JSON log lines). */
  stdout = "";
  /** The exit status, once the process has ended and all of its output has been read. */
  readonly exited: Promise<Deno.CommandStatus>;
  #done = false;

  constructor(args: string[], env: Record<string, string>) {
    this.child = new Deno.Command(Deno.execPath(), {
      args,
      cwd: ROOT,
      env: { ...baseEnv(), ...env },
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const dec = new TextDecoder();
    const drain = async (r: ReadableStream<Uint8Array>, stdout: boolean) => {
      const d = new TextDecoder();
      for await (const chunk of r) {
        this.output += dec.decode(chunk, { stream: true });
        if (stdout) this.stdout += d.decode(chunk, { stream: true });
      }
    };
    const reading = Promise.all([drain(this.child.stdout, true), drain(this.child.stderr, false)]);
    // The pipes can still hold output after the status arrives: an exit
    // status read before them would come with a short (even empty) `output`.
    this.exited = Promise.all([this.child.status, reading]).then(([status]) => status);
    this.exited.then(() => this.#done = true);
  }

  /** Waits until the output contains `text` (or throws after `ms`). */
  async waitFor(text: string | RegExp, ms = 20_000): Promise<void> {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if (typeof text === "string" ? this.output.includes(text) : text.test(this.output)) return;
      if (this.#done) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(
      `${this.#done ? "process exited" : "timed out"} waiting for ${text}; output:\n${this.output}`,
    );
  }

  async stop(signal: Deno.Signal = "SIGTERM"): Promise<void> {
    try {
      this.child.kill(signal);
    } catch { /* already gone */ }
    const t = setTimeout(() => {
      try {
        this.child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 5000);
    await this.exited;
    clearTimeout(t);
  }
}

export interface ServerProc {
  proc: Proc;
  httpPort: number;
  dtlsPort: number;
  register(domain: string): Promise<string>;
  /** Starts the same server again (same ports and database) after `stop`. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Starts a server process. With `o.dsn`, it uses that database (which several
 * servers may share) and neither creates nor drops one.
 */
export async function startServerProc(
  env: Record<string, string> = {},
  o: { dsn?: string; flags?: string[] } = {},
): Promise<ServerProc> {
  const dbName = `hopgate_p_${randomBytes(6).toString("hex")}`;
  const own = o.dsn === undefined;
  if (own) {
    const sql = postgres(ADMIN_DSN, { max: 1, onnotice: () => {} });
    await sql.unsafe(`CREATE DATABASE ${dbName}`).finally(() => sql.end());
  }
  const dsn = new URL(o.dsn ?? ADMIN_DSN);
  if (own) dsn.pathname = `/${dbName}`;
  const httpPort = freePort("tcp");
  const dtlsPort = freePort("udp");
  // Every listener on a port of its own: debug mode's default HTTPS listener
  // (127.0.0.1:8443) would be shared by every server process the suite starts at once.
  const httpsPort = freePort("tcp");
  const fullEnv = {
    HOP_SERVER_DEBUG: "true",
    HOP_SERVER_DOMAIN: "gateway.test",
    HOP_SERVER_HTTP_LISTEN: `127.0.0.1:${httpPort}`,
    HOP_SERVER_HTTPS_LISTEN: `127.0.0.1:${httpsPort}`,
    HOP_SERVER_DTLS_LISTEN: `127.0.0.1:${dtlsPort}`,
    HOP_ADMIN_API_KEY: ADMIN_KEY,
    HOP_DB_DSN: dsn.href,
    HOP_DB_MAX_OPEN_CONNS: "4",
    HOP_DATA_DIR: `./data/e2e-${dbName}`,
    HOP_SECRET_KEY: "e2e-secret-key-0123456789abcdef0123",
    ...env,
  };
  const args = [
    "run",
    "--config",
    CONFIG,
    ...taskFlags("server"),
    ...(o.flags ?? []),
    "server/main.ts",
  ];
  const self: ServerProc = {
    proc: new Proc(args, fullEnv),
    httpPort,
    dtlsPort,
    register: async (domain) => {
      const r = await curl([
        "-s",
        "-H",
        "Host: gateway.test",
        "-H",
        `Authorization: Bearer ${ADMIN_KEY}`,
        "-d",
        JSON.stringify({ domain, memo: "e2e" }),
        `http://127.0.0.1:${httpPort}/api/v1/admin/domains/register`,
      ]);
      const key = JSON.parse(r.body).client_api_key;
      if (typeof key !== "string") throw new Error(`register failed: ${r.body}`);
      return key;
    },
    restart: async () => {
      self.proc = new Proc(args, fullEnv);
      await self.proc.waitFor('"server started"');
    },
    stop: async () => {
      await self.proc.stop();
      if (!own) return;
      const sql = postgres(ADMIN_DSN, { max: 1, onnotice: () => {} });
      await sql.unsafe(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).finally(() => sql.end());
    },
  };
  try {
    await self.proc.waitFor('"server started"');
  } catch (e) {
    await self.stop();
    throw e;
  }
  return self;
}

/**
 * The client CLI with the client task's permissions; the API key in its environment
 * (as the README recommends). `dtlsPort`: one server, or several (`--server-addr a,b`).
 */
export function startClientProc(
  o: {
    dtlsPort: number | number[];
    domain: string;
    apiKey: string;
    target: string;
    engine?: string;
    /** More CLI flags (e.g. `--metrics-listen`). */
    args?: string[];
  },
): Proc {
  // node-dtls-client's `debug` dependency lists the whole environment: that engine
  // needs an unscoped --allow-env (the client says so and exits otherwise).
  const flags = taskFlags("client").map((f) =>
    o.engine === "node-dtls-client" && f.startsWith("--allow-env=") ? "--allow-env" : f
  );
  return new Proc([
    "run",
    "--config",
    CONFIG,
    ...flags,
    "client/main.ts",
    "--server-addr",
    [o.dtlsPort].flat().map((p) => `127.0.0.1:${p}`).join(","),
    "--domain",
    o.domain,
    "--local-target",
    o.target,
    ...(o.engine ? ["--dtls-engine", o.engine] : []),
    ...(o.args ?? []),
  ], { HOP_CLIENT_API_KEY: o.apiKey });
}

export interface CurlResult {
  code: number;
  status: number;
  body: string;
  headers: string;
}

/** Runs curl; `-w` adds the status on the last line. */
export async function curl(args: string[]): Promise<CurlResult> {
  const out = await new Deno.Command("curl", {
    args: ["-sS", "-D", "/dev/stderr", "-w", "\n%{http_code}", ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const nl = text.lastIndexOf("\n");
  return {
    code: out.code,
    status: Number(text.slice(nl + 1)),
    body: text.slice(0, nl),
    headers: new TextDecoder().decode(out.stderr),
  };
}
