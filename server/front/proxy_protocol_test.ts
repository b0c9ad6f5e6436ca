/**
 * The PROXY protocol: the parser on its own (v1 and v2, fed whole, byte by byte
 * and split at every offset; every refusal), then on real sockets (127.0.0.1):
 * the HTTP/1.1 front and the TLS acceptor with `proxyProtocol`, and HAProxy
 * itself (`mode tcp`, `send-proxy` / `send-proxy-v2`) in front of both, with
 * callers on 127.0.0.2 (curl `--interface`).
 */
import assert from "node:assert/strict";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { createSelfSignedCertificate } from "../certs/self_signed.ts";
import { type CutReason, type FrontHandler, type FrontLimits, FrontServer } from "./http1.ts";
import {
  crc32c,
  formatIp,
  PROXY_V1_MAX_BYTES,
  PROXY_V2_MAX_LENGTH,
  type ProxyHeader,
  ProxyHeaderError,
  ProxyHeaderParser,
  type ProxyHeaderResult,
} from "./proxy_protocol.ts";
import { TlsAcceptor, type TlsByteConn, type TlsFailureReason } from "./tls.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------
// Building headers

const SIG = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];

interface V2 {
  verCmd?: number;
  fam?: number;
  /** The address block (default: none). */
  addr?: number[];
  tlvs?: [number, number[]][];
  /** Extra raw bytes after the TLVs. */
  extra?: number[];
  /** Overrides the length field. */
  len?: number;
  /** Adds a CRC32C TLV computed over the result (or this wrong value). */
  crc?: true | number;
}

function v2(o: V2 = {}): Uint8Array {
  const body: number[] = [...(o.addr ?? [])];
  for (const [t, v] of o.tlvs ?? []) body.push(t, v.length >> 8, v.length & 0xff, ...v);
  let crcAt = -1;
  if (o.crc !== undefined) {
    body.push(0x03, 0, 4);
    crcAt = 16 + body.length;
    body.push(0, 0, 0, 0);
  }
  body.push(...(o.extra ?? []));
  const len = o.len ?? body.length;
  const out = new Uint8Array([
    ...SIG,
    o.verCmd ?? 0x21,
    o.fam ?? 0x11,
    len >> 8,
    len & 0xff,
    ...body,
  ]);
  if (crcAt >= 0) {
    const c = o.crc === true ? crc32c(out) : o.crc!;
    out.set([c >>> 24, (c >>> 16) & 0xff, (c >>> 8) & 0xff, c & 0xff], crcAt);
  }
  return out;
}

/** An AF_INET address block: 203.0.113.7:4242 → 198.51.100.1:443 unless given. */
function inet(src = [203, 0, 113, 7], sport = 4242, dst = [198, 51, 100, 1], dport = 443) {
  return [...src, ...dst, sport >> 8, sport & 0xff, dport >> 8, dport & 0xff];
}

