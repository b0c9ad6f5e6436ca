/**
 * Half-open handshake slots under attack, on the simulated network and fake time:
 * a peer that completes the cookie exchange hundreds of times from one address and
 * then falls silent must neither lock real clients out nor draw retransmissions
 * beyond the anti-amplification budget; many addresses filling the global cap
 * lock no newcomer from another address out; a crowd of real clients larger than
 * the cap all get in without evicting each other; a cookieless flood creates no state and leaves an established
 * session alone. The attacker's datagrams are written here from RFC 6347, not with
 * the implementation's encoders.
 */
import { equal, ok } from "node:assert/strict";
import {
  derivePsk,
  type DtlsClientOptions,
  type DtlsConn,
  dtlsConnect,
  DtlsServer,
  type DtlsServerOptions,
} from "./mod.ts";
import { addressGroup } from "./server.ts";
import { FakeClock, runFor, runUntil } from "../testing/fake_clock.ts";
import { SimNet } from "../testing/sim_net.ts";

const DOMAIN = "app.example.test";
const PSK = derivePsk("the-api-key");
const SERVER = { hostname: "10.0.0.1", port: 5684 };
const SERVER_KEY = `${SERVER.hostname}:${SERVER.port}`;
/**
 * Lifts the hello budgets (per address, and for HelloVerifyRequests in all): the tests
 * that use it are about what happens past them, which floods from many addresses reach.
 */
const NO_HELLO_BUDGETS = {
  helloRatePerAddress: { burst: 1e9, perSecond: 1e9 },
  helloVerifyRate: { burst: 1e9, perSecond: 1e9 },
};
const ONE_WAY_MS = 20;

// ---- raw DTLS 1.2 records (RFC 6347 4.1, 4.2.2) ----

function record(seq: number, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(13 + body.length);
  const v = new DataView(out.buffer);
  out[0] = 22; // handshake
  v.setUint16(1, 0xfefd);
  v.setUint16(3, 0); // epoch 0
  v.setUint32(7, seq);
  v.setUint16(11, body.length);
  out.set(body, 13);
  return out;
}

function handshakeMessage(type: number, messageSeq: number, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + body.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, (type << 24) | body.length);
  v.setUint16(4, messageSeq);
  out[9] = body.length >>> 16; // fragment_length = length, fragment_offset 0
  out[10] = (body.length >>> 8) & 0xff;
  out[11] = body.length & 0xff;
  out.set(body, 12);
  return out;
}

/** A ClientHello offering ECDHE_PSK_CHACHA20 (x25519) and PSK_AES128_GCM, as a real client. */
function clientHello(random: Uint8Array, cookie: Uint8Array, seq: number): Uint8Array {
  const ext = [
    ...[0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x1d], // supported_groups: x25519
    ...[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00], // ec_point_formats: uncompressed
    ...[0x00, 0x17, 0x00, 0x00], // extended_master_secret
  ];
  const body = new Uint8Array([
    0xfe,
    0xfd,
    ...random,
    0, // session_id
    cookie.length,
    ...cookie,
    ...[0x00, 0x04, 0xcc, 0xac, 0x00, 0xa8], // the two suites
    ...[0x01, 0x00], // compression: null
    ext.length >>> 8,
    ext.length & 0xff,
    ...ext,
  ]);
  return record(seq, handshakeMessage(1, seq, body));
}

/** The handshake type of a datagram's first record (3 HelloVerifyRequest, 2 ServerHello). */
function firstHandshakeType(d: Uint8Array): number | undefined {
  return d.length > 13 && d[0] === 22 ? d[13] : undefined;
}

function helloVerifyCookie(d: Uint8Array): Uint8Array {
  const len = d[13 + 12 + 2]!;
  return d.slice(13 + 12 + 3, 13 + 12 + 3 + len);
}

// ---- the harness ----

/** What a `timedAttempt` came to, once it settled: the connection or the error, and when. */
interface Attempt {
  conn?: DtlsConn;
  error?: Error;
  ms?: number;
}

