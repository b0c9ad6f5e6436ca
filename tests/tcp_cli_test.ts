/**
 * The client CLI on the TCP path as a real process with the client task's exact
 * permissions: `--transport tcp` to the in-process server's plain HTTP listener
 * (a TLS-terminating proxy's setup), through an HTTP CONNECT proxy with
 * credentials; a request goes through; SIGTERM stops it; neither the API key nor
 * the proxy password shows in its output.
 */
import { equal, match, ok } from "node:assert/strict";
import { baseEnv, curl, ROOT, taskFlags } from "./helpers/procs.ts";
import { startTestServer } from "./helpers/server.ts";

const DOMAIN = "cli.tcp.test";

Deno.test("cli --transport tcp through a CONNECT proxy: serves, stops on SIGTERM, shows no secret", async () => {
  const t = await startTestServer();
  const origin = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => new Response(`tcp cli ${new URL(req.url).pathname}`),
  );
  // A CONNECT proxy with credentials, as in tests/tcp_tunnel_test.ts but minimal.
  const proxyListener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const connects: string[] = [];
  const open = new Set<Deno.Conn>();
  const proxying = (async () => {
    for await (const c of proxyListener) {
      open.add(c);
      (async () => {
        const buf = new Uint8Array(4096);
        let n = 0;
        let text = "";
        while (!text.includes("\r\n\r\n")) {
          const got = await c.read(buf.subarray(n));
          if (got === null) return;
          n += got;
          text = new TextDecoder().decode(buf.subarray(0, n));
        }
        const target = text.split(" ")[1]!;
        const authorized = text.toLowerCase().includes(
          `proxy-authorization: basic ${btoa("cli:proxy-pass-123")}`.toLowerCase(),
        );
        connects.push(target);
        if (!authorized) {
          await c.write(new TextEncoder().encode("HTTP/1.1 407 No\r\ncontent-length: 0\r\n\r\n"));
          return c.close();
        }
        const up = await Deno.connect({
          hostname: "127.0.0.1",
          port: Number(target.split(":")[1]),
        });
        open.add(up);
        await c.write(new TextEncoder().encode("HTTP/1.1 200 OK\r\n\r\n"));
        await Promise.allSettled([c.readable.pipeTo(up.writable), up.readable.pipeTo(c.writable)]);
      })().catch(() => {});
    }
  })().catch(() => {});
  const apiKey = await t.register(DOMAIN);
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--config",
      `${ROOT}deno.json`,
      ...taskFlags("client"),
      `${ROOT}client/main.ts`,
      "--transport",
      "tcp",
      "--server-tcp-addr",
      `http://127.0.0.1:${t.server.httpAddr.port}`,
      "--server-name",
      "gateway.test",
      "--debug",
    ],
    cwd: Deno.makeTempDirSync({ prefix: "hopgate-tcp-cli-" }),
    env: {
      ...baseEnv(),
      HOP_CLIENT_SERVER_ADDR: `127.0.0.1:${t.dtlsPort}`,
      HOP_CLIENT_DOMAIN: DOMAIN,
      HOP_CLIENT_API_KEY: apiKey,
      HOP_CLIENT_LOCAL_TARGET: String(origin.addr.port),
      HOP_CLIENT_PROXY: `http://cli:proxy-pass-123@127.0.0.1:${
        (proxyListener.addr as Deno.NetAddr).port
      }`,
    },
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = child.output();
  try {
    let r = await curl(["-H", `Host: ${DOMAIN}`, `${t.httpUrl}/first`]);
    for (let i = 0; i < 100 && r.status !== 200; i++) {
      await new Promise((res) => setTimeout(res, 200));
      r = await curl(["-H", `Host: ${DOMAIN}`, `${t.httpUrl}/first`]);
    }
    equal(r.status, 200);
    equal(r.body, "tcp cli /first");
    equal(t.server.registry.live()[0]?.transport, "ws");
    equal(connects[0], `127.0.0.1:${t.server.httpAddr.port}`);
  } finally {
    try {
      child.kill("SIGTERM");
    } catch { /* exited */ }
  }
  const out = await output;
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  proxyListener.close();
  for (const c of open) {
    try {
      c.close();
    } catch { /* closed */ }
  }
  await proxying;
  await origin.shutdown();
  await t.close();
  equal(out.code, 0, stderr);
  match(stdout, /via http:\/\/127\.0\.0\.1:\d+ \(TCP/);
  match(stdout, /GET \/first → 200/);
  for (const secret of [apiKey, "proxy-pass-123"]) {
    ok(!stdout.includes(secret) && !stderr.includes(secret), "a secret was printed");
  }
});
