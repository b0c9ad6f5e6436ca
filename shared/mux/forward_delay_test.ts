import { equal } from "node:assert/strict";
import { ForwardDelay } from "./forward_delay.ts";

Deno.test("forward delay: the queue on the way there, whatever the clocks' offset", () => {
  // The peer's clock runs 123 456 ms ahead of ours (any offset: only differences count).
  const f = new ForwardDelay(10_000);
  const at = (sent: number, oneWay: number) => f.onSample(sent, sent + 123_456 + oneWay, sent + 50);
  equal(at(0, 25), 0, "the first sample is the minimum");
  equal(at(10, 25), 0);
  equal(at(20, 32), 7, "7 ms over the path's delay: a 7 ms queue");
  equal(at(30, 24), 0, "a new minimum");
  equal(at(40, 25), 1);
  // A clock behind ours gives negative one-way delays: the same.
  const g = new ForwardDelay(10_000);
  equal(g.onSample(0, -900, 50), 0);
  equal(g.onSample(10, -880, 60), 10);
});

Deno.test("forward delay: a longer path (a route change) stops reading as a queue within the window", () => {
  const f = new ForwardDelay(10_000);
  let t = 0;
  for (; t < 3_000; t += 100) equal(f.onSample(t, t + 25, t + 50), 0);
  // From here the path is 40 ms longer each way.
  const queues: number[] = [];
  for (; t < 20_000; t += 100) queues.push(f.onSample(t, t + 65, t + 130));
  equal(queues[0], 40, "at first it looks like a queue");
  const firstZero = queues.findIndex((q) => q === 0);
  // The old minimum is forgotten after one to two half windows (5-10 s).
  equal(firstZero > 0 && firstZero * 100 <= 10_000, true, `zero after ${firstZero * 100} ms`);
  equal(queues.slice(firstZero).every((q) => q === 0), true);
});