/** Starts `dtlsConnect` from `host` on `net` and records how and when it settles. */
function timedAttempt(
  clock: FakeClock,
  net: SimNet,
  host: string,
  opts: Partial<DtlsClientOptions> = {},
): Attempt {
  const t0 = clock.now();
  const r: Attempt = {};
  dtlsConnect({
    ...SERVER,
    identity: DOMAIN,
    psk: PSK,
    clock,
    handshakeTimeoutMs: 10_000,
    socket: (_h, port, handler) => net.socket(host, port, handler),
    ...opts,
  }).then(
    (c) => Object.assign(r, { conn: c, ms: clock.now() - t0 }),
    (e) => Object.assign(r, { error: e, ms: clock.now() - t0 }),
  );
  return r;
}

interface Traffic {
  /** Bytes the attacker sent. */
  sent: number;
  /** Bytes of cookie-bearing ClientHellos the attacker sent, per "host:port". */
  cookieHello: Map<string, number>;
  /** Bytes of HelloVerifyRequests the server sent the attacker. */
  helloVerify: number;
  /** Server flights (ServerHello first) to the attacker: bytes per "host:port", in order. */
  flights: Map<string, number[]>;
  /** Every other datagram the server sent the attacker. */
  other: number;
}

function setup(
  attackerHosts: (host: string) => boolean,
  serverOpts: Partial<DtlsServerOptions> = {},
) {
  const clock = new FakeClock();
  const traffic: Traffic = {
    sent: 0,
    cookieHello: new Map(),
    helloVerify: 0,
    flights: new Map(),
    other: 0,
  };
  const net = new SimNet({
    clock,
    delayMs: ONE_WAY_MS,
    filter: (d, from, to) => {
      const host = (a: string) => a.slice(0, a.lastIndexOf(":"));
      if (attackerHosts(host(from)) && to === SERVER_KEY) traffic.sent += d.length;
      if (from === SERVER_KEY && attackerHosts(host(to))) {
        const t = firstHandshakeType(d);
        if (t === 3) traffic.helloVerify += d.length;
        else if (t === 2) {
          const list = traffic.flights.get(to) ?? [];
          list.push(d.length);
          traffic.flights.set(to, list);
        } else traffic.other += d.length;
      }
      return true;
    },
  });
  const accepted: DtlsConn[] = [];
  const server = DtlsServer.listen({
    ...SERVER,
    socket: net.socket,
    clock,
    lookupPsk: (id) => Promise.resolve(id === DOMAIN ? PSK : undefined),
    onConnection: (c) => {
      accepted.push(c);
      c.attach({ onDatagram: (d) => c.send(d), onClose: () => {} });
    },
    ...serverOpts,
  });
  let seed = 1;
  const random = () =>
    Uint8Array.from({ length: 32 }, () => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24);

  /**
   * A peer at host:port that completes the cookie exchange (its second ClientHello
   * carries the cookie) and then ignores everything.
   */
  const silentPeer = (host: string, port: number) => {
    const rnd = random();
    let answered = false;
    const sock = net.socket(host, port, (d) => {
      if (answered || firstHandshakeType(d) !== 3) return;
      answered = true;
      const ch = clientHello(rnd, helloVerifyCookie(d), 1);
      traffic.cookieHello.set(`${host}:${port}`, ch.length);
      sock.send(ch, { transport: "udp", ...SERVER });
    });
    sock.send(clientHello(rnd, new Uint8Array(0), 0), { transport: "udp", ...SERVER });
    return sock;
  };

  /** Starts `dtlsConnect` and records when it settles. */
  const timedConnect = (host: string) => timedAttempt(clock, net, host);

  /** Sends one datagram on `conn` and waits for its echo on fake time. */
  const echo = async (conn: DtlsConn, text: string) => {
    let got = "";
    conn.attach({ onDatagram: (d) => got = new TextDecoder().decode(d), onClose: () => {} });
    conn.send(new TextEncoder().encode(text));
    await runUntil(clock, () => got === text, 2_000, `echo of ${text}`);
  };

  return { clock, net, server, accepted, traffic, silentPeer, timedConnect, echo };
}

function sum(xs: Iterable<number>): number {
  let n = 0;
  for (const x of xs) n += x;
  return n;
}

/** Flight bytes: the first flight per peer, and every later copy (retransmissions). */
function flightBytes(t: Traffic): { first: number; again: number; maxPerPeer: number } {
  let first = 0, again = 0, maxPerPeer = 0;
  for (const list of t.flights.values()) {
    first += list[0] ?? 0;
    again += sum(list.slice(1));
    maxPerPeer = Math.max(maxPerPeer, sum(list));
  }
  return { first, again, maxPerPeer };
}

