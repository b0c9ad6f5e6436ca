/**
 * Connection IDs (RFC 9146) and the return routability check (RFC 9853) on real UDP
 * sockets: our client behind a relay that rebinds its source port (a NAT rebinding),
 * forged CID records, and an on-path attacker that replays a client record from a
 * victim's address. The session must survive every rebinding without a new
 * handshake, forged records must be dropped and counted, and a victim must never get
 * more than `PATH_AMPLIFICATION_LIMIT` times what was sent from its address.
 */
import assert from "node:assert/strict";
import { createDecipheriv } from "node:crypto";
import { derivePsk, type DtlsClientConn, dtlsConnect, pskIdentity } from "../shared/dtls/mod.ts";
import { ECDHE_PSK_CHACHA20, PSK_AES128_GCM, RecordCipher } from "../shared/dtls/cipher.ts";
import { PATH_AMPLIFICATION_LIMIT } from "../shared/dtls/connection.ts";
import { UdpRelay } from "./tools/udp_relay.ts";
import { waitUntil } from "./tools/dtls_peers.ts";
import {
  clientHello,
  EXTENDED_MASTER_SECRET,
  helloVerifyCookie,
  Raw,
  serverHelloExtensions,
} from "./tools/dtls_raw.ts";
import { bytes, type EchoServer, echoText, Inbox, startEchoServer } from "./tools/dtls_echo.ts";

const IDENTITY = pskIdentity("rebinding.example.test");
const PSK = derivePsk("rebinding-test-api-key");
const KEYS = { [IDENTITY]: PSK };
const TLS12_CID = 25;

interface Session {
  echo: EchoServer;
  relay: UdpRelay;
  conn: DtlsClientConn;
  inbox: Inbox;
  /** The client's protected records as the relay saw them, in order. */
  fromClient: Uint8Array[];
  /** Return non-null from here to replace (or null to drop) a client record. */
  intercept?: ((d: Uint8Array) => Uint8Array | null) | undefined;
  roundTrip(text: string): Promise<void>;
}

async function withSession(
  fn: (s: Session) => Promise<void>,
  opts: { connectionId?: boolean; echo?: EchoServer } = {},
): Promise<void> {
  const echo = opts.echo ?? startEchoServer(KEYS);
  const s = { fromClient: [] as Uint8Array[] } as Partial<Session> & { fromClient: Uint8Array[] };
  const relay = new UdpRelay({
    upstream: { hostname: "127.0.0.1", port: echo.port },
    intercept: (dir, d) => {
      if (dir !== "toServer" || (d[0] !== TLS12_CID && d[0] !== 23)) return d;
      s.fromClient.push(d);
      return s.intercept ? s.intercept(d) : d;
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
      ...(opts.connectionId === undefined ? {} : { connectionId: opts.connectionId }),
    });
    const inbox = new Inbox(conn);
    const c = conn;
    Object.assign(s, {
      echo,
      relay,
      conn: c,
      inbox,
      roundTrip: async (text: string) => {
        c.send(bytes(text));
        await inbox.waitFor(echoText(text), 5000);
      },
    });
    await s.roundTrip!("hello");
    await fn(s as Session);
  } finally {
    conn?.close();
    await relay.close();
    if (!opts.echo) await echo.close();
  }
}

Deno.test("CID: a client whose NAT rebinds its port five times keeps its session, no new handshake", async () => {
  await withSession(async (s) => {
    const server = s.echo.server.stats;
    assert.equal(s.fromClient.at(-1)![0], TLS12_CID, "the client's records carry the CID");
    for (let i = 0; i < 5; i++) {
      const to = s.relay.rebind();
      await s.roundTrip(`after-rebind-${i}`);
      // The server validated the new address and now sends there.
      await waitUntil(() => server.path.validated === i + 1, 3000, () => "not validated");
      assert.deepEqual(s.echo.conns[0]!.remoteAddr, to);
    }
    assert.equal(server.handshakesStarted, 1, "no new handshake");
    assert.equal(server.path.validationsFailed, 0);
    assert.equal(s.echo.conns.length, 1);
    assert.equal(s.echo.conns[0]!.closed, false);
    console.log(`server path stats ${JSON.stringify(server.path)}`);
  });
});

