import assert from "node:assert/strict";
import { DataDirLockedError, lockDataDir } from "./lock.ts";

const LOCK_MODULE = new URL("./lock.ts", import.meta.url).href;

Deno.test("lockDataDir: a second holder in this process is refused until release", async () => {
  const dir = await Deno.makeTempDir({ prefix: "hopgate_lock_" });
  try {
    const lock = await lockDataDir(`${dir}/data`);
    const err = await lockDataDir(`${dir}/data`).then(() => undefined, (e) => e);
    assert.ok(err instanceof DataDirLockedError);
    assert.equal(err.ownerPid, Deno.pid);
    assert.match(err.message, /in use by another HopGate server \(pid \d+\)/);
    lock.release();
    lock.release(); // idempotent
    (await lockDataDir(`${dir}/data`)).release();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("lockDataDir: another process holding the directory refuses us; its death frees it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "hopgate_lock_" });
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `import { lockDataDir } from ${JSON.stringify(LOCK_MODULE)};
       await lockDataDir(${JSON.stringify(dir)});
       console.log("locked");
       await new Promise(() => setInterval(() => {}, 1000));`,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  try {
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    const { value } = await reader.read();
    assert.equal(value?.trim(), "locked");
    const err = await lockDataDir(dir).then(() => undefined, (e) => e);
    assert.ok(err instanceof DataDirLockedError, String(err));
    assert.equal(err.ownerPid, child.pid);
    // A killed holder leaves no stale lock: the OS drops it with the process.
    child.kill("SIGKILL");
    await child.status;
    await reader.cancel();
    (await lockDataDir(dir)).release();
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
});
