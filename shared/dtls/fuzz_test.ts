/**
 * Fuzz-style robustness: random and mutated datagrams (mutations of a real
 * handshake's datagrams) go into the decoders and into a live server, both from
 * unknown addresses (the stateless ClientHello path) and from the address of an
 * established session (the record layer). Nothing may throw, every datagram must
 * be counted, and the established session must still work afterwards.
 *
 * FUZZ_ITERATIONS sets the count (default 100 000); `deno task fuzz` runs longer.
 */
import { deepEqual, ok } from "node:assert/strict";
import { derivePsk, dtlsConnect, DtlsServer } from "./mod.ts";
import {
  decodeClientHello,
  decodeClientKeyExchange,
  decodeEcdhePskServerKeyExchange,
  decodeFragments,
  decodeHelloVerifyRequest,
  decodeServerHello,
} from "./messages.ts";
import { MemoryNet, prng } from "./testing/memory_net.ts";

const ITERATIONS = Number(Deno.env.get("FUZZ_ITERATIONS") ?? 100_000);
const PSK = derivePsk("fuzz-key");

Deno.test(`fuzz: ${ITERATIONS} random and mutated datagrams into the parsers and a live server`, async () => {
  const corpus: Uint8Array[] = [];
  const net = new MemoryNet({ filter: (d) => (corpus.push(d.slice()), true) });
  const server = DtlsServer.listen({
    hostname: "10.0.0.1",
    port: 5684,
    socket: net.socket,
    lookupPsk: (id) => Promise.resolve(id === "fuzz.example.test" ? PSK : undefined),
    onConnection: (c) => c.attach({ onDatagram: (d) => c.send(d), onClose: () => {} }),
  });
  const conns = [];
  for (
    const suite of [
      "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256",
      "TLS_PSK_WITH_AES_128_GCM_SHA256",
    ] as const
  ) {
    conns.push(
      await dtlsConnect({
        hostname: "10.0.0.1",
        port: 5684,
        identity: "fuzz.example.test",
        psk: PSK,
        suites: [suite],
        socket: (_h, port, handler) => net.socket("10.0.0.2", port, handler),
      }),
    );
  }
  const client = conns[0]!;
  const echo = async (payload: Uint8Array) => {
    const got = new Promise<Uint8Array>((r) => client.attach({ onDatagram: r, onClose: () => {} }));
    client.send(payload);
    return await got;
  };
  deepEqual(await echo(new Uint8Array([1, 2, 3])), new Uint8Array([1, 2, 3]));
  ok(corpus.length >= 8);

  const rand = prng(0xdecaf);
  const int = (n: number) => Math.floor(rand() * n);
  const mutate = (src: Uint8Array): Uint8Array => {
    const d = src.slice();
    switch (int(6)) {
      case 0: // random bytes
        return new Uint8Array(int(300)).map(() => int(256));
      case 1: // truncate
        return d.subarray(0, int(d.length));
      case 2: // flip bits
        for (let i = 0, n = 1 + int(4); i < n && d.length; i++) d[int(d.length)]! ^= 1 << int(8);
        return d;
      case 3: // overwrite a length-ish position with an extreme value
        if (d.length > 13) {
          d[[11, 12, 14, 15, 16, 22, 23, 24][int(8)]! % d.length] = [0, 0xff, 0x7f][int(3)]!;
        }
        return d;
      case 4: { // splice two datagrams
        const other = corpus[int(corpus.length)]!;
        const out = new Uint8Array(d.length + other.length);
        out.set(d);
        out.set(other, d.length);
        return out.subarray(0, int(out.length + 1));
      }
      default: // replay as is
        return d;
    }
  };

  const attacker = net.socket("10.0.0.9", 0, () => {});
  const spoofed = net.socket("10.0.0.2", 0, () => {}); // another port on the client's host
  const to: Deno.NetAddr = { transport: "udp", hostname: "10.0.0.1", port: 5684 };
  const before = server.stats.datagramsReceived;
  let sent = 0;
  for (let i = 0; i < ITERATIONS; i++) {
    const d = mutate(corpus[int(corpus.length)]!);
    // Parsers directly, on the record payload.
    const payload = d.subarray(Math.min(13, d.length));
    decodeFragments(payload);
    decodeClientHello(payload);
    decodeServerHello(payload);
    decodeHelloVerifyRequest(payload);
    decodeClientKeyExchange(payload, i % 2 === 0);
    decodeEcdhePskServerKeyExchange(payload);
    // And the live server, from three kinds of address.
    (i % 3 === 0 ? attacker : spoofed).send(d, to);
    sent++;
    if (i % 1000 === 999) await new Promise((r) => setTimeout(r, 1));
  }
  // From the established session's own address: the record layer path.
  const established = conns[1]!;
  for (let i = 0; i < 2000; i++) {
    const d = mutate(corpus[int(corpus.length)]!);
    (established as unknown as { transmit(d: Uint8Array): void }).transmit(d);
  }
  await new Promise((r) => setTimeout(r, 50));
  ok(server.stats.datagramsReceived - before >= sent, "every datagram reached the server");
  const s = server.stats;
  const dropped = Object.values(s.dropped).reduce((a, b) => a + b, 0);
  ok(dropped > 0);
  // The sessions survive.
  deepEqual(await echo(new Uint8Array([4, 5, 6])), new Uint8Array([4, 5, 6]));
  ok(!established.closed);
  attacker.close();
  spoofed.close();
  for (const c of conns) c.close();
  await server.close();
  net.close();
});
