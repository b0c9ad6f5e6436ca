/**
 * Start-up and shutdown as an operator sees them, with the server as a real
 * process under the `server` task's flags:
 *
 * - a path variable outside the task's permissions stops start-up (exit 2, one
 *   line naming the variable, the path and the flag), and the flags the README
 *   gives for other directories make the same paths work;
 * - a signal while the database is retried stops the process at once, with one line;
 * - after a restart the certificate metrics count the stored certificates;
 * - from the moment shutdown begins `/readyz` answers 503, a request cut at the
 *   deadline logs a warning, not an error, and admin audit lines are `admin`.
 */
import { equal, match, ok } from "node:assert/strict";
import {
  ADMIN_KEY,
  baseEnv,
  curl,
  freePort,
  ROOT,
  startClientProc,
  startServerProc,
  taskFlags,
} from "./helpers/procs.ts";

const SECRET = "e2e-secret-key-0123456789abcdef0123";

/** A server process with the task's flags plus `extraFlags`, output collected. */
function spawnServer(env: Record<string, string>, extraFlags: string[] = []) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--config",
      `${ROOT}deno.json`,
      ...taskFlags("server"),
      ...extraFlags,
      "server/main.ts",
    ],
    cwd: ROOT,
    clearEnv: true,
    env: {
      ...baseEnv(),
      HOP_SERVER_DEBUG: "true",
      HOP_SERVER_DOMAIN: "gateway.test",
      HOP_SERVER_HTTP_LISTEN: `127.0.0.1:${freePort("tcp")}`,
      HOP_SERVER_HTTPS_LISTEN: `127.0.0.1:${freePort("tcp")}`,
      HOP_SERVER_DTLS_LISTEN: `127.0.0.1:${freePort("udp")}`,
      ...env,
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const out = { stdout: "", stderr: "" };
  const dec = (s: ReadableStream<Uint8Array>, key: "stdout" | "stderr") =>
    (async () => {
      const d = new TextDecoder();
      for await (const c of s) out[key] += d.decode(c, { stream: true });
    })();
  const reading = Promise.all([dec(child.stdout, "stdout"), dec(child.stderr, "stderr")]);
  const waitFor = async (re: RegExp, ms = 30_000) => {
    const end = Date.now() + ms;
    while (!re.test(out.stdout + out.stderr) && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 20));
    }
    match(out.stdout + out.stderr, re);
  };
  return { child, out, reading, waitFor };
}

Deno.test("startup: HOP_DATA_DIR and HOP_SERVER_ERROR_PAGES_DIR outside the task's permissions stop start-up with exit 2 and the flag to add", async () => {
  const dataDir = `/tmp/hopgate-outside-${crypto.randomUUID()}`;
  const pagesDir = await Deno.makeTempDir({ prefix: "hopgate-pages-" });
  try {
    const s = spawnServer({ HOP_DATA_DIR: dataDir, HOP_SERVER_ERROR_PAGES_DIR: pagesDir });
    const started = Date.now();
    const status = await s.child.status;
    await s.reading;
    equal(status.code, 2, s.out.stdout + s.out.stderr);
    ok(Date.now() - started < 20_000);
    const lines = s.out.stderr.trim().split("\n").filter((l) => !l.includes("debug mode"));
    equal(lines.length, 2, s.out.stderr);
    match(
      lines[0]!,
      new RegExp(
        `^hopgate-server: HOP_DATA_DIR: ${dataDir} .*` +
          `add --allow-read=${dataDir} --allow-write=${dataDir} `,
      ),
    );
    match(
      lines[1]!,
      new RegExp(
        `^hopgate-server: HOP_SERVER_ERROR_PAGES_DIR: ${pagesDir} .*` +
          `add --allow-read=${pagesDir} `,
      ),
    );
    equal(s.out.stdout, "", "nothing was logged: no retry loop, no listener");
    ok(
      !(await Deno.stat(dataDir).then(() => true, () => false)),
      "the data directory was not made",
    );
  } finally {
    await Deno.remove(pagesDir, { recursive: true });
  }
});