/** An AF_INET6 address block: 2001:db8::7 port 4242 → 2001:db8::1 port 443. */
function inet6(): number[] {
  const a = (last: number) => [0x20, 0x01, 0x0d, 0xb8, ...new Array(11).fill(0), last];
  return [...a(7), ...a(1), 0x10, 0x92, 0x01, 0xbb];
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

// ---------------------------------------------------------------------------
// The parser

const AFTER = enc.encode("GET / HTTP/1.1\r\nHost: a\r\n\r\n");

/**
 * Feeds `header` followed by other bytes: whole, byte by byte and split at every
 * offset. Each way must give `expect` once the last header byte is in, never
 * earlier, and say where the header ended.
 */
function feedEveryWay(header: Uint8Array, expect: ProxyHeader): void {
  const wire = concat(header, AFTER);
  const check = (r: ProxyHeaderResult | undefined, chunk: Uint8Array, end: number, how: string) => {
    assert.ok(r, `${how}: a result`);
    assert.deepEqual(r.header, expect, how);
    assert.equal(r.length, header.length, how);
    assert.deepEqual(chunk.subarray(r.consumed), wire.subarray(end), `${how}: the rest`);
  };
  // Whole, with what follows in the same chunk.
  check(new ProxyHeaderParser().feed(wire), wire, header.length, "whole");
  // Byte by byte.
  const p = new ProxyHeaderParser();
  for (let i = 0; i < header.length - 1; i++) {
    assert.equal(p.feed(wire.subarray(i, i + 1)), undefined, `byte ${i}`);
  }
  const last = wire.subarray(header.length - 1);
  check(p.feed(last), last, header.length, "byte by byte");
  // Two pieces, cut at every offset (the second piece carries what follows).
  for (let cut = 0; cut < header.length; cut++) {
    const q = new ProxyHeaderParser();
    assert.equal(q.feed(wire.subarray(0, cut)), undefined, `cut ${cut}: first piece`);
    const rest = wire.subarray(cut);
    check(q.feed(rest), rest, header.length, `cut ${cut}`);
  }
  // Three pieces: the header alone never completes early, the rest comes later.
  for (let cut = 1; cut < header.length; cut += 7) {
    const q = new ProxyHeaderParser();
    assert.equal(q.feed(header.subarray(0, cut)), undefined);
    const r = q.feed(header.subarray(cut));
    assert.ok(r);
    assert.equal(r.consumed, header.length - cut);
  }
}

const tcp = (hostname: string, port: number): Deno.NetAddr => ({
  transport: "tcp",
  hostname,
  port,
});
const proxied = (version: 1 | 2, src: Deno.NetAddr, dst: Deno.NetAddr): ProxyHeader => ({
  version,
  command: "proxy",
  source: src,
  destination: dst,
});

Deno.test("proxy protocol: v1 TCP4, TCP6 and UNKNOWN, whole, byte by byte, split anywhere", () => {
  const cases: [string, ProxyHeader][] = [
    [
      "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
      proxied(1, tcp("192.168.0.1", 56324), tcp("192.168.0.11", 443)),
    ],
    [
      "PROXY TCP4 255.255.255.255 0.0.0.0 65535 0\r\n",
      proxied(1, tcp("255.255.255.255", 65535), tcp("0.0.0.0", 0)),
    ],
    [
      "PROXY TCP6 2001:DB8:0:0:0:0:0:7 2001:db8::1 4242 443\r\n",
      proxied(1, tcp("2001:db8::7", 4242), tcp("2001:db8::1", 443)),
    ],
    ["PROXY TCP6 ::1 :: 1 2\r\n", proxied(1, tcp("::1", 1), tcp("::", 2))],
    [
      "PROXY TCP6 ::ffff:10.0.0.1 fe80::1:2 80 8080\r\n",
      proxied(1, tcp("::ffff:10.0.0.1", 80), tcp("fe80::1:2", 8080)),
    ],
    [
      // The spec's own longest TCP6 line: 104 bytes.
      `PROXY TCP6 ${"ffff:".repeat(7)}ffff ${"ffff:".repeat(7)}ffff 65535 65535\r\n`,
      proxied(
        1,
        tcp(`${"ffff:".repeat(7)}ffff`, 65535),
        tcp(`${"ffff:".repeat(7)}ffff`, 65535),
      ),
    ],
    ["PROXY UNKNOWN\r\n", { version: 1, command: "local" }],
    [
      // The spec's worst case, 107 bytes: UNKNOWN ignores the rest of its line.
      `PROXY UNKNOWN ${"ffff:".repeat(7)}ffff ${"ffff:".repeat(7)}ffff 65535 65535\r\n`,
      { version: 1, command: "local" },
    ],
  ];
  for (const [line, expect] of cases) feedEveryWay(enc.encode(line), expect);
  assert.equal(enc.encode(cases[5]![0]).length, 104);
  assert.equal(enc.encode(cases[7]![0]).length, PROXY_V1_MAX_BYTES);
});

Deno.test("proxy protocol: v2 IPv4, IPv6, LOCAL, UNSPEC, UNIX, UDP, TLVs, CRC32C, every split", () => {
  const v4 = proxied(2, tcp("203.0.113.7", 4242), tcp("198.51.100.1", 443));
  const v6 = proxied(2, tcp("2001:db8::7", 4242), tcp("2001:db8::1", 443));
  const local: ProxyHeader = { version: 2, command: "local" };
  const cases: [string, Uint8Array, ProxyHeader][] = [
    ["TCP over IPv4", v2({ addr: inet() }), v4],
    ["TCP over IPv6", v2({ fam: 0x21, addr: inet6() }), v6],
    [
      "IPv4 with TLVs (ALPN, AUTHORITY, NOOP, UNIQUE_ID, SSL with sub-TLVs, custom)",
      v2({
        addr: inet(),
        tlvs: [
          [0x01, [...enc.encode("http/1.1")]],
          [0x02, [...enc.encode("app.example.com")]],
          [0x04, []],
          [0x05, new Array(128).fill(0x61)],
          [0x20, [0x01, 0, 0, 0, 0, 0x21, 0, 7, ...enc.encode("TLSv1.3")]],
          [0xe0, new Array(300).fill(0xff)],
        ],
      }),
      v4,
    ],
    ["IPv6 with a CRC32C TLV", v2({ fam: 0x21, addr: inet6(), crc: true }), v6],
    [
      "IPv4 with a CRC32C TLV among others",
      v2({ addr: inet(), tlvs: [[0x04, [1, 2, 3]]], crc: true }),
      v4,
    ],
    ["LOCAL, no address", v2({ verCmd: 0x20, fam: 0x00 }), local],
    ["LOCAL with an address and TLVs (skipped)", v2({ verCmd: 0x20, addr: inet() }), local],
    ["LOCAL with bytes that are not TLVs (skipped)", v2({ verCmd: 0x20, extra: [1, 2] }), local],
    ["PROXY over AF_UNSPEC", v2({ fam: 0x00 }), local],
    ["PROXY over AF_UNIX stream", v2({ fam: 0x31, addr: new Array(216).fill(0x2f) }), local],
    ["PROXY over UDP/IPv4", v2({ fam: 0x12, addr: inet() }), local],
    ["PROXY over IPv6, transport UNSPEC", v2({ fam: 0x20, addr: inet6() }), local],
    [
      "IPv4-mapped IPv6 source",
      v2({
        fam: 0x21,
        addr: [
          ...[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1],
          ...new Array(16).fill(0),
          0,
          80,
          0,
          81,
        ],
      }),
      proxied(2, tcp("::ffff:10.0.0.1", 80), tcp("::", 81)),
    ],
    [
      "the largest length accepted",
      v2({ addr: inet(), tlvs: [[0x04, new Array(PROXY_V2_MAX_LENGTH - 12 - 3).fill(0)]] }),
      v4,
    ],
  ];
  for (const [name, bytes, expect] of cases) {
    try {
      feedEveryWay(bytes, expect);
    } catch (e) {
      throw new Error(`${name}: ${e instanceof Error ? e.message : e}`);
    }
  }
});

/** The error `bytes` (fed whole, then byte by byte) give, and when byte by byte it came. */
function refusal(bytes: Uint8Array): { message: string; at: number } {
  let message = "";
  try {
    new ProxyHeaderParser().feed(bytes);
    assert.fail(`accepted ${JSON.stringify(dec.decode(bytes))}`);
  } catch (e) {
    assert.ok(e instanceof ProxyHeaderError, String(e));
    message = e.message;
  }
  const p = new ProxyHeaderParser();
  for (let i = 0; i < bytes.length; i++) {
    try {
      assert.equal(p.feed(bytes.subarray(i, i + 1)), undefined);
    } catch (e) {
      assert.ok(e instanceof ProxyHeaderError, String(e));
      assert.equal(e.message, message, "the same refusal byte by byte");
      // Once refused, always refused.
      assert.throws(() => p.feed(enc.encode("\r\n")), ProxyHeaderError);
      return { message, at: i };
    }
  }
  assert.fail("byte by byte: never refused");
}

Deno.test("proxy protocol: v1 refusals", () => {
  const cases: [string, RegExp][] = [
    ["GET / HTTP/1.1\r\n", /not a PROXY protocol header/],
    ["\x16\x03\x01\x02\x00", /not a PROXY protocol header/],
    ["PROXZ TCP4 1.2.3.4 5.6.7.8 1 2\r\n", /start with "PROXY "/],
    ["proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", /not a PROXY/],
    ["PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", /protocol must be/],
    ["PROXY\r\n", /start with "PROXY "/],
    ["PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", /protocol must be/],
    ["PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", /protocol must be/],
    ["PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", /protocol must be/],
    ["PROXY TCP4\r\n", /protocol must be/],
    ["PROXY UNKNOWNX\r\n", /after "UNKNOWN"/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", /LF without CR/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", /CR not followed by LF/],
    ["PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n", /CR not followed by LF/],
    ["PROXY UNKNOWN \n", /LF without CR/],
    ["PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", /one space apart/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", /one space apart/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", /one space apart/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", /one space apart/],
    ["PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", /unexpected byte 0x09/],
    ["PROXY TCP4 1.2.3.x 5.6.7.8 1 2\r\n", /unexpected byte 0x78/],
    ["PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", /bad TCP4 source address/],
    ["PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", /bad TCP4 source address/],
    ["PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", /bad TCP4 source address/],
    ["PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", /bad TCP4 source address/],
    ["PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n", /bad TCP4 source address/],
    ["PROXY TCP4 ::1 5.6.7.8 1 2\r\n", /bad TCP4 source address/],
    ["PROXY TCP4 1.2.3.4 5.6.7.08 1 2\r\n", /bad TCP4 destination address/],
    ["PROXY TCP6 1.2.3.4 ::1 1 2\r\n", /bad TCP6 source address/],
    ["PROXY TCP6 ::1 1::2::3 1 2\r\n", /bad TCP6 destination address/],
    ["PROXY TCP6 :::1 ::1 1 2\r\n", /bad TCP6 source address/],
    ["PROXY TCP6 12345::1 ::1 1 2\r\n", /bad TCP6 source address/],
    ["PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", /bad TCP6 source address/],
    ["PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2\r\n", /bad TCP6 source address/],
    ["PROXY TCP6 1:2:3:4:5:6:7:8:: ::1 1 2\r\n", /bad TCP6 source address/],
    ["PROXY TCP6 :1:2:3:4:5:6:7 ::1 1 2\r\n", /bad TCP6 source address/],
    ["PROXY TCP6 1.2.3.4:: ::1 1 2\r\n", /bad TCP6 source address/],
    ["PROXY TCP6 ::1.2.3.04 ::1 1 2\r\n", /bad TCP6 source address/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", /bad source port/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", /bad source port/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n", /bad destination port/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 1 999999\r\n", /bad destination port/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n", /bad destination port ""/],
  ];
  for (const [line, why] of cases) {
    const { message } = refusal(enc.encode(line));
    assert.match(message, why, JSON.stringify(line));
  }
  // Without a CRLF in the first 107 bytes: refused at the 107th, not later.
  const long = enc.encode(`PROXY UNKNOWN ${"x".repeat(200)}`);
  const r = refusal(long);
  assert.match(r.message, /no CRLF within 107 bytes/);
  assert.equal(r.at, PROXY_V1_MAX_BYTES - 1);
  // A 108-byte line ending in CRLF is one byte too long.
  const line108 = enc.encode(`PROXY UNKNOWN ${"x".repeat(92)}\r\n`);
  assert.equal(line108.length, 108);
  assert.match(refusal(line108).message, /no CRLF within 107 bytes/);
  // Garbage is refused at once, not after 107 bytes.
  assert.equal(refusal(enc.encode("GET / HTTP/1.1\r\n")).at, 0);
  assert.equal(refusal(enc.encode("PROXY TCP5 ")).at, 9);
});

Deno.test("proxy protocol: v2 refusals", () => {
  const good = v2({ addr: inet() });
  const cases: [string, Uint8Array, RegExp][] = [];
  for (let i = 1; i < 12; i++) {
    const b = good.slice();
    b[i] = b[i]! ^ 0x40;
    cases.push([`signature byte ${i}`, b, /bad signature/]);
  }
  cases.push(
    ["version 1", v2({ verCmd: 0x11, addr: inet() }), /version 1, expected 2/],
    ["version 3", v2({ verCmd: 0x31, addr: inet() }), /version 3, expected 2/],
    ["command 2", v2({ verCmd: 0x22, addr: inet() }), /command 2/],
    ["command 15", v2({ verCmd: 0x2f, addr: inet() }), /command 15/],
    ["family 4", v2({ fam: 0x41, addr: inet() }), /address family 4/],
    ["transport 3", v2({ fam: 0x13, addr: inet() }), /transport 3/],
    [
      "length over the bound",
      v2({ addr: inet(), tlvs: [[0x04, new Array(PROXY_V2_MAX_LENGTH - 12 - 2).fill(0)]] }),
      /length 4097 is over/,
    ],
    ["length 65535", v2({ len: 0xffff }), /length 65535 is over/],
    ["IPv4 block too short", v2({ addr: inet().slice(0, 11) }), /shorter than the 12 address/],
    ["IPv6 block too short", v2({ fam: 0x21, addr: inet() }), /shorter than the 36 address/],
    ["a TLV past the end", v2({ addr: inet(), extra: [0x04, 0, 5, 1, 2] }), /overruns/],
    ["stray bytes after the addresses", v2({ addr: inet(), extra: [0x04, 0] }), /2 stray bytes/],
    ["a CRC32C that does not match", v2({ addr: inet(), crc: 0x12345678 }), /CRC32C mismatch/],
    ["a CRC32C of 3 bytes", v2({ addr: inet(), tlvs: [[0x03, [1, 2, 3]]] }), /CRC32C TLV of 3/],
    [
      "two CRC32C TLVs",
      v2({ addr: inet(), tlvs: [[0x03, [0, 0, 0, 0]]], crc: true }),
      /more than one CRC32C/,
    ],
  );
  for (const [name, bytes, why] of cases) {
    const { message } = refusal(bytes);
    assert.match(message, why, name);
  }
  // Header fields are refused as soon as they are seen, not once the block is in.
  assert.equal(refusal(v2({ verCmd: 0x11, addr: inet() })).at, 12);
  assert.equal(refusal(v2({ fam: 0x41, addr: inet() })).at, 13);
  assert.equal(refusal(v2({ len: 0xffff })).at, 15);
  // A tampered address under a CRC32C is caught.
  const signed = v2({ addr: inet(), crc: true });
  signed[16] = signed[16]! ^ 1;
  assert.match(refusal(signed).message, /CRC32C mismatch/);
});

Deno.test("proxy protocol: a truncated header never completes; a parser reads one header", () => {
  for (
    const h of [
      v2({ addr: inet(), crc: true }),
      v2({ fam: 0x21, addr: inet6() }),
      enc.encode("PROXY TCP6 2001:db8::7 2001:db8::1 4242 443\r\n"),
    ]
  ) {
    for (let n = 0; n < h.length; n++) {
      const p = new ProxyHeaderParser();
      assert.equal(p.feed(h.subarray(0, n)), undefined, `${n} of ${h.length} bytes`);
      assert.equal(p.received, n);
    }
  }
  const p = new ProxyHeaderParser();
  assert.ok(p.feed(enc.encode("PROXY UNKNOWN\r\n")));
  assert.throws(() => p.feed(enc.encode("PROXY UNKNOWN\r\n")), /already read/);
});

Deno.test("proxy protocol: random mutations are read or refused, never more than the bound", () => {
  let seed = 0x2545f491;
  const rand = (n: number) => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  const seeds = [
    enc.encode("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"),
    enc.encode("PROXY TCP6 2001:db8::7 ::ffff:1.2.3.4 4242 443\r\n"),
    v2({ addr: inet(), tlvs: [[0x01, [0x68, 0x32]]], crc: true }),
    v2({ fam: 0x21, addr: inet6() }),
  ];
  let read = 0;
  for (let i = 0; i < 5000; i++) {
    const b = seeds[rand(seeds.length)]!.slice();
    for (let k = 1 + rand(3); k > 0; k--) b[rand(b.length)] = rand(256);
    const wire = concat(b, AFTER);
    try {
      const r = new ProxyHeaderParser().feed(wire);
      if (r) {
        read++;
        assert.ok(r.length <= 16 + PROXY_V2_MAX_LENGTH);
        assert.equal(r.consumed, r.length);
      }
    } catch (e) {
      assert.ok(e instanceof ProxyHeaderError, String(e));
    }
  }
  assert.ok(read > 0);
});

Deno.test("proxy protocol: CRC32c and address text", () => {
  assert.equal(crc32c(enc.encode("123456789")), 0xe3069283); // RFC 3720 check value
  assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa); // RFC 3720 B.4: 32 bytes of zeros
  const v6 = (...w: number[]) => new Uint8Array(w.flatMap((x) => [x >> 8, x & 0xff]));
  assert.equal(formatIp(new Uint8Array([10, 0, 0, 1])), "10.0.0.1");
  assert.equal(formatIp(v6(0x2001, 0xdb8, 0, 0, 1, 0, 0, 1)), "2001:db8::1:0:0:1");
  assert.equal(formatIp(v6(0x2001, 0xdb8, 0, 1, 1, 1, 1, 1)), "2001:db8:0:1:1:1:1:1");
  assert.equal(formatIp(v6(0, 0, 0, 0, 0, 0, 0, 1)), "::1");
  assert.equal(formatIp(v6(1, 0, 0, 0, 0, 0, 0, 0)), "1::");
  assert.equal(formatIp(v6(0, 0, 0, 0, 0, 0xffff, 0x0a00, 0x0001)), "::ffff:10.0.0.1");
  assert.equal(formatIp(v6(0xfe80, 0, 0, 0xab, 0, 0, 0, 0)), "fe80:0:0:ab::");
});

// ---------------------------------------------------------------------------
// The HTTP/1.1 front

/** Answers "<peer address> <peer port>", closing the connection. */
const whoAmI: FrontHandler = async (req, res) => {
  res.head(200, [["content-type", "text/plain"]], -1);
  await res.end(enc.encode(`${req.peer.hostname} ${req.peer.port}`));
};

interface Front {
  port: number;
  cuts: CutReason[];
  server: FrontServer;
  close(): Promise<void>;
}

function startFront(
  trusted: (ip: string) => boolean,
  limits: Partial<FrontLimits> = {},
  handler = whoAmI,
): Front {
  const cuts: CutReason[] = [];
  const server = new FrontServer({
    scheme: "http",
    handler,
    limits,
    events: { cut: (r) => cuts.push(r) },
    proxyProtocol: trusted,
  });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = server.serve(listener);
  return {
    port: (listener.addr as Deno.NetAddr).port,
    cuts,
    server,
    async close() {
      server.abortAll();
      await server.shutdown();
      await serving;
    },
  };
}

const GET = "GET / HTTP/1.1\r\nHost: app.test\r\n\r\n";
const GET_CLOSE = "GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";

/** Writes the pieces (`gapMs` apart), reads until EOF (or `ms`): the text. */
async function exchange(
  port: number,
  pieces: (string | Uint8Array)[],
  o: { gapMs?: number; ms?: number } = {},
): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const timer = setTimeout(() => conn.close(), o.ms ?? 3000);
  const parts: Uint8Array[] = [];
  try {
    for (const [i, p] of pieces.entries()) {
      if (i > 0 && o.gapMs) await sleep(o.gapMs);
      await writeAll(conn, typeof p === "string" ? enc.encode(p) : p);
    }
    const buf = new Uint8Array(16384);
    for (;;) {
      const n = await conn.read(buf).catch(() => null);
      if (n === null) break;
      parts.push(buf.slice(0, n));
    }
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed by the timer */ }
  }
  return dec.decode(concat(...parts));
}

