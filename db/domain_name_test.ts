import assert from "node:assert/strict";
import { InvalidDomainError, normalizeDomain, tryNormalizeDomain } from "./domain_name.ts";

Deno.test("normalizeDomain: lowercase, trimmed, punycode, one trailing dot dropped", () => {
  assert.equal(normalizeDomain("Example.COM"), "example.com");
  assert.equal(normalizeDomain("  app.example.com.  "), "app.example.com");
  assert.equal(normalizeDomain("Bücher.Example"), "xn--bcher-kva.example");
  assert.equal(normalizeDomain("例え.テスト"), "xn--r8jz45g.xn--zckzah");
  assert.equal(normalizeDomain("xn--bcher-kva.example"), "xn--bcher-kva.example");
  assert.equal(normalizeDomain("a-b.c0.example"), "a-b.c0.example");
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
    "[::1]",
    "xn--zz.com",
    `${"a".repeat(64)}.com`,
    `${"a.".repeat(127)}com`,
    "a.b..",
  ];
  for (const input of bad) {
    assert.throws(() => normalizeDomain(input), InvalidDomainError, JSON.stringify(input));
    assert.equal(tryNormalizeDomain(input), undefined);
  }
});
