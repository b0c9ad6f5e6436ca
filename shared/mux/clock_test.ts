import assert from "node:assert/strict";
import { realClock } from "./clock.ts";

Deno.test("mux clock: sub-ms timers run on setImmediate; both kinds can be cleared", async () => {
  let fired = 0;
  const t0 = performance.now();
  await new Promise<void>((r) => realClock.setTimer(() => r(), 0.2));
  assert.ok(performance.now() - t0 < 50);
  // Cleared timers of both kinds never fire (the sanitizer also fails a leaked one).
  realClock.clearTimer(realClock.setTimer(() => fired++, 0.5));
  realClock.clearTimer(realClock.setTimer(() => fired++, 20));
  await new Promise((r) => setTimeout(r, 40));
  assert.equal(fired, 0);
});