async function writeAll(c: Deno.Conn, p: Uint8Array): Promise<void> {
  for (let off = 0; off < p.length;) off += await c.write(p.subarray(off));
}

/** The bodies of the responses in `text`. */
function bodies(text: string): string[] {
  return [...text.matchAll(/HTTP\/1\.1 200 OK\r\n[\s\S]*?\r\n\r\n([^H]*)/g)].map((m) => m[1]!);
}

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  for (const end = Date.now() + ms; !cond() && Date.now() < end;) await sleep(10);
}

Deno.test("front: a trusted peer's PROXY header (v1, v2, IPv6, LOCAL) is the peer", async () => {
  const f = startFront((ip) => ip === "127.0.0.1");
  try {
    // v1 and the request in one write, two requests kept alive.
    const text = await exchange(f.port, [
      `PROXY TCP4 203.0.113.7 198.51.100.1 4242 80\r\n${GET}${GET_CLOSE}`,
    ]);
    assert.deepEqual(bodies(text), ["203.0.113.7 4242", "203.0.113.7 4242"]);
    // v2 in pieces 30 ms apart, then the request.
    const h = v2({ addr: inet([192, 0, 2, 9], 5555) });
    assert.deepEqual(
      bodies(
        await exchange(f.port, [h.subarray(0, 5), h.subarray(5, 17), h.subarray(17), GET_CLOSE], {
          gapMs: 30,
        }),
      ),
      ["192.0.2.9 5555"],
    );
    // v2 with the request in the same write, TLVs and a CRC32C.
    const h6 = v2({
      fam: 0x21,
      addr: inet6(),
      tlvs: [[0x02, [...enc.encode("app.test")]]],
      crc: true,
    });
    assert.deepEqual(bodies(await exchange(f.port, [concat(h6, enc.encode(GET_CLOSE))])), [
      "2001:db8::7 4242",
    ]);
    // v1 TCP6.
    assert.deepEqual(
      bodies(await exchange(f.port, [`PROXY TCP6 2001:db8::9 ::1 1 2\r\n`, GET_CLOSE])),
      ["2001:db8::9 1"],
    );
    // LOCAL (a health check) and UNKNOWN keep the TCP peer.
    for (const header of [v2({ verCmd: 0x20, fam: 0 }), enc.encode("PROXY UNKNOWN\r\n")]) {
      const [body] = bodies(await exchange(f.port, [header, GET_CLOSE]));
      assert.match(body ?? "", /^127\.0\.0\.1 \d+$/);
    }
    assert.deepEqual(f.cuts, []);
  } finally {
    await f.close();
  }
});