Deno.test("startup: with the README's extra flags a data directory and error pages outside the checkout work", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "hopgate-data-" });
  const pagesDir = await Deno.makeTempDir({ prefix: "hopgate-pages-" });
  await Deno.writeTextFile(
    `${pagesDir}/404.html`,
    "<p>custom {{status}} {{title}}: {{message}} ({{request_id}})</p>\n",
  );
  const http = freePort("tcp");
  // The embedded database would take a minute on a loaded machine: PostgreSQL for
  // the data, the data directory for the generated secret key file.
  const dbName = `hopgate_outside_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  const { default: postgres } = await import("postgres");
  const adminDsn = Deno.env.get("HOP_TEST_PG_DSN") ?? "postgres://postgres@127.0.0.1:5432/test";
  const sql = postgres(adminDsn, { max: 1, onnotice: () => {} });
  await sql.unsafe(`CREATE DATABASE ${dbName}`);
  const dsn = new URL(adminDsn);
  dsn.pathname = `/${dbName}`;
  const s = spawnServer(
    {
      HOP_SERVER_HTTP_LISTEN: `127.0.0.1:${http}`,
      HOP_DATA_DIR: dataDir,
      HOP_SERVER_ERROR_PAGES_DIR: pagesDir,
      HOP_DB_DSN: dsn.href,
    },
    [`--allow-read=${dataDir},${pagesDir}`, `--allow-write=${dataDir}`],
  );
  try {
    await s.waitFor(/"server started"/);
    ok((await Deno.stat(`${dataDir}/secret.key`)).isFile, "the key file is in the data directory");
    const r = await curl([
      "-H",
      "Host: nobody.e2e.test",
      "-H",
      "X-Request-Id: req-outside-1",
      `http://127.0.0.1:${http}/`,
    ]);
    equal(r.status, 404);
    equal(
      r.body,
      "<p>custom 404 No tunnel for this host: No tunnel is connected for nobody.e2e.test. " +
        "(req-outside-1)</p>\n",
    );
  } finally {
    s.child.kill("SIGTERM");
    await s.child.status;
    await s.reading;
    await sql.unsafe(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).finally(() => sql.end());
    await Deno.remove(dataDir, { recursive: true });
    await Deno.remove(pagesDir, { recursive: true });
  }
});

/** SIGTERM; resolves with the exit code and how long the process took to go. */
async function terminate(s: ReturnType<typeof spawnServer>) {
  const at = performance.now();
  s.child.kill("SIGTERM");
  const status = await s.child.status;
  const ms = performance.now() - at;
  await s.reading;
  return { code: status.code, ms };
}

Deno.test("startup: SIGTERM while the database is retried stops at once with one line", async (t) => {
  await t.step("during the wait between attempts", async () => {
    const closedPort = freePort("tcp"); // nothing listens: every attempt fails fast
    const s = spawnServer({
      HOP_DB_DSN: `postgres://postgres@127.0.0.1:${closedPort}/none`,
      HOP_SECRET_KEY: SECRET,
    });
    await s.waitFor(/"database unavailable, retrying".*"attempt":2/);
    const { code, ms } = await terminate(s);
    equal(code, 0, s.out.stdout + s.out.stderr);
    ok(ms < 1000, `stopped in ${Math.round(ms)} ms`);
    const stopped = s.out.stdout.split("\n").filter((l) => l.includes('"server stopped"'));
    equal(stopped.length, 1, s.out.stdout);
    match(stopped[0]!, /"during":"start-up".*"reason":"stopped by SIGTERM during start-up"/);
  });

  await t.step("during an attempt that gets no answer", async () => {
    // A "database" that accepts the connection and never says a word.
    const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const held: Deno.Conn[] = [];
    const accepted = Promise.withResolvers<void>();
    const accepting = (async () => {
      for await (const c of silent) {
        held.push(c);
        accepted.resolve();
      }
    })();
    const s = spawnServer({
      HOP_DB_DSN: `postgres://postgres@127.0.0.1:${(silent.addr as Deno.NetAddr).port}/none`,
      HOP_SECRET_KEY: SECRET,
    });
    try {
      await accepted.promise;
      await new Promise((r) => setTimeout(r, 300));
      const { code, ms } = await terminate(s);
      equal(code, 0, s.out.stdout + s.out.stderr);
      ok(ms < 1000, `stopped in ${Math.round(ms)} ms`);
      const stopped = s.out.stdout.split("\n").filter((l) => l.includes('"server stopped"'));
      equal(stopped.length, 1, s.out.stdout);
      match(stopped[0]!, /"during":"start-up"/);
    } finally {
      silent.close();
      for (const c of held) c.close();
      await accepting.catch(() => {});
    }
  });
});

/** Sample value of a series in exposition text. */
function sample(text: string, series: string): number {
  for (const line of text.split("\n")) {
    if (line.startsWith(series + " ")) return Number(line.slice(series.length + 1));
  }
  return NaN;
}

