import { equal } from "node:assert/strict";
import { REPLAY_WINDOW_SIZE, ReplayWindow } from "./replay.ts";

function seen(w: ReplayWindow, seq: number): boolean {
  if (!w.check(seq)) return false;
  w.accept(seq);
  return true;
}

Deno.test("replay window: new records pass once, duplicates are refused", () => {
  const w = new ReplayWindow();
  equal(seen(w, 0), true);
  equal(seen(w, 1), true);
  equal(seen(w, 1), false);
  equal(seen(w, 0), false);
});

Deno.test("replay window: out of order inside the window is accepted once", () => {
  const w = new ReplayWindow();
  equal(seen(w, 100), true);
  equal(seen(w, 95), true);
  equal(seen(w, 97), true);
  equal(seen(w, 95), false);
  equal(seen(w, 100 - REPLAY_WINDOW_SIZE + 1), true); // oldest still inside
  equal(seen(w, 100 - REPLAY_WINDOW_SIZE), false); // just left of the window
});

Deno.test("replay window: a jump far ahead slides it (a burst of 200 lost records does not wedge it)", () => {
  const w = new ReplayWindow();
  for (let s = 0; s < 10; s++) equal(seen(w, s), true);
  equal(seen(w, 210), true); // 200 lost
  equal(seen(w, 211), true);
  equal(seen(w, 150), true); // late but inside the new window
  equal(seen(w, 146), false); // 210 - 64: too old
  equal(seen(w, 9), false);
  for (let s = 212; s < 400; s++) equal(seen(w, s), true);
});

Deno.test("replay window: slots cleared by a slide do not remember old sequence numbers", () => {
  const w = new ReplayWindow();
  equal(seen(w, 3), true);
  equal(seen(w, 3 + REPLAY_WINDOW_SIZE), true); // same slot as 3
  equal(seen(w, 3 + 2 * REPLAY_WINDOW_SIZE - 1), true);
  equal(seen(w, 3 + REPLAY_WINDOW_SIZE + 1), true);
  equal(seen(w, 3 + REPLAY_WINDOW_SIZE), false);
});

Deno.test("replay window: 48-bit sequence numbers near the top", () => {
  const w = new ReplayWindow();
  const top = 2 ** 48 - 2;
  equal(seen(w, top - 1), true);
  equal(seen(w, top), true);
  equal(seen(w, top - 1), false);
});