Deno.test("front: a trusted peer without a valid header is closed and counted", async () => {
  const f = startFront((ip) => ip === "127.0.0.1", { headerTimeoutMs: 300 });
  try {
    const cases: [string, (string | Uint8Array)[], CutReason | undefined][] = [
      ["no header", [GET], "bad_request"],
      ["a malformed v1 header", ["PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", GET], "bad_request"],
      ["a bad v2 version", [v2({ verCmd: 0x11, addr: inet() }), GET], "bad_request"],
      ["a v2 length over the bound", [v2({ len: 5000 })], "bad_request"],
      ["a v2 header with a bad CRC32C", [v2({ addr: inet(), crc: 1 }), GET], "bad_request"],
      ["a header cut short (then EOF)", ["PROXY TCP4 1.2.3.4 "], "bad_request"],
      ["a header that stalls", ["PROXY TCP4 1.2.3.4 "], "header_timeout"],
      ["nothing at all (a TCP health check)", [], undefined],
    ];
    for (const [name, pieces, reason] of cases) {
      const before = f.cuts.length;
      let text: string;
      if (name.includes("then EOF") || pieces.length === 0) {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: f.port });
        for (const p of pieces) await writeAll(conn, enc.encode(p as string));
        await conn.closeWrite();
        const buf = new Uint8Array(1024);
        text = (await conn.read(buf)) === null ? "" : "data";
        conn.close();
      } else {
        text = await exchange(f.port, pieces, { ms: 2000 });
      }
      assert.equal(text, "", `${name}: closed without an answer`);
      if (reason) {
        await until(() => f.cuts.length > before);
        assert.deepEqual(f.cuts.slice(before), [reason], name);
      } else {
        await sleep(100);
        assert.deepEqual(f.cuts.slice(before), [], name);
      }
    }
    assert.equal(f.server.size, 0);
  } finally {
    await f.close();
  }
});

