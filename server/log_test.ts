import assert, { equal } from "node:assert/strict";
import { Secret } from "./config.ts";
import { createJsonLogger, LineBatcher, MemoryLogger, withFields } from "./log.ts";

Deno.test("createJsonLogger writes one JSON object per line, at or above its level", () => {
  const lines: string[] = [];
  const log = createJsonLogger({
    level: "info",
    write: (l) => lines.push(l),
    now: () => new Date(0),
    base: { component: "admin" },
  });
  log.debug("hidden");
  log.info("hello", { domain: "a.example.com", n: 1n });
  log.error("failed", { error: Object.assign(new Error("bad"), { params: ["secret"] }) });
  assert.equal(lines.length, 2);
  assert.ok(lines.every((l) => l.endsWith("\n") && !l.slice(0, -1).includes("\n")));
  assert.deepEqual(JSON.parse(lines[0]!), {
    ts: "1970-01-01T00:00:00.000Z",
    level: "info",
    msg: "hello",
    component: "admin",
    domain: "a.example.com",
    n: "1",
  });
  assert.deepEqual(JSON.parse(lines[1]!).error, { name: "Error", message: "bad" });
});

Deno.test("loggers mask secret-looking fields and Secret values", () => {
  const lines: string[] = [];
  const log = createJsonLogger({ write: (l) => lines.push(l) });
  log.warn("x", {
    apiKey: "raw1",
    client_api_key: "raw2",
    authorization: "Bearer raw3",
    psk: "raw4",
    nested: { secret: "raw5", dsn: "postgres://u:raw6@h/db" },
    wrapped: new Secret("raw7"),
  });
  const mem = new MemoryLogger();
  mem.info("y", { token: "raw8" });
  const all = lines.join("") + mem.lines().join("");
  for (let i = 1; i <= 8; i++) assert.ok(!all.includes(`raw${i}`), all);
});

Deno.test("logs drop query strings, mask bearer tokens and URL credentials, keep braces", () => {
  const lines: string[] = [];
  const log = createJsonLogger({ level: "debug", write: (l) => lines.push(l) });
  log.debug("a {domain} b", {
    component: "ingress",
    path: "/x?token=q1",
    url: "http://h/y?k=q2#f",
    note: "fetch https://u:q3@h.example/z?q=q4 failed; Authorization: Bearer q5",
    error: new Error("GET http://h/p?sig=q6 refused"),
    where: new URL("https://h.example/p?q=q7"),
    upper: "AUTHORIZATION: BEARER q8, then basic q9; HTTPS://u:q10@h",
  });
  equal(lines.length, 1);
  const e = JSON.parse(lines[0]!);
  equal(e.msg, "a {domain} b");
  equal(e.level, "debug");
  equal(e.component, "ingress");
  equal(e.path, "/x");
  equal(e.url, "http://h/y");
  equal(e.where, "https://h.example/p");
  for (let i = 1; i <= 10; i++) assert.ok(!lines[0]!.includes(`q${i}`), lines[0]);
});

Deno.test("each logger keeps its own level; a line without component says server", () => {
  const a: string[] = [];
  const b: string[] = [];
  const la = createJsonLogger({ level: "error", write: (l) => a.push(l) });
  const lb = createJsonLogger({ level: "debug", write: (l) => b.push(l) });
  la.warn("hidden");
  lb.debug("shown");
  la.error("shown too");
  equal(a.length, 1);
  equal(b.length, 1);
  equal(JSON.parse(b[0]!).component, "server");
  equal(JSON.parse(a[0]!).level, "error");
});

Deno.test("withFields adds its fields to every line; a line's own fields win", () => {
  const lines: string[] = [];
  const base = createJsonLogger({ write: (l) => lines.push(l), now: () => new Date(0) });
  const admin = withFields(base, { component: "admin", event: "x" });
  admin.info("admin action", { domain: "a.example.com" });
  admin.warn("other", { event: "y" });
  base.info("plain");
  assert.deepEqual(lines.map((l) => JSON.parse(l)), [
    {
      ts: "1970-01-01T00:00:00.000Z",
      level: "info",
      msg: "admin action",
      component: "admin",
      event: "x",
      domain: "a.example.com",
    },
    { ts: "1970-01-01T00:00:00.000Z", level: "warn", msg: "other", component: "admin", event: "y" },
    { ts: "1970-01-01T00:00:00.000Z", level: "info", msg: "plain", component: "server" },
  ]);
});

Deno.test("LineBatcher writes a turn's lines in one write; a warning goes out at once, after them", async () => {
  const writes: string[] = [];
  const b = new LineBatcher((t) => writes.push(t));
  b.later("a\n");
  b.later("b\n");
  assert.deepEqual(writes, [], "nothing before the turn ends");
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(writes, ["a\nb\n"]);
  b.later("c\n");
  b.now("warn\n");
  assert.deepEqual(writes, ["a\nb\n", "c\nwarn\n"], "the waiting line first, then the warning");
  await new Promise((r) => setImmediate(r));
  assert.equal(writes.length, 2, "nothing left for the scheduled write");
  b.later("d\n");
  b.now("error\n");
  b.later("e\n"); // after a write at once, the turn's one scheduled write still takes it
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(writes.slice(2), ["d\nerror\n", "e\n"]);
  const capped: string[] = [];
  const c = new LineBatcher((t) => capped.push(t), 10);
  c.later("12345\n");
  assert.equal(capped.length, 0);
  c.later("67890\n");
  assert.deepEqual(capped, ["12345\n67890\n"], "written at once past maxChars");
});

Deno.test("lines waiting for the turn's end reach stdout when the process exits or crashes", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const script = `${dir}/log_exit.ts`;
    await Deno.writeTextFile(
      script,
      `import { createJsonLogger } from ${
        JSON.stringify(new URL("./log.ts", import.meta.url).href)
      };
const log = createJsonLogger({ level: "info" });
log.info("first", { component: "t" });
log.info("second", { component: "t" });
if (Deno.args[0] === "exit") Deno.exit(0);
if (Deno.args[0] === "throw") throw new Error("boom");
if (Deno.args[0] === "closed") {
  await new Promise((r) => setTimeout(r, 300)); // the reader is gone by now
  log.info("third", { component: "t" });
  await new Promise((r) => setTimeout(r, 50));
  log.error("fourth", { component: "t" });
  console.error("still running");
}
`,
    );
    const config = new URL("../deno.json", import.meta.url).pathname;
    for (const how of ["exit", "throw", "end"]) {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--quiet", "--config", config, "--allow-read", script, how],
        stdout: "piped",
        stderr: "null",
      }).output();
      const msgs = new TextDecoder().decode(out.stdout).trim().split("\n")
        .map((l) => JSON.parse(l).msg);
      assert.deepEqual(msgs, ["first", "second"], how);
      equal(out.code, how === "throw" ? 1 : 0);
    }
    // stdout closed under it: the write fails, is reported on stderr, and the process goes on.
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", "--config", config, "--allow-read", script, "closed"],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    await child.stdout.cancel();
    const [status, err] = await Promise.all([child.status, new Response(child.stderr).text()]);
    equal(status.code, 0, err);
    assert.match(err, /log: writing to stdout failed: .*\n[^]*still running/);
    equal(err.split("log: writing to stdout failed").length - 1, 1, "said once: " + err);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