// ---- tests ----

Deno.test("handshake slots: 1000 valid-cookie ClientHellos from one address then silence lock no one out, and draw bounded retransmissions", async () => {
  const { clock, net, server, traffic, silentPeer, timedConnect, echo } = setup(
    (h) => h === "10.6.6.6",
    NO_HELLO_BUDGETS,
  );
  const attackers = 1000;
  const perAddress = 16; // the default
  const peers: { close(): void }[] = [];
  // The reported attack: 1000 cookie exchanges in 0.7 s (10 every 7 ms), then silence.
  // A real client from another address starts in the middle of it, another right after.
  let during: ReturnType<typeof timedConnect> | undefined;
  for (let i = 0; i < attackers / 10; i++) {
    for (let j = 0; j < 10; j++) peers.push(silentPeer("10.6.6.6", 10_000 + i * 10 + j));
    if (i === attackers / 20) during = timedConnect("10.0.0.2");
    await runFor(clock, 7);
  }
  await runFor(clock, 3 * ONE_WAY_MS); // the last cookie-bearing hellos arrive
  const after = timedConnect("10.0.0.3");
  await runUntil(clock, () => after.ms !== undefined && during!.ms !== undefined, 2_000, "both");
  ok(during!.conn && after.conn, `real clients failed: ${during!.error ?? after.error}`);
  console.log(
    `real client: ${during!.ms} ms (during the flood), ${after.ms} ms (after it), fake time`,
  );
  ok(during!.ms! <= 1_000 && after.ms! <= 1_000);
  await echo(after.conn!, "still served");

  const s = server.stats;
  equal(traffic.cookieHello.size, attackers);
  equal(s.handshakesStarted, attackers + 2);
  equal(s.handshakesCompleted, 2);
  equal(s.handshakesEvicted.addressCap, attackers - perAddress);
  equal(s.handshakesEvicted.globalCap, 0);
  equal(server.handshakesInProgress, perAddress);

  // Let the survivors run out their 30 s: what does the server send the silent peer?
  await runFor(clock, 31_000);
  equal(server.handshakesInProgress, 0);
  const chBytes = Math.max(...traffic.cookieHello.values());
  const f = flightBytes(traffic);
  console.log(
    `attacker sent ${traffic.sent} B; server sent it ${traffic.helloVerify} B of ` +
      `HelloVerifyRequests, ${f.first} B of first flights, ${f.again} B of retransmissions ` +
      `(${s.flightsRetransmitted} flights; ${s.handshakeRetransmitsWithheld} withheld) ` +
      `and ${traffic.other} B else, in 30 s`,
  );
  // Each half-open handshake sends at most 3x the bytes its peer sent it (one hello).
  ok(f.maxPerPeer <= 3 * chBytes, `${f.maxPerPeer} B to one peer, hello ${chBytes} B`);
  // Only the last 16 lived long enough to retransmit, each within its budget.
  ok(f.again <= perAddress * (3 * chBytes), `${f.again} B retransmitted`);
  ok(f.again < 10_000, `${f.again} B retransmitted (the unbounded server sent 978 KB)`);
  ok(s.handshakeRetransmitsWithheld >= perAddress);
  // In all, no more than what the attacker itself sent, times the budget.
  ok(traffic.helloVerify + f.first + f.again + traffic.other <= 3 * traffic.sent);

  for (const p of peers) p.close();
  during!.conn!.close();
  after.conn!.close();
  await server.close();
  net.close();
});

