import assert from "node:assert/strict";
import { openWithRetry } from "./lifecycle.ts";
import { MemoryLogger } from "./log.ts";

Deno.test("openWithRetry: a permission error is not retried", async () => {
  const logger = new MemoryLogger();
  let attempts = 0;
  await assert.rejects(
    openWithRetry(() => {
      attempts++;
      // What Deno throws for a path outside --allow-write.
      return Deno.mkdir(`/proc/hopgate-${crypto.randomUUID()}`);
    }, { logger, minDelayMs: 1 }),
    (e) => e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied,
  );
  assert.equal(attempts, 1);
  assert.equal(logger.entries.length, 0);
});

Deno.test("openWithRetry: an abort gives up an attempt in flight only when asked to, and closes what it yields late", async () => {
  const logger = new MemoryLogger();
  for (const abandonOnAbort of [true, false]) {
    const ac = new AbortController();
    const gate = Promise.withResolvers<void>();
    let closed = 0;
    const opening = openWithRetry(async () => {
      await gate.promise;
      return { close: () => closed++ };
    }, { logger, signal: ac.signal, abandonOnAbort });
    let settled = false;
    opening.catch(() => {}).finally(() => settled = true);
    ac.abort(new Error("stopped by SIGTERM during start-up"));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(settled, abandonOnAbort, `settled before the attempt ended (${abandonOnAbort})`);
    gate.resolve();
    await assert.rejects(opening, /stopped by SIGTERM/);
    await new Promise((r) => setTimeout(r, 0));
    assert.equal(closed, 1, "the late value is closed");
  }
  assert.equal(logger.entries.length, 0, "an abort is not a database failure");
});
