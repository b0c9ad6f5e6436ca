import assert from "node:assert/strict";
import {
  type ClientHelloResult,
  MAX_CLIENT_HELLO_BYTES,
  MAX_CLIENT_HELLO_READ,
  parseClientHello,
} from "./tls_client_hello.ts";

const enc = new TextEncoder();

function u16(n: number): number[] {
  return [n >> 8, n & 0xff];
}

function ext(type: number, data: number[]): number[] {
  return [...u16(type), ...u16(data.length), ...data];
}

function sniExt(...names: (string | Uint8Array)[]): number[] {
  const list = names.flatMap((n) => {
    const b = typeof n === "string" ? [...enc.encode(n)] : [...n];
    return [0, ...u16(b.length), ...b];
  });
  return ext(0, [...u16(list.length), ...list]);
}

function alpnExt(...protos: string[]): number[] {
  const list = protos.flatMap((p) => [p.length, ...enc.encode(p)]);
  return ext(16, [...u16(list.length), ...list]);
}

/** A ClientHello handshake message (header + body) with these extensions. */
function helloMessage(exts: number[] | null, o: { sessionId?: number } = {}): number[] {
  const sid = o.sessionId ?? 32;
  const body = [
    3,
    3,
    ...new Array(32).fill(7), // random
    sid,
    ...new Array(sid).fill(1),
    ...u16(4),
    0x13,
    0x01,
    0x13,
    0x02, // two cipher suites
    1,
    0, // null compression
    ...(exts === null ? [] : [...u16(exts.length), ...exts]),
  ];
  return [1, 0, body.length >> 8, body.length & 0xff, ...body];
}

/** The message in records of at most `max` payload bytes. */
function records(msg: number[], max = 16384): Uint8Array {
  const out: number[] = [];
  for (let off = 0; off < msg.length; off += max) {
    const part = msg.slice(off, off + max);
    out.push(0x16, 3, 1, ...u16(part.length), ...part);
  }
  return new Uint8Array(out);
}

function done(r: ClientHelloResult) {
  assert.equal(r.kind, "done", JSON.stringify(r));
  return (r as Extract<ClientHelloResult, { kind: "done" }>).hello;
}

function whyBad(r: ClientHelloResult): string {
  assert.equal(r.kind, "bad", JSON.stringify(r));
  return (r as Extract<ClientHelloResult, { kind: "bad" }>).why;
}

const TYPICAL = records(helloMessage([
  ...ext(10, [0, 4, 0, 29, 0, 23]), // supported_groups
  ...sniExt("App.Example.COM."),
  ...alpnExt("h2", "http/1.1"),
]));

Deno.test("parseClientHello: SNI (normalized), ALPN and the bytes it took", () => {
  const h = done(parseClientHello(TYPICAL));
  assert.equal(h.serverName, "app.example.com");
  assert.deepEqual(h.alpn, ["h2", "http/1.1"]);
  assert.equal(h.consumed, TYPICAL.length);
  // Bytes after the ClientHello's records (the next record) are left alone.
  const more = new Uint8Array([...TYPICAL, 0x14, 3, 3, 0, 1, 1]);
  assert.equal(done(parseClientHello(more)).consumed, TYPICAL.length);
});

Deno.test("parseClientHello: every prefix asks for more, with a need past what it has", () => {
  for (let n = 0; n < TYPICAL.length; n++) {
    const r = parseClientHello(TYPICAL.subarray(0, n));
    assert.equal(r.kind, "more", `prefix ${n}`);
    assert.ok((r as { need: number }).need > n);
    assert.ok((r as { need: number }).need <= TYPICAL.length);
  }
});

Deno.test("parseClientHello: a ClientHello over several records, and its prefixes", () => {
  const msg = helloMessage([...sniExt("a.test"), ...alpnExt("http/1.1")]);
  for (const size of [1, 3, 4, 50, 100]) {
    const wire = records(msg, size);
    if (Math.ceil(msg.length / size) > 64) {
      assert.equal(whyBad(parseClientHello(wire)), "too many records");
      continue;
    }
    const h = done(parseClientHello(wire));
    assert.equal(h.serverName, "a.test");
    assert.equal(h.consumed, wire.length);
    for (let n = 0; n < wire.length; n++) {
      assert.equal(parseClientHello(wire.subarray(0, n)).kind, "more");
    }
  }
});

Deno.test("parseClientHello: no SNI, no extensions, an IP literal: no name", () => {
  assert.equal(done(parseClientHello(records(helloMessage([])))).serverName, "");
  assert.equal(done(parseClientHello(records(helloMessage(null)))).serverName, "");
  assert.equal(
    done(parseClientHello(records(helloMessage(sniExt("192.168.0.1"))))).serverName,
    "",
  );
  assert.equal(
    done(parseClientHello(records(helloMessage([...alpnExt("h2")])))).serverName,
    "",
  );
});