Deno.test("handshake slots: a full global cap gives a newcomer from a quieter address the busiest one's oldest slot, drops the rest until a slot is stale", async () => {
  const cap = 100;
  const { clock, net, server, traffic, silentPeer, timedConnect, echo } = setup(
    (h) => h.startsWith("10.7."),
    { maxHandshakes: cap },
  );
  const addresses = 40, each = 10; // under the per-address cap: only the global one acts
  const peers: { close(): void }[] = [];
  let during: ReturnType<typeof timedConnect> | undefined;
  for (let j = 0; j < each; j++) {
    for (let a = 0; a < addresses; a++) peers.push(silentPeer(`10.7.0.${a + 1}`, 20_000 + j));
    if (j === each / 2) during = timedConnect("10.0.0.2");
    await runFor(clock, 70);
  }
  await runFor(clock, 3 * ONE_WAY_MS);
  const after = timedConnect("10.0.0.3");
  await runUntil(clock, () => after.ms !== undefined && during!.ms !== undefined, 2_000, "both");
  ok(during!.conn && after.conn, `real clients failed: ${during!.error ?? after.error}`);
  console.log(`real client: ${during!.ms} ms (during), ${after.ms} ms (after), fake time`);
  ok(during!.ms! <= 1_000 && after.ms! <= 1_000);
  await echo(during!.conn!, "served");

  const s = server.stats;
  equal(traffic.cookieHello.size, addresses * each);
  equal(s.handshakesEvicted.addressCap, 0);
  // The first 100 filled the cap, 2 or 3 per address; a later one from an address with
  // its share already was dropped (its client would retransmit). Each real client, from
  // an address with none, took the oldest slot of an address with 3.
  equal(s.handshakesStarted - 2 + s.dropped.handshakesBusy, addresses * each);
  ok(s.dropped.handshakesBusy >= addresses * each - cap - 2, `${s.dropped.handshakesBusy}`);
  ok(s.handshakesEvicted.globalCap >= 2);
  equal(s.handshakesCompleted, 2);
  equal(
    server.handshakesInProgress,
    s.handshakesStarted - s.handshakesEvicted.globalCap - s.handshakesCompleted,
  );
  ok(server.handshakesInProgress >= cap - 2 && server.handshakesInProgress <= cap);

  // Once the oldest are stale (5 s), a newcomer with its address's share takes a slot.
  await runFor(clock, 5_000);
  const [started, evicted] = [s.handshakesStarted, s.handshakesEvicted.globalCap];
  const room = cap - server.handshakesInProgress;
  const late = Array.from({ length: room + 1 }, (_, i) => silentPeer("10.7.0.1", 30_000 + i));
  await runFor(clock, 3 * ONE_WAY_MS);
  equal(s.handshakesStarted, started + room + 1);
  equal(s.handshakesEvicted.globalCap, evicted + 1);
  await server.close();

  for (const p of late) p.close();
  for (const p of peers) p.close();
  during!.conn!.close();
  after.conn!.close();
  equal(server.handshakesInProgress, 0);
  net.close();
});

Deno.test("handshake slots: a crowd of real clients ten times the cap (a restart) all get in, none evicted; the excess comes back at its retransmission timer", async () => {
  const cap = 20;
  const { clock, net, server, timedConnect } = setup(() => false, { maxHandshakes: cap });
  // After a restart the clients notice at different times: here over 200 ms, four
  // times faster than the server finishes handshakes (20 at a time, two round trips).
  let seed = 7;
  const crowd: ReturnType<typeof timedConnect>[] = [];
  for (let i = 0; i < 10 * cap; i++) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    const at = (seed >>> 8) % 200;
    clock.setTimer(() => crowd.push(timedConnect(`10.9.${i >> 8}.${(i & 0xff) + 1}`)), at);
  }
  await runUntil(
    clock,
    () => crowd.length === 10 * cap && crowd.every((c) => c.ms !== undefined),
    12_000,
    "the crowd",
  );
  const failed = crowd.filter((c) => !c.conn);
  equal(failed.length, 0, `${failed.length} failed: ${failed[0]?.error}`);
  const ms = crowd.map((c) => c.ms!).sort((a, b) => a - b);
  const s = server.stats;
  console.log(
    `${crowd.length} clients over 200 ms, cap ${cap}: slowest in after ${ms.at(-1)} ms (p50 ${
      ms[ms.length >> 1]
    } ms), fake time, ${ONE_WAY_MS} ms one way; ${s.dropped.handshakesBusy} hellos dropped`,
  );
  // No handshake was given up for a newer one: every one started finished.
  equal(s.handshakesEvicted.globalCap + s.handshakesEvicted.addressCap, 0);
  equal(s.handshakesStarted, crowd.length);
  equal(s.handshakesCompleted, crowd.length);
  ok(s.dropped.handshakesBusy > 0);
  for (const c of crowd) c.conn!.close();
  await server.close();
  net.close();
});

