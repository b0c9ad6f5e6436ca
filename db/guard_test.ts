import assert from "node:assert/strict";
import { sql } from "drizzle-orm";
import { QueryGuard, type StorageFailure } from "./guard.ts";
import { DomainExistsError, StorageUnavailableError, StoreError } from "./errors.ts";
import { openTestDatabase } from "./testing.ts";

Deno.test("QueryGuard: a call that does not settle in time is StorageUnavailableError(timeout), reported", async () => {
  const failures: StorageFailure[] = [];
  const guard = new QueryGuard({ timeoutMs: 50, onFailure: (f) => failures.push(f) });
  const started = performance.now();
  const err = await guard.run("read domain PSK", () => new Promise<never>(() => {})).catch((e) =>
    e
  );
  const took = performance.now() - started;
  assert.ok(err instanceof StorageUnavailableError, String(err));
  assert.ok(err instanceof StoreError, "still a StoreError for general handlers");
  assert.equal(err.code, "STORAGE_UNAVAILABLE");
  assert.equal(err.reason, "timeout");
  assert.match(
    err.message,
    /^Cannot read domain PSK: database unavailable: no answer within 50 ms$/,
  );
  assert.ok(took >= 45 && took < 1000, `${took} ms`);
  assert.deepEqual(failures, [{ operation: "read domain PSK", kind: "timeout" }]);
});

Deno.test("QueryGuard: real driver failures are told apart: unreachable, query error, expected", async () => {
  const failures: StorageFailure[] = [];
  const guard = new QueryGuard({ timeoutMs: 5000, onFailure: (f) => failures.push(f) });
  const db = await openTestDatabase("postgres");
  try {
    const broken = await guard.run("bad query", () => db.db.execute(sql`select * from nowhere`))
      .catch((e) => e);
    assert.ok(broken instanceof StoreError && !(broken instanceof StorageUnavailableError));
    assert.equal(broken.sqlState, "42P01");
    const mine = await guard.run(
      "register domain",
      () => db.db.execute(sql`select 1/0`),
      () => new DomainExistsError("x.example.com"),
    ).catch((e) => e);
    assert.ok(mine instanceof DomainExistsError, "the caller's own error, unreported");
    assert.deepEqual(await guard.run("ok", () => Promise.resolve(7)), 7);
  } finally {
    await db.close();
  }
  // The pool is closed: nothing reaches the database any more.
  const gone = await guard.run("read domain", () => db.db.execute(sql`select 1`)).catch((e) => e);
  assert.ok(gone instanceof StorageUnavailableError, String(gone));
  assert.equal(gone.reason, "unreachable");
  assert.deepEqual(failures, [
    { operation: "bad query", kind: "error" },
    { operation: "read domain", kind: "unreachable" },
  ]);
});
