/**
 * The client moving between transports with real processes: a server, a client with
 * `--transport auto`, and a UDP relay in front of the server's DTLS port that first
 * drops every datagram (a network that drops UDP) and then lets them through. A
 * request loop runs through the public listener the whole time.
 */
import { equal, ok } from "node:assert/strict";
import { curl, freePort, startClientProc, startServerProc } from "./helpers/procs.ts";
import { UdpRelay } from "./tools/udp_relay.ts";

const DOMAIN = "app.reprobe.test";

Deno.test("auto transport: UDP dropped -> serving over TCP; UDP back -> on DTLS within the re-probe interval, no request failed across the move", async () => {
  const originPort = freePort("tcp");
  const origin = Deno.serve(
    { hostname: "127.0.0.1", port: originPort, onListen() {} },
    () => new Response("hello\n"),
  );
  const server = await startServerProc();
  const relay = new UdpRelay({
    upstream: { hostname: "127.0.0.1", port: server.dtlsPort },
    toServer: { loss: 1 },
    toClient: { loss: 1 },
    // Each DTLS attempt dials from a new socket: follow it.
    followClient: true,
  });
  let client: ReturnType<typeof startClientProc> | undefined;
  try {
    const key = await server.register(DOMAIN);
    const started = performance.now();
    client = startClientProc({
      dtlsPort: relay.addr.port,
      domain: DOMAIN,
      apiKey: key,
      target: `127.0.0.1:${originPort}`,
      args: [
        "--transport",
        "auto",
        "--server-tcp-addr",
        `http://127.0.0.1:${server.httpPort}`,
        "--server-name",
        "gateway.test",
        "--reprobe-seconds",
        "2",
      ],
    });
    await client.waitFor(/connected to \S+ over tcp/, 20_000);
    const onTcpMs = performance.now() - started;
    ok(onTcpMs < 10_000, `serving over TCP ${onTcpMs.toFixed(0)} ms after the client started`);

    // A steady request loop through the public listener, across the move.
    const statuses: number[] = [];
    let stop = false;
    const loop = (async () => {
      while (!stop) {
        const r = await curl(["-H", `Host: ${DOMAIN}`, `http://127.0.0.1:${server.httpPort}/`]);
        statuses.push(r.status);
      }
    })();
    await new Promise((r) => setTimeout(r, 3000)); // failed re-probes while UDP is still dropped
    equal(client.output.match(/over dtls/g)?.length ?? 0, 0, "still on TCP while UDP is dropped");
    relay.set("toServer", { loss: 0 });
    relay.set("toClient", { loss: 0 });
    const back = performance.now();
    await client.waitFor(/connected to \S+ over dtls/, 15_000);
    const movedMs = performance.now() - back;
    ok(movedMs < 6_000, `back on DTLS ${movedMs.toFixed(0)} ms after UDP was let through`);
    await server.proc.waitFor('"tunnel draining"', 5_000);
    await new Promise((r) => setTimeout(r, 2000)); // the loop runs on the new tunnel
    stop = true;
    await loop;
    ok(statuses.length >= 20, `${statuses.length} requests in the loop`);
    equal(statuses.filter((s) => s !== 200).length, 0, `statuses: ${statuses.join(",")}`);
    ok(relay.counters.toServer.forwarded > 0, "DTLS really went through the relay");
    console.log(
      `on TCP after ${onTcpMs.toFixed(0)} ms; on DTLS ${movedMs.toFixed(0)} ms after UDP was ` +
        `let through; ${statuses.length} requests, all 200`,
    );
  } finally {
    await client?.stop();
    await relay.close();
    await server.stop();
    await origin.shutdown();
  }
});
