import assert from "node:assert/strict";
import {
  canonicalDomain,
  formatHostPort,
  hostHeaderName,
  InvalidDomainError,
  isResolveError,
  normalizeDomain,
  parseHostPort,
  sniHostName,
  tryNormalizeDomain,
} from "./names.ts";

Deno.test("normalizeDomain: lowercase, trimmed, punycode, one trailing dot dropped", () => {
  assert.equal(normalizeDomain("Example.COM"), "example.com");
  assert.equal(normalizeDomain("  app.example.com.  "), "app.example.com");
  assert.equal(normalizeDomain("Bücher.Example"), "xn--bcher-kva.example");
  assert.equal(normalizeDomain("例え.テスト"), "xn--r8jz45g.xn--zckzah");
  assert.equal(normalizeDomain("xn--bcher-kva.example"), "xn--bcher-kva.example");
  assert.equal(normalizeDomain("a-b.c0.example"), "a-b.c0.example");
  assert.equal(normalizeDomain("a.b"), "a.b");
  assert.equal(normalizeDomain("localhost", { allowSingleLabel: true }), "localhost");
});

Deno.test("normalizeDomain refuses what is not a hostname", () => {
  const bad = [
    "",
    "   ",
    "localhost",
    "a..b.com",
    "-a.com",
    "a-.com",
    "a_b.com",
    "*.example.com",
    "ex ample.com",
    "example.com:80",
    "http://example.com",
    "user@example.com",
    "1.2.3.4",
    "1.2.3.44",
    "[::1]",
    "xn--zz.com",
    "example.-com",
    `${"a".repeat(64)}.com`,
    `${"a.".repeat(127)}com`,
    "a.b..",
  ];
  for (const input of bad) {
    assert.throws(() => normalizeDomain(input), InvalidDomainError, JSON.stringify(input));
    assert.equal(tryNormalizeDomain(input), undefined);
  }
  assert.throws(() => normalizeDomain("localhost"), /needs at least two labels/);
  assert.throws(() => normalizeDomain("1.2.3.4"), /looks like an IP address/);
});

Deno.test("canonicalDomain: a domain's canonical form, anything else lowercased", () => {
  assert.equal(canonicalDomain(" App.Example.TEST "), "app.example.test");
  assert.equal(canonicalDomain("Bücher.Example."), "xn--bcher-kva.example");
  assert.equal(canonicalDomain(" Not_A.Domain "), "not_a.domain");
});

Deno.test("hostHeaderName: the name a Host value asks for", () => {
  const cases: [string | null | undefined, string][] = [
    ["app.example.com", "app.example.com"],
    ["App.Example.COM:8080", "app.example.com"],
    ["app.example.com.", "app.example.com"],
    ["app.example.com.:443", "app.example.com"],
    ["  app.example.com\t", "app.example.com"],
    ["localhost:", "localhost"],
    ["127.0.0.1:80", "127.0.0.1"],
    ["[::1]:8080", "[::1]"],
    ["[2001:DB8::1]", "[2001:db8::1]"],
    // missing or malformed: routes nowhere
    [null, ""],
    [undefined, ""],
    ["", ""],
    ["   ", ""],
    [".", ""],
    [":80", ""],
    ["a_b.example.com", ""],
    ["bücher.example", ""],
    ["app.example.com:abc", ""],
    ["a:b:c", ""],
    ["app.example.com/x", ""],
    ["user@app.example.com", ""],
    ["[::1", ""],
    ["[::1]x", ""],
    ["[::1]:8x", ""],
  ];
  for (const [input, want] of cases) assert.equal(hostHeaderName(input), want, String(input));
  // Nothing to change: the very string comes back (no copy on the hot path).
  const s = "app.example.com";
  assert.equal(hostHeaderName(s), s);
});