Deno.test("parseClientHello: refuses what is not a ClientHello", () => {
  const bad = (bytes: number[] | Uint8Array) => whyBad(parseClientHello(new Uint8Array(bytes)));
  assert.equal(bad([...enc.encode("GET / HTTP/1.1\r\n")]), "not a TLS handshake record");
  assert.equal(bad([0x16, 2, 0, 0, 5]), "record version");
  assert.equal(bad([0x16, 3, 1, 0, 0]), "record length");
  assert.equal(bad([0x16, 3, 1, ...u16(16385)]), "record length");
  assert.equal(bad([0x16, 3, 1, 0, 4, 2, 0, 0, 0]), "not a ClientHello");
  assert.equal(bad([0x16, 3, 1, 0, 4, 1, 0, 0x40, 0x01]), "ClientHello too large");
  assert.equal(bad([0x16, 3, 1, 0, 4, 1, 0, 0, 10]), "ClientHello too short");
  // The record holds more than the message.
  const m = helloMessage(sniExt("a.test"));
  assert.equal(bad(records([...m, 0])), "data after ClientHello in its record");
  // A second record of another type before the message is whole.
  const split = records(m, 20);
  const wrong = split.slice();
  wrong[25] = 0x17;
  assert.equal(bad(wrong), "record type");
});

Deno.test("parseClientHello: refuses bad inner lengths and extensions", () => {
  const bad = (msg: number[]) => whyBad(parseClientHello(records(msg)));
  assert.equal(bad(helloMessage([], { sessionId: 33 })), "session id length");
  assert.equal(
    bad(helloMessage([...sniExt("a.test"), ...sniExt("b.test")])),
    "duplicate extension",
  );
  assert.equal(bad(helloMessage(sniExt("a.test", "b.test"))), "server_name extension");
  assert.equal(bad(helloMessage(sniExt("a..test"))), "server_name extension");
  assert.equal(bad(helloMessage(sniExt("a test"))), "server_name extension");
  assert.equal(bad(helloMessage(sniExt(new Uint8Array([0x61, 0, 0x62])))), "server_name extension");
  assert.equal(bad(helloMessage(sniExt("x".repeat(64) + ".test"))), "server_name extension");
  assert.equal(bad(helloMessage(ext(16, [0, 1, 0]))), "ALPN extension");
  // An extension whose length runs past the extensions block.
  const m = helloMessage(sniExt("a.test"));
  m[m.length - 12] = 0xff;
  assert.match(bad(m), /length|server_name/);
  // The extensions block shorter than what follows it.
  const t = helloMessage(sniExt("a.test"));
  const extLenAt = 4 + 2 + 32 + 1 + 32 + 2 + 4 + 2;
  t[extLenAt + 1]! -= 1;
  assert.match(bad(t), /after extensions|length|server_name/);
});

Deno.test("parseClientHello: size bounds", () => {
  // The largest message accepted, in two records, and one byte more.
  const padding = (n: number) => ext(21, new Array(n).fill(0));
  const base = helloMessage([...sniExt("a.test"), ...padding(0)]).length;
  const max = helloMessage([...sniExt("a.test"), ...padding(MAX_CLIENT_HELLO_BYTES - base)]);
  assert.equal(max.length, MAX_CLIENT_HELLO_BYTES);
  const wire = records(max, 16000);
  assert.ok(wire.length <= MAX_CLIENT_HELLO_READ);
  assert.equal(done(parseClientHello(wire)).serverName, "a.test");
  const over = helloMessage([...sniExt("a.test"), ...padding(MAX_CLIENT_HELLO_BYTES - base + 1)]);
  assert.equal(whyBad(parseClientHello(records(over, 16000))), "ClientHello too large");
  // Refused from the record header alone, before its payload arrives.
  const big = records(helloMessage([...sniExt("a.test"), ...padding(1000)]), 600);
  const tooMuch = new Uint8Array([...big.subarray(0, 605), 0x16, 3, 1, ...u16(16384)]);
  assert.equal(whyBad(parseClientHello(tooMuch)), "ClientHello too large");
  const pastMessage = new Uint8Array([...big.subarray(0, 605), 0x16, 3, 1, ...u16(1000)]);
  assert.equal(whyBad(parseClientHello(pastMessage)), "data after ClientHello in its record");
});

Deno.test("parseClientHello: random corruption never throws and stays in bounds", () => {
  let seed = 12345;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const inputs = [TYPICAL, records(helloMessage([...sniExt("a.test")]), 30)];
  for (let i = 0; i < 20_000; i++) {
    const src = inputs[i % 2]!;
    const b = src.slice(0, rand(src.length + 1));
    for (let k = 1 + rand(4); k > 0 && b.length > 0; k--) b[rand(b.length)] = rand(256);
    const r = parseClientHello(b);
    if (r.kind === "more") assert.ok(r.need > b.length && r.need <= MAX_CLIENT_HELLO_READ);
    if (r.kind === "done") assert.ok(r.hello.consumed <= b.length);
  }
});
