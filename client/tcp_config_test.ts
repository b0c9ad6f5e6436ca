/** The TCP path's configuration: defaults, address forms, proxy, CA file, mistakes named. */
import { deepEqual, equal, ok } from "node:assert/strict";
import { ConfigError, resolveConfig } from "./config.ts";
import { makeDialer } from "./main.ts";

const base = {
  HOP_CLIENT_SERVER_ADDR: "hop.example.com:4433",
  HOP_CLIENT_DOMAIN: "app.example.com",
  HOP_CLIENT_API_KEY: "k-0123456789",
  HOP_CLIENT_LOCAL_TARGET: "3000",
};

function resolve(
  flags: Record<string, string> = {},
  env: Record<string, string> = {},
  readFile?: (p: string) => string,
) {
  return resolveConfig({
    flags,
    env: { ...base, ...env },
    dotenv: {},
    ...(readFile ? { readFile } : {}),
  });
}

function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  throw new Error("no ConfigError");
}

Deno.test("tcp path defaults: dtls transport; TLS to the server-addr host on 443, its name as SNI", () => {
  const c = resolve();
  equal(c.transport, "dtls");
  deepEqual(c.tcp, {
    targets: [{
      server: { hostname: "hop.example.com", port: 443 },
      tls: true,
      serverName: "hop.example.com",
    }],
  });
  equal(makeDialer(c).transport, "dtls");
  equal(makeDialer(resolve({ transport: "tcp" })).transport, "tcp (tls+websocket)");
  equal(makeDialer(resolve({ transport: "auto" })).transport, "dtls, else tcp (tls+websocket)");
});

Deno.test("tcp path address forms and the server name", () => {
  deepEqual(resolve({ serverTcpAddr: "edge.example.com:8443" }).tcp.targets[0]!.server, {
    hostname: "edge.example.com",
    port: 8443,
  });
  const plain = resolve({ serverTcpAddr: "http://10.0.0.5:8080", serverName: "Hop.Example.com" });
  deepEqual(plain.tcp.targets[0]!.server, { hostname: "10.0.0.5", port: 8080 });
  equal(plain.tcp.targets[0]!.tls, false);
  equal(plain.tcp.targets[0]!.serverName, "hop.example.com");
  const https = resolve({}, { HOP_CLIENT_SERVER_TCP_ADDR: "https://edge.example.com" });
  deepEqual(https.tcp.targets[0]!.server, { hostname: "edge.example.com", port: 443 });
  equal(https.tcp.targets[0]!.tls, true);
  const p = problems(() => resolve({ serverTcpAddr: "ftp://x:1", transport: "udp" }));
  ok(p.some((m) => m.includes("--server-tcp-addr / HOP_CLIENT_SERVER_TCP_ADDR")), p.join("\n"));
  ok(p.some((m) => m.includes("--transport / HOP_CLIENT_TRANSPORT")), p.join("\n"));
});

Deno.test("proxy: flag or variable; HTTPS_PROXY only when TCP may be used; credentials never shown", () => {
  const c = resolve({ proxy: "http://u:pw-secret@proxy.local:3128", transport: "tcp" });
  equal(c.tcp.proxy?.host, "proxy.local:3128");
  equal(resolve({}, { HTTPS_PROXY: "http://proxy.local:3128" }).tcp.proxy, undefined);
  equal(
    resolve({ transport: "auto" }, { HTTPS_PROXY: "proxy.local:3128" }).tcp.proxy?.href,
    "http://proxy.local:3128/",
  );
  // An https:// HTTPS_PROXY does not break a DTLS-only client.
  equal(resolve({}, { HTTPS_PROXY: "https://p:1" }).transport, "dtls");
  const p = problems(() => resolve({ transport: "tcp", proxy: "https://u:pw-secret@p:1" }));
  ok(p.length === 1 && p[0]!.includes("only http://"), p.join("\n"));
  ok(!p[0]!.includes("pw-secret"));
});

Deno.test("CA file: read through readFile; a missing or empty one is named", () => {
  const pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
  const c = resolve({ tcpCaFile: "/etc/ca.pem" }, {}, (p) => {
    equal(p, "/etc/ca.pem");
    return pem;
  });
  deepEqual(c.tcp.caCerts, [pem]);
  const missing = problems(() =>
    resolve({ tcpCaFile: "/nope.pem" }, {}, () => {
      throw new Deno.errors.NotFound("x");
    })
  );
  ok(missing[0]!.includes("no such file: /nope.pem"), missing.join("\n"));
  const empty = problems(() => resolve({ tcpCaFile: "/e.pem" }, {}, () => "nothing"));
  ok(empty[0]!.includes("--tcp-ca-file / HOP_CLIENT_TCP_CA_FILE"), empty.join("\n"));
});

Deno.test("problems never show the API key", () => {
  const p = problems(() => resolve({ transport: "nope" }));
  ok(!p.join("\n").includes(base.HOP_CLIENT_API_KEY));
});

Deno.test("tcp path per node: a pair naming the same host dials the node's address, with the name for TLS and Host", async () => {
  // A listener standing in for node 127.0.0.1's HTTP port: it reads the upgrade request and hangs up.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const heads: string[] = [];
  const serving = (async () => {
    for await (const conn of listener) {
      const buf = new Uint8Array(4096);
      const n = await conn.read(buf);
      heads.push(new TextDecoder().decode(buf.subarray(0, n ?? 0)));
      conn.close();
    }
  })().catch(() => {});
  // "pair.invalid" resolves nowhere: only the node's address can reach the listener.
  const c = resolve({
    serverAddr: "pair.invalid:4433",
    transport: "tcp",
    serverTcpAddr: `http://pair.invalid:${port}`,
  });
  const node = {
    key: "127.0.0.1:4433",
    address: { hostname: "127.0.0.1", port: 4433 },
    entry: { hostname: "pair.invalid", port: 4433 },
    index: 0,
    label: "pair.invalid:4433 (127.0.0.1)",
  };
  const failed = await makeDialer(c, node).dial(new AbortController().signal).then(
    () => "connected",
    (e) => String(e),
  );
  listener.close();
  await serving;
  ok(/WebSocket upgrade/.test(failed), failed);
  equal(heads.length, 1, "the node's address was dialled");
  ok(heads[0]!.toLowerCase().includes(`host: pair.invalid:${port}`), heads[0]);
});