Deno.test("front: an untrusted peer is never read for a PROXY header (400)", async () => {
  const f = startFront((ip) => ip === "127.0.0.3"); // 127.0.0.1 is not trusted
  try {
    const text = await exchange(f.port, [`PROXY TCP4 203.0.113.7 198.51.100.1 4242 80\r\n${GET}`]);
    assert.match(text, /^HTTP\/1\.1 400 /);
    await until(() => f.cuts.length > 0);
    assert.deepEqual(f.cuts, ["bad_request"]);
    // And its plain requests are its own.
    const [body] = bodies(await exchange(f.port, [GET_CLOSE]));
    assert.match(body ?? "", /^127\.0\.0\.1 \d+$/);
  } finally {
    await f.close();
  }
});

Deno.test("front: the per-address cap counts the proxied address, not the balancer", async () => {
  const f = startFront((ip) => ip === "127.0.0.1", { maxConnectionsPerAddress: 2 });
  const open: Deno.TcpConn[] = [];
  try {
    /** A kept-alive connection through the "balancer" for `ip`: its first answer, or "". */
    const keep = async (ip: string) => {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: f.port });
      open.push(c);
      await writeAll(c, enc.encode(`PROXY TCP4 ${ip} 198.51.100.1 1000 80\r\n${GET}`));
      const buf = new Uint8Array(4096);
      const n = await c.read(buf);
      return n === null ? "" : dec.decode(buf.subarray(0, n));
    };
    assert.match(await keep("203.0.113.1"), /\r\n\r\n203\.0\.113\.1 1000$/);
    assert.match(await keep("203.0.113.1"), /\r\n\r\n203\.0\.113\.1 1000$/);
    assert.equal(await keep("203.0.113.1"), "", "a third from the same caller is refused");
    await until(() => f.cuts.length > 0);
    assert.deepEqual(f.cuts, ["max_connections_per_address"]);
    // The balancer itself holds more than 2 connections: others' still pass.
    assert.match(await keep("203.0.113.2"), /203\.0\.113\.2 1000$/);
    assert.match(await keep("203.0.113.3"), /203\.0\.113\.3 1000$/);
    assert.equal(f.server.size, 4);
    // Closing frees the proxied address's slot.
    open[0]!.close();
    await until(() => f.server.size === 3);
    assert.match(await keep("203.0.113.1"), /203\.0\.113\.1 1000$/);
  } finally {
    for (const c of open) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    await f.close();
  }
});

