/**
 * The API key from a file (`--api-key-file` / `HOP_CLIENT_API_KEY_FILE`) instead of
 * the command line: real files in a temporary directory, and the CLI as a real
 * `deno run` process with the `client` task's permission flags (plus read access
 * to the key file where a test grants it). The key never appears in any output.
 */
import assert from "node:assert/strict";
import { ConfigError, readApiKeyFile, resolveConfig } from "./config.ts";
import { baseEnv, ROOT, taskFlags } from "../tests/helpers/procs.ts";

const KEY = "file-secret-key-0123456789";
const BASE = {
  HOP_CLIENT_SERVER_ADDR: "hop.example.com:443",
  HOP_CLIENT_DOMAIN: "app.example.com",
  HOP_CLIENT_LOCAL_TARGET: "127.0.0.1:3000",
};

async function keyFile(content: string): Promise<{ dir: string; path: string }> {
  const dir = await Deno.makeTempDir({ prefix: "hopgate-key-" });
  const path = `${dir}/api-key`;
  await Deno.writeTextFile(path, content);
  return { dir, path };
}

function problems(f: () => unknown): string[] {
  try {
    f();
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  assert.fail("expected a ConfigError");
}

Deno.test("api key file: the trailing newline (LF or CRLF) and surrounding blanks are trimmed", async () => {
  for (const content of [`${KEY}\n`, `${KEY}\r\n`, `  ${KEY}\n\n`, KEY]) {
    const { dir, path } = await keyFile(content);
    try {
      const c = resolveConfig({ flags: { apiKeyFile: path }, env: BASE, dotenv: {} });
      assert.equal(c.apiKey.reveal(), KEY, JSON.stringify(content));
      assert.deepEqual(c.apiKeySource, { kind: "file", path });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});

Deno.test("api key file: HOP_CLIENT_API_KEY_FILE works; a flag beats the variables; both in one source is an error", async () => {
  const { dir, path } = await keyFile(`${KEY}\n`);
  try {
    const env = resolveConfig({
      flags: {},
      env: { ...BASE, HOP_CLIENT_API_KEY_FILE: path },
      dotenv: {},
    });
    assert.equal(env.apiKey.reveal(), KEY);
    // The file flag beats the key variable; the key flag beats the file variable.
    const a = resolveConfig({
      flags: { apiKeyFile: path },
      env: { ...BASE, HOP_CLIENT_API_KEY: "env-key" },
      dotenv: {},
    });
    assert.equal(a.apiKey.reveal(), KEY);
    const b = resolveConfig({
      flags: { apiKey: "flag-key" },
      env: { ...BASE, HOP_CLIENT_API_KEY_FILE: path },
      dotenv: {},
    });
    assert.equal(b.apiKey.reveal(), "flag-key");
    assert.deepEqual(b.apiKeySource, { kind: "flag" });
    // The variable beats a key file named in .env.
    const c = resolveConfig({
      flags: {},
      env: { ...BASE, HOP_CLIENT_API_KEY: "env-key" },
      dotenv: { HOP_CLIENT_API_KEY_FILE: path },
    });
    assert.deepEqual(c.apiKeySource, { kind: "env" });

    assert.deepEqual(
      problems(() =>
        resolveConfig({ flags: { apiKey: "k", apiKeyFile: path }, env: BASE, dotenv: {} })
      ),
      ["Give either --api-key or --api-key-file, not both"],
    );
    assert.deepEqual(
      problems(() =>
        resolveConfig({
          flags: {},
          env: { ...BASE, HOP_CLIENT_API_KEY: "k", HOP_CLIENT_API_KEY_FILE: path },
          dotenv: {},
        })
      ),
      ["Set either HOP_CLIENT_API_KEY or HOP_CLIENT_API_KEY_FILE, not both"],
    );
    assert.deepEqual(
      problems(() => resolveConfig({ flags: {}, env: BASE, dotenv: {} })),
      ["Missing --api-key / HOP_CLIENT_API_KEY (or --api-key-file / HOP_CLIENT_API_KEY_FILE)"],
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("api key file: missing, empty, a directory, several lines: one clear problem each, no content", async () => {
  const { dir, path } = await keyFile("");
  try {
    const check = (p: string, expected: RegExp) => {
      const list = problems(() =>
        resolveConfig({ flags: { apiKeyFile: p }, env: BASE, dotenv: {} })
      );
      assert.equal(list.length, 1, list.join("\n"));
      assert.match(list[0]!, /^Invalid --api-key-file \/ HOP_CLIENT_API_KEY_FILE: /);
      assert.match(list[0]!, expected);
      assert.ok(!list[0]!.includes(KEY), "the file's content is never shown");
    };
    check(`${dir}/nope`, /no such file: .*\/nope$/);
    check(path, /api-key is empty/);
    await Deno.writeTextFile(path, " \n\n");
    check(path, /api-key is empty/);
    check(dir, /is a directory, not a file/);
    await Deno.writeTextFile(path, `${KEY}\nsecond line ${KEY}\n`);
    check(path, /has more than one line/);
    check("", /expected a file path/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "api key file: a file this user may not read is named as such",
  ignore: Deno.uid() === 0, // root reads a mode-000 file anyway
  fn: async () => {
    const { dir, path } = await keyFile(`${KEY}\n`);
    try {
      await Deno.chmod(path, 0o000);
      const r = readApiKeyFile(path);
      assert.equal(typeof r, "string");
      assert.match(r as string, /permission denied/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

// ---- the CLI, as a real process with the client task's flags ----

async function cli(args: string[], o: { env?: Record<string, string>; extraFlags?: string[] }) {
  const cwd = await Deno.makeTempDir({ prefix: "hopgate-cli-" });
  try {
    const r = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--config",
        `${ROOT}deno.json`,
        ...taskFlags("client"),
        ...(o.extraFlags ?? []),
        `${ROOT}client/main.ts`,
        ...args,
      ],
      cwd,
      env: { ...baseEnv(), ...BASE, ...o.env },
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    return { code: r.code, stdout: dec.decode(r.stdout), stderr: dec.decode(r.stderr) };
  } finally {
    await Deno.remove(cwd, { recursive: true });
  }
}

Deno.test("cli: --api-key-file with read access runs, masked, and without a warning", async () => {
  const { dir, path } = await keyFile(`${KEY}\n`);
  try {
    const r = await cli(["--api-key-file", path, "--check"], {
      extraFlags: [`--allow-read=${path}`],
    });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(
      r.stdout.includes(`api-key       ****(${KEY.length} chars) (from ${path})`),
      r.stdout,
    );
    assert.doesNotMatch(r.stderr, /warning/);
    assert.ok(!r.stdout.includes(KEY) && !r.stderr.includes(KEY));
    // The same through the variable.
    const v = await cli(["--check"], {
      env: { HOP_CLIENT_API_KEY_FILE: path },
      extraFlags: [`--allow-read=${path}`],
    });
    assert.equal(v.code, 0, v.stderr);
    assert.doesNotMatch(v.stderr, /warning/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: a key file outside the task's read permission: exit 2, the flag to add, no content", async () => {
  const { dir, path } = await keyFile(`${KEY}\n`);
  try {
    const r = await cli(["--api-key-file", path, "--check"], {});
    assert.equal(r.code, 2);
    assert.match(
      r.stderr,
      new RegExp(
        `Invalid --api-key-file / HOP_CLIENT_API_KEY_FILE: Deno may not read .*--allow-read=`,
      ),
    );
    assert.ok(!r.stdout.includes(KEY) && !r.stderr.includes(KEY));
    const missing = await cli(["--api-key-file", `${dir}/nope`, "--check"], {
      extraFlags: [`--allow-read=${dir}`],
    });
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /no such file/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: a key given with --api-key draws a warning at start-up (never the key itself)", async () => {
  const r = await cli(["--api-key", KEY, "--check"], {});
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /warning: --api-key puts the key on the command line/);
  assert.match(r.stderr, /--api-key-file PATH or HOP_CLIENT_API_KEY/);
  assert.ok(!r.stdout.includes(KEY) && !r.stderr.includes(KEY));
  const env = await cli(["--check"], { env: { HOP_CLIENT_API_KEY: KEY } });
  assert.equal(env.code, 0, env.stderr);
  assert.doesNotMatch(env.stderr, /warning/);
});
