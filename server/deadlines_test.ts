import assert from "node:assert/strict";
import { Deadlines } from "./deadlines.ts";

Deno.test("Deadlines: fire after their time (never before, at most a resolution late); cancelled ones never", async () => {
  const d = new Deadlines(20);
  const fired: [string, number][] = [];
  const t0 = performance.now();
  d.add(60, () => fired.push(["a", performance.now() - t0]));
  const cancelB = d.add(30, () => fired.push(["b", performance.now() - t0]));
  d.add(10, () => fired.push(["c", performance.now() - t0]));
  cancelB();
  assert.equal(d.size, 2);
  // Wait for both (a loaded CI machine may run the interval late; never early).
  for (let i = 0; i < 300 && fired.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 100)); // a cancelled one would have fired by now
  assert.deepEqual(fired.map(([n]) => n), ["c", "a"]);
  for (const [name, at] of fired) {
    const want = name === "a" ? 60 : 10;
    assert.ok(at >= want - 1 && at < want + 2000, `${name} fired at ${at.toFixed(1)} ms`);
  }
  assert.equal(d.size, 0, "nothing left, so no interval keeps the process alive");
});

Deno.test("Deadlines: cancelling the last one stops the interval (no leaked timer)", () => {
  const d = new Deadlines(10);
  const cancel = d.add(1000, () => assert.fail("cancelled deadline fired"));
  cancel();
  cancel(); // twice is harmless
  assert.equal(d.size, 0);
  // Deno's test sanitizer fails this test if an interval were still running.
});
