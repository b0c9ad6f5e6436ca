/**
 * The CLI as a real `deno run` process with exactly the permission flags of the
 * `client` task in deno.json: help, exit codes, env/.env/flag precedence, and a
 * real run against a tunnel server (so a missing permission shows up here).
 */
import assert from "node:assert/strict";
import { encodeHead } from "../shared/protocol/mod.ts";
import { baseEnv, ROOT, taskFlags } from "../tests/helpers/procs.ts";
import { startTestServer } from "./testing/tunnel_server.ts";
import { readAnswer, readBytes, requestHead, within } from "./testing/tunnel.ts";

const CONFIG = `${ROOT}deno.json`;
const MAIN = `${ROOT}client/main.ts`;

function cli(
  args: string[],
  o: { cwd?: string; env?: Record<string, string>; denoFlags?: string[] } = {},
) {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--config",
      CONFIG,
      ...(o.denoFlags ?? []),
      ...taskFlags("client"),
      MAIN,
      ...args,
    ],
    cwd: o.cwd ?? Deno.makeTempDirSync({ prefix: "hopgate-cli-" }),
    env: { ...baseEnv(), ...o.env },
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
}

async function run(args: string[], o: { cwd?: string; env?: Record<string, string> } = {}) {
  const r = await cli(args, o).output();
  const dec = new TextDecoder();
  return { code: r.code, stdout: dec.decode(r.stdout), stderr: dec.decode(r.stderr) };
}

Deno.test("cli: --help explains every option, its variable, and node-dtls-client's limits", async () => {
  const r = await run(["--help"]);
  assert.equal(r.code, 0, r.stderr);
  for (
    const s of [
      "--server-addr <host:port>",
      "--domain <domain>",
      "--api-key <key>",
      "--local-target <target>",
      "--dtls-engine <engine>",
      "--debug",
      "HOP_CLIENT_SERVER_ADDR",
      "HOP_CLIENT_DOMAIN",
      "HOP_CLIENT_API_KEY",
      "HOP_CLIENT_LOCAL_TARGET",
      "HOP_CLIENT_DEBUG",
      ".env",
      "never retransmits a handshake flight",
      "more than 64 lost",
      "50 µs of CPU per 1200-byte record",
      "unscoped\n                    --allow-env",
      "DENO_CERT",
    ]
  ) assert.ok(r.stdout.includes(s), `help mentions ${JSON.stringify(s)}`);
});

Deno.test("cli: missing or invalid options exit 2 naming the option and variable", async () => {
  const missing = await run(["--domain", "app.example.com"]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /Missing --server-addr \/ HOP_CLIENT_SERVER_ADDR/);
  assert.match(missing.stderr, /Missing --api-key \/ HOP_CLIENT_API_KEY/);
  assert.match(missing.stderr, /Missing --local-target \/ HOP_CLIENT_LOCAL_TARGET/);
  assert.doesNotMatch(missing.stderr, /--domain/);

  const badEngine = await run(["--dtls-engine", "openssl"]);
  assert.equal(badEngine.code, 2);
  assert.match(badEngine.stderr, /--dtls-engine/);

  const unknown = await run(["--no-such-flag"]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown option '--no-such-flag'/);

  const badAddr = await run(["--check"], {
    env: {
      HOP_CLIENT_SERVER_ADDR: "no-port",
      HOP_CLIENT_DOMAIN: "app.example.com",
      HOP_CLIENT_API_KEY: "the-secret-key",
      HOP_CLIENT_LOCAL_TARGET: "3000",
    },
  });
  assert.equal(badAddr.code, 2);
  assert.match(
    badAddr.stderr,
    /Invalid --server-addr \/ HOP_CLIENT_SERVER_ADDR: expected host:port/,
  );
  assert.ok(!badAddr.stderr.includes("the-secret-key"));

  // node-dtls-client needs the whole environment, which the task does not grant.
  const node = await run(["--dtls-engine", "node-dtls-client", "--check"], {
    env: {
      HOP_CLIENT_SERVER_ADDR: "h.example.com:1",
      HOP_CLIENT_DOMAIN: "app.example.com",
      HOP_CLIENT_API_KEY: "k",
      HOP_CLIENT_LOCAL_TARGET: "3000",
    },
  });
  assert.equal(node.code, 2);
  assert.match(node.stderr, /node-dtls-client needs an unscoped --allow-env/);
});

