/**
 * A NAT that rebinds the client's source port, with real processes: a server, a client
 * whose DTLS goes through a UDP relay that moves its upstream-facing side to a new
 * port every second (as a home or mobile NAT does after an idle timeout or a
 * reboot), an origin in this process and curl as the caller. With a connection ID
 * (RFC 9146) and the return routability check (RFC 9853) the tunnel must survive
 * every move: no new handshake, no failed request, a 50 MiB download SHA-256-exact.
 */
import { equal, ok } from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { curl, freePort, startClientProc, startServerProc } from "./helpers/procs.ts";
import { UdpRelay } from "./tools/udp_relay.ts";

const DOMAIN = "app.rebinding.test";
const BODY = new Uint8Array(randomBytes(50 * 1024 * 1024));
const BODY_SHA = createHash("sha256").update(BODY).digest("hex");

Deno.test("NAT rebinding every second: a 50 MiB download and a request loop, no new handshake, no failed request", async () => {
  const originPort = freePort("tcp");
  const origin = Deno.serve(
    { hostname: "127.0.0.1", port: originPort, onListen() {} },
    (req) => new URL(req.url).pathname === "/big" ? new Response(BODY) : new Response("hello\n"),
  );
  const metricsPort = freePort("tcp");
  const server = await startServerProc({ HOP_METRICS_LISTEN: `127.0.0.1:${metricsPort}` });
  const diagnostics = async () => {
    const m = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    const lines = m.split("\n").filter((l) =>
      /^hopgate_(dtls_path|dtls_dropped|tunnel_packets_lost|tunnel_frames_retrans)/.test(l)
    );
    return `${lines.join("\n")}\nrelay ${JSON.stringify(relay.counters)}\nclient:\n${
      client?.output.slice(-2000)
    }\nserver:\n${server.proc.stdout.slice(-3000)}`;
  };
  const relay = new UdpRelay({ upstream: { hostname: "127.0.0.1", port: server.dtlsPort } });
  let client: ReturnType<typeof startClientProc> | undefined;
  let rebinds = 0;
  let timer: ReturnType<typeof setInterval> | undefined;
  const out = await Deno.makeTempFile();
  try {
    const key = await server.register(DOMAIN);
    client = startClientProc({
      dtlsPort: relay.addr.port,
      domain: DOMAIN,
      apiKey: key,
      target: `127.0.0.1:${originPort}`,
    });
    await client.waitFor(/connected to \S+ over dtls/, 20_000);
    timer = setInterval(() => {
      relay.rebind();
      rebinds++;
    }, 1000);

    const statuses: number[] = [];
    const failures: string[] = [];
    let stop = false;
    const loop = (async () => {
      while (!stop) {
        const t0 = performance.now();
        const r = await curl([
          "-m",
          "30",
          "-H",
          `Host: ${DOMAIN}`,
          `http://127.0.0.1:${server.httpPort}/`,
        ]);
        statuses.push(r.status);
        if (r.status !== 200) {
          failures.push(
            `${r.status} after ${
              (performance.now() - t0).toFixed(0)
            } ms (rebind ${rebinds}): ${r.body}`,
          );
        }
      }
    })();
    // Download until the port has moved at least three times during downloads.
    const runs: string[] = [];
    for (let i = 0; i < 4 && rebinds < 3; i++) {
      const before = rebinds, t0 = performance.now();
      const r = await curl([
        "-m",
        "60",
        "-H",
        `Host: ${DOMAIN}`,
        "-o",
        out,
        `http://127.0.0.1:${server.httpPort}/big`,
      ]);
      equal(r.status, 200, `download ${i}: ${r.headers}\n${await diagnostics()}`);
      const got = createHash("sha256").update(await Deno.readFile(out)).digest("hex");
      equal(got, BODY_SHA, `download ${i} is not bit-exact`);
      runs.push(
        `${((performance.now() - t0) / 1000).toFixed(2)} s across ${rebinds - before} rebinds`,
      );
    }
    ok(rebinds >= 3, `only ${rebinds} rebinds happened during the downloads`);
    stop = true;
    await loop;
    clearInterval(timer);
    timer = undefined;

    equal(failures.length, 0, `${failures.join("\n")}\n${await diagnostics()}`);
    ok(statuses.length >= 5, `${statuses.length} requests in the loop`);
    // One session all along: one handshake, one "connected", and the server followed.
    equal(client.output.match(/connected to \S+ over/g)?.length, 1, client.output);
    equal(server.proc.stdout.match(/"tunnel connected"/g)?.length, 1);
    const moved = server.proc.stdout.match(/"tunnel client moved"/g)?.length ?? 0;
    ok(moved >= 3, `the server followed the client ${moved} times for ${rebinds} rebinds`);
    console.log(
      `50 MiB downloads: ${runs.join("; ")}; ${statuses.length} requests in the loop, all 200; ` +
        `${rebinds} rebinds, the server logged ${moved} moves`,
    );
  } finally {
    if (timer) clearInterval(timer);
    await client?.stop();
    await relay.close();
    await server.stop();
    await origin.shutdown();
    await Deno.remove(out).catch(() => {});
  }
});
