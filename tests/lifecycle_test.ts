/**
 * Lifecycle with the server as a real process under its task flags: SIGTERM
 * lets a streaming response finish, a shutdown deadline cuts an endless one, a
 * database that is not there at start-up is retried (and /readyz then says
 * ready), and a bad variable stops start-up naming it.
 */
import { equal, match, ok } from "node:assert/strict";
import WebSocket from "ws";
import postgres from "postgres";
import { randomBytes } from "node:crypto";
import {
  ADMIN_KEY,
  curl,
  freePort,
  ROOT,
  startClientProc,
  startServerProc,
  taskFlags,
} from "./helpers/procs.ts";

const DOMAIN = "life.e2e.test";
const ADMIN_DSN = Deno.env.get("HOP_TEST_PG_DSN") ?? "postgres://postgres@127.0.0.1:5432/test";

/** An origin whose /stream sends `n` chunks `ms` apart (n=0: forever). */
function startOrigin() {
  const ac = new AbortController();
  let started!: () => void;
  const firstChunk = new Promise<void>((r) => started = r);
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    (req) => {
      const url = new URL(req.url);
      if (url.pathname === "/ws") {
        const { socket, response } = Deno.upgradeWebSocket(req);
        socket.onmessage = (e) => socket.send(`echo ${e.data}`);
        return response;
      }
      const n = Number(url.searchParams.get("n") ?? 10);
      const ms = Number(url.searchParams.get("ms") ?? 200);
      let i = 0;
      let timer: ReturnType<typeof setTimeout> | undefined;
      return new Response(
        new ReadableStream({
          async pull(c) {
            if (n > 0 && i === n) return c.close();
            if (i > 0) await new Promise((r) => timer = setTimeout(r, ms));
            c.enqueue(new TextEncoder().encode(`chunk ${i++}\n`));
            started();
          },
          cancel() {
            clearTimeout(timer);
          },
        }),
      );
    },
  );
  return {
    port: server.addr.port,
    firstChunk,
    stop: async () => (ac.abort(), await server.finished),
  };
}

async function withTunnel(
  env: Record<string, string>,
  fn: (ctx: {
    server: Awaited<ReturnType<typeof startServerProc>>;
    origin: ReturnType<typeof startOrigin>;
    base: string;
  }) => Promise<void>,
) {
  const origin = startOrigin();
  const server = await startServerProc(env);
  const key = await server.register(DOMAIN);
  const client = startClientProc({
    dtlsPort: server.dtlsPort,
    domain: DOMAIN,
    apiKey: key,
    target: `127.0.0.1:${origin.port}`,
  });
  try {
    await client.waitFor("connected to");
    await fn({ server, origin, base: `http://127.0.0.1:${server.httpPort}` });
  } finally {
    await client.stop();
    await server.stop();
    await origin.stop();
  }
}

Deno.test("lifecycle: SIGTERM during a streaming response lets it finish, then the server exits 0", async () => {
  await withTunnel({}, async ({ server, origin, base }) => {
    const pending = curl(["-H", `Host: ${DOMAIN}`, `${base}/stream?n=10&ms=200`]);
    await origin.firstChunk;
    server.proc.child.kill("SIGTERM");
    const r = await pending;
    equal(r.code, 0, r.headers);
    equal(r.status, 200);
    equal(r.body.trim().split("\n").length, 10, r.body);
    equal(r.body.trim().split("\n").at(-1), "chunk 9");
    const status = await server.proc.exited;
    equal(status.code, 0, server.proc.output);
    match(server.proc.stdout, /"msg":"server stopped".*"drained":true/);
    // New requests were refused while it drained; the log says it stopped last.
    ok(server.proc.stdout.indexOf('"server stopping"') < server.proc.stdout.indexOf('"request"'));
  });
});

Deno.test("lifecycle: past HOP_SHUTDOWN_TIMEOUT_SECONDS an endless stream is cut and the server exits", async () => {
  await withTunnel({ HOP_SHUTDOWN_TIMEOUT_SECONDS: "1" }, async ({ server, origin, base }) => {
    const pending = curl(["-H", `Host: ${DOMAIN}`, `${base}/stream?n=0&ms=100`]);
    await origin.firstChunk;
    server.proc.child.kill("SIGTERM");
    const status = await server.proc.exited;
    equal(status.code, 0, server.proc.output);
    const r = await pending;
    ok(r.code !== 0, "the endless response was cut");
    match(server.proc.stdout, /shutdown deadline passed/);
    match(server.proc.stdout, /"msg":"server stopped".*"drained":false/);
  });
});

