import assert from "node:assert/strict";
import { inspect } from "node:util";
import {
  ConfigError,
  ConfigProblems,
  maskSecret,
  parseAddress,
  parseBool,
  parseInteger,
  parseSeconds,
  Secret,
  splitList,
} from "./config.ts";

Deno.test("Secret never prints its value; maskSecret shows only the length", () => {
  const s = new Secret("hunter2");
  for (const shown of [String(s), `${s}`, JSON.stringify({ s }), Deno.inspect({ s }), inspect(s)]) {
    assert.ok(!shown.includes("hunter2"), shown);
  }
  assert.equal(s.reveal(), "hunter2");
  assert.equal(maskSecret(s), "****(7 chars)");
  assert.equal(maskSecret("abcdef"), "****(6 chars)");
  assert.equal(maskSecret(""), "(empty)");
});

Deno.test("ConfigProblems: unset and blank give the fallback; each failure is one named line", () => {
  const p = new ConfigProblems();
  const int = (v: string) => parseInteger(v, 1, 10);
  assert.equal(p.read("A", undefined, 5, int), 5);
  assert.equal(p.read("A", "  ", 5, int), 5);
  assert.equal(p.read("A", " 7 ", 5, int), 7);
  assert.equal(p.read("B", "eleven", 5, int), 5);
  assert.equal(
    p.read("KEY", "short", undefined, () => {
      throw new Error("must be at least 16 characters");
    }, { secret: true }),
    undefined,
  );
  p.add("C: required");
  assert.deepEqual(p.list, [
    'B: expected an integer from 1 to 10, got "eleven"',
    "KEY: must be at least 16 characters", // never the value of a secret
    "C: required",
  ]);
  assert.throws(
    () => p.throwIfAny(),
    (e: unknown) =>
      e instanceof ConfigError && e.code === "CONFIG_INVALID" && e.problems.length === 3 &&
      e.message === `Invalid configuration:\n  - ${p.list.join("\n  - ")}`,
  );
  new ConfigProblems().throwIfAny(); // nothing recorded: no error
  // Long values are clipped in the message.
  const q = new ConfigProblems();
  q.read("L", "x".repeat(200), 0, int);
  assert.ok(q.list[0]!.length < 120, q.list[0]);
});

Deno.test("value parsers: bool, integer, seconds, address, list", () => {
  for (const t of ["1", "true", "YES", "on"]) assert.equal(parseBool(t), true, t);
  for (const f of ["0", "false", "No", "off"]) assert.equal(parseBool(f), false, f);
  assert.throws(() => parseBool("maybe"), /expected true or false/);
  assert.equal(parseInteger("10", 1, 10), 10);
  for (const bad of ["0", "11", "-1", "1.5", "1e1", ""]) {
    assert.throws(() => parseInteger(bad, 1, 10), /expected an integer from 1 to 10/, bad);
  }
  assert.equal(parseSeconds("0.5", 0.05, 10), 0.5);
  for (const bad of ["0.01", "11", "10s", "-1", ".5"]) {
    assert.throws(() => parseSeconds(bad, 0.05, 10), /expected a number from 0.05 to 10/, bad);
  }
  const o = { expected: "host:port", emptyHost: "0.0.0.0", minPort: 0 };
  assert.deepEqual(parseAddress(":0", o), { hostname: "0.0.0.0", port: 0 });
  assert.deepEqual(parseAddress("[::1]:80", o), { hostname: "::1", port: 80 });
  assert.throws(() => parseAddress("80", o), /^Error: expected host:port$/);
  assert.throws(() => parseAddress("h:70000", o), /port must be 0\.\.65535/);
  assert.throws(() => parseAddress("h:0", { expected: "x" }), /port must be 1\.\.65535/);
  assert.deepEqual(splitList(" a, ,b ,"), ["a", "b"]);
});
