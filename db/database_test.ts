import assert from "node:assert/strict";
import { sql } from "drizzle-orm";
import { openDatabase } from "./database.ts";
import { derivePsk } from "../shared/credentials.ts";
import { openStorage } from "./storage.ts";
import { SecretKeyMismatchError, StorageUnavailableError, StoreError } from "./errors.ts";
import { DataDirLockedError, lockDataDir } from "./lock.ts";
import { domains } from "./schema.ts";
import { openTestDatabase, TEST_BACKENDS } from "./testing.ts";

Deno.test("openStorage on PGlite: locked while open; data and sealed PSKs survive a restart", async () => {
  const dir = await Deno.makeTempDir({ prefix: "hopgate_pglite_" });
  try {
    const first = await openStorage({ dataDir: dir });
    let apiKey: string;
    try {
      assert.equal(first.backend, "pglite");
      assert.equal(first.secretKeySource, "new-file");
      apiKey = (await first.store.register("kept.example.com", "m")).apiKey;
      const err = await openStorage({ dataDir: dir }).then(() => undefined, (e) => e);
      assert.ok(err instanceof DataDirLockedError, String(err));
      assert.match(err.message, /in use by another HopGate server/);
    } finally {
      await first.close();
    }
    const second = await openStorage({ dataDir: dir }); // migrate() again: a no-op
    try {
      assert.equal(second.secretKeySource, "file");
      assert.equal((await second.store.get("kept.example.com"))?.memo, "m");
      assert.deepEqual(await second.store.getPsk("kept.example.com"), derivePsk(apiKey));
    } finally {
      await second.close();
    }
    // Another key cannot open the stored PSKs: refuse to start, and release the lock.
    const wrongKey = await openStorage({ dataDir: dir, secretKey: "x".repeat(32) })
      .then(() => undefined, (e) => e);
    assert.ok(wrongKey instanceof SecretKeyMismatchError, String(wrongKey));
    (await lockDataDir(dir)).release();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("embedded PGlite runs with 8 MB of shared buffers (not PostgreSQL's 128 MB)", async () => {
  const handle = await openDatabase({ memory: true });
  try {
    const result = await handle.db.execute(sql`SHOW shared_buffers`);
    assert.deepEqual((result as unknown as { rows: unknown[] }).rows, [{ shared_buffers: "8MB" }]);
  } finally {
    await handle.close();
  }
});

Deno.test("openStorage on PostgreSQL: an unreachable server fails cleanly", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  const dir = await Deno.makeTempDir({ prefix: "hopgate_pg_" });
  try {
    const err = await openStorage({ dsn: `postgres://postgres@127.0.0.1:${port}/x`, dataDir: dir })
      .then(() => undefined, (e) => e);
    assert.ok(err instanceof StoreError, String(err));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("PostgreSQL: an unreachable server fails migrate with a StoreError", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close(); // nothing listens there now
  const handle = await openDatabase({ dsn: `postgres://postgres@127.0.0.1:${port}/x` });
  try {
    const err = await handle.migrate().then(() => undefined, (e) => e);
    assert.ok(err instanceof StoreError, String(err));
    // Nobody listening is "unavailable", not a query error.
    assert.ok(err instanceof StorageUnavailableError, String(err));
    assert.equal(err.reason, "unreachable");
    assert.match(
      err.message,
      /^Cannot apply database migrations: database unavailable ECONNREFUSED/,
    );
  } finally {
    await handle.close();
  }
});

for (const backend of TEST_BACKENDS) {
  Deno.test(`driver errors on ${backend} never carry SQL parameters`, async () => {
    const handle = await openTestDatabase(backend);
    try {
      const secret = "sk_live_do_not_leak_0123456789";
      // A real failing query whose parameters include a secret-looking value.
      const failing = handle.db.insert(domains).values({
        id: "not-a-uuid",
        domain: "leak.example.com",
        apiKeySha256: secret,
        pskSealed: secret,
      });
      const raw = await failing.then(() => undefined, (e) => e);
      assert.ok(String(raw?.message).includes(secret), "drizzle itself leaks params (the reason)");
      const err = StoreError.from("register domain", raw);
      assert.equal(err.sqlState, "22P02");
      assert.ok(!err.message.includes(secret), err.message);
      assert.ok(!err.message.includes("not-a-uuid"), err.message);
      assert.ok(!Deno.inspect(err).includes(secret));
      assert.equal(err.cause, undefined);
      assert.match(err.message, /^Cannot register domain: database error 22P02: invalid input/);

      const dup = await handle.db.execute(sql`select 1/0`).then(() => undefined, (e) => e);
      assert.equal(StoreError.from("divide", dup).sqlState, "22012");
    } finally {
      await handle.close();
    }
  });
}
