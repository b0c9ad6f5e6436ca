/**
 * `deno task server`: reads the environment (and `.env`), runs the server, and
 * shuts down gracefully on SIGINT/SIGTERM. The only place that reads env.
 */
import { ConfigError, loadServerConfig, SERVER_ENV_NAMES } from "./config.ts";
import { runServer } from "./run.ts";

/** `.env` values, never overriding the real environment. */
async function readDotEnv(path = ".env"): Promise<Record<string, string>> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch {
    return {};
  }
  const out: Record<string, string> = {};
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
    if (!m) continue;
    let v = m[2]!;
    if ((v.startsWith('"') && v.endsWith('"')) || (v.startsWith("'") && v.endsWith("'"))) {
      v = v.slice(1, -1);
    }
    out[m[1]!] = v;
  }
  return out;
}

if (import.meta.main) {
  const dotenv = await readDotEnv();
  const env: Record<string, string | undefined> = {};
  for (const name of SERVER_ENV_NAMES) env[name] = Deno.env.get(name) ?? dotenv[name];
  let config;
  try {
    config = loadServerConfig(env);
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(e.message);
      Deno.exit(2);
    }
    throw e;
  }
  // A signal during start-up (the database still being retried) stops at once.
  const starting = new AbortController();
  let server: Awaited<ReturnType<typeof runServer>> | undefined;
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    if (!server) {
      starting.abort(new Error("stopped by a signal during start-up"));
      return;
    }
    await server.close();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  try {
    server = await runServer(config, { signal: starting.signal });
  } catch (e) {
    if (starting.signal.aborted) Deno.exit(0);
    console.error(`hopgate-server: cannot start: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
  if (stopping) await server.close().then(() => Deno.exit(0));
}
