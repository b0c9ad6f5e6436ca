/**
 * `deno task server`: reads the environment (and `.env`), runs the server, and
 * shuts down gracefully on SIGINT/SIGTERM. The only place that reads env.
 */
import { ConfigError, loadServerConfig, SERVER_ENV_NAMES } from "./config.ts";
import { pathPermissionProblems } from "./path_permissions.ts";
import { runServer } from "./run.ts";
import { readDotEnv } from "../shared/dotenv.ts";

if (import.meta.main) {
  const dotenv = await readDotEnv();
  const env: Record<string, string | undefined> = {};
  for (const name of SERVER_ENV_NAMES) env[name] = Deno.env.get(name) ?? dotenv[name];
  if (env.HOP_SERVER_DEBUG === undefined && env.HOP_SERVER_DOMAIN === undefined) {
    // A fresh checkout: `deno task server` just works, on loopback only, with
    // self-signed certificates. Production sets HOP_SERVER_DOMAIN (or DEBUG=false).
    env.HOP_SERVER_DEBUG = "true";
    console.error(
      "hopgate-server: neither HOP_SERVER_DOMAIN nor HOP_SERVER_DEBUG is set: starting in debug mode " +
        "(127.0.0.1 only, self-signed certificates, no ACME). Set HOP_SERVER_DOMAIN for production.",
    );
  }
  // A path outside the task's --allow-read/--allow-write is a configuration
  // problem: say so now, before anything is opened (not a retry loop later).
  const denied = pathPermissionProblems(env);
  if (denied.length > 0) {
    for (const problem of denied) console.error(`hopgate-server: ${problem}`);
    Deno.exit(2);
  }
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
  const stop = async (signal: Deno.Signal) => {
    if (stopping) return;
    stopping = true;
    if (!server) {
      starting.abort(new Error(`stopped by ${signal} during start-up`));
      return;
    }
    await server.close();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
  Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
  try {
    server = await runServer(config, { signal: starting.signal });
  } catch (e) {
    if (starting.signal.aborted) Deno.exit(0);
    console.error(`hopgate-server: cannot start: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
  if (stopping) await server.close().then(() => Deno.exit(0));
}
