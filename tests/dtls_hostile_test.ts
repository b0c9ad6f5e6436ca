/**
 * Our DTLS server (and client) against hostile input on real UDP sockets: truncated and
 * random datagrams, a forged plaintext alert, replayed and tampered records, a ClientHello
 * flood without cookies, cookie-valid handshakes beyond the cap (the oldest are evicted) and
 * a silent cookie-valid flood from one address. Each must be dropped or evicted and counted in
 * the stats, nothing may crash, and an established session must keep working.
 *
 * The established session runs our client ↔ our server through the relay, which captures
 * records (intercept) and sends copies from the session's own address (inject).
 */
import assert from "node:assert/strict";
import {
  derivePsk,
  type DtlsClientConn,
  dtlsConnect,
  type DtlsStats,
  pskIdentity,
} from "../shared/dtls/mod.ts";
import { type Direction, mulberry32, UdpRelay } from "./tools/udp_relay.ts";
import { waitUntil } from "./tools/dtls_peers.ts";
import { bytes, type EchoServer, echoText, Inbox, startEchoServer } from "./tools/dtls_echo.ts";
import { clientHello, helloVerifyCookie, Raw, record } from "./tools/dtls_raw.ts";
import { bindUdp } from "../shared/dtls/udp.ts";

const IDENTITY = pskIdentity("hostile.example.test");
const PSK = derivePsk("hostile-test-api-key");
const KEYS = { [IDENTITY]: PSK };
const APPLICATION_DATA = 23;
/** The client's protected records carry the server's connection ID (RFC 9146). */
const TLS12_CID = 25;
/** Lifts the per-address hello budget: these tests are about what happens past it. */
const NO_HELLO_BUDGET = { helloRatePerAddress: { burst: 1e9, perSecond: 1e9 } };

function droppedTotal(s: DtlsStats): number {
  return Object.values(s.dropped).reduce((a, b) => a + b, 0);
}

function snapshot(s: DtlsStats): DtlsStats {
  return structuredClone(s);
}

interface Session {
  echo: EchoServer;
  relay: UdpRelay;
  conn: DtlsClientConn;
  inbox: Inbox;
  /** Application-data records seen by the relay, per direction, in order. */
  captured: Record<Direction, Uint8Array[]>;
  /** If set, replaces the next application-data record in that direction (and is cleared). */
  tamper: Partial<Record<Direction, (d: Uint8Array) => Uint8Array>>;
  /** Originals of tampered records. */
  originals: Uint8Array[];
  /** Sends `text` and waits for its echo: proves the session still works both ways. */
  roundTrip(text: string): Promise<void>;
}

async function withSession(
  fn: (s: Session) => Promise<void>,
  serverOptions: Parameters<typeof startEchoServer>[1] = {},
): Promise<void> {
  const echo = startEchoServer(KEYS, serverOptions);
  const captured: Session["captured"] = { toServer: [], toClient: [] };
  const tamper: Session["tamper"] = {};
  const originals: Uint8Array[] = [];
  const relay = new UdpRelay({
    upstream: { hostname: "127.0.0.1", port: echo.port },
    trace: true,
    intercept: (dir, d) => {
      if (d[0] !== APPLICATION_DATA && d[0] !== TLS12_CID) return d;
      captured[dir].push(d);
      const t = tamper[dir];
      if (!t) return d;
      delete tamper[dir];
      originals.push(d);
      return t(d.slice());
    },
  });
  let conn: DtlsClientConn | undefined;
  try {
    conn = await dtlsConnect({
      hostname: "127.0.0.1",
      port: relay.addr.port,
      identity: IDENTITY,
      psk: PSK,
      handshakeTimeoutMs: 10_000,
    });
    const inbox = new Inbox(conn);
    const c = conn;
    const session: Session = {
      echo,
      relay,
      conn: c,
      inbox,
      captured,
      tamper,
      originals,
      roundTrip: async (text) => {
        c.send(bytes(text));
        await inbox.waitFor(echoText(text), 5000);
      },
    };
    await session.roundTrip("hello");
    try {
      await fn(session);
    } catch (e) {
      throw new Error(
        `${(e as Error).message}\nserver stats ${JSON.stringify(echo.server.stats)}\n` +
          `client stats ${JSON.stringify(c.stats)}\n${relay.formatTrace(40)}`,
        { cause: e },
      );
    }
    // Whatever happened, nothing crashed and the session is intact.
    assert.equal(c.closed, false, `client closed: ${inbox.closedWith}`);
    assert.equal(echo.conns.filter((c) => !c.closed).length, 1, "other connections left open");
    assert.equal(echo.conns[0]!.closed, false, `server conn closed: ${echo.closes.get(0)}`);
  } finally {
    conn?.close();
    await relay.close();
    await echo.close();
  }
}