Deno.test("handshake slots: a per-address cap evicts that address's oldest; other addresses keep theirs", async () => {
  const { clock, net, server, silentPeer } = setup((h) => h.startsWith("10.8."), {
    maxHandshakesPerAddress: 4,
    ...NO_HELLO_BUDGETS,
  });
  const peers = [];
  for (let i = 0; i < 3; i++) peers.push(silentPeer("10.8.0.2", 30_000 + i)); // a bystander
  await runFor(clock, 3 * ONE_WAY_MS);
  for (let i = 0; i < 10; i++) peers.push(silentPeer("10.8.0.1", 30_000 + i));
  await runFor(clock, 3 * ONE_WAY_MS);
  equal(server.stats.handshakesEvicted.addressCap, 6);
  equal(server.handshakesInProgress, 3 + 4);
  for (const p of peers) p.close();
  await server.close();
  net.close();
});

Deno.test("handshake slots: a real client whose server flights are lost still gets in within the byte budget", async () => {
  // The first three server flights (ServerHello...) to the client are lost: the server's
  // own retransmissions stop at the budget; the client's resent hellos earn new ones.
  let lost = 0;
  const clock = new FakeClock();
  const net = new SimNet({
    clock,
    delayMs: ONE_WAY_MS,
    filter: (d, from) => {
      if (from === SERVER_KEY && firstHandshakeType(d) === 2 && lost < 3) {
        lost++;
        return false;
      }
      return true;
    },
  });
  const server = DtlsServer.listen({
    ...SERVER,
    socket: net.socket,
    clock,
    lookupPsk: () => Promise.resolve(PSK),
    onConnection: () => {},
  });
  const r = timedAttempt(clock, net, "10.0.0.2");
  await runUntil(clock, () => r.conn !== undefined, 10_000, "handshake");
  console.log(
    `connected after ${r.ms} ms of fake time; server retransmitted ` +
      `${server.stats.flightsRetransmitted} flights, withheld ${server.stats.handshakeRetransmitsWithheld}`,
  );
  equal(lost, 3);
  ok(r.ms! <= 4_000);
  r.conn!.close();
  await server.close();
  net.close();
});

Deno.test("handshake slots: a cookieless ClientHello flood creates no state and leaves an established session alone", async () => {
  const { clock, net, server, accepted, traffic, timedConnect, echo } = setup(
    (h) => h.startsWith("10.9."),
    NO_HELLO_BUDGETS,
  );
  const r = timedConnect("10.0.0.2");
  await runUntil(clock, () => r.conn !== undefined && accepted.length === 1, 2_000, "session");
  await echo(r.conn!, "before");
  const started = server.stats.handshakesStarted;

  // 5000 cookieless hellos from 50 addresses, 10 every 2 ms, echoes going on meanwhile.
  const socks = Array.from(
    { length: 50 },
    (_, a) => net.socket(`10.9.0.${a + 1}`, 40_000, () => {}),
  );
  let n = 0;
  for (let round = 0; round < 100; round++) {
    for (const s of socks) {
      s.send(clientHello(new Uint8Array(32).fill(n++ & 0xff), new Uint8Array(0), 0), {
        transport: "udp",
        ...SERVER,
      });
    }
    await runFor(clock, 2);
    if (round % 25 === 0) await echo(r.conn!, `during ${round}`);
  }
  await runFor(clock, 3 * ONE_WAY_MS);
  await echo(r.conn!, "after");
  equal(server.stats.helloVerifyRequestsSent, 1 + 5000); // the client's own, then the flood's
  equal(server.stats.handshakesStarted, started);
  equal(server.handshakesInProgress, 0);
  equal(server.connectionCount, 1);
  equal(traffic.flights.size, 0);
  console.log(`flood: ${traffic.sent} B in, ${traffic.helloVerify} B of HelloVerifyRequests out`);
  ok(traffic.helloVerify <= traffic.sent, "the cookie exchange does not amplify");

  for (const s of socks) s.close();
  r.conn!.close();
  await server.close();
  net.close();
});