Deno.test("startup: after a restart the certificate metrics count the stored certificates", async () => {
  const server = await startServerProc({
    HOP_SERVER_HTTPS_LISTEN: `127.0.0.1:${freePort("tcp")}`,
  });
  const metrics = async () =>
    (await curl(["-H", "Host: gateway.test", `http://127.0.0.1:${server.httpPort}/metrics`])).body;
  try {
    await server.register("certs.e2e.test");
    // The server domain's and the registered domain's self-signed certificates.
    const end = Date.now() + 20_000;
    while (sample(await metrics(), "hopgate_certificates") !== 2 && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 100));
    }
    equal(sample(await metrics(), "hopgate_certificates"), 2);

    await server.proc.stop();
    await server.restart();
    const text = await metrics();
    equal(sample(text, "hopgate_certificates"), 2, text);
    const expiry = sample(text, "hopgate_certificate_expiry_seconds");
    ok(expiry > 300 * 86400 && expiry < 366 * 86400, `expiry ${expiry} s`);
    ok(!/"certificate issued"/.test(server.proc.stdout), "nothing was issued again");
  } finally {
    await server.stop();
  }
});

Deno.test("startup: shutdown makes /readyz 503 at once; a request cut at the deadline is a warning; admin lines are admin", async () => {
  const ac = new AbortController();
  const firstChunk = Promise.withResolvers<void>();
  const origin = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    async (req) => {
      if (req.method === "PUT") {
        await req.body?.pipeTo(new WritableStream()).catch(() => {});
        return new Response("uploaded");
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      return new Response(
        new ReadableStream({
          async pull(c) {
            await new Promise((r) => timer = setTimeout(r, 100));
            c.enqueue(new TextEncoder().encode("chunk\n"));
            firstChunk.resolve();
          },
          cancel() {
            clearTimeout(timer);
          },
        }),
      );
    },
  );
  const metricsPort = freePort("tcp");
  const httpsPort = freePort("tcp");
  const server = await startServerProc({
    HOP_SHUTDOWN_TIMEOUT_SECONDS: "1",
    HOP_METRICS_LISTEN: `127.0.0.1:${metricsPort}`,
    HOP_SERVER_HTTPS_LISTEN: `127.0.0.1:${httpsPort}`,
  });
  const domain = "cut.e2e.test";
  const key = await server.register(domain);
  const client = startClientProc({
    dtlsPort: server.dtlsPort,
    domain,
    apiKey: key,
    target: `127.0.0.1:${origin.addr.port}`,
  });
  try {
    await client.waitFor("connected to");
    const readyz = async () => {
      const r = await curl([`http://127.0.0.1:${metricsPort}/readyz`]);
      return { status: r.status, body: JSON.parse(r.body) };
    };
    equal((await readyz()).status, 200);
    // Endless responses and an endless upload over HTTPS (HTTP/2 and 1.1), cut at the deadline.
    const tls = ["-k", "--resolve", `${domain}:${httpsPort}:127.0.0.1`];
    const base = `https://${domain}:${httpsPort}`;
    const pending = [
      curl([...tls, "--http2", `${base}/a`]),
      curl([...tls, "--http2", `${base}/b`]),
      curl([...tls, "--http1.1", `${base}/c`]),
      curl([...tls, "--http2", "-T", "/dev/zero", "--limit-rate", "20k", `${base}/up`]),
      curl(["-H", `Host: ${domain}`, `http://127.0.0.1:${server.httpPort}/d`]),
    ];
    await firstChunk.promise;
    await new Promise((r) => setTimeout(r, 300));

    server.proc.child.kill("SIGTERM");
    await server.proc.waitFor('"server stopping"');
    const during = await readyz();
    equal(during.status, 503);
    equal(during.body.status, "not ready");
    ok(during.body.reasons.includes("shutting down"), JSON.stringify(during.body));
    equal(during.body.listeners.http, false);
    equal(during.body.listeners.https, false);
    equal(during.body.listeners.dtls, false);

    equal((await server.proc.exited).code, 0, server.proc.output);
    await Promise.all(pending);
    const lines = server.proc.stdout.trim().split("\n").map((l) => JSON.parse(l));
    ok(lines.some((l) => l.msg === "shutdown deadline passed, cutting requests in flight"));
    const errors = lines.filter((l) => l.level === "error");
    equal(errors.length, 0, `no error line for an expected cut: ${JSON.stringify(errors)}`);
    const audit = lines.filter((l) => l.event === "admin.audit");
    equal(audit.length, 1);
    equal(audit[0].component, "admin");
    equal(audit[0].action, "domains.register");
    ok(!server.proc.output.includes(ADMIN_KEY));
  } finally {
    await client.stop();
    await server.stop();
    ac.abort();
    await origin.finished;
  }
});