// ---------------------------------------------------------------------------
// The TLS acceptor

const certs = new Map([["a.test", await createSelfSignedCertificate(["a.test"])]]);
const lookup = (name: string) => Promise.resolve(certs.get(name));

interface Tls {
  acceptor: TlsAcceptor;
  port: number;
  conns: TlsByteConn[];
  failures: TlsFailureReason[];
  close(): Promise<void>;
}

/** A TLS acceptor whose connections echo. */
function startTls(trusted: (ip: string) => boolean, handshakeTimeoutMs = 5000): Tls {
  const failures: TlsFailureReason[] = [];
  const acceptor = new TlsAcceptor({
    hostname: "127.0.0.1",
    port: 0,
    lookup,
    handshakeTimeoutMs,
    onFailure: (reason) => failures.push(reason),
    proxyProtocol: trusted,
  });
  const conns: TlsByteConn[] = [];
  const echoes: Promise<void>[] = [];
  const loop = (async () => {
    for (;;) {
      let c: TlsByteConn;
      try {
        c = await acceptor.accept();
      } catch {
        return;
      }
      conns.push(c);
      echoes.push((async () => {
        const buf = new Uint8Array(16384);
        try {
          for (;;) {
            const n = await c.read(buf);
            if (n === null) break;
            await c.write(buf.slice(0, n));
          }
        } catch { /* gone */ }
        c.close();
      })());
    }
  })();
  return {
    acceptor,
    port: acceptor.addr.port,
    conns,
    failures,
    async close() {
      acceptor.close();
      await loop;
      for (const c of conns) c.close();
      await Promise.all(echoes);
      await acceptor.finished;
    },
  };
}

/**
 * A relay to `target` that sends `header` first: in the same write as the
 * client's whole first TLS record, or in `pieces` writes 20 ms apart before it.
 */
function headerRelay(target: number, header: Uint8Array, pieces = 1) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const tasks: Promise<void>[] = [];
  const pump = async (from: Deno.Conn, to: Deno.Conn) => {
    const buf = new Uint8Array(16384);
    try {
      for (;;) {
        const n = await from.read(buf);
        if (n === null) break;
        await writeAll(to, buf.subarray(0, n));
      }
      await to.closeWrite();
    } catch { /* gone */ }
  };
  const run = async (c: Deno.Conn) => {
    const s = await Deno.connect({ hostname: "127.0.0.1", port: target });
    try {
      const head = await readExactly(c, 5);
      const body = head && await readExactly(c, (head[3]! << 8) | head[4]!);
      if (!head || !body) return;
      if (pieces <= 1) await writeAll(s, concat(header, head, body));
      else {
        const step = Math.ceil(header.length / pieces);
        for (let off = 0; off < header.length; off += step) {
          await writeAll(s, header.subarray(off, off + step));
          await sleep(20);
        }
        await writeAll(s, concat(head, body));
      }
      await Promise.all([pump(c, s), pump(s, c)]);
    } catch {
      /* gone */
    } finally {
      for (const x of [c, s]) {
        try {
          x.close();
        } catch { /* closed */ }
      }
    }
  };
  const accepting = (async () => {
    for await (const c of listener) tasks.push(run(c));
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async close() {
      listener.close();
      await accepting;
      await Promise.all(tasks);
    },
  };
}

async function readExactly(c: Deno.Conn, n: number): Promise<Uint8Array | null> {
  const out = new Uint8Array(n);
  for (let off = 0; off < n;) {
    const k = await c.read(out.subarray(off));
    if (k === null) return null;
    off += k;
  }
  return out;
}