Deno.test("CID: data in flight across a rebinding is delivered, in the same session", async () => {
  await withSession(async (s) => {
    // 200 datagrams in a burst, the port changing in the middle: the ones the client
    // sends after the change reach the server through the new port.
    const n = 200;
    for (let i = 0; i < n; i++) {
      if (i === 100) s.relay.rebind();
      s.conn.send(bytes(`burst-${i}`));
      if (i % 20 === 19) await new Promise((r) => setTimeout(r, 5));
    }
    await waitUntil(
      () => s.echo.received.filter((r) => r.text.startsWith("burst-")).length === n,
      5000,
      () => `${s.echo.received.length} received`,
    );
    // The echoes of the second half went to the new port.
    await s.inbox.waitFor(echoText(`burst-${n - 1}`), 5000);
    assert.equal(s.echo.server.stats.handshakesStarted, 1);
  });
});

Deno.test("without CID (the old behaviour, and peers that do not offer it) a rebinding ends the session for the server", async () => {
  await withSession(async (s) => {
    assert.equal(s.fromClient.at(-1)![0], 23, "no CID negotiated: plain application data");
    const before = s.echo.server.stats.dropped.noSession;
    s.relay.rebind();
    s.conn.send(bytes("lost"));
    await waitUntil(
      () => s.echo.server.stats.dropped.noSession > before,
      3000,
      () => "the record from the new port was not dropped as noSession",
    );
    assert.equal(s.echo.received.filter((r) => r.text === "lost").length, 0);
  }, { connectionId: false });
});

Deno.test("CID: records with a forged or another session's CID are dropped and counted; nothing moves", async () => {
  const echo = startEchoServer(KEYS);
  try {
    await withSession(async (a) => {
      await withSession(async (b) => {
        const server = echo.server.stats;
        const recA = a.fromClient.at(-1)!, recB = b.fromClient.at(-1)!;
        assert.equal(recA[0], TLS12_CID);
        // A random CID: no session has it.
        const unknown = recB.slice();
        unknown.set([1, 2, 3, 4, 5, 6, 7, 8], 11);
        const u0 = server.dropped.unknownCid;
        b.relay.inject("toServer", unknown);
        await waitUntil(() => server.dropped.unknownCid === u0 + 1, 3000, () => "not counted");
        // B's record with A's CID: found, but it does not authenticate with A's keys.
        const swapped = recB.slice();
        swapped.set(recA.subarray(11, 19), 11);
        swapped.set([0, 1, 0, 0, 0, 0], 5); // a sequence number A has not seen yet
        const m0 = server.dropped.badMac;
        b.relay.inject("toServer", swapped);
        await waitUntil(() => server.dropped.badMac === m0 + 1, 3000, () => "not counted");
        // A's own record replayed from B's address: a replay, not a path change.
        const r0 = server.dropped.replayed;
        b.relay.inject("toServer", recA);
        await waitUntil(() => server.dropped.replayed === r0 + 1, 3000, () => "not counted");
        assert.equal(server.path.changes, 0);
        await a.roundTrip("a-still-works");
        await b.roundTrip("b-still-works");
        assert.equal(echo.conns.filter((c) => !c.closed).length, 2);
      }, { echo });
    }, { echo });
  } finally {
    await echo.close();
  }
});

