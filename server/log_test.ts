import assert from "node:assert/strict";
import { Secret } from "./config.ts";
import { createJsonLogger, MemoryLogger } from "./log.ts";

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
    time: "1970-01-01T00:00:00.000Z",
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
