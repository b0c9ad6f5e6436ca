/**
 * New embedded databases come from the template (db/pglite.ts): extracted once,
 * into place in one rename; leftovers of a start cut short are discarded, a
 * foreign directory is refused; the extractor refuses what is not a plain
 * archive; and the template is exactly what the pinned PGlite's initdb makes.
 */
import assert from "node:assert/strict";
import { sql } from "drizzle-orm";
import { PGlite } from "@electric-sql/pglite";
import { extractTar, packTar } from "./_tar.ts";
import { openDatabase, PGLITE_SUBDIR } from "./database.ts";
import { StoreError } from "./errors.ts";
import {
  createPgliteDataDir,
  PGLITE_OPTIONS,
  PGLITE_TEMPLATE_INFO,
  pgliteTemplateBlob,
  pinnedPgliteVersion,
} from "./pglite.ts";

const exists = (path: string) => Deno.stat(path).then(() => true, () => false);

Deno.test("a new PGlite data directory is extracted from the template, once, and opens", async () => {
  const dir = await Deno.makeTempDir({ prefix: "hopgate_pglite_new_" });
  try {
    const pg = `${dir}/${PGLITE_SUBDIR}`;
    await createPgliteDataDir(pg);
    const version = await Deno.stat(`${pg}/PG_VERSION`);
    assert.match(await Deno.readTextFile(`${pg}/PG_VERSION`), /^\d+\n$/);
    assert.equal((await Deno.stat(pg)).mode! & 0o777, 0o700);
    assert.ok(!await exists(`${pg}.new`), "the scratch directory is gone");
    assert.ok(!await exists(`${pg}/postmaster.pid`), "the template was closed cleanly");
    await createPgliteDataDir(pg); // already made: not again
    assert.deepEqual((await Deno.stat(`${pg}/PG_VERSION`)).mtime, version.mtime);
    const handle = await openDatabase({ dataDir: dir });
    try {
      const r = await handle.db.execute(sql`SELECT 1 AS one`);
      assert.deepEqual((r as unknown as { rows: unknown[] }).rows, [{ one: 1 }]);
    } finally {
      await handle.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a start cut short is redone; a directory without PG_VERSION is refused, untouched", async () => {
  const dir = await Deno.makeTempDir({ prefix: "hopgate_pglite_cut_" });
  try {
    const pg = `${dir}/${PGLITE_SUBDIR}`;
    // A start that died while extracting left its scratch directory behind.
    await Deno.mkdir(`${pg}.new/base`, { recursive: true });
    await Deno.writeTextFile(`${pg}.new/base/half`, "x");
    await createPgliteDataDir(pg);
    assert.ok(await exists(`${pg}/PG_VERSION`));
    assert.ok(!await exists(`${pg}/base/half`) && !await exists(`${pg}.new`));

    // An empty directory is taken; one with files but no PG_VERSION is not ours.
    const empty = `${dir}/empty`;
    await Deno.mkdir(empty);
    await createPgliteDataDir(empty);
    assert.ok(await exists(`${empty}/PG_VERSION`));
    const foreign = `${dir}/foreign`;
    await Deno.mkdir(foreign);
    await Deno.writeTextFile(`${foreign}/notes.txt`, "mine");
    const err = await createPgliteDataDir(foreign).then(() => undefined, (e) => e);
    assert.ok(err instanceof StoreError, String(err));
    assert.match(
      err.message,
      /^Cannot create the embedded database: .*foreign exists and holds no database/,
    );
    assert.equal(await Deno.readTextFile(`${foreign}/notes.txt`), "mine");
    assert.ok(!await exists(`${foreign}.new`), "no scratch directory left after a failure");

    // A path that cannot become a directory (a file is in the way).
    await Deno.writeTextFile(`${dir}/blocker`, "x");
    const blocked = await createPgliteDataDir(`${dir}/blocker/pg`).then(() => undefined, (e) => e);
    assert.ok(blocked instanceof StoreError, String(blocked));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** One tar entry: a 512-byte header (checksum right unless `badSum`), data padded to 512. */
function entry(name: string, data: string, o: { type?: string; badSum?: boolean } = {}) {
  const h = new Uint8Array(512);
  const put = (at: number, s: string) => h.set(new TextEncoder().encode(s), at);
  const body = new TextEncoder().encode(data);
  put(0, name);
  put(100, "0000600\0");
  put(124, body.length.toString(8).padStart(11, "0") + "\0");
  put(156, o.type ?? "0");
  put(257, "ustar\0" + "00");
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : h[i]!;
  put(148, (sum + (o.badSum ? 1 : 0)).toString(8).padStart(6, "0") + "\0 ");
  const padded = new Uint8Array(Math.ceil(body.length / 512) * 512);
  padded.set(body);
  return [h, padded];
}

const archive = (...parts: Uint8Array[][]) =>
  new Blob([...parts.flat(), new Uint8Array(1024)] as BlobPart[]).stream();

Deno.test("the extractor writes files and directories, and refuses links, escapes, bad sums and truncation", async () => {
  const dir = await Deno.makeTempDir({ prefix: "hopgate_tar_" });
  try {
    const ok = `${dir}/ok`;
    await Deno.mkdir(ok);
    await extractTar(archive(entry("/d", "", { type: "5" }), entry("/d/f", "hello")), ok);
    assert.equal(await Deno.readTextFile(`${ok}/d/f`), "hello");
    assert.equal((await Deno.stat(`${ok}/d/f`)).mode! & 0o777, 0o600);
    // What packTar writes, extractTar reads back the same.
    await Deno.writeFile(`${ok}/d/big`, new Uint8Array(70_001).map((_, i) => (i * 7919) % 251));
    const again = `${dir}/again`;
    await Deno.mkdir(again);
    await extractTar(new Blob(await packTar(ok) as BlobPart[]).stream(), again);
    assert.deepEqual(await Deno.readFile(`${again}/d/big`), await Deno.readFile(`${ok}/d/big`));
    assert.equal(await Deno.readTextFile(`${again}/d/f`), "hello");

    const cases: [string, ReadableStream<Uint8Array>, RegExp][] = [
      ["escape", archive(entry("../evil", "x")), /unsafe entry name "\.\.\/evil"/],
      ["inner ..", archive(entry("a/../../evil", "x")), /unsafe entry name/],
      ["symlink", archive(entry("link", "", { type: "2" })), /entry type "2" refused/],
      ["checksum", archive(entry("f", "x", { badSum: true })), /header checksum/],
      [
        "truncated",
        new Blob([entry("f", "x".repeat(2000))[0]!, new Uint8Array(100)]).stream(),
        /archive ends inside f/,
      ],
    ];
    for (const [what, stream, message] of cases) {
      const dest = `${dir}/${what.replace(/\W/g, "_")}`;
      await Deno.mkdir(dest);
      const err = await extractTar(stream, dest).then(() => undefined, (e) => e);
      assert.ok(err instanceof Error, `${what}: refused`);
      assert.match(err.message, message, what);
    }
    assert.ok(!await exists(`${dir}/evil`), "nothing written outside the destination");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the template is made by the pinned PGlite and equals its fresh initdb", async () => {
  const info = JSON.parse(await Deno.readTextFile(PGLITE_TEMPLATE_INFO)) as { pglite: string };
  const pinned = pinnedPgliteVersion(
    await Deno.readTextFile(new URL("../deno.json", import.meta.url)),
  );
  assert.equal(
    info.pglite,
    pinned,
    `db/pglite_template.tar.gz was made with PGlite ${info.pglite}, deno.json pins ${pinned}: ` +
      "run `deno task db:template`",
  );
  const facts = async (db: PGlite) => ({
    version: (await db.query("SELECT version()")).rows,
    control: (await db.query(
      "SELECT pg_control_version, catalog_version_no FROM pg_control_system()",
    )).rows,
    databases: (await db.query(
      `SELECT datname, pg_encoding_to_char(encoding) AS encoding, datcollate, datctype,
              datlocprovider, datistemplate, datallowconn
         FROM pg_database ORDER BY datname`,
    )).rows,
    roles: (await db.query("SELECT rolname, rolsuper, rolcanlogin FROM pg_roles ORDER BY rolname"))
      .rows,
    relations: (await db.query("SELECT count(*)::int AS n FROM pg_class")).rows,
    extensions: (await db.query("SELECT extname FROM pg_extension ORDER BY extname")).rows,
    settings: (await db.query(
      `SELECT name, setting FROM pg_settings
        WHERE name IN ('server_encoding', 'lc_collate', 'lc_ctype', 'wal_segment_size',
                       'data_checksums', 'block_size', 'shared_buffers')
        ORDER BY name`,
    )).rows,
  });
  const fromTemplate = await PGlite.create({
    ...PGLITE_OPTIONS,
    loadDataDir: await pgliteTemplateBlob(),
  });
  let template;
  try {
    template = await facts(fromTemplate);
  } finally {
    await fromTemplate.close();
  }
  const fresh = await PGlite.create(PGLITE_OPTIONS); // PGlite's own initdb
  try {
    assert.deepEqual(template, await facts(fresh));
  } finally {
    await fresh.close();
  }
});
