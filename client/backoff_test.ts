/**
 * The reconnect backoff measured against a real silent server: a UDP socket on
 * 127.0.0.1 that takes every datagram and never answers (a server that is down
 * behind a firewall that drops). Each attempt times out; the waits between a
 * failure and the next attempt must grow, each within its doubling window.
 */
import assert from "node:assert/strict";
import { runClient } from "./connector.ts";

Deno.test("connector: waits between failed attempts against a silent server grow exponentially", async () => {
  const silent = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const port = (silent.addr as Deno.NetAddr).port;
  let received = 0;
  const swallowing = (async () => {
    try {
      for (;;) {
        await silent.receive();
        received++;
      }
    } catch { /* closed */ }
  })();
  const initialMs = 200;
  const gaps: number[] = [];
  let failedAt: number | undefined;
  let failures = 0;
  const enough = Promise.withResolvers<void>();
  const ac = new AbortController();
  const running = runClient({
    server: { hostname: "127.0.0.1", port },
    domain: "app.example.com",
    apiKey: "k-0123456789abcdef",
    target: new URL("http://127.0.0.1:9"),
    handshakeTimeoutMs: 300,
    backoff: { initialMs, maxMs: 30_000 },
    onEvent: (e) => {
      if (e.type === "failure") {
        assert.equal(e.kind, "unreachable", e.message);
        failedAt = performance.now();
        failures++;
      } else if (e.type === "connecting" && failedAt !== undefined) {
        gaps.push(performance.now() - failedAt);
        if (gaps.length === 4) enough.resolve();
      }
    },
  }, ac.signal);
  try {
    await enough.promise;
  } finally {
    ac.abort();
    await running;
    silent.close();
    await swallowing;
  }
  assert.ok(received >= 5, `the attempts reached the socket (${received} datagrams)`);
  assert.ok(failures >= 4);
  // Ceilings 200, 400, 800, 1600 ms: each wait lies in [ceiling/2, ceiling]
  // (plus timer lateness on a busy machine), so each is at least the previous
  // one's ceiling and the last is at least 4 times the first's floor.
  gaps.forEach((gap, i) => {
    const ceiling = initialMs * 2 ** i;
    assert.ok(
      // Late timers on a loaded CI machine get 400 ms; a wait that did not grow fails anyway.
      gap >= ceiling / 2 - 2 && gap <= ceiling + 400,
      `wait ${i + 1} is ${Math.round(gap)} ms, not within [${ceiling / 2}, ${ceiling}] ms ` +
        `(all: ${gaps.map(Math.round).join(", ")} ms)`,
    );
  });
  assert.ok(
    gaps[3]! > gaps[0]! && gaps[2]! > gaps[0]!,
    `the waits grow: ${gaps.map(Math.round).join(", ")} ms`,
  );
});