Deno.test("truncated datagrams are dropped and counted as malformed", async () => {
  await withSession(async (s) => {
    const rec = s.captured.toServer.at(-1)!;
    assert.ok(rec.length > 30);
    const cuts = [1, 5, 12, 13, 14, 20, rec.length - 1];
    const before = snapshot(s.echo.server.stats);
    // From the session's own address (through its relay socket)...
    for (const n of cuts) s.relay.inject("toServer", rec.subarray(0, n));
    // ... and from a stranger.
    const stranger = new Raw();
    try {
      for (const n of cuts) await stranger.send(rec.subarray(0, n), s.echo.port);
      await waitUntil(
        () => s.echo.server.stats.datagramsReceived >= before.datagramsReceived + 2 * cuts.length,
        5000,
        () => "server did not receive them",
      );
    } finally {
      await stranger.close();
    }
    const after = s.echo.server.stats;
    assert.ok(
      after.dropped.malformed - before.dropped.malformed >= cuts.length,
      `malformed ${before.dropped.malformed} → ${after.dropped.malformed}`,
    );
    assert.ok(droppedTotal(after) - droppedTotal(before) >= 2 * cuts.length);
    assert.equal(s.echo.received.length, 1, "a truncated record reached the app");
    await s.roundTrip("after-truncated");
  });
});

Deno.test("random datagrams are dropped and counted; the session survives", async () => {
  await withSession(async (s) => {
    const rnd = mulberry32(20240601);
    const make = (): Uint8Array => {
      const d = new Uint8Array(1 + Math.floor(rnd() * 1400));
      for (let i = 0; i < d.length; i++) d[i] = Math.floor(rnd() * 256);
      // Half of them get a plausible DTLS 1.2 header, to reach deeper into the parser.
      if (rnd() < 0.5 && d.length >= 13) {
        d[0] = [20, 21, 22, 23][Math.floor(rnd() * 4)]!;
        d[1] = 0xfe;
        d[2] = 0xfd;
        d[3] = 0;
        d[4] = Math.floor(rnd() * 2);
        d[11] = ((d.length - 13) >> 8) & 0xff;
        d[12] = (d.length - 13) & 0xff;
      }
      return d;
    };
    const before = snapshot(s.echo.server.stats);
    const fromSession = 100;
    const fromStranger = 200;
    for (let i = 0; i < fromSession; i++) s.relay.inject("toServer", make());
    const stranger = new Raw();
    try {
      for (let i = 0; i < fromStranger; i++) await stranger.send(make(), s.echo.port);
      await waitUntil(
        () =>
          s.echo.server.stats.datagramsReceived >=
            before.datagramsReceived + fromSession + fromStranger,
        5000,
        () => "server did not receive them",
      );
    } finally {
      await stranger.close();
    }
    const after = s.echo.server.stats;
    // Every datagram is either dropped-and-counted or (a ClientHello look-alike) answered
    // with a HelloVerifyRequest.
    const handled = droppedTotal(after) - droppedTotal(before) +
      (after.helloVerifyRequestsSent - before.helloVerifyRequestsSent);
    assert.ok(handled >= fromSession + fromStranger, `only ${handled} counted`);
    assert.equal(after.handshakesStarted, before.handshakesStarted);
    assert.equal(s.echo.received.length, 1, "random bytes reached the app");
    await s.roundTrip("after-random");
  });
});