Deno.test("CID: a client record replayed first from a victim's address gets the victim no more than 3x its bytes, and the path comes back", async () => {
  const victim = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  let victimBytes = 0, victimDatagrams = 0;
  const victimLoop = (async () => {
    const buf = new Uint8Array(65536);
    for (;;) {
      try {
        const [d] = await victim.receive(buf);
        victimBytes += d.length;
        victimDatagrams++;
      } catch {
        return;
      }
    }
  })();
  try {
    await withSession(async (s) => {
      const server = s.echo.server.stats;
      // Traffic from the server toward the client: a stream of echoes it must send.
      // The attacker sees the client's next record, and gets a copy to the server
      // from the victim's address before the original arrives (which then is a replay).
      let stolen: Uint8Array | undefined;
      let fromVictim = 0;
      s.intercept = (d) => {
        if (stolen) return d;
        stolen = d.slice();
        return null; // held back by the attacker...
      };
      s.conn.send(bytes("x".repeat(1000)));
      await waitUntil(() => stolen !== undefined, 3000, () => "nothing captured");
      s.intercept = undefined;
      const echo = s.echo.port;
      fromVictim += stolen!.length;
      await victim.send(stolen!, { transport: "udp", hostname: "127.0.0.1", port: echo });
      // ...and the original arrives late, from the client's address: a replay.
      s.relay.inject("toServer", stolen!);
      await waitUntil(() => server.path.changes === 1, 3000, () => "no path change");
      // The victim cannot answer the path_challenges: after the last one the server
      // goes back to the client's validated address.
      await waitUntil(
        () => server.path.validationsFailed === 1,
        5000,
        () => `validation did not fail: ${JSON.stringify(server.path)}`,
      );
      await s.roundTrip("after-the-failed-validation");
      // Again, and this time the client keeps talking from its own address: its next
      // record moves the path back at once.
      stolen = undefined;
      s.intercept = (d) => {
        if (stolen) return d;
        stolen = d.slice();
        return null;
      };
      s.conn.send(bytes("z".repeat(1000)));
      await waitUntil(() => stolen !== undefined, 3000, () => "nothing captured");
      s.intercept = undefined;
      fromVictim += stolen!.length;
      await victim.send(stolen!, { transport: "udp", hostname: "127.0.0.1", port: echo });
      await waitUntil(() => server.path.changes === 2, 3000, () => "no path change");
      for (let i = 0; i < 20; i++) s.conn.send(bytes(`more-${i}-${"y".repeat(1000)}`));
      await s.inbox.waitFor(echoText(`more-19-${"y".repeat(1000)}`), 5000);
      assert.equal(server.path.changes, 3, "the client's next record moved the path back");
      await new Promise((r) => setTimeout(r, 100));
      assert.ok(
        victimBytes <= PATH_AMPLIFICATION_LIMIT * fromVictim,
        `victim got ${victimBytes} B for the ${fromVictim} B sent from its address`,
      );
      assert.equal(server.path.validated, 0);
      assert.deepEqual(s.echo.conns[0]!.remoteAddr, s.relay.upstreamFacing);
      await s.roundTrip("after-the-attack");
      console.log(
        `victim got ${victimDatagrams} datagrams, ${victimBytes} B, for ${fromVictim} B ` +
          `sent from its address; path stats ${JSON.stringify(server.path)}`,
      );
    });
  } finally {
    victim.close();
    await victimLoop;
  }
});

// ---------------------------------------------------------------------------------------------
// The record protection, against the additional data written here from RFC 9146 5.3 (not
// with our implementation's code).

function rfcAad(rec: Uint8Array, cidLength: number, innerLength: number): Uint8Array {
  const aad = new Uint8Array(23 + cidLength);
  aad.fill(0xff, 0, 8); // seq_num_placeholder
  aad[8] = 25; // tls12_cid
  aad[9] = cidLength;
  aad[10] = 25; // tls12_cid
  aad.set(rec.subarray(1, 3), 11); // version
  aad.set(rec.subarray(3, 5), 13); // epoch
  aad.set(rec.subarray(5, 11), 15); // sequence_number
  aad.set(rec.subarray(11, 11 + cidLength), 21); // cid
  new DataView(aad.buffer).setUint16(21 + cidLength, innerLength);
  return aad;
}

for (const suite of [ECDHE_PSK_CHACHA20, PSK_AES128_GCM]) {
  Deno.test(`CID record protection (${suite.name}) matches RFC 9146 5.3`, () => {
    const key = new Uint8Array(suite.keyLength).map((_, i) => i * 7 + 1);
    const iv = new Uint8Array(suite.fixedIvLength).map((_, i) => 0xa0 + i);
    const cipher = new RecordCipher(suite, key, iv);
    const header = new Uint8Array([25, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0x01, 0x02, 0, 0]);
    const cid = new Uint8Array([9, 8, 7, 6, 5, 4, 3, 2]);
    const content = new TextEncoder().encode("GET / over a connection ID");
    const rec = cipher.sealCid(header, cid, content, 23);
    // Header: type, version, epoch, sequence, cid, length.
    assert.deepEqual([...rec.subarray(0, 11)], [...header.subarray(0, 11)]);
    assert.deepEqual([...rec.subarray(11, 19)], [...cid]);
    const fragment = rec.subarray(21);
    assert.equal((rec[19]! << 8) | rec[20]!, fragment.length);
    const explicit = suite.explicitNonceLength;
    const innerLength = fragment.length - explicit - 16;
    assert.equal(innerLength, content.length + 1);
    // The nonce: AES-GCM salt || explicit (epoch||seq); ChaCha20 IV xor (0^4 || epoch||seq).
    const nonce = new Uint8Array(12);
    if (explicit) {
      nonce.set(iv.subarray(0, 4));
      nonce.set(fragment.subarray(0, 8), 4);
      assert.deepEqual([...fragment.subarray(0, 8)], [...rec.subarray(3, 11)]);
    } else {
      nonce.set(iv);
      for (let i = 0; i < 8; i++) nonce[4 + i]! ^= rec[3 + i]!;
    }
    const d = createDecipheriv(suite.algorithm as "aes-128-gcm", key, nonce, {
      authTagLength: 16,
    });
    d.setAAD(rfcAad(rec, cid.length, innerLength), { plaintextLength: innerLength });
    d.setAuthTag(fragment.subarray(fragment.length - 16));
    const inner = new Uint8Array(
      Buffer.concat([d.update(fragment.subarray(explicit, fragment.length - 16)), d.final()]),
    );
    assert.deepEqual([...inner], [...content, 23], "DTLSInnerPlaintext = content || real type");
    // And ours opens it.
    const opened = cipher.openCid(rec, cid, fragment);
    assert.deepEqual([...opened!], [...inner]);
    // A flipped CID byte breaks it (the CID is authenticated).
    const bad = rec.slice();
    bad[12]! ^= 1;
    assert.equal(cipher.openCid(bad, bad.subarray(11, 19), bad.subarray(21)), undefined);
  });
}

