import assert from "node:assert/strict";
import { KeyedTokenBuckets, TokenBucket } from "./rate_limit.ts";

Deno.test("KeyedTokenBuckets: a burst, then the refill rate, per key", () => {
  let clock = 0;
  const b = new KeyedTokenBuckets({ burst: 3, perSecond: 2, now: () => clock });
  assert.deepEqual([b.take("a"), b.take("a"), b.take("a"), b.take("a")], [true, true, true, false]);
  assert.equal(b.take("b"), true, "another key has its own bucket");
  clock += 499;
  assert.equal(b.take("a"), false, "0.998 tokens is not a token");
  clock += 1;
  assert.equal(b.take("a"), true);
  assert.equal(b.take("a"), false);
  clock += 60_000;
  assert.deepEqual([b.take("a"), b.take("a"), b.take("a"), b.take("a")], [true, true, true, false]);
});

Deno.test("KeyedTokenBuckets: the map is bounded; the least recently used key goes first", () => {
  const b = new KeyedTokenBuckets({ burst: 1, perSecond: 0.001, maxKeys: 2, now: () => 0 });
  assert.equal(b.take("a"), true);
  assert.equal(b.take("b"), true);
  assert.equal(b.take("a"), false); // a is now the most recent
  assert.equal(b.take("c"), true); // evicts b
  assert.equal(b.size, 2);
  assert.equal(b.take("a"), false, "a was kept");
  assert.equal(b.take("b"), true, "b was forgotten: a full bucket again");
});

Deno.test("KeyedTokenBuckets: bad settings are refused with a clear error", () => {
  assert.throws(() => new KeyedTokenBuckets({ burst: 0, perSecond: 1 }), /burst >= 1/);
  assert.throws(() => new KeyedTokenBuckets({ burst: 1, perSecond: 0 }), /perSecond > 0/);
});

Deno.test("TokenBucket: a burst, then the refill rate, never above the burst", () => {
  let clock = 0;
  const b = new TokenBucket({ burst: 2, perSecond: 10, now: () => clock });
  assert.deepEqual([b.take(), b.take(), b.take()], [true, true, false]);
  clock += 100;
  assert.deepEqual([b.take(), b.take()], [true, false]);
  clock += 10_000;
  assert.deepEqual([b.take(), b.take(), b.take()], [true, true, false]);
  assert.throws(() => new TokenBucket({ burst: 0.5, perSecond: 1 }), /burst >= 1/);
});
