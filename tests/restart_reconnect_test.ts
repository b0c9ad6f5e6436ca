/**
 * A node restart with many tunnels (docs/operations.md, "Capacity of one node"): a real
 * server process, 200 tunnels from this process with the client's own code (one UDP
 * socket each, spread over loopback source addresses as real clients are). The server
 * restarts (SIGTERM: it closes every tunnel at once), and every client must come back,
 * their first attempts spread over the reconnect window rather than all in the same
 * half second. The time it took is printed; bench/idle_tunnels.ts measures 10,000.
 */
import { equal, ok } from "node:assert/strict";
import { type ClientEvent, runClient } from "../client/connector.ts";
import { dtlsDialer } from "../client/dialer.ts";
import { bindUdp } from "../shared/dtls/udp.ts";
import { startServerProc } from "./helpers/procs.ts";

const TUNNELS = 200;
const PER_DOMAIN = 50;
const PER_ADDRESS = 20;

Deno.test("restart: 200 tunnels are back after their server restarts, first retries spread out", async () => {
  const server = await startServerProc({ HOP_SERVER_MAX_TUNNELS_PER_DOMAIN: String(PER_DOMAIN) });
  const up = new Set<number>();
  const lost: (Extract<ClientEvent, { type: "failure" }> & { i: number })[] = [];
  /** Clients that failed an attempt while opening: their backoff goes on exponentially. */
  const failedBefore = new Set<number>();
  const lostBy = new Set<number>();
  let restarting = false;
  const kinds: Record<string, number> = {};
  const ac = new AbortController();
  const running: Promise<void>[] = [];
  const until = async (what: string, cond: () => boolean, ms: number) => {
    const end = performance.now() + ms;
    while (!cond()) {
      if (performance.now() > end) {
        throw new Error(
          `timed out waiting for ${what}: ${up.size} of ${TUNNELS} up, ` +
            `failures since the restart ${JSON.stringify(kinds)}`,
        );
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  try {
    const keys: string[] = [];
    for (let d = 0; d < TUNNELS / PER_DOMAIN; d++) keys.push(await server.register(`r${d}.test`));
    const target = { hostname: "127.0.0.1", port: server.dtlsPort };
    for (let i = 0; i < TUNNELS; i++) {
      const domain = `r${Math.floor(i / PER_DOMAIN)}.test`;
      const apiKey = keys[Math.floor(i / PER_DOMAIN)]!;
      const a = Math.floor(i / PER_ADDRESS);
      const from = `127.21.0.${a + 1}`;
      running.push(runClient({
        server: target,
        domain,
        apiKey,
        target: new URL("http://127.0.0.1:9"),
        dialer: dtlsDialer({
          server: target,
          domain,
          apiKey,
          socket: (_h, port, handler) => bindUdp(from, port, handler),
        }),
        statsIntervalMs: 1_000_000_000,
        drainTimeoutMs: 1000,
        onEvent: (e) => {
          if (e.type === "connected") up.add(i);
          else if (e.type === "disconnected") up.delete(i);
          else if (e.type === "failure" && !restarting) failedBefore.add(i);
          else if (e.type === "failure" && restarting) {
            kinds[e.kind] = (kinds[e.kind] ?? 0) + 1;
            // The first loss of each client (a tunnel back may be lost again under load).
            if (e.kind === "session_lost" && !lostBy.has(i)) {
              lostBy.add(i);
              lost.push({ ...e, i });
            }
          }
        },
      }, ac.signal));
    }
    await until("all tunnels up", () => up.size === TUNNELS, 60_000);

    restarting = true;
    const t0 = performance.now();
    await server.proc.stop(); // SIGTERM: the server closes every tunnel
    await server.restart();
    const serverUp = performance.now();
    await until("every tunnel lost", () => lost.length === TUNNELS, 45_000);
    await until("all tunnels back", () => up.size === TUNNELS, 60_000);
    const back = performance.now();
    console.log(
      `${TUNNELS} tunnels back ${((back - t0) / 1000).toFixed(1)} s after the restart began ` +
        `(server up again after ${((serverUp - t0) / 1000).toFixed(1)} s)`,
    );

    // Each client lost its tunnel once and announced its first retry within the window.
    equal(lost.length, TUNNELS);
    // A client that failed an attempt before (its tunnel then lived under 30 s) goes on
    // with its exponential backoff; the others' first retry is spread.
    const waits = lost.filter((f) => !failedBefore.has(f.i)).map((f) => f.retryInMs)
      .sort((a, b) => a - b);
    ok(waits.length >= TUNNELS / 2, `${waits.length} clients never failed before`);
    ok(waits[0]! >= 250 && waits.at(-1)! <= 3000, `waits ${waits[0]}..${waits.at(-1)} ms`);
    // Spread over the window, not bunched at its start: uniform draws over 2.75 s.
    const median = waits[Math.floor(waits.length / 2)]!;
    ok(median > 1000 && median < 2250, `median first wait ${median} ms`);
    ok(waits.at(-1)! - waits[0]! > 2000, `waits span ${waits.at(-1)! - waits[0]!} ms`);
  } finally {
    ac.abort();
    await server.proc.stop("SIGKILL");
    await Promise.race([Promise.all(running), new Promise((r) => setTimeout(r, 15_000))]);
    await server.stop();
  }
});