// ---------------------------------------------------------------------------------------------
// Negotiation, with raw ClientHellos.

async function serverHelloFor(extensions: number[]): Promise<Map<number, Uint8Array>> {
  const echo = startEchoServer(KEYS);
  const r = new Raw();
  try {
    const random = new Uint8Array(32).fill(7);
    await r.send(clientHello(random, new Uint8Array(0), 0, extensions), echo.port);
    await waitUntil(() => r.got.length > 0, 3000, () => "no HelloVerifyRequest");
    const cookie = helloVerifyCookie(r.got.shift()!)!;
    await r.send(clientHello(random, cookie, 1, extensions), echo.port);
    await waitUntil(() => r.got.length > 0, 3000, () => "no ServerHello");
    const exts = serverHelloExtensions(r.got[0]!);
    assert.ok(exts, "not a ServerHello");
    return exts;
  } finally {
    await r.close();
    await echo.close();
  }
}

const CID_EMPTY = [0x00, 54, 0x00, 0x01, 0x00]; // connection_id, cid<0..255> = empty
const RRC = [0x00, 61, 0x00, 0x00]; // rrc, empty

Deno.test("CID negotiation: offered with rrc, the server answers an 8-byte CID and rrc", async () => {
  const exts = await serverHelloFor([...EXTENDED_MASTER_SECRET, ...CID_EMPTY, ...RRC]);
  const cid = exts.get(54);
  assert.ok(cid, "no connection_id in the ServerHello");
  assert.equal(cid[0], 8);
  assert.equal(cid.length, 9);
  assert.deepEqual([...exts.get(61)!], []);
});

Deno.test("CID negotiation: offered without rrc, no CID (an address change could not be validated)", async () => {
  const exts = await serverHelloFor([...EXTENDED_MASTER_SECRET, ...CID_EMPTY]);
  assert.equal(exts.has(54), false);
  assert.equal(exts.has(61), false);
  assert.equal(exts.has(0x17), true, "the other extensions are answered as usual");
});

Deno.test("CID negotiation: a connection_id extension that does not decode fails the handshake", async () => {
  const echo = startEchoServer(KEYS);
  const r = new Raw();
  const bad = [0x00, 54, 0x00, 0x02, 0x05, 0x01]; // says 5 bytes of CID, has 1
  try {
    const random = new Uint8Array(32).fill(9);
    await r.send(clientHello(random, new Uint8Array(0), 0, [...bad, ...RRC]), echo.port);
    await waitUntil(() => r.got.length > 0, 3000, () => "no HelloVerifyRequest");
    const cookie = helloVerifyCookie(r.got.shift()!)!;
    await r.send(clientHello(random, cookie, 1, [...bad, ...RRC]), echo.port);
    await waitUntil(() => r.got.length > 0, 3000, () => "no answer");
    const alert = r.got[0]!;
    assert.equal(alert[0], 21, "an alert record");
    assert.deepEqual([alert[13], alert[14]], [2, 50], "fatal decode_error");
    assert.equal(echo.server.stats.handshakesFailed, 1);
  } finally {
    await r.close();
    await echo.close();
  }
});