Deno.test("hello budgets: a flood from one address is cut to its budget before decoding; others are served", async () => {
  const { clock, net, server, accepted, timedConnect, echo } = setup((h) => h === "10.5.5.5");
  const r = timedConnect("10.0.0.2");
  await runUntil(clock, () => r.conn !== undefined && accepted.length === 1, 2_000, "session");
  const flood = net.socket("10.5.5.5", 40_000, () => {});
  // 10,000 cookieless hellos in 1 s of fake time (100 every 10 ms), echoes meanwhile.
  for (let round = 0; round < 100; round++) {
    for (let i = 0; i < 100; i++) {
      flood.send(clientHello(new Uint8Array(32).fill(i), new Uint8Array(0), 0), {
        transport: "udp",
        ...SERVER,
      });
    }
    await runFor(clock, 10);
    if (round % 20 === 0) await echo(r.conn!, `during ${round}`);
  }
  // The flooder got its burst and its rate (64, then 32 per second), no more.
  const answered = server.stats.helloVerifyRequestsSent - 1; // the client's own
  ok(answered <= 64 + 32 * 1.2, `${answered} HelloVerifyRequests to the flooder`);
  // Every other hello that reached the server was dropped and counted (the simulated
  // network itself loses a few of 100 sent at once).
  ok(server.stats.dropped.helloRateLimited >= 9_500, `${server.stats.dropped.helloRateLimited}`);
  // A real client from another address gets in at once.
  const late = timedConnect("10.0.0.3");
  await runUntil(clock, () => late.conn !== undefined, 2_000, "the late client");
  ok(late.ms! <= 6 * ONE_WAY_MS + 10, `the late client took ${late.ms} ms (three round trips)`);
  await echo(r.conn!, "after");
  flood.close();
  late.conn!.close();
  r.conn!.close();
  await server.close();
  net.close();
});

Deno.test("hello budgets: HelloVerifyRequests to a flood from many addresses are bounded in all", async () => {
  const { clock, net, server, traffic } = setup((h) => h.startsWith("10.4."), {
    helloVerifyRate: { burst: 200, perSecond: 1000 },
  });
  // 200 addresses (as a spoofed flood looks), 10 hellos each, within 100 ms.
  const socks = Array.from(
    { length: 200 },
    (_, a) => net.socket(`10.4.${a >> 8}.${a & 0xff}`, 40_000, () => {}),
  );
  for (let round = 0; round < 10; round++) {
    for (const sock of socks) {
      sock.send(clientHello(new Uint8Array(32).fill(round), new Uint8Array(0), 0), {
        transport: "udp",
        ...SERVER,
      });
    }
    await runFor(clock, 10);
  }
  await runFor(clock, 3 * ONE_WAY_MS);
  const sent = server.stats.helloVerifyRequestsSent;
  ok(sent <= 200 + 1000 * 0.1 + 5, `${sent} HelloVerifyRequests for 2000 hellos in 100 ms`);
  equal(sent + server.stats.dropped.helloRateLimited, 2000);
  console.log(`${sent} HelloVerifyRequests (${traffic.helloVerify} B) for 2000 hellos`);
  for (const sock of socks) sock.close();
  await server.close();
  net.close();
});

