import assert from "node:assert/strict";
import { sleep } from "./sleep.ts";

Deno.test("sleep: waits about ms without a signal", async () => {
  const t0 = performance.now();
  await sleep(30);
  assert.ok(performance.now() - t0 >= 25);
});

Deno.test("sleep: an abort during the wait resolves it early, without rejecting", async () => {
  const ac = new AbortController();
  const t0 = performance.now();
  setTimeout(() => ac.abort(new Error("stop")), 20);
  await sleep(10_000, ac.signal); // the test's timer sanitizer fails if the 10 s timer stays
  assert.ok(performance.now() - t0 < 5_000);
  assert.ok(ac.signal.aborted);
});

Deno.test("sleep: a signal aborted before the call resolves at once", async () => {
  const ac = new AbortController();
  ac.abort();
  const t0 = performance.now();
  await sleep(10_000, ac.signal);
  assert.ok(performance.now() - t0 < 1_000);
});

Deno.test("sleep: a signal that never fires is released when the time is up", async () => {
  const ac = new AbortController();
  let listeners = 0;
  const add = ac.signal.addEventListener.bind(ac.signal);
  const remove = ac.signal.removeEventListener.bind(ac.signal);
  ac.signal.addEventListener = ((...a: Parameters<typeof add>) => {
    listeners++;
    add(...a);
  }) as typeof add;
  ac.signal.removeEventListener = ((...a: Parameters<typeof remove>) => {
    listeners--;
    remove(...a);
  }) as typeof remove;
  await sleep(10, ac.signal);
  assert.equal(listeners, 0);
});
