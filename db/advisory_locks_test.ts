/**
 * The advisory lock connection against a database that stops answering: a TCP
 * proxy of the test's own sits between the handle and PostgreSQL and can hang
 * (stop forwarding both ways, sockets left open, as a cut network or a stopped
 * server process does) and forward again.
 */
import assert from "node:assert/strict";
import { sql } from "drizzle-orm";
import postgres from "postgres";
import { LockTimeoutError, openDatabase } from "./database.ts";
import { StorageUnavailableError } from "./errors.ts";
import { openTestDatabase, type TestDatabase } from "./testing.ts";
import { until } from "../tests/helpers/cluster.ts";

const TEST_DSN = Deno.env.get("HOP_TEST_PG_DSN") ?? "postgres://postgres@127.0.0.1:5432/test";

/** A TCP proxy to PostgreSQL that can stop forwarding without closing anything. */
interface HangingProxy {
  readonly port: number;
  /** Connections accepted so far. */
  readonly accepted: number;
  /** Connection pairs still open. */
  readonly open: number;
  /** Stops forwarding in both directions; every socket stays open. */
  hang(): void;
  /** Forwards again, what was held first. */
  resume(): void;
  /** Closes the listener and every connection, and waits for their loops. */
  close(): Promise<void>;
}

function startProxy(target: { hostname: string; port: number }): HangingProxy {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const loops: Promise<void>[] = [];
  let held: PromiseWithResolvers<void> | undefined;
  let accepted = 0;
  let open = 0;
  const closeQuietly = (c: Deno.Conn) => {
    if (!conns.delete(c)) return;
    try {
      c.close();
    } catch { /* already closed */ }
  };
  // One direction: a chunk read is written on once forwarding is on; while it is
  // held nothing more is read, so the kernel buffers the rest as a silent host's does.
  const pump = async (from: Deno.Conn, to: Deno.Conn) => {
    const buf = new Uint8Array(16 * 1024);
    try {
      for (;;) {
        const n = await from.read(buf);
        if (n === null) return;
        while (held) await held.promise;
        let off = 0;
        while (off < n) off += await to.write(buf.subarray(off, n));
      }
    } catch { /* a side was reset or closed */ }
  };
  const serve = async (client: Deno.Conn) => {
    let server: Deno.Conn;
    try {
      server = await Deno.connect(target);
    } catch {
      closeQuietly(client);
      return;
    }
    conns.add(server);
    open++;
    // Either side ending ends both, once forwarding is on (a hang delivers no close).
    const both = [pump(client, server), pump(server, client)];
    await Promise.race(both);
    closeQuietly(client);
    closeQuietly(server);
    await Promise.all(both);
    open--;
  };
  const acceptLoop = (async () => {
    try {
      for await (const c of listener) {
        accepted++;
        conns.add(c);
        loops.push(serve(c));
      }
    } catch { /* the listener closed */ }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    get accepted() {
      return accepted;
    },
    get open() {
      return open;
    },
    hang() {
      held ??= Promise.withResolvers();
    },
    resume() {
      held?.resolve();
      held = undefined;
    },
    async close() {
      this.resume();
      listener.close();
      await acceptLoop;
      for (const c of [...conns]) closeQuietly(c);
      // A pump still reading the other side of a pair ends when that side closes.
      await Promise.all(loops);
    },
  };
}

/** The test database's name, and a DSN for it through `port` (or directly). */
async function dsnFor(db: TestDatabase, port?: number): Promise<string> {
  const [row] = await db.db.execute(sql`select current_database() as name`) as unknown as {
    name: string;
  }[];
  const url = new URL(TEST_DSN);
  url.pathname = `/${row!.name}`;
  if (port !== undefined) {
    url.hostname = "127.0.0.1";
    url.port = String(port);
  }
  return url.href;
}

/** Another session's view: the lock connections' backends, and whether it can take `key`. */
function observer(dsn: string) {
  const pg = postgres(dsn, { max: 1, onnotice: () => {} });
  return {
    async lockPids(): Promise<number[]> {
      const rows = await pg`select pid from pg_stat_activity
        where datname = current_database() and application_name = 'hopgate-locks' order by pid`;
      return rows.map((r) => r.pid as number);
    },
    /** Whether this session could take `key` (given back at once if so). */
    async canTake(key: string): Promise<boolean> {
      const [row] = await pg`select pg_try_advisory_lock(hashtextextended(${key}, 0)) as ok`;
      if (row?.ok !== true) return false;
      await pg`select pg_advisory_unlock(hashtextextended(${key}, 0))`;
      return true;
    },
    end: () => pg.end({ timeout: 5 }),
  };
}

Deno.test("advisory locks: a hung lock connection fails within the bound and is replaced", async () => {
  const db = await openTestDatabase("postgres");
  const target = new URL(TEST_DSN);
  const proxy = startProxy({ hostname: target.hostname, port: Number(target.port || 5432) });
  const other = observer(await dsnFor(db));
  const handle = await openDatabase({
    dsn: await dsnFor(db, proxy.port),
    lockTimeoutMs: 1000,
    connectTimeoutMs: 5000,
  });
  try {
    const locks = handle.locks!;
    // (1) Through the proxy, a lock is taken and held against another session.
    assert.equal(await locks.tryLock("t/a"), true);
    assert.equal(await other.canTake("t/a"), false);
    const [oldPid, ...more] = await other.lockPids();
    assert.ok(oldPid !== undefined && more.length === 0, "one lock session");
    assert.equal(proxy.accepted, 1);

    // (2) Hung: the lock query fails at the bound, and so does a call queued behind it
    // (the old code let both wait forever).
    proxy.hang();
    const start = performance.now();
    const first = locks.tryLock("t/b").then(() => undefined, (e) => e);
    await new Promise((r) => setTimeout(r, 300));
    const queued = locks.unlock("t/a").then(() => undefined, (e) => e);
    const err = await first;
    const firstMs = performance.now() - start;
    const queuedErr = await queued;
    const queuedMs = performance.now() - start;
    console.log(
      `hung: tryLock failed after ${firstMs.toFixed(0)} ms, the call queued behind it ` +
        `after ${queuedMs.toFixed(0)} ms (${(queuedErr as { code?: string })?.code})`,
    );
    assert.ok(err instanceof LockTimeoutError, String(err));
    assert.ok(err instanceof StorageUnavailableError);
    assert.equal(err.reason, "timeout");
    assert.match(err.message, /lock connection did not answer within 1000 ms/);
    assert.ok(firstMs >= 950 && firstMs < 2500, `${firstMs} ms`);
    // The queued call fails when the first one closes the client (before its own bound).
    assert.equal((queuedErr as { code?: string })?.code, "CONNECTION_DESTROYED", String(queuedErr));
    assert.ok(queuedMs < 2500, `${queuedMs} ms`);
    // The server has heard nothing (the proxy keeps its side open, as a cut network
    // does): the old session still holds t/a, for nobody.
    assert.deepEqual(await other.lockPids(), [oldPid]);
    assert.equal(await other.canTake("t/a"), false);

    // (3) Forwarding again: the next lock is taken at once on a new connection.
    proxy.resume();
    const again = performance.now();
    assert.equal(await locks.tryLock("t/c"), true);
    const newMs = performance.now() - again;
    assert.equal(proxy.accepted, 2, "a new connection");
    const pids = await other.lockPids();
    assert.ok(pids.some((p) => p !== oldPid), `a new session: ${pids}`);
    // The old socket was half-closed (Terminate, FIN) while hung; once the proxy delivers
    // the held bytes and the close, the server ends that session and drops its locks: t/a
    // (and t/b, had the held query taken it on its way through) become free, and this
    // node takes t/a anew on its new session. Here the server had noticed by the time the
    // new connection answered.
    const gone = performance.now();
    await until(
      "the old session ends",
      async () => !(await other.lockPids()).includes(oldPid),
      5000,
    );
    const goneMs = performance.now() - gone;
    console.log(
      `resumed: new lock connection in ${newMs.toFixed(0)} ms; ` +
        `the old session gone after ${goneMs.toFixed(0)} ms`,
    );
    assert.equal(await other.canTake("t/b"), true);
    assert.equal(await locks.tryLock("t/a"), true);
    assert.equal(await other.canTake("t/a"), false);
    assert.equal(proxy.open, 1, "the old connection pair is closed");
    await locks.unlock("t/a");
    await locks.unlock("t/c");
  } finally {
    await handle.close();
    await other.end();
    await proxy.close();
    await db.close();
  }
});

Deno.test("advisory locks: a SQL error keeps the lock connection and its locks", async () => {
  const db = await openTestDatabase("postgres");
  const other = observer(await dsnFor(db));
  try {
    const locks = db.locks!;
    assert.equal(await locks.tryLock("t/held"), true);
    const [pid] = await other.lockPids();
    // A NUL byte is not valid text in PostgreSQL: the server rejects the query.
    const err = await locks.tryLock("t/\0").then(() => undefined, (e) => e);
    assert.equal((err as { code?: string })?.code, "22021", String(err));
    assert.deepEqual(await other.lockPids(), [pid], "the same session");
    assert.equal(await other.canTake("t/held"), false, "still held by us");
    await locks.unlock("t/held");
    assert.equal(await other.canTake("t/held"), true);
  } finally {
    await other.end();
    await db.close();
  }
});