/** A node:tls handshake with a.test on `port`, one echoed message, closed. */
function tlsEcho(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket: TLSSocket = tlsConnect({
      host: "127.0.0.1",
      port,
      servername: "a.test",
      ca: certs.get("a.test")!.cert,
      ALPNProtocols: ["http/1.1"],
    });
    socket.setTimeout(5000, () => socket.destroy(new Error("client timeout")));
    socket.once("error", reject);
    socket.once("close", () => reject(new Error("closed")));
    socket.once("secureConnect", () => {
      socket.once("data", (b: Uint8Array) => {
        resolve(dec.decode(b));
        socket.destroy();
      });
      socket.write("ping");
    });
  });
}

Deno.test("tls: a trusted peer's PROXY header names remoteAddr; the handshake goes on", async () => {
  const t = startTls((ip) => ip === "127.0.0.1");
  const relays = [
    headerRelay(t.port, enc.encode("PROXY TCP4 203.0.113.7 198.51.100.1 4242 443\r\n")),
    headerRelay(t.port, v2({ fam: 0x21, addr: inet6(), crc: true }), 3),
    headerRelay(t.port, v2({ verCmd: 0x20, fam: 0 })),
  ];
  try {
    for (const r of relays) assert.equal(await tlsEcho(r.port), "ping");
    await until(() => t.conns.length === 3);
    assert.deepEqual(t.conns.map((c) => `${c.remoteAddr.hostname} ${c.remoteAddr.port}`), [
      "203.0.113.7 4242",
      "2001:db8::7 4242",
      `127.0.0.1 ${t.conns[2]!.remoteAddr.port}`, // LOCAL: the relay's own address
    ]);
    assert.deepEqual(t.conns.map((c) => c.serverName), ["a.test", "a.test", "a.test"]);
    assert.deepEqual(t.failures, []);
  } finally {
    for (const r of relays) await r.close();
    await t.close();
  }
});

Deno.test("tls: a trusted peer without a valid header fails bad_proxy_header; others as before", async () => {
  const t = startTls((ip) => ip === "127.0.0.1", 400);
  const bad = headerRelay(t.port, enc.encode("PROXY TCP4 203.0.113.7 198.51.100.1 4242\r\n"));
  try {
    // A ClientHello where the header should be, then a malformed header.
    await assert.rejects(tlsEcho(t.port));
    await assert.rejects(tlsEcho(bad.port));
    await until(() => t.failures.length === 2);
    assert.deepEqual(t.failures, ["bad_proxy_header", "bad_proxy_header"]);
    // A header that stalls: the handshake deadline.
    const c = await Deno.connect({ hostname: "127.0.0.1", port: t.port });
    await writeAll(c, v2({ addr: inet() }).subarray(0, 20));
    assert.equal(await c.read(new Uint8Array(16)), null);
    c.close();
    await until(() => t.failures.length === 3);
    assert.equal(t.failures[2], "timeout");
    assert.equal(t.acceptor.failures.bad_proxy_header, 2);
  } finally {
    await bad.close();
    await t.close();
  }
  // Not trusted: a plain handshake, the TCP peer as remoteAddr.
  const u = startTls((ip) => ip === "127.0.0.3");
  try {
    assert.equal(await tlsEcho(u.port), "ping");
    await until(() => u.conns.length === 1);
    assert.equal(u.conns[0]!.remoteAddr.hostname, "127.0.0.1");
  } finally {
    await u.close();
  }
});

// ---------------------------------------------------------------------------
// HAProxy in front

