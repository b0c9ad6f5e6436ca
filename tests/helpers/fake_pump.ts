/**
 * Fake time beside real I/O (a real origin on loopback): `pump` moves the fake
 * clock 1 ms per event-loop turn, so real sockets keep up with it, until a
 * condition holds. Used by the whole-tunnel tests on the simulated network.
 */
import { type FakeClock, settle } from "../../shared/testing/fake_clock.ts";

/** Moves fake time 1 ms per event-loop turn (real I/O keeps up) until `done()`. */
export async function pump(
  clock: FakeClock,
  done: () => boolean,
  maxMs: number,
  what: string,
): Promise<void> {
  const limit = clock.now() + maxMs;
  for (;;) {
    await settle();
    if (done()) return;
    if (clock.now() >= limit) throw new Error(`${what}: not done after ${maxMs} ms of fake time`);
    clock.advance(1);
  }
}

/** Waits for a promise while pumping fake time. */
export async function pumped<T>(
  clock: FakeClock,
  p: Promise<T>,
  maxMs: number,
  what: string,
): Promise<T> {
  let r: { v: T } | { e: unknown } | undefined;
  p.then((v) => r = { v }, (e) => r = { e });
  await pump(clock, () => r !== undefined, maxMs, what);
  if ("e" in r!) throw r.e;
  return r!.v;
}