Deno.test("a forged plaintext (epoch 0) fatal alert does not kill the session", async () => {
  await withSession(async (s) => {
    const before = snapshot(s.echo.server.stats);
    const beforeClient = snapshot(s.conn.stats);
    // fatal(2) handshake_failure(40), epoch 0, as an off-path attacker could send it.
    const alert = record(21, 0, 1000, new Uint8Array([2, 40]));
    s.relay.inject("toServer", alert);
    s.relay.inject("toClient", alert);
    await waitUntil(
      () =>
        droppedTotal(s.echo.server.stats) > droppedTotal(before) &&
        droppedTotal(s.conn.stats) > droppedTotal(beforeClient),
      5000,
      () => "the forged alerts were not counted as dropped",
    );
    await s.roundTrip("after-forged-alert");
  });
});

for (const dir of ["toServer", "toClient"] as const) {
  Deno.test(`a replayed record (${dir}) is dropped and counted, delivered once`, async () => {
    await withSession(async (s) => {
      const n = s.captured[dir].length;
      await s.roundTrip("replay-me");
      // toServer: the client's record of "replay-me"; toClient: the server's echo of it.
      const rec = s.captured[dir][n];
      assert.ok(rec, "no record captured");
      const stats = dir === "toServer" ? s.echo.server.stats : s.conn.stats;
      const before = snapshot(stats);
      s.relay.inject(dir, rec);
      s.relay.inject(dir, rec);
      // Records are handled in order: once the marker's echo is back, the replays were seen.
      await s.roundTrip("marker");
      assert.equal(stats.dropped.replayed - before.dropped.replayed, 2);
      assert.equal(s.echo.received.filter((r) => r.text === "replay-me").length, 1);
      assert.equal(s.inbox.count(echoText("replay-me")), 1);
    });
  });
}

const TAMPERS: [string, (d: Uint8Array) => Uint8Array][] = [
  ["a ciphertext byte", (d) => {
    d[d.length - 20]! ^= 0x01;
    return d;
  }],
  ["the last tag byte", (d) => {
    d[d.length - 1]! ^= 0x80;
    return d;
  }],
  ["the sequence number (authenticated header)", (d) => {
    d[10]! ^= 0x01;
    return d;
  }],
];

for (const dir of ["toServer", "toClient"] as const) {
  for (const [what, flip] of TAMPERS) {
    Deno.test(`a record with ${what} flipped (${dir}) is dropped as badMac; the original still passes`, async () => {
      await withSession(async (s) => {
        const stats = dir === "toServer" ? s.echo.server.stats : s.conn.stats;
        const before = snapshot(stats);
        s.tamper[dir] = flip;
        const text = "tamper-me-with-enough-bytes-to-flip";
        s.conn.send(bytes(text));
        await waitUntil(
          () => stats.dropped.badMac > before.dropped.badMac,
          5000,
          () => "tampered record not counted as badMac",
        );
        assert.equal(stats.dropped.badMac - before.dropped.badMac, 1);
        assert.equal(s.inbox.count(echoText(text)), 0, "tampered record was delivered");
        // The forged copy must not have moved the replay window: the genuine record, late,
        // is accepted.
        assert.equal(s.originals.length, 1);
        s.relay.inject(dir, s.originals[0]!);
        await s.inbox.waitFor(echoText(text), 5000);
        assert.equal(s.inbox.count(echoText(text)), 1);
        await s.roundTrip("after-tamper");
      });
    });
  }
}

