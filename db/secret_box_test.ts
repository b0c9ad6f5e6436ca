import assert from "node:assert/strict";
import { inspect } from "node:util";
import { keyFromSecret, loadSecretKey, SECRET_KEY_FILE, SecretBox } from "./secret_box.ts";

const plain = new Uint8Array(32).map((_, i) => i);

Deno.test("SecretBox round-trips and binds the context", () => {
  const box = new SecretBox(keyFromSecret("k1"));
  const sealed = box.seal(plain, "a.example.com");
  assert.match(sealed, /^v1\.[A-Za-z0-9_-]+$/);
  assert.notEqual(box.seal(plain, "a.example.com"), sealed, "fresh nonce per seal");
  assert.deepEqual(box.open(sealed, "a.example.com"), plain);
  assert.throws(() => box.open(sealed, "b.example.com"), /authentication failed/);
  assert.throws(() => new SecretBox(keyFromSecret("k2")).open(sealed, "a.example.com"));
  assert.throws(() => box.open("v2.abc", "a.example.com"), /unknown format/);
  assert.throws(() => box.open("v1.abc", "a.example.com"), /too short/);
  assert.throws(() => new SecretBox(new Uint8Array(16)), RangeError);
});

Deno.test("SecretBox never prints its key", () => {
  const box = new SecretBox(keyFromSecret("k1"));
  for (const s of [String(box), JSON.stringify({ box }), Deno.inspect(box), inspect(box)]) {
    assert.ok(s.includes("***"), s);
  }
});

Deno.test("loadSecretKey: HOP_SECRET_KEY wins; otherwise a 0600 key file is created once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "hopgate_secret_" });
  try {
    const fromEnv = await loadSecretKey({ secret: "s3cret", dataDir: dir });
    assert.equal(fromEnv.source, "env");
    assert.deepEqual(fromEnv.key, keyFromSecret("s3cret"));

    const dataDir = `${dir}/data`;
    const created = await loadSecretKey({ dataDir });
    assert.equal(created.source, "new-file");
    const stat = await Deno.stat(`${dataDir}/${SECRET_KEY_FILE}`);
    assert.equal((stat.mode ?? 0) & 0o777, 0o600);
    const again = await loadSecretKey({ secret: "", dataDir });
    assert.equal(again.source, "file");
    assert.deepEqual(again.key, created.key);

    await Deno.writeTextFile(`${dataDir}/${SECRET_KEY_FILE}`, "short");
    await assert.rejects(loadSecretKey({ dataDir }), /expected 64 hex characters/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
