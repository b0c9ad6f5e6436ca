/**
 * The embedded database's settings, and how a new one is made.
 *
 * A new embedded database is a copy of a template, not an initdb. PGlite's own
 * initdb runs a second PostgreSQL instance beside the first and keeps a copy of
 * that instance's whole wasm heap (at least 128 MB), written back before each
 * bootstrap step: a bare Deno process creating a database peaks at ~575 MB of
 * RSS, the server at ~640 MB, and what it leaves behind kept the server 80-110 MB
 * bigger than after a restart. `db/pglite_template.tar.gz` is that initdb's
 * result, made once by PGlite itself and closed cleanly (`deno task db:template`
 * runs this file); a first start extracts it piece by piece into
 * `<dataDir>/pglite` and then opens it like any restart.
 *
 * The template belongs to the pinned PGlite: `pglite_template.json` records the
 * version it was made with, and db/pglite_test.ts fails when that is not the
 * version in deno.json, or when the template differs from a fresh initdb in what
 * matters (PostgreSQL and catalog versions, databases, encodings, locales, roles,
 * settings).
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { PGlite } from "@electric-sql/pglite";
import { extractTar, packTar } from "./_tar.ts";
import { StoreError } from "./errors.ts";

/**
 * PGlite's options, the same for every embedded database; PGlite writes them as
 * `postgresql.conf` at each start. The database holds a few small tables (10,000
 * domains take ~4 MB with their indexes), and shared buffers are allocated and
 * zeroed whole at start: each MB is a MB of RSS for the server's life.
 * PostgreSQL's default 128 MB made a reopened database take ~288 MB; with 8 MB
 * PGlite's heap holds ~21 MB (29 MB with 16 MB). What does not fit is read back
 * through the OS page cache.
 */
export const PGLITE_OPTIONS = { postgresqlconf: "shared_buffers = 8MB" } as const;

/** The gzipped tar of a new PGlite data directory (paths relative to PGDATA). */
export const PGLITE_TEMPLATE: string = fileURLToPath(
  new URL("./pglite_template.tar.gz", import.meta.url),
);

/** What the template was made with: `{ "pglite": "<version>" }`. */
export const PGLITE_TEMPLATE_INFO: string = fileURLToPath(
  new URL("./pglite_template.json", import.meta.url),
);

/**
 * The template as a Blob, for `PGlite.create({ loadDataDir })` (in-memory databases):
 * read once per process (a Blob is read afresh by each database made from it).
 */
export function pgliteTemplateBlob(): Promise<Blob> {
  templateBlob ??= Deno.readFile(PGLITE_TEMPLATE).then(
    (bytes) => new Blob([bytes], { type: "application/x-gzip" }),
    (e) => {
      templateBlob = undefined; // a failed read is tried again next time
      throw e;
    },
  );
  return templateBlob;
}
let templateBlob: Promise<Blob> | undefined;

/**
 * Makes `dir` a new PGlite data directory from the template, unless it already
 * holds one (`PG_VERSION`). Extracts into `<dir>.new` and renames that into place,
 * so a start cut short leaves either no database or a whole one; a `<dir>.new`
 * left by such a start is discarded. A `dir` that exists without `PG_VERSION` is
 * refused unless empty: it is nothing this code made. Errors are `StoreError`s.
 */
export async function createPgliteDataDir(dir: string): Promise<void> {
  const exists = await Deno.stat(join(dir, "PG_VERSION")).then(() => true, () => false);
  if (exists) return;
  const scratch = `${dir}.new`;
  try {
    await Deno.remove(scratch, { recursive: true }).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
    await Deno.mkdir(scratch, { mode: 0o700 });
    const file = await Deno.open(PGLITE_TEMPLATE);
    await extractTar(file.readable.pipeThrough(new DecompressionStream("gzip")), scratch);
    await Deno.remove(dir).catch((e) => {
      if (e instanceof Deno.errors.NotFound) return;
      throw new Error(`${dir} exists and holds no database (no PG_VERSION): move it away`);
    });
    await Deno.rename(scratch, dir);
  } catch (err) {
    await Deno.remove(scratch, { recursive: true }).catch(() => {});
    const detail = err instanceof Error ? err.message : String(err);
    throw new StoreError("create the embedded database", undefined, detail);
  }
}

/**
 * Writes the template (and its info file): PGlite's own initdb into a scratch
 * directory, with PGlite's defaults, closed cleanly (a shutdown checkpoint, no
 * `postmaster.pid`), then packed. `PGLITE_OPTIONS` are not in it: PGlite writes
 * them as `postgresql.conf` at every start. `pgliteVersion` is the pinned
 * version, for the info file.
 */
export async function writePgliteTemplate(pgliteVersion: string): Promise<void> {
  const scratch = await Deno.makeTempDir({ prefix: "hopgate_pglite_template_" });
  try {
    const pgdata = join(scratch, "pgdata");
    await (await PGlite.create(pgdata)).close();
    const gzip = new Blob(await packTar(pgdata) as BlobPart[]).stream()
      .pipeThrough(new CompressionStream("gzip"));
    await Deno.writeFile(PGLITE_TEMPLATE, gzip);
  } finally {
    await Deno.remove(scratch, { recursive: true });
  }
  await Deno.writeTextFile(
    PGLITE_TEMPLATE_INFO,
    JSON.stringify({ pglite: pgliteVersion }, null, 2) + "\n",
  );
}

/** The PGlite version deno.json pins (`npm:@electric-sql/pglite@<version>`). */
export function pinnedPgliteVersion(denoJson: string): string {
  const imports = (JSON.parse(denoJson) as { imports?: Record<string, string> }).imports ?? {};
  const m = /^npm:@electric-sql\/pglite@(\d[^/]*)$/.exec(imports["@electric-sql/pglite"] ?? "");
  if (!m) throw new Error("deno.json does not pin @electric-sql/pglite to one version");
  return m[1]!;
}

if (import.meta.main) {
  const version = pinnedPgliteVersion(
    await Deno.readTextFile(new URL("../deno.json", import.meta.url)),
  );
  await writePgliteTemplate(version);
  console.log(`wrote ${PGLITE_TEMPLATE} (PGlite ${version})`);
}
