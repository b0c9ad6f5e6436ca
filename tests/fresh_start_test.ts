/**
 * `deno task server` on a fresh checkout: with neither HOP_SERVER_DOMAIN nor
 * HOP_SERVER_DEBUG set it starts in debug mode (loopback, self-signed, embedded
 * database) and says so, instead of refusing to start.
 */
import { ok } from "node:assert/strict";
import { baseEnv, freePort, ROOT, taskFlags } from "./helpers/procs.ts";

Deno.test("the server starts in debug mode when nothing is configured, and says why", async () => {
  const dataDir = `./data/fresh-${crypto.randomUUID()}`;
  const http = freePort("tcp");
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--config", `${ROOT}deno.json`, ...taskFlags("server"), "server/main.ts"],
    cwd: ROOT,
    clearEnv: true,
    env: {
      ...baseEnv(),
      // only ports and the data directory, so parallel tests do not collide
      HOP_SERVER_HTTP_LISTEN: `127.0.0.1:${http}`,
      HOP_SERVER_HTTPS_LISTEN: `127.0.0.1:${freePort("tcp")}`,
      HOP_SERVER_DTLS_LISTEN: `127.0.0.1:${freePort("udp")}`,
      HOP_DATA_DIR: dataDir,
    },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let out = "";
  const dec = new TextDecoder();
  const read = (r: ReadableStream<Uint8Array>) =>
    (async () => {
      for await (const c of r) out += dec.decode(c, { stream: true });
    })();
  const reading = Promise.all([read(child.stdout), read(child.stderr)]);
  try {
    const end = Date.now() + 30_000;
    while (!out.includes('"server started"') && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 100));
    }
    ok(out.includes('"server started"'), out);
    ok(out.includes("starting in debug mode"), out);
    ok(out.includes('"debug":true'), out);
    const res = await fetch(`http://localhost:${http}/healthz`); // Host: localhost, the debug server domain
    ok(res.ok, `healthz: ${res.status}`);
    await res.body?.cancel();
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await reading;
    await Deno.remove(`${ROOT}${dataDir.slice(2)}`, { recursive: true }).catch(() => {});
  }
});