/** The haproxy binary (in /usr/sbin, which a non-root PATH may lack), or "" when absent. */
const haproxy = await (async () => {
  for (const bin of ["haproxy", "/usr/sbin/haproxy"]) {
    const ok = await new Deno.Command(bin, { args: ["-v"], stdout: "null", stderr: "null" })
      .output().then((o) => o.success, () => false);
    if (ok) return bin;
  }
  return "";
})();
if (!haproxy) {
  console.warn(
    "proxy_protocol_test: haproxy is not installed (apt-get install haproxy): " +
      "the HAProxy test is skipped",
  );
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function curl(args: string[]): Promise<string> {
  const out = await new Deno.Command("curl", {
    args: ["-sS", "--noproxy", "*", "--max-time", "10", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`curl ${args.join(" ")}: ${dec.decode(out.stderr)}`);
  return dec.decode(out.stdout);
}

Deno.test({
  name: "haproxy: send-proxy and send-proxy-v2 in front of HTTP and TLS passthrough name 127.0.0.2",
  ignore: !haproxy,
  async fn(t) {
    // Every request the HTTP front answers: "<path> <peer address>".
    const requests: string[] = [];
    const http = startFront((ip) => ip === "127.0.0.1", {}, (req, res) => {
      requests.push(`${req.path} ${req.peer.hostname}`);
      return whoAmI(req, res);
    });
    const tlsFailures: string[] = [];
    const acceptor = new TlsAcceptor({
      hostname: "127.0.0.1",
      port: 0,
      lookup,
      onFailure: (reason, detail) => tlsFailures.push(`${reason}: ${detail}`),
      proxyProtocol: (ip) => ip === "127.0.0.1",
    });
    const https = new FrontServer({
      scheme: "https",
      handler: whoAmI,
      events: { cut: (r) => http.cuts.push(r) },
    });
    const httpsServing = https.serve(acceptor);
    const dir = await Deno.makeTempDir({ prefix: "hop-haproxy-" });
    const ports = {
      v1: freePort(),
      v2: freePort(),
      crc: freePort(),
      tls: freePort(),
      l4: freePort(),
    };
    await Deno.writeTextFile(`${dir}/a.pem`, certs.get("a.test")!.cert);
    await Deno.writeTextFile(
      `${dir}/haproxy.cfg`,
      `global
  maxconn 200
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  timeout check 2s
listen v1
  bind 127.0.0.1:${ports.v1}
  option httpchk
  http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host app.test
  server s1 127.0.0.1:${http.port} send-proxy check inter 200
listen v2
  bind 127.0.0.1:${ports.v2}
  option httpchk
  http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host app.test
  server s1 127.0.0.1:${http.port} send-proxy-v2 check inter 200
listen l4check
  bind 127.0.0.1:${ports.l4}
  server s1 127.0.0.1:${http.port} send-proxy-v2 check inter 100
listen v2crc
  bind 127.0.0.1:${ports.crc}
  server s1 127.0.0.1:${http.port} send-proxy-v2 proxy-v2-options crc32c
listen tls
  bind 127.0.0.1:${ports.tls}
  server s1 127.0.0.1:${acceptor.addr.port} send-proxy-v2
`,
    );
    const child = new Deno.Command(haproxy, {
      args: ["-db", "-f", `${dir}/haproxy.cfg`],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const errors = new Response(child.stderr).text();
    try {
      // Up once it accepts.
      for (let i = 0;; i++) {
        try {
          (await Deno.connect({ hostname: "127.0.0.1", port: ports.v1 })).close();
          break;
        } catch (e) {
          if (i > 100) throw new Error(`haproxy did not start: ${e}`);
          await sleep(50);
        }
      }
      const local = "\n%{local_ip} %{local_port}";
      for (const [name, port] of [["v1", ports.v1], ["v2", ports.v2], ["v2 crc32c", ports.crc]]) {
        await t.step(`HTTP through send-proxy ${name}`, async () => {
          const out = await curl([
            "--interface",
            "127.0.0.2",
            "-H",
            "Host: app.test",
            "-w",
            local,
            `http://127.0.0.1:${port}/`,
          ]);
          const [seen, caller] = out.split("\n");
          assert.match(seen!, /^127\.0\.0\.2 \d+$/);
          assert.equal(seen, caller, "the header names curl's own address and port");
        });
      }
      await t.step("TLS passthrough, send-proxy-v2", async () => {
        const out = await curl([
          "--interface",
          "127.0.0.2",
          "--cacert",
          `${dir}/a.pem`,
          "--resolve",
          `a.test:${ports.tls}:127.0.0.1`,
          "-w",
          local,
          `https://a.test:${ports.tls}/`,
        ]);
        const [seen, caller] = out.split("\n");
        assert.match(seen!, /^127\.0\.0\.2 \d+$/);
        assert.equal(seen, caller);
        assert.equal(acceptor.handshakes, 1);
        assert.deepEqual(tlsFailures, []);
      });
      await t.step(
        "health checks: v2 LOCAL and v1 headers, answered; L4 checks' resets",
        async () => {
          // HTTP checks come with the balancer's own address (v2: LOCAL; v1: its
          // socket's). Plain L4 checks connect and reset before we accept: they must
          // neither stall accepting nor count as anything.
          await until(() => requests.filter((r) => r === "/healthz 127.0.0.1").length >= 4);
          assert.ok(requests.filter((r) => r === "/healthz 127.0.0.1").length >= 4, `${requests}`);
          assert.ok(
            requests.every((r) => r.startsWith("/healthz 127.0.0.1") || r === "/ 127.0.0.2"),
          );
          const t0 = Date.now();
          assert.match(
            await curl([`http://127.0.0.1:${ports.v2}/`, "-H", "Host: app.test"]),
            /^127/,
          );
          assert.ok(Date.now() - t0 < 1000, `answered in ${Date.now() - t0} ms`);
          assert.deepEqual(http.cuts, []);
        },
      );
    } finally {
      child.kill("SIGTERM");
      const status = await child.status;
      const log = await errors;
      await Deno.remove(dir, { recursive: true });
      https.abortAll();
      await https.shutdown();
      acceptor.close();
      await httpsServing;
      await acceptor.finished;
      await http.close();
      if (!status.success && status.signal !== "SIGTERM" && status.code !== 0) {
        console.error(`haproxy: ${log}`);
      }
    }
  },
});

Deno.test("front and tls: callers that reset before accept neither stall accepting nor count", async () => {
  // HAProxy's L4 health check connects and resets at once; so can anyone. Deno's
  // accept then fails (NotConnected): that must not be taken for EMFILE (100 ms pause).
  const acceptErrors: unknown[] = [];
  const cuts: CutReason[] = [];
  const front = new FrontServer({
    scheme: "http",
    handler: whoAmI,
    events: { acceptError: (e) => acceptErrors.push(e), cut: (r) => cuts.push(r) },
  });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const serving = front.serve(listener);
  const tls = startTls(() => false);
  try {
    const resets = 40;
    const out = await new Deno.Command("python3", {
      args: [
        "-c",
        `import socket, struct, sys
for port in sys.argv[1:]:
    for i in range(${resets}):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        s.connect(('127.0.0.1', int(port)))
        s.close()`,
        String(port),
        String(tls.port),
      ],
      stderr: "piped",
    }).output();
    assert.ok(out.success, dec.decode(out.stderr));
    const t0 = Date.now();
    assert.deepEqual(bodies(await exchange(port, [GET_CLOSE])).length, 1);
    assert.equal(await tlsEcho(tls.port), "ping");
    const ms = Date.now() - t0;
    assert.ok(ms < 1000, `answered after ${ms} ms`);
    assert.deepEqual(acceptErrors, []);
    assert.equal(tls.acceptor.acceptErrors, 0);
  } finally {
    front.abortAll();
    await front.shutdown();
    await serving;
    await tls.close();
  }
});