Deno.test("lifecycle: an open WebSocket keeps working while the server drains, and is cut at the deadline", async () => {
  await withTunnel({ HOP_SHUTDOWN_TIMEOUT_SECONDS: "2" }, async ({ server }) => {
    const ws = new WebSocket(`ws://127.0.0.1:${server.httpPort}/ws`, {
      headers: { host: DOMAIN },
    });
    const messages: string[] = [];
    let closed!: () => void;
    const isClosed = new Promise<void>((r) => closed = r);
    ws.on("message", (m: Uint8Array) => messages.push(new TextDecoder().decode(m)));
    ws.on("close", () => closed());
    await new Promise<void>((resolve, reject) => {
      ws.on("open", () => resolve());
      ws.on("error", reject);
    });
    const until = async (n: number) => {
      const deadline = Date.now() + 3000;
      while (messages.length < n && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    ws.send("before");
    await until(1);
    const stoppedAt = Date.now();
    server.proc.child.kill("SIGTERM");
    await new Promise((r) => setTimeout(r, 500));
    ws.send("during the drain");
    await until(2);
    equal(messages.join("|"), "echo before|echo during the drain");
    await isClosed;
    const cutAfter = Date.now() - stoppedAt;
    ok(cutAfter >= 1800, `cut at the deadline, not at once (${cutAfter} ms)`);
    equal((await server.proc.exited).code, 0, server.proc.output);
    match(server.proc.stdout, /shutdown deadline passed/);
  });
});

Deno.test("lifecycle: a database missing at start-up is retried; the server starts once it exists", async () => {
  const dbName = `hopgate_late_${randomBytes(6).toString("hex")}`;
  const dsn = new URL(ADMIN_DSN);
  dsn.pathname = `/${dbName}`;
  const httpPort = freePort("tcp");
  const env = {
    HOP_SERVER_DEBUG: "true",
    HOP_SERVER_DOMAIN: "gateway.test",
    HOP_SERVER_HTTP_LISTEN: `127.0.0.1:${httpPort}`,
    HOP_SERVER_HTTPS_LISTEN: "127.0.0.1:0",
    HOP_SERVER_DTLS_LISTEN: "127.0.0.1:0",
    HOP_ADMIN_API_KEY: ADMIN_KEY,
    HOP_DB_DSN: dsn.href,
    HOP_DATA_DIR: `./data/e2e-${dbName}`,
    HOP_SECRET_KEY: "e2e-secret-key-0123456789abcdef0123",
    PATH: Deno.env.get("PATH") ?? "",
    HOME: Deno.env.get("HOME") ?? "",
    ...(Deno.env.get("DENO_DIR") ? { DENO_DIR: Deno.env.get("DENO_DIR")! } : {}),
  };
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--config", `${ROOT}deno.json`, ...taskFlags("server"), "server/main.ts"],
    cwd: ROOT,
    env,
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let out = "";
  const dec = new TextDecoder();
  const reading = Promise.all([child.stdout, child.stderr].map(async (s) => {
    for await (const c of s) out += dec.decode(c, { stream: true });
  }));
  const waitFor = async (re: RegExp) => {
    for (let i = 0; i < 400 && !re.test(out); i++) await new Promise((r) => setTimeout(r, 50));
    match(out, re);
  };
  const sql = postgres(ADMIN_DSN, { max: 1, onnotice: () => {} });
  try {
    await waitFor(/"database unavailable, retrying".*"attempt":2/);
    ok(!out.includes("e2e-secret-key"), "no secret in the retry lines");
    ok(!out.includes("postgres://"), "no DSN in the retry lines");
    await sql.unsafe(`CREATE DATABASE ${dbName}`);
    await waitFor(/"server started"/);
    const r = await curl(["-H", "Host: gateway.test", `http://127.0.0.1:${httpPort}/readyz`]);
    equal(r.status, 200, r.body);
    equal(JSON.parse(r.body).status, "ready");
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await reading;
    await sql.unsafe(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).finally(() => sql.end());
  }
});

Deno.test("lifecycle: a bad variable stops start-up with its name, before any listener", async () => {
  const port = freePort("tcp");
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--config", `${ROOT}deno.json`, ...taskFlags("server"), "server/main.ts"],
    cwd: ROOT,
    env: {
      HOP_SERVER_DEBUG: "true",
      HOP_SERVER_HTTP_LISTEN: `127.0.0.1:${port}`,
      HOP_SHUTDOWN_TIMEOUT_SECONDS: "soon",
      HOP_METRICS_LISTEN: "nowhere",
      PATH: Deno.env.get("PATH") ?? "",
    },
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stderr);
  equal(out.code, 2, text);
  match(text, /HOP_SHUTDOWN_TIMEOUT_SECONDS/);
  match(text, /HOP_METRICS_LISTEN/);
});
