/**
 * Creates a new PGlite data directory (initdb) in a worker, then exits: see
 * `initPgliteDataDir` in database.ts for why. Message in: the directory and the
 * options; message out: `{ ok: true }` or `{ ok: false, message }`.
 */
import { PGlite, type PGliteOptions } from "@electric-sql/pglite";

interface Job {
  dir: string;
  options: PGliteOptions;
}

// deno-lint-ignore no-explicit-any
const scope = self as any;
scope.onmessage = async (e: MessageEvent<Job>) => {
  try {
    const db = await PGlite.create(e.data.dir, e.data.options);
    await db.close();
    scope.postMessage({ ok: true });
  } catch (err) {
    scope.postMessage({ ok: false, message: err instanceof Error ? err.message : String(err) });
  }
};
