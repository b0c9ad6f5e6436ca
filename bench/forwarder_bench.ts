/**
 * CPU per request of the client's request path without DTLS or UDP: streams opened
 * in-process over the in-memory mux link are served by `serveStream` (the client's
 * forwarder) against a real local origin in another process (Deno.serve, 13-byte
 * answer). 50 requests in flight (`--concurrency N`). Counts the process: forwarder, the
 * origin client (client/origin/pool.ts) and both mux ends; the origin's CPU is not counted.
 *
 *   deno run --allow-net=127.0.0.1 --allow-read --allow-env --allow-run bench/forwarder_bench.ts
 *   (also `deno task bench forwarder`)
 *
 * For profiling the client's path (`--cpu-prof`). Baselines measured in the same run
 * against the same origin: our origin client alone, and node:http alone (kept-alive
 * agent), which the forwarder used before the origin client existed.
 */
import * as http from "node:http";
import { parseArgs } from "node:util";
import { realClock } from "../shared/mux/clock.ts";
import { MuxSession } from "../shared/mux/mod.ts";
import { createLinkPair } from "../shared/mux/testing/lossy_link.ts";
import { encodeHead, readHeadFrom } from "../shared/protocol/mod.ts";
import { TUNNEL_MUX_PARAMS } from "../shared/tunnel_params.ts";
import { serveStream } from "../client/forwarder.ts";
import { OriginPool, type ResponseSink } from "../client/origin/pool.ts";
import { runLoad } from "./load.ts";

export async function main(args: string[] = []): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      requests: { type: "string", default: "50000" },
      rounds: { type: "string", default: "3" },
      concurrency: { type: "string", default: "50" },
    },
  });
  const origin = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: (a) => console.log(a.port) },
        () => new Response("Hello, world!"));`,
    ],
    stdout: "piped",
  }).spawn();
  const port = Number(
    new TextDecoder().decode((await origin.stdout.getReader().read()).value).trim(),
  );
  const target = new URL(`http://127.0.0.1:${port}`);
  const agent = new http.Agent({ keepAlive: true, maxFreeSockets: 64, scheduling: "lifo" });
  const pool = new OriginPool(target);

  const link = createLinkPair({ clock: realClock, immediate: true, mtu: 16384 });
  const server = new MuxSession(link.a, { role: "server", params: TUNNEL_MUX_PARAMS });
  const client = new MuxSession(link.b, {
    role: "client",
    params: TUNNEL_MUX_PARAMS,
    onStream: (s) => void serveStream(s, { target, pool }),
  });
  const head = encodeHead({
    t: "req",
    id: "bench",
    method: "GET",
    url: "/",
    headers: [["host", "app.test"], ["user-agent", "wrk"], ["x-forwarded-for", "127.0.0.1"]],
    client: "127.0.0.1",
    scheme: "http",
  });

  async function tunneled(): Promise<void> {
    const s = server.openStream();
    await s.write(head);
    s.close();
    const r = await readHeadFrom(s);
    if (r.head.t !== "res" || r.head.status !== 200) throw new Error("bad answer");
    if (s.readRest() === null) { while (await s.read() !== null); }
  }

  const sink: ResponseSink = { head() {}, body() {}, end() {} };
  const empty = new Uint8Array(0);
  const poolAlone = () =>
    pool.request({ method: "GET", path: "/", headerLines: "host: app.test\r\n", body: empty }, sink)
      .done;

  const nodeHttp = () =>
    new Promise<void>((resolve, reject) => {
      http.request(
        { host: "127.0.0.1", port, path: "/", agent, headers: { host: "app.test" } },
        (r) => {
          r.on("data", () => {}).on("end", resolve);
        },
      ).on("error", reject).end();
    });

  async function measure(name: string, one: () => Promise<void>) {
    const r = await runLoad(Number(values.requests), one, Number(values.concurrency));
    console.log(
      `${name.padEnd(22)} ${r.reqPerSec.toFixed(0).padStart(7)} req/s ${
        r.cpuUsPerReq.toFixed(1).padStart(6)
      } µs CPU/req`,
    );
    return r.cpuUsPerReq;
  }

  for (let round = 0; round < Number(values.rounds); round++) {
    const node = await measure("node:http alone", nodeHttp);
    const base = await measure("origin client alone", poolAlone);
    const full = await measure("forwarder + mux", tunneled);
    console.log(
      `  origin client ${(base / node).toFixed(2)}x node:http; forwarder + mux beyond it: ${
        (full - base).toFixed(1)
      } µs/req (${(full / base).toFixed(2)}x the origin client alone)`,
    );
  }
  agent.destroy();
  pool.close();
  await Promise.allSettled([client.close(), server.close()]);
  origin.kill();
  await origin.status;
}

if (import.meta.main) {
  await main(Deno.args);
  Deno.exit(0);
}