Deno.test("sniHostName: rustls's DNS name rules, lowercased; an IP literal is no name", () => {
  const enc = (s: string) => new TextEncoder().encode(s);
  assert.equal(sniHostName(enc("App.Example.COM")), "app.example.com");
  assert.equal(sniHostName(enc("app.example.com.")), "app.example.com");
  assert.equal(sniHostName(enc("_acme.x-y.example")), "_acme.x-y.example");
  assert.equal(sniHostName(enc("localhost")), "localhost");
  assert.equal(sniHostName(enc("192.0.2.1")), "");
  for (const bad of ["", ".", "a..b", ".a", "a b", "a:1", "bücher.example", "a/b", "*.example"]) {
    assert.equal(sniHostName(enc(bad)), undefined, bad);
  }
  assert.equal(sniHostName(enc(`${"a".repeat(63)}.example`)), `${"a".repeat(63)}.example`);
  assert.equal(sniHostName(enc(`${"a".repeat(64)}.example`)), undefined);
  assert.equal(sniHostName(enc(`${"a.".repeat(126)}a`)), `${"a.".repeat(126)}a`); // 253
  assert.equal(sniHostName(enc(`${"a.".repeat(126)}ab`)), undefined); // 254
});

Deno.test("parseHostPort: host:port, [v6]:port, :port only with a default host", () => {
  assert.deepEqual(parseHostPort("hop.example.com:443"), {
    hostname: "hop.example.com",
    port: 443,
  });
  assert.deepEqual(parseHostPort(" 10.0.0.1:1 "), { hostname: "10.0.0.1", port: 1 });
  assert.deepEqual(parseHostPort("[::1]:4433"), { hostname: "::1", port: 4433 });
  assert.deepEqual(parseHostPort("[::ffff:10.0.0.1]:80"), {
    hostname: "::ffff:10.0.0.1",
    port: 80,
  });
  assert.deepEqual(parseHostPort(":8080", { emptyHost: "0.0.0.0" }), {
    hostname: "0.0.0.0",
    port: 8080,
  });
  assert.deepEqual(parseHostPort("h:0", { minPort: 0 }), { hostname: "h", port: 0 });
  for (
    const bad of [
      "",
      "80",
      ":80",
      "host",
      "host:",
      "::1:80",
      "[::1]",
      "[zz::1]:80",
      "[1]:80",
      "[fe80::1%eth0]:80",
      "a b:80",
      "a/b:80",
      "a]b:80",
      "host:123456",
      "host:-1",
    ]
  ) {
    assert.deepEqual(parseHostPort(bad), { problem: "form" }, bad);
  }
  assert.deepEqual(parseHostPort("h:0"), { problem: "port", port: 0 });
  assert.deepEqual(parseHostPort("h:65536", { minPort: 0 }), { problem: "port", port: 65536 });
});

Deno.test("formatHostPort brackets IPv6 and round-trips through parseHostPort", () => {
  for (
    const a of [
      { hostname: "hop.example.com", port: 443 },
      { hostname: "127.0.0.1", port: 8080 },
      { hostname: "::1", port: 4433 },
      { hostname: "2001:db8::7", port: 1 },
    ]
  ) {
    const text = formatHostPort(a);
    assert.deepEqual(parseHostPort(text), a, text);
  }
  assert.equal(formatHostPort({ hostname: "::1", port: 80 }), "[::1]:80");
});

Deno.test("isResolveError: a real failed lookup, by its code", async () => {
  const { lookup } = await import("node:dns/promises");
  const err = await lookup("no-such-host.invalid").then(() => undefined, (e: unknown) => e);
  assert.ok(err !== undefined, "the .invalid name resolved");
  assert.ok(isResolveError(err), String(err));
  assert.equal(isResolveError(new Error("getaddrinfo ENOTFOUND x")), false); // text is not a code
  assert.equal(isResolveError(Object.assign(new Error("x"), { code: "ECONNREFUSED" })), false);
  assert.equal(isResolveError(undefined), false);
});
