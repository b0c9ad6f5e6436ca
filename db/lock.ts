/**
 * An exclusive lock on a data directory. PGlite has no lock of its own: two
 * processes opening one data directory would corrupt it. The lock is an advisory
 * OS lock (`flock`, via `Deno.FsFile.tryLock`) on `<dir>/hopgate.lock`, which the OS
 * drops when the process exits or dies, so a crash leaves no stale lock behind.
 * The file also holds the owner's pid, only for the error message.
 */
import { join } from "node:path";

/** File name of the lock inside the data directory. */
export const LOCK_FILE = "hopgate.lock";

/** Another process holds the data directory. */
export class DataDirLockedError extends Error {
  /** The error's name, for logs. */
  override name = "DataDirLockedError";
  /** Stable code. */
  readonly code = "DATA_DIR_LOCKED";
  /** An error naming the directory and, if known, the pid holding it. */
  constructor(readonly dir: string, readonly ownerPid: number | undefined) {
    super(
      `Cannot open data directory ${dir}: it is in use by another HopGate server` +
        (ownerPid ? ` (pid ${ownerPid})` : "") +
        `. Stop that server, or give this one another HOP_DATA_DIR.`,
    );
  }
}

/** A held lock; `release()` is idempotent. */
export interface DataDirLock {
  /** The lock file's path. */
  readonly path: string;
  /** Releases the lock (idempotent). */
  release(): void;
}

/** Takes the data directory's lock, creating the directory if needed, or throws `DataDirLockedError`. */
export async function lockDataDir(dir: string): Promise<DataDirLock> {
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, LOCK_FILE);
  const file = await Deno.open(path, { read: true, write: true, create: true, mode: 0o600 });
  let locked = false;
  try {
    locked = await file.tryLock(true);
    if (!locked) {
      const owner = Number.parseInt((await Deno.readTextFile(path)).trim(), 10);
      throw new DataDirLockedError(dir, Number.isSafeInteger(owner) ? owner : undefined);
    }
    await file.truncate(0);
    await file.write(new TextEncoder().encode(`${Deno.pid}\n`));
  } catch (err) {
    if (locked) await file.unlock().catch(() => {});
    file.close();
    throw err;
  }
  let released = false;
  return {
    path,
    release() {
      if (released) return;
      released = true;
      try {
        file.truncateSync(0);
      } catch { /* best effort: the pid is informational */ }
      file.unlockSync();
      file.close();
    },
  };
}