Deno.test("cli: flags over environment over .env; the key is masked", async () => {
  const cwd = await Deno.makeTempDir({ prefix: "hopgate-cli-" });
  await Deno.writeTextFile(
    `${cwd}/.env`,
    [
      "HOP_CLIENT_SERVER_ADDR=dotenv.example.com:1111",
      "HOP_CLIENT_DOMAIN=dotenv.example.com",
      "HOP_CLIENT_API_KEY=dotenv-secret-key",
      "HOP_CLIENT_LOCAL_TARGET=127.0.0.1:1111",
      "HOP_CLIENT_DEBUG=true",
    ].join("\n"),
  );
  const r = await run(["--local-target", "https://127.0.0.1:3333", "--check"], {
    cwd,
    env: { HOP_CLIENT_DOMAIN: "env.example.com", HOP_CLIENT_SERVER_ADDR: "env.example.com:2222" },
  });
  await Deno.remove(cwd, { recursive: true });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(
    r.stdout,
    [
      "server-addr   env.example.com:2222",
      "redundancy    2",
      "domain        env.example.com",
      "api-key       ****(17 chars)",
      "local-target  https://127.0.0.1:3333/",
      "dtls-engine   hopgate",
      "debug         true",
      "",
    ].join("\n"),
  );
  assert.ok(!r.stdout.includes("dotenv-secret-key") && !r.stderr.includes("dotenv-secret-key"));
});

/**
 * A real run against a test tunnel server: one request through it, then SIGTERM. Returns the
 * exit code and output. `denoFlags` go before the task's own flags.
 */
async function serveOne(denoFlags: string[] = []) {
  const origin = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => new Response(`hi ${req.headers.get("host")}`),
  );
  const server = startTestServer({ keys: { "app.example.com": "cli-secret-key" } });
  const child = cli(["--debug"], {
    denoFlags,
    env: {
      HOP_CLIENT_SERVER_ADDR: `127.0.0.1:${server.port}`,
      HOP_CLIENT_DOMAIN: "app.example.com",
      HOP_CLIENT_API_KEY: "cli-secret-key",
      HOP_CLIENT_LOCAL_TARGET: String(origin.addr.port),
    },
  }).spawn();
  const output = child.output();
  try {
    const session = await within(server.nextSession(), 30_000, "the client to connect");
    const s = session.openStream();
    const w = s.writable.getWriter();
    await w.write(encodeHead(requestHead({ url: "/cli" })));
    await w.close();
    const { head, body } = await readAnswer(s);
    assert.equal(head.t === "res" && head.status, 200);
    assert.equal(new TextDecoder().decode(await readBytes(body)), "hi app.example.com");
  } finally {
    try {
      child.kill("SIGTERM");
    } catch { /* already exited */ }
  }
  const r = await within(output, 20_000, "the client to exit");
  await server.close();
  await origin.shutdown();
  const dec = new TextDecoder();
  return { code: r.code, stdout: dec.decode(r.stdout), stderr: dec.decode(r.stderr) };
}

Deno.test("cli: without WebAssembly the client says libsodium did not load and serves through node:crypto", async () => {
  // --jitless: V8 without executable memory has no WebAssembly at all.
  const r = await serveOne(["--v8-flags=--jitless"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(
    r.stderr,
    /^hopgate-client: warning: libsodium's wasm did not load \(.+\); records are sealed with node:crypto, at more CPU each\n$/,
  );
  assert.match(r.stdout, /GET \/cli → 200/);
  assert.match(r.stdout, /stopped after 1 requests/);
});

Deno.test("cli: a real run with the task's permissions connects, serves, and stops on SIGTERM", async () => {
  const { code, stdout, stderr } = await serveOne();
  assert.equal(code, 0, stderr);
  assert.equal(stderr, ""); // libsodium loaded under the task's permissions: no warning
  assert.match(stdout, /connected to 127\.0\.0\.1:\d+ over dtls \(test-server\/0, session s1\)/);
  assert.match(stdout, /GET \/cli → 200/);
  assert.match(stdout, /stopped after 1 requests/);
  assert.ok(!stdout.includes("cli-secret-key"));
  assert.match(stdout, /API key \*\*\*\*\(14 chars\)/);
});

Deno.test("cli: --check with several server addresses and --server-redundancy; mistakes exit 2 naming them", async () => {
  const env = {
    HOP_CLIENT_DOMAIN: "app.example.com",
    HOP_CLIENT_API_KEY: "the-secret-key",
    HOP_CLIENT_LOCAL_TARGET: "3000",
  };
  const ok = await run(
    ["--server-addr", "a.example.com:443,10.0.0.2:4433", "--server-redundancy", "1", "--check"],
    { env },
  );
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(
    ok.stdout,
    /^server-addr {3}a\.example\.com:443, 10\.0\.0\.2:4433\nredundancy {4}1\n/,
  );
  const bad = await run(["--server-addr", "a.example.com:443,,b:1", "--server-redundancy", "9"], {
    env,
  });
  assert.equal(bad.code, 2);
  assert.match(
    bad.stderr,
    /Invalid --server-addr \/ HOP_CLIENT_SERVER_ADDR: entry 2 of 3 is empty/,
  );
  assert.match(
    bad.stderr,
    /Invalid --server-redundancy \/ HOP_CLIENT_SERVER_REDUNDANCY: expected an integer from 1 to 8/,
  );
  assert.ok(!bad.stderr.includes("the-secret-key"));
  const help = await run(["--help"]);
  assert.match(help.stdout, /--server-redundancy <n>/);
  assert.match(help.stdout, /HOP_CLIENT_SERVER_REDUNDANCY/);
});
