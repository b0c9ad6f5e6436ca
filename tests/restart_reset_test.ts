/**
 * A server process that crashes (SIGKILL) and is started again on the same port with
 * the same secret: its clients learn from its stateless reset (shared/dtls/
 * stateless_reset.ts) that their tunnels are gone with the first datagram they send
 * it, and come back, instead of waiting for their PINGs to go unanswered for 10 s.
 */
import { equal, match, ok } from "node:assert/strict";
import { type ClientEvent, runClient } from "../client/connector.ts";
import { dtlsDialer } from "../client/dialer.ts";
import { bindUdp } from "../shared/dtls/udp.ts";
import { curl, startServerProc } from "./helpers/procs.ts";
import { until } from "./helpers/cluster.ts";

const TUNNELS = 20;
/** The clients' keepalive (1.5-2 s with jitter): how soon an idle client sends anything. */
const KEEPALIVE_MS = 2000;

Deno.test("crash and restart: idle clients learn of it from the stateless reset and are back, no 10 s unanswered wait", async () => {
  const server = await startServerProc({ HOP_SERVER_MAX_TUNNELS_PER_DOMAIN: String(TUNNELS) });
  const up = new Set<number>();
  const lost: { i: number; at: number; message: string }[] = [];
  let crashed = false;
  const ac = new AbortController();
  const running: Promise<void>[] = [];
  const state = (what: string) => () => `${what}: ${up.size} up, lost ${lost.length}`;
  try {
    const apiKey = await server.register("crash.reset.test");
    const target = { hostname: "127.0.0.1", port: server.dtlsPort };
    for (let i = 0; i < TUNNELS; i++) {
      running.push(runClient({
        server: target,
        domain: "crash.reset.test",
        apiKey,
        target: new URL("http://127.0.0.1:9"),
        dialer: dtlsDialer({
          server: target,
          domain: "crash.reset.test",
          apiKey,
          socket: (_h, port, handler) => bindUdp(`127.22.0.${i + 1}`, port, handler),
        }),
        muxParams: { keepAliveIntervalMs: KEEPALIVE_MS },
        statsIntervalMs: 1_000_000_000,
        drainTimeoutMs: 1000,
        onEvent: (e: ClientEvent) => {
          if (e.type === "connected") up.add(i);
          else if (e.type === "disconnected") up.delete(i);
          else if (e.type === "failure" && crashed && e.kind === "session_lost") {
            if (!lost.some((l) => l.i === i)) {
              lost.push({ i, at: performance.now(), message: e.message });
            }
          }
        },
      }, ac.signal));
    }
    await until(state("all tunnels up"), () => up.size === TUNNELS, 30_000);

    crashed = true;
    const killedAt = performance.now();
    await server.proc.stop("SIGKILL");
    await server.restart();
    const upAt = performance.now();
    await until(state("every tunnel lost"), () => lost.length === TUNNELS, 20_000);
    await until(state("all tunnels back"), () => up.size === TUNNELS, 30_000);
    const lastLoss = Math.max(...lost.map((l) => l.at));
    console.log(
      `server back ${((upAt - killedAt) / 1000).toFixed(1)} s after the kill; every client ` +
        `lost its tunnel within ${((lastLoss - upAt) / 1000).toFixed(1)} s of that ` +
        `and is back ${((performance.now() - upAt) / 1000).toFixed(1)} s after it`,
    );
    // Told by the reset, not by silence (that takes 10 s of unanswered PINGs).
    for (const l of lost) match(l.message, /stateless reset/);
    ok(lastLoss - upAt < 8_000, `last loss ${(lastLoss - upAt).toFixed(0)} ms after restart`);
    const metrics = await curl([
      "-s",
      "-H",
      "Host: gateway.test",
      `http://127.0.0.1:${server.httpPort}/metrics`,
    ]);
    const sent = Number(
      /hopgate_dtls_stateless_resets_total\{result="sent"\} (\d+)/.exec(metrics.body)?.[1] ?? -1,
    );
    ok(sent >= TUNNELS, `${sent} resets sent`);
    equal(up.size, TUNNELS);
  } finally {
    ac.abort();
    await server.proc.stop("SIGKILL");
    await Promise.race([Promise.all(running), new Promise((r) => setTimeout(r, 15_000))]);
    await server.stop();
  }
});
