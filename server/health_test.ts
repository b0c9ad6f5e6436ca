import { deepEqual, equal, match } from "node:assert/strict";
import { describeDbError, healthResponse, Readiness } from "./health.ts";
import { MemoryLogger } from "./log.ts";

Deno.test("readiness: database down says why, recovers, and shutdown turns it off", async () => {
  let fail: Error | undefined = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), {
    code: "ECONNREFUSED",
  });
  const logs = new MemoryLogger();
  const r = new Readiness({
    ping: () => fail ? Promise.reject(fail) : Promise.resolve(),
    logger: logs,
    intervalMs: 60_000,
  });
  r.listener("http", true);
  await r.check();
  let res = healthResponse(new Request("http://h/readyz"), r)!;
  equal(res.status, 503);
  const body = await res.json();
  equal(body.status, "not ready");
  deepEqual(body.reasons, ["database: connect ECONNREFUSED 127.0.0.1:5432"]);
  fail = undefined;
  await r.check();
  res = healthResponse(new Request("http://h/readyz"), r)!;
  equal(res.status, 200);
  equal((await res.json()).status, "ready");
  fail = new Error("Connection terminated unexpectedly");
  await r.check();
  equal(logs.entries.filter((e) => e.msg === "database unreachable").length, 2);
  fail = undefined;
  await r.check();
  equal(logs.entries.filter((e) => e.msg === "database reachable again").length, 2);
  r.listener("https", false);
  r.shuttingDown();
  res = healthResponse(new Request("http://h/readyz"), r)!;
  deepEqual((await res.json()).reasons, ["shutting down", "https listener: down"]);
  equal(healthResponse(new Request("http://h/healthz"), r)!.status, 200);
  equal(healthResponse(new Request("http://h/other"), r), undefined);
  await r.stop();
});

Deno.test("readiness: a hung database check fails by its timeout", async () => {
  let never!: () => void;
  const r = new Readiness({
    ping: () => new Promise<void>((resolve) => never = resolve),
    logger: new MemoryLogger(),
    timeoutMs: 20,
  });
  await r.check();
  match(r.report().reasons[0]!, /database: no answer within 20 ms/);
  never();
  await r.stop();
});

Deno.test("describeDbError drops connection strings", () => {
  const e = new Error('failed for postgres://u:pw@db:5432/x?sslmode=require: "boom"');
  equal(describeDbError(e), 'failed for <url> "boom"');
});