Deno.test("addressGroup: IPv4 as is, IPv4-mapped as IPv4, IPv6 by its /64", () => {
  equal(addressGroup("203.0.113.7"), "203.0.113.7");
  equal(addressGroup("::ffff:203.0.113.7"), "203.0.113.7");
  equal(addressGroup("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
  equal(addressGroup("2001:db8:1:2::9"), "2001:db8:1:2::/64");
  equal(addressGroup("[2001:0db8:0001:0002:aaaa::1]"), "2001:db8:1:2::/64");
  equal(addressGroup("2001:db8::1"), "2001:db8:0:0::/64");
  equal(addressGroup("::1"), "0:0:0:0::/64");
  equal(addressGroup("fe80::1%eth0"), "fe80:0:0:0::/64");
});

Deno.test("handshake slots: a client the server answered waits for a slot up to answeredTimeoutMs; one never answered gives up at handshakeTimeoutMs", async () => {
  const { clock, net, server, silentPeer } = setup((h) => h === "10.0.0.2", { maxHandshakes: 1 });
  // One silent handshake from 10.0.0.2 holds the only slot until it is stale (5 s).
  const peer = silentPeer("10.0.0.2", 50_000);
  await runFor(clock, 3 * ONE_WAY_MS);
  equal(server.handshakesInProgress, 1);
  const attempt = (port: number, answeredTimeoutMs?: number) =>
    timedAttempt(clock, net, "10.0.0.2", {
      port,
      handshakeTimeoutMs: 3_000,
      maxRtoMs: 2_000,
      ...(answeredTimeoutMs ? { answeredTimeoutMs } : {}),
    });
  const impatient = attempt(SERVER.port);
  const patient = attempt(SERVER.port, 15_000);
  const nobody = attempt(SERVER.port + 1, 15_000); // no server there
  await runUntil(
    clock,
    () => [impatient, patient, nobody].every((r) => r.ms !== undefined),
    20_000,
    "all three",
  );
  console.log(
    `impatient: ${impatient.error?.message} after ${impatient.ms} ms; patient: in after ` +
      `${patient.ms} ms; no server: ${nobody.error?.message} after ${nobody.ms} ms`,
  );
  // Its hellos were dropped while the slot was held: it gave up at its 3 s (no longer
  // wait asked for, so the old error).
  equal((impatient.error as { code?: string } | undefined)?.code, "HANDSHAKE_TIMEOUT");
  equal(impatient.ms, 3_000);
  ok(server.stats.dropped.handshakesBusy > 0);
  // The same wait, with the server's answer taken into account: in once the slot was stale.
  ok(patient.conn, `patient failed: ${patient.error}`);
  ok(patient.ms! > 5_000 && patient.ms! < 8_000, `${patient.ms} ms`);
  // Nothing answered: the longer wait does not apply.
  equal((nobody.error as { code?: string } | undefined)?.code, "HANDSHAKE_TIMEOUT");
  equal(nobody.ms, 3_000);
  patient.conn!.close();
  peer.close();
  await server.close();
  net.close();
});

Deno.test("handshake slots: a client whose last flight reaches a server that gave its slot away starts over after lastFlightTimeoutMs, not answeredTimeoutMs", async () => {
  const clock = new FakeClock();
  // The slow clients' last flights (anything but a ClientHello from 10.0.0.3 or .4) are
  // held up for 5.5 s, as a CPU-starved client's would be: their slots go stale.
  const slow = (from: string) => from.startsWith("10.0.0.3:") || from.startsWith("10.0.0.4:");
  const net = new SimNet({
    clock,
    delayMs: ONE_WAY_MS,
    filter: (d, from, to) => {
      if (to !== SERVER_KEY || !slow(from)) return true;
      const clientHello = d[0] === 22 && d[13] === 1;
      return clientHello || clock.now() > 5_500;
    },
  });
  const server = DtlsServer.listen({
    ...SERVER,
    socket: net.socket,
    clock,
    maxHandshakes: 2,
    lookupPsk: (id) => Promise.resolve(id === DOMAIN ? PSK : undefined),
    onConnection: (c) => c.attach({ onDatagram: () => {}, onClose: () => {} }),
  });
  const attempt = (host: string, lastFlightTimeoutMs?: number) =>
    timedAttempt(clock, net, host, {
      answeredTimeoutMs: 30_000,
      maxRtoMs: 2_000,
      ...(lastFlightTimeoutMs ? { lastFlightTimeoutMs } : {}),
    });
  const quick = attempt("10.0.0.3", 6_000);
  const patient = attempt("10.0.0.4");
  await runFor(clock, 5_100);
  equal(server.handshakesInProgress, 2, "both slow handshakes hold the two slots");
  // Two newcomers take the stale slots.
  const others = [attempt("10.0.0.5"), attempt("10.0.0.6")];
  await runUntil(clock, () => others.every((r) => r.conn), 5_000, "the newcomers");
  ok(server.stats.handshakesEvicted.globalCap >= 2, "the slow ones were evicted");
  await runUntil(clock, () => quick.ms !== undefined, 10_000, "the quick one gives up");
  const code = (r: { error?: Error }) => (r.error as { code?: string } | undefined)?.code;
  equal(code(quick), "HANDSHAKE_STALLED");
  // Its last flight went out one round trip in; it gave up 6 s after that.
  ok(quick.ms! >= 6_000 && quick.ms! < 6_500, `${quick.ms} ms`);
  equal(patient.ms, undefined, "without the limit it still waits");
  const again = attempt("10.0.0.3", 6_000);
  await runUntil(clock, () => again.ms !== undefined, 5_000, "the retry");
  ok(again.conn, `the retry failed: ${again.error}`);
  await runUntil(clock, () => patient.ms !== undefined, 30_000, "the patient one");
  equal(code(patient), "HANDSHAKE_STALLED");
  equal(patient.ms, 30_000);
  for (const r of [...others, again]) r.conn!.close();
  await server.close();
  net.close();
});
