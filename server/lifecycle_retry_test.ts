/** `openWithRetry`'s waits between attempts and how an abort ends them. */
import assert from "node:assert/strict";
import { openWithRetry } from "./lifecycle.ts";
import { MemoryLogger } from "./log.ts";

const unreachable = () => Promise.reject(new Error("connect ECONNREFUSED 127.0.0.1:5432"));

Deno.test("openWithRetry: retries until open succeeds, logging each wait", async () => {
  const logger = new MemoryLogger();
  let calls = 0;
  const value = await openWithRetry(
    () => ++calls < 3 ? unreachable() : Promise.resolve("db"),
    { logger, minDelayMs: 1, maxDelayMs: 2 },
  );
  assert.equal(value, "db");
  assert.equal(calls, 3);
  assert.equal(logger.entries.filter((e) => e.msg === "database unavailable, retrying").length, 2);
});

Deno.test("openWithRetry: an abort during the wait rejects at once with the signal's reason", async () => {
  const ac = new AbortController();
  const reason = new Error("stopped by a signal during start-up");
  const t0 = performance.now();
  const p = openWithRetry(unreachable, {
    logger: new MemoryLogger(),
    signal: ac.signal,
    minDelayMs: 60_000,
  });
  setTimeout(() => ac.abort(reason), 20);
  await assert.rejects(p, (e) => e === reason);
  assert.ok(performance.now() - t0 < 5_000);
});

Deno.test("openWithRetry: an abort while an attempt runs does not wait out the delay", async () => {
  const ac = new AbortController();
  const reason = new Error("stop");
  const t0 = performance.now();
  const p = openWithRetry(() => {
    ac.abort(reason); // the signal fires before the wait starts
    return unreachable();
  }, { logger: new MemoryLogger(), signal: ac.signal, minDelayMs: 60_000 });
  await assert.rejects(p, (e) => e === reason);
  assert.ok(performance.now() - t0 < 5_000, "waited for the retry delay");
});
