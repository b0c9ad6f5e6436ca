import assert from "node:assert/strict";
import {
  ConfigError,
  maskSecret,
  parseDotEnv,
  parseLocalTarget,
  parseServerAddr,
  resolveConfig,
} from "./config.ts";

Deno.test("config: .env parser (comments, export, quotes, escapes, inline comments)", () => {
  const text = [
    "# a comment",
    "",
    "HOP_CLIENT_DOMAIN=app.example.com",
    "export HOP_CLIENT_SERVER_ADDR = hop.example.com:443  # trailing comment",
    `HOP_CLIENT_API_KEY="a b#c \\"q\\" \\\\ end"`,
    "SINGLE='lit $x \\n'",
    "EMPTY=",
    "not a line",
    "WIN=crlf\r",
  ].join("\n");
  assert.deepEqual(parseDotEnv(text), {
    HOP_CLIENT_DOMAIN: "app.example.com",
    HOP_CLIENT_SERVER_ADDR: "hop.example.com:443",
    HOP_CLIENT_API_KEY: 'a b#c "q" \\ end',
    SINGLE: "lit $x \\n",
    EMPTY: "",
    WIN: "crlf",
  });
});

Deno.test("config: server address and local target forms", () => {
  assert.deepEqual(parseServerAddr("hop.example.com:443"), {
    hostname: "hop.example.com",
    port: 443,
  });
  assert.deepEqual(parseServerAddr("[::1]:4433"), { hostname: "::1", port: 4433 });
  assert.match(String(parseServerAddr("hop.example.com")), /expected host:port/);
  assert.match(String(parseServerAddr("h:70000")), /1\.\.65535/);

  assert.equal((parseLocalTarget("127.0.0.1:3000") as URL).href, "http://127.0.0.1:3000/");
  assert.equal((parseLocalTarget("3000") as URL).href, "http://127.0.0.1:3000/");
  assert.equal((parseLocalTarget(":8080") as URL).href, "http://127.0.0.1:8080/");
  assert.equal((parseLocalTarget("localhost:5173") as URL).href, "http://localhost:5173/");
  assert.equal(
    (parseLocalTarget("https://10.0.0.2:8443/app") as URL).href,
    "https://10.0.0.2:8443/app",
  );
  assert.match(String(parseLocalTarget("ftp://x:21")), /http or https/);
  assert.match(String(parseLocalTarget("http://u:p@x:1")), /credentials/);
});

const full = {
  HOP_CLIENT_SERVER_ADDR: "env.example.com:1",
  HOP_CLIENT_DOMAIN: "env.example.com",
  HOP_CLIENT_API_KEY: "env-key",
  HOP_CLIENT_LOCAL_TARGET: "127.0.0.1:1",
};

Deno.test("config: flags over environment over .env", () => {
  const dotenv = {
    ...full,
    HOP_CLIENT_SERVER_ADDR: "dot.example.com:2",
    HOP_CLIENT_DOMAIN: "dot.example.com",
    HOP_CLIENT_DEBUG: "true",
  };
  const c = resolveConfig({
    flags: { localTarget: "127.0.0.1:3", apiKey: "flag-key" },
    env: { HOP_CLIENT_DOMAIN: "Env.Example.COM", HOP_CLIENT_API_KEY: "env-key" },
    dotenv,
  });
  assert.deepEqual(c.servers, [{ hostname: "dot.example.com", port: 2 }]); // only in .env
  assert.equal(c.domain, "env.example.com"); // env beats .env, lowercased
  assert.equal(c.apiKey.reveal(), "flag-key"); // flag beats env
  assert.equal(c.target.href, "http://127.0.0.1:3/");
  assert.equal(c.debug, true);
  assert.equal(c.engine, "hopgate");
  // An empty env value still counts as set (and so is missing): the file does not fill it.
  assert.throws(
    () => resolveConfig({ flags: {}, env: { ...full, HOP_CLIENT_API_KEY: "" }, dotenv: full }),
    /Missing --api-key \/ HOP_CLIENT_API_KEY/,
  );
});

Deno.test("config: every problem is listed, naming the flag and variable; the key is never shown", () => {
  try {
    resolveConfig({
      flags: { serverAddr: "nope", dtlsEngine: "openssl" },
      env: { HOP_CLIENT_DOMAIN: "bad domain!", HOP_CLIENT_DEBUG: "maybe" },
      dotenv: { HOP_CLIENT_API_KEY: "s3cret-value" },
    });
    assert.fail("expected a ConfigError");
  } catch (e) {
    assert.ok(e instanceof ConfigError);
    assert.deepEqual(e.problems.map((p) => p.split(":")[0]), [
      "Invalid --server-addr / HOP_CLIENT_SERVER_ADDR",
      "Invalid --domain / HOP_CLIENT_DOMAIN",
      "Missing --local-target / HOP_CLIENT_LOCAL_TARGET",
      "Invalid --dtls-engine / HOP_CLIENT_DTLS_ENGINE",
      "Invalid HOP_CLIENT_DEBUG",
    ]);
    assert.ok(!e.message.includes("s3cret-value"));
  }
  assert.equal(maskSecret("abcdef"), "****(6 chars)");
  assert.ok(!maskSecret("abcdef").includes("abc"));
});

