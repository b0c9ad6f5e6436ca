import assert from "node:assert/strict";
import { ipInRanges, isLoopback, parseCidr, parseCidrList, parseIp } from "./cidr.ts";

Deno.test("parseCidr: IPv4, IPv6, single addresses; network bits are masked", () => {
  assert.deepEqual(
    [parseCidr("10.1.2.3/8").text, parseCidr("10.1.2.3/8").network],
    ["10.1.2.3/8", 10n << 24n],
  );
  assert.equal(parseCidr("192.0.2.1").prefix, 32);
  assert.equal(parseCidr("2001:db8::1").prefix, 128);
  assert.equal(parseCidr("::/0").prefix, 0);
  for (
    const bad of ["", "10.0.0.0/33", "10.0.0/8", "2001:db8::/129", "x", "10.0.0.0/-1", "1.2.3.4/"]
  ) {
    assert.throws(() => parseCidr(bad), Error, bad);
  }
  assert.deepEqual(parseCidrList(" , "), []);
  assert.equal(JSON.stringify(parseCidrList("10.0.0.0/8")), '["10.0.0.0/8"]');
});

Deno.test("ipInRanges matches by family and prefix, mapped IPv4 included", () => {
  const ranges = parseCidrList("10.0.0.0/8, 192.0.2.7, 2001:db8::/32");
  assert.ok(ipInRanges("10.255.0.1", ranges));
  assert.ok(ipInRanges("192.0.2.7", ranges));
  assert.ok(!ipInRanges("192.0.2.8", ranges));
  assert.ok(ipInRanges("2001:db8:ffff::1", ranges));
  assert.ok(ipInRanges("[2001:db8::1]", ranges));
  assert.ok(!ipInRanges("2001:db9::1", ranges));
  assert.ok(ipInRanges("::ffff:10.1.1.1", ranges));
  assert.ok(!ipInRanges("not-an-ip", ranges));
  assert.ok(ipInRanges("8.8.8.8", parseCidrList("0.0.0.0/0")));
  assert.ok(!ipInRanges("::1", parseCidrList("0.0.0.0/0")));
});

Deno.test("parseIp handles compressed and embedded-IPv4 IPv6 forms", () => {
  assert.equal(parseIp("::1")?.value, 1n);
  assert.equal(parseIp("fe80::1%eth0")?.family, 6);
  assert.equal(parseIp("1::")?.value, 1n << 112n);
  assert.equal(
    parseIp("64:ff9b::192.0.2.1")?.value,
    (0x64n << 112n) | (0xff9bn << 96n) | 0xc0000201n,
  );
  assert.deepEqual(parseIp("::ffff:127.0.0.1"), { family: 4, value: 0x7f000001n });
  assert.ok(isLoopback("127.8.9.10"));
  assert.ok(isLoopback("::1"));
  assert.ok(!isLoopback("10.0.0.1"));
});
