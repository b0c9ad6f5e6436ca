/**
 * Test fixtures: a migrated database on each backend, isolated per caller.
 * - PostgreSQL: a fresh database `hopgate_t_<random>` on the test server
 *   (`HOP_TEST_PG_DSN`, default `postgres://postgres@127.0.0.1:5432/test`),
 *   dropped on close, so test files may run in parallel.
 * - PGlite: in memory.
 */
import postgres from "postgres";
import { randomBytes } from "node:crypto";
import { type DatabaseHandle, openDatabase } from "./database.ts";
import { domains } from "./schema.ts";
import { keyFromSecret, SecretBox } from "./secret_box.ts";

export type TestBackend = "postgres" | "pglite";
export const TEST_BACKENDS: readonly TestBackend[] = ["postgres", "pglite"];

const ADMIN_DSN = Deno.env.get("HOP_TEST_PG_DSN") ?? "postgres://postgres@127.0.0.1:5432/test";

/** A migrated, empty database; `reset()` empties it again; `close()` drops it. */
export interface TestDatabase extends DatabaseHandle {
  reset(): Promise<void>;
}

/** Opens a fresh, migrated database on `backend`. */
export async function openTestDatabase(backend: TestBackend): Promise<TestDatabase> {
  if (backend === "pglite") {
    const handle = await openDatabase({ memory: true });
    await handle.migrate();
    return withReset(handle, handle.close);
  }
  const name = `hopgate_t_${randomBytes(6).toString("hex")}`;
  const admin = postgres(ADMIN_DSN, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(ADMIN_DSN);
  url.pathname = `/${name}`;
  const handle = await openDatabase({ dsn: url.href, maxConnections: 4 });
  const drop = async () => {
    await handle.close();
    const admin = postgres(ADMIN_DSN, { max: 1, onnotice: () => {} });
    try {
      await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    } finally {
      await admin.end();
    }
  };
  try {
    await handle.migrate();
  } catch (err) {
    await drop();
    throw err;
  }
  return withReset(handle, drop);
}

/** A SecretBox with a fixed test key. */
export function testSecretBox(): SecretBox {
  return new SecretBox(keyFromSecret("hopgate test secret key, not for production"));
}

function withReset(handle: DatabaseHandle, close: () => Promise<void>): TestDatabase {
  return {
    db: handle.db,
    backend: handle.backend,
    listen: handle.listen,
    locks: handle.locks,
    migrate: () => handle.migrate(),
    close,
    async reset() {
      await handle.db.delete(domains);
    },
  };
}