Deno.test("a ClientHello flood without cookies creates no state", async () => {
  await withSession(async (s) => {
    const before = snapshot(s.echo.server.stats);
    const rnd = mulberry32(99);
    const random = () => Uint8Array.from({ length: 32 }, () => Math.floor(rnd() * 256));
    const strangers = [new Raw(), new Raw(), new Raw()];
    const perSocket = 150;
    const fromSession = 20;
    try {
      // In batches that fit the server's socket buffer, waiting for each to be read: the
      // kernel would otherwise drop part of the flood before the server ever sees it.
      let sent = 0;
      const batch = async (send: () => Promise<void>, n: number) => {
        for (let i = 0; i < n; i++) await send();
        sent += n;
        await waitUntil(
          () => s.echo.server.stats.datagramsReceived - before.datagramsReceived >= sent,
          5000,
          () =>
            `server read ${
              s.echo.server.stats.datagramsReceived - before.datagramsReceived
            }/${sent}`,
        );
      };
      for (let i = 0; i < perSocket / 25; i++) {
        for (const r of strangers) {
          await batch(() => r.send(clientHello(random(), new Uint8Array(0), 0), s.echo.port), 25);
        }
      }
      // Cookieless ClientHellos from the established session's own address, too.
      await batch(() => {
        s.relay.inject("toServer", clientHello(random(), new Uint8Array(0), 0));
        return Promise.resolve();
      }, fromSession);
      const total = strangers.length * perSocket + fromSession;
      await waitUntil(
        () => s.echo.server.stats.helloVerifyRequestsSent - before.helloVerifyRequestsSent >= total,
        10_000,
        () =>
          `HVRs: ${s.echo.server.stats.helloVerifyRequestsSent - before.helloVerifyRequestsSent}`,
      );
      const after = s.echo.server.stats;
      assert.equal(after.helloVerifyRequestsSent - before.helloVerifyRequestsSent, total);
      assert.equal(after.handshakesStarted, before.handshakesStarted, "state was created");
      assert.equal(s.echo.server.handshakesInProgress, 0);
      assert.equal(s.echo.server.connectionCount, 1);
      // The strangers got HelloVerifyRequests with cookies.
      await waitUntil(() => strangers.every((r) => r.got.length > 0), 5000, () => "no HVR");
      assert.ok(helloVerifyCookie(strangers[0]!.got[0]!)?.length, "not a HelloVerifyRequest");
    } finally {
      await Promise.all(strangers.map((r) => r.close()));
    }
    await s.roundTrip("after-flood");
  }, NO_HELLO_BUDGET);
});

/** Completes the cookie exchange from `r` (a real, verified start), then stays silent. */
async function cookieValidStart(r: Raw, port: number, rnd: () => number): Promise<void> {
  const random = Uint8Array.from({ length: 32 }, () => Math.floor(rnd() * 256));
  await r.send(clientHello(random, new Uint8Array(0), 0), port);
  await waitUntil(() => r.got.length > 0, 5000, () => "no HelloVerifyRequest");
  const cookie = helloVerifyCookie(r.got[0]!);
  assert.ok(cookie && cookie.length > 0, "not a HelloVerifyRequest");
  // Same ClientHello, now with the cookie (message_seq 1).
  await r.send(clientHello(random, cookie, 1), port);
}