Deno.test("config: metrics listener is opt-in; a bare port means 127.0.0.1; bad values named", () => {
  assert.equal(resolveConfig({ flags: {}, env: full, dotenv: {} }).metricsListen, undefined);
  const c = resolveConfig({
    flags: {},
    env: { ...full, HOP_CLIENT_METRICS_LISTEN: "9464" },
    dotenv: {},
  });
  assert.deepEqual(c.metricsListen, { hostname: "127.0.0.1", port: 9464 });
  const f = resolveConfig({ flags: { metricsListen: "0.0.0.0:9500" }, env: full, dotenv: {} });
  assert.deepEqual(f.metricsListen, { hostname: "0.0.0.0", port: 9500 });
  assert.throws(
    () => resolveConfig({ flags: { metricsListen: "nope" }, env: full, dotenv: {} }),
    (e: unknown) =>
      e instanceof ConfigError && /--metrics-listen \/ HOP_CLIENT_METRICS_LISTEN/.test(e.message),
  );
});

Deno.test("config: several server addresses, each checked; the problem names the entry", () => {
  const c = resolveConfig({
    flags: { serverAddr: " a.example.com:443, 10.0.0.2:4433 ,[2001:db8::1]:443" },
    env: full,
    dotenv: {},
  });
  assert.deepEqual(c.servers, [
    { hostname: "a.example.com", port: 443 },
    { hostname: "10.0.0.2", port: 4433 },
    { hostname: "2001:db8::1", port: 443 },
  ]);
  assert.equal(c.redundancy, 2);
  // The TCP path of each entry: its host on 443, in the same order.
  assert.deepEqual(c.tcp.targets.map((t) => `${t.server.hostname}:${t.server.port}`), [
    "a.example.com:443",
    "10.0.0.2:443",
    "2001:db8::1:443",
  ]);
  const cases: [string, RegExp][] = [
    ["a.example.com:443,", /entry 2 of 2 is empty \(a stray comma\?\)/],
    [",a.example.com:443", /entry 1 of 2 is empty/],
    ["a.example.com:443,b.example.com", /entry 2 of 2: expected host:port/],
    ["a.example.com:443,b.example.com:0", /entry 2 of 2: port must be 1\.\.65535, got 0/],
    ["a.example.com:443,b.example.com:70000", /port must be 1\.\.65535, got 70000/],
    ["a.example.com:443,A.Example.com:443", /a\.example\.com:443 is listed twice/],
    ["[::1]:1,[::1]:1", /\[::1\]:1 is listed twice/],
    [Array.from({ length: 17 }, (_, i) => `h${i}.example.com:1`).join(","), /at most 16/],
  ];
  for (const [value, re] of cases) {
    assert.throws(
      () =>
        resolveConfig({ flags: {}, env: { ...full, HOP_CLIENT_SERVER_ADDR: value }, dotenv: {} }),
      (e: unknown) =>
        e instanceof ConfigError &&
        e.problems.some((p) => p.startsWith("Invalid --server-addr / HOP_CLIENT_SERVER_ADDR: ")) &&
        re.test(e.message),
      value,
    );
  }
  // The same address on two ports is two nodes, not a duplicate.
  assert.equal(
    resolveConfig({
      flags: { serverAddr: "h.example.com:1,h.example.com:2" },
      env: full,
      dotenv: {},
    })
      .servers.length,
    2,
  );
});

Deno.test("config: --server-redundancy 1..8 from flag, variable or .env; bad values named", () => {
  assert.equal(
    resolveConfig({ flags: { serverRedundancy: "1" }, env: full, dotenv: {} }).redundancy,
    1,
  );
  assert.equal(
    resolveConfig({ flags: {}, env: { ...full, HOP_CLIENT_SERVER_REDUNDANCY: "3" }, dotenv: {} })
      .redundancy,
    3,
  );
  assert.equal(
    resolveConfig({ flags: {}, env: full, dotenv: { HOP_CLIENT_SERVER_REDUNDANCY: "8" } })
      .redundancy,
    8,
  );
  for (const bad of ["0", "9", "two", "-1", "1.5"]) {
    assert.throws(
      () => resolveConfig({ flags: { serverRedundancy: bad }, env: full, dotenv: {} }),
      (e: unknown) =>
        e instanceof ConfigError &&
        /Invalid --server-redundancy \/ HOP_CLIENT_SERVER_REDUNDANCY: expected an integer from 1 to 8/
          .test(e.message),
      bad,
    );
  }
});

Deno.test("config: --server-tcp-addr lists one address per --server-addr entry, in order", () => {
  const c = resolveConfig({
    flags: {
      serverAddr: "a.example.com:443,b.example.com:443",
      serverTcpAddr: "https://a.example.com:8443, http://10.0.0.9:8080",
      serverName: "hop.example.com",
    },
    env: full,
    dotenv: {},
  });
  assert.deepEqual(c.tcp.targets, [
    { server: { hostname: "a.example.com", port: 8443 }, tls: true, serverName: "hop.example.com" },
    { server: { hostname: "10.0.0.9", port: 8080 }, tls: false, serverName: "hop.example.com" },
  ]);
  for (
    const [tcp, re] of [
      [
        "a.example.com:443",
        /expected one address per --server-addr entry \(2\), in the same order; got 1/,
      ],
      ["a.example.com:443,", /entry 2: expected host:port, got an empty value/],
      ["a.example.com:443,ftp://b:1", /entry 2: expected host:port/],
    ] as const
  ) {
    assert.throws(
      () =>
        resolveConfig({
          flags: { serverAddr: "a.example.com:443,b.example.com:443", serverTcpAddr: tcp },
          env: full,
          dotenv: {},
        }),
      (e: unknown) =>
        e instanceof ConfigError &&
        e.problems.some((p) => p.includes("--server-tcp-addr / HOP_CLIENT_SERVER_TCP_ADDR")) &&
        re.test(e.message),
      tcp,
    );
  }
});
