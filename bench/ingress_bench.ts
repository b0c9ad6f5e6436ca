/**
 * CPU per request of the server's request path without HTTP parsing or sockets:
 * the ingress handler is called in-process with a parsed request and a responder
 * that collects what would be written (the front's part is measured by
 * `bench/quick.sh` and the shared harness), its tunnel is a mux
 * session over the in-memory link whose other end answers each stream at once
 * (head + 13-byte body + FIN). 50 requests in flight; both mux ends are counted.
 * Baseline in the same run: the same exchange written straight onto mux streams
 * (heads + mux, no handler), so the ratio is what the ingress itself adds.
 *
 *   deno run --allow-read --allow-env bench/ingress_bench.ts [--requests N] [--rounds N]
 *   (also `deno task bench ingress`)
 *
 * For profiling the request path (`--cpu-prof`): the figures move with ingress,
 * head codec and mux changes only.
 */
import { parseArgs } from "node:util";
import { realClock } from "../shared/mux/clock.ts";
import { MuxSession } from "../shared/mux/mod.ts";
import { createLinkPair } from "../shared/mux/testing/lossy_link.ts";
import { encodeHead, readHeadFrom } from "../shared/protocol/mod.ts";
import { TUNNEL_MUX_PARAMS } from "../shared/tunnel_params.ts";
import { ErrorPages } from "../server/error_pages.ts";
import { createIngressHandler } from "../server/ingress.ts";
import { createJsonLogger } from "../server/log.ts";
import { Tunnel } from "../server/tunnels.ts";
import type { FrontRequest, Responder, UpgradedConn } from "../server/front/http1.ts";
import { runLoad } from "./load.ts";

export async function main(args: string[] = []): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      requests: { type: "string", default: "100000" },
      rounds: { type: "string", default: "3" },
    },
  });
  const link = createLinkPair({ clock: realClock, immediate: true, mtu: 16384 });
  const server = new MuxSession(link.a, { role: "server", params: TUNNEL_MUX_PARAMS });
  const body = new TextEncoder().encode("Hello, world!");
  const client = new MuxSession(link.b, {
    role: "client",
    params: TUNNEL_MUX_PARAMS,
    onStream: async (s) => {
      try {
        await readHeadFrom(s);
        s.readRest();
        await s.write(encodeHead({
          t: "res",
          status: 200,
          headers: [["content-type", "text/plain"], ["content-length", "13"]],
        }));
        await s.write(body);
        s.close();
      } catch { /* bench: a failed stream shows as a failed request */ }
    },
  });
  const tunnel = new Tunnel("t1", "app.test", server, {
    remoteAddr: { hostname: "127.0.0.1", port: 1 },
  }, "bench");
  const handler = createIngressHandler({
    hub: { pick: (d, ex) => d === "app.test" && !ex?.has(tunnel) ? tunnel : undefined },
    serverDomain: "gateway.test",
    proxyTimeoutMs: 60_000,
    pages: await ErrorPages.load(undefined),
    logger: createJsonLogger({ level: "warn" }), // as the server runs with HOP_LOG_LEVEL=warn
    onRequest: () => {},
  });
  const peer: Deno.NetAddr = { transport: "tcp", hostname: "127.0.0.1", port: 40000 };
  const noConnection = new Set<string>();
  const signal = new AbortController().signal;
  const headers = [["host", "app.test"], ["user-agent", "wrk"], ["accept", "*/*"]] as [
    string,
    string,
  ][];
  const reqHead = encodeHead({
    t: "req",
    id: "bench",
    method: "GET",
    url: "/",
    headers: [...headers, ["x-forwarded-for", "127.0.0.1"], ["x-request-id", "bench"]],
    client: "127.0.0.1",
    scheme: "http",
  });

  const viaIngress = async () => {
    const req: FrontRequest = {
      method: "GET",
      path: "/",
      headers: headers.slice(),
      host: "app.test",
      scheme: "http",
      peer,
      hasBody: false,
      upgrade: null,
      connection: noConnection,
      signal,
      readBody: () => Promise.resolve(null),
    };
    const res = new CollectingResponder();
    await handler(req, res);
    if (res.status !== 200 || !res.ended) throw new Error(`status ${res.status}`);
  };
  const muxOnly = async () => {
    const s = server.openStream();
    await s.write(reqHead);
    s.close();
    await readHeadFrom(s);
    if (s.readRest() === null) { while (await s.read() !== null); }
  };

  console.log("server request path in-process, 50 in flight (CPU µs per request, both mux ends)");
  for (let round = 0; round < Number(values.rounds); round++) {
    const base = await runLoad(Number(values.requests), muxOnly);
    const full = await runLoad(Number(values.requests), viaIngress);
    console.log(
      `round ${round + 1}: heads + mux ${base.cpuUsPerReq.toFixed(1)} µs, through the ingress ${
        full.cpuUsPerReq.toFixed(1)
      } µs (${(full.cpuUsPerReq / base.cpuUsPerReq).toFixed(2)}x; ${
        full.reqPerSec.toFixed(0)
      } req/s)`,
    );
  }
  await Promise.allSettled([client.close(), server.close()]);
}

/** Keeps the status and counts the bytes the front would write. */
class CollectingResponder implements Responder {
  status = 0;
  bytes = 0;
  ended = false;
  headSent = false;
  head(status: number): void {
    this.status = status;
  }
  write(chunk: Uint8Array): Promise<void> {
    this.headSent = true;
    this.bytes += chunk.length;
    return Promise.resolve();
  }
  end(chunk?: Uint8Array): Promise<void> {
    this.headSent = true;
    this.bytes += chunk?.length ?? 0;
    this.ended = true;
    return Promise.resolve();
  }
  upgrade(): Promise<UpgradedConn> {
    return Promise.reject(new Error("no upgrades here"));
  }
  abort(): void {
    this.ended = false;
  }
}

if (import.meta.main) {
  await main(Deno.args);
  Deno.exit(0);
}