Deno.test("cookie-valid handshakes beyond maxHandshakes: the excess is dropped, counted; a newcomer from another address still gets in", async () => {
  const cap = 3;
  const attackers = 8;
  await withSession(async (s) => {
    const before = snapshot(s.echo.server.stats);
    const socks = Array.from({ length: attackers }, () => new Raw());
    try {
      const rnd = mulberry32(7);
      for (const r of socks) await cookieValidStart(r, s.echo.port, rnd);
      const handled = () => {
        const now = s.echo.server.stats;
        return now.handshakesStarted - before.handshakesStarted + now.dropped.handshakesBusy -
          before.dropped.handshakesBusy;
      };
      await waitUntil(
        () => handled() >= attackers,
        5000,
        () => "the cookie-valid ClientHellos were not all handled",
      );
      const after = s.echo.server.stats;
      // The first three took the slots; the rest, from the same address, had no claim
      // on one (no handshake was stale) and were dropped, not let in by evicting.
      assert.equal(after.handshakesStarted - before.handshakesStarted, cap);
      assert.equal(after.dropped.handshakesBusy - before.dropped.handshakesBusy, attackers - cap);
      assert.equal(after.handshakesEvicted.globalCap - before.handshakesEvicted.globalCap, 0);
      assert.equal(s.echo.server.handshakesInProgress, cap);
      await waitUntil(
        () => socks.slice(0, cap).every((r) => r.got.some((d) => d[13] === 2)),
        5000,
        () => "the first half-open handshakes got no ServerHello",
      );
      // With every slot held from 127.0.0.1, a real client from 127.0.0.2 gets in: it
      // takes the oldest slot of the address that holds them all.
      const t0 = performance.now();
      const late = await dtlsConnect({
        hostname: "127.0.0.1",
        port: s.echo.port,
        identity: IDENTITY,
        psk: PSK,
        handshakeTimeoutMs: 5000,
        socket: (_h, port, handler) => bindUdp("127.0.0.2", port, handler),
      });
      assert.ok(performance.now() - t0 < 2000);
      assert.equal(
        s.echo.server.stats.handshakesEvicted.globalCap - before.handshakesEvicted.globalCap,
        1,
      );
      late.close();
      await waitUntil(() => s.echo.conns.at(-1)!.closed, 5000, () => "not closed");
      // Half-open handshakes do not disturb the established session.
      await s.roundTrip("after-cap");
    } finally {
      await Promise.all(socks.map((r) => r.close()));
    }
  }, { maxHandshakes: cap });
});

Deno.test("a silent cookie-valid flood from one address does not delay a real client", async () => {
  const attackers = 300;
  await withSession(async (s) => {
    const before = snapshot(s.echo.server.stats);
    // The attacker is 127.0.0.2 (loopback, another address); the real client 127.0.0.1.
    const socks = Array.from({ length: attackers }, () => new Raw("127.0.0.2"));
    try {
      const rnd = mulberry32(11);
      const t0 = performance.now();
      for (let i = 0; i < attackers; i += 20) {
        await Promise.all(socks.slice(i, i + 20).map((r) => cookieValidStart(r, s.echo.port, rnd)));
      }
      await waitUntil(
        () => s.echo.server.stats.handshakesStarted - before.handshakesStarted >= attackers,
        5000,
        () => "the cookie-valid ClientHellos were not all handled",
      );
      const floodMs = performance.now() - t0;
      const t1 = performance.now();
      const client = await dtlsConnect({
        hostname: "127.0.0.1",
        port: s.echo.port,
        identity: IDENTITY,
        psk: PSK,
        handshakeTimeoutMs: 5000,
      });
      const clientMs = performance.now() - t1;
      client.close();
      await waitUntil(() => s.echo.conns.at(-1)!.closed, 5000, () => "not closed");
      const after = s.echo.server.stats;
      console.log(
        `${attackers} cookie-valid hellos in ${floodMs.toFixed(0)} ms; the real client ` +
          `connected in ${clientMs.toFixed(0)} ms; evicted ` +
          `${after.handshakesEvicted.addressCap - before.handshakesEvicted.addressCap}`,
      );
      assert.ok(clientMs < 1000, `the real client took ${clientMs} ms`);
      assert.equal(
        after.handshakesEvicted.addressCap - before.handshakesEvicted.addressCap,
        attackers - 16,
      );
      assert.equal(s.echo.server.handshakesInProgress, 16);
      await s.roundTrip("after-silent-flood");
    } finally {
      await Promise.all(socks.map((r) => r.close()));
    }
  }, NO_HELLO_BUDGET);
});
