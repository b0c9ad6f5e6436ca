/**
 * Stateless resets over real UDP sockets on 127.0.0.1: a server that "crashed" (its
 * socket stops sending, so no close_notify leaves) and came back on the same port
 * with the same key closes the client's connection with its first answer; one with
 * another key, or a third party, cannot. The server's side: no reset for records no
 * larger than the reset, none over its budget, none without a key, and each reset
 * carries exactly the token of the CID it answers.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { randomBytes } from "node:crypto";
import {
  derivePsk,
  type DtlsClientConn,
  type DtlsConn,
  dtlsConnect,
  DtlsServer,
  type DtlsServerOptions,
  encodeStatelessReset,
  STATELESS_RESET_LENGTH,
  statelessResetToken,
} from "./mod.ts";
import { bindUdp, type PacketSocketFactory } from "./udp.ts";
import type { Connection } from "./connection.ts";

const DOMAIN = "app.reset.test";
const PSK = derivePsk("reset-api-key");

/** A real UDP socket whose sends can be cut (a process that died sends nothing more). */
function cuttable(): { factory: PacketSocketFactory; cut: () => void } {
  let mute = false;
  return {
    factory: (hostname, port, handler) => {
      const s = bindUdp(hostname, port, handler);
      return {
        get addr() {
          return s.addr;
        },
        send: (d, to) => {
          if (!mute) s.send(d, to);
        },
        close: () => s.close(),
        done: s.done,
      };
    },
    cut: () => mute = true,
  };
}

/** An echo server on 127.0.0.1:`port` (0: any). */
function echoServer(port: number, extra: Partial<DtlsServerOptions> = {}) {
  const accepted: DtlsConn[] = [];
  const socket = cuttable();
  const server = DtlsServer.listen({
    hostname: "127.0.0.1",
    port,
    socket: socket.factory,
    lookupPsk: (id) => Promise.resolve(id === DOMAIN ? PSK : undefined),
    onConnection: (c) => {
      accepted.push(c);
      c.attach({ onDatagram: (d) => c.send(d), onClose: () => {} });
    },
    ...extra,
  });
  /** Dies: nothing more leaves its socket, then it is gone. */
  const crash = async () => {
    socket.cut();
    await server.close();
  };
  return { server, accepted, crash };
}

/** Sends `payload` and resolves with the echo, or with the close reason. */
function exchange(conn: DtlsClientConn, payload: Uint8Array, ms = 2000) {
  return new Promise<{ echo?: Uint8Array; closed?: string }>((resolve) => {
    const t = setTimeout(() => resolve({}), ms);
    conn.attach({
      onDatagram: (d) => {
        clearTimeout(t);
        resolve({ echo: d });
      },
      onClose: (reason) => {
        clearTimeout(t);
        resolve({ closed: reason });
      },
    });
    conn.send(payload);
  });
}

Deno.test("stateless reset: the restarted server's first answer closes the client; another key or a third party cannot", async () => {
  const key = new Uint8Array(randomBytes(32));
  const first = echoServer(0, { statelessReset: { key } });
  const port = first.server.addr.port;
  const client = await dtlsConnect({ hostname: "127.0.0.1", port, identity: DOMAIN, psk: PSK });
  const attacker = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  let later: ReturnType<typeof echoServer> | undefined;
  try {
    // The server's own view of it: its CID is what the client puts in its records.
    const conn = first.accepted[0] as Connection;
    const token = conn.statelessResetToken!;
    equal(token.length, 16);
    deepEqual(token, statelessResetToken(key, conn.receiveCid));
    client.expectStatelessReset!(token);
    deepEqual((await exchange(client, new Uint8Array([1, 2, 3]))).echo, new Uint8Array([1, 2, 3]));

    // A reset from a third party (another address, a guessed token) does not reach the
    // connection: the client's socket takes datagrams from its server only.
    const to = { transport: "udp" as const, ...client.localAddr };
    const strangers = client.stats.dropped.noSession;
    await attacker.send(encodeStatelessReset(new Uint8Array(16).fill(7)), to);
    deepEqual((await exchange(client, new Uint8Array([4]))).echo, new Uint8Array([4]));
    equal(client.stats.dropped.noSession, strangers + 1);
    equal(client.stats.statelessResets.wrongToken + client.stats.statelessResets.received, 0);

    // The server dies (no close_notify) and another process takes the port with
    // another key: its reset does not match, the client's connection stays.
    await first.crash();
    later = echoServer(port, { statelessReset: { key: new Uint8Array(randomBytes(32)) } });
    equal((await exchange(client, new Uint8Array(64), 500)).closed, undefined);
    equal(later.server.stats.statelessResets.sent, 1);
    equal(client.stats.statelessResets.wrongToken, 1);
    await later.crash();

    // Back with the same key: the first record the client sends is answered with the
    // reset, and the connection closes at once.
    later = echoServer(port, { statelessReset: { key } });
    const t0 = performance.now();
    const r = await exchange(client, new Uint8Array(64));
    const ms = performance.now() - t0;
    match(r.closed ?? "", /stateless reset/);
    ok(ms < 500, `closed ${ms.toFixed(0)} ms after its record`);
    equal(client.stats.statelessResets.received, 1);
    equal(later.server.stats.statelessResets.sent, 1);
    equal(later.server.stats.dropped.unknownCid, 1);
  } finally {
    client.close();
    attacker.close();
    await first.crash().catch(() => {});
    await later?.crash().catch(() => {});
  }
});

/** A CID record (as a client sends after the handshake) for `cid`, `size` bytes long. */
function cidRecord(cid: Uint8Array, size: number): Uint8Array {
  const r = new Uint8Array(size);
  r.set([25, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9]);
  r.set(cid, 11);
  const len = size - 13 - cid.length;
  r[11 + cid.length] = len >> 8;
  r[12 + cid.length] = len & 0xff;
  return r;
}

Deno.test("stateless reset: only for records larger than the reset, within the budget, with a key; each carries its CID's token", async () => {
  const key = new Uint8Array(randomBytes(32));
  const limited = echoServer(0, {
    statelessReset: { key, rate: { burst: 2, perSecond: 0.01 } },
  });
  const keyless = echoServer(0);
  const peer = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const received: Uint8Array[] = [];
  const reading = (async () => {
    try {
      for (;;) received.push((await peer.receive())[0]);
    } catch { /* closed */ }
  })();
  const sendTo = (s: DtlsServer, d: Uint8Array) =>
    peer.send(d, { transport: "udp", hostname: "127.0.0.1", port: s.addr.port });
  try {
    // The server's CIDs are 8 bytes.
    const cids = [1, 2, 3, 4].map(() => new Uint8Array(randomBytes(8)));
    // Exactly as large as a reset: not answered (a reset never outgrows what caused it).
    await sendTo(limited.server, cidRecord(cids[0]!, STATELESS_RESET_LENGTH));
    // Larger: answered, twice (the burst), then over the budget; a CID answered just
    // before is not answered again (nor does it spend the budget).
    for (const cid of [cids[1]!, cids[1]!, cids[2]!, cids[3]!]) {
      await sendTo(limited.server, cidRecord(cid, 60));
    }
    await sendTo(keyless.server, cidRecord(cids[0]!, 60));
    const end = performance.now() + 2000;
    while (received.length < 2 && performance.now() < end) {
      await new Promise((r) => setTimeout(r, 20));
    }
    await new Promise((r) => setTimeout(r, 200)); // nothing more comes
    deepEqual(received, [
      encodeStatelessReset(statelessResetToken(key, cids[1]!)),
      encodeStatelessReset(statelessResetToken(key, cids[2]!)),
    ]);
    deepEqual(limited.server.stats.statelessResets, {
      sent: 2,
      limited: 1,
      repeated: 1,
      received: 0,
      wrongToken: 0,
    });
    equal(limited.server.stats.dropped.unknownCid, 5);
    equal(keyless.server.stats.statelessResets.sent, 0);
    equal(keyless.server.stats.dropped.unknownCid, 1);
  } finally {
    peer.close();
    await reading;
    await limited.crash();
    await keyless.crash();
  }
});

Deno.test("stateless reset: a CID is answered once per 500 ms, however many of its records arrive", async () => {
  const key = new Uint8Array(randomBytes(32));
  const s = echoServer(0, { statelessReset: { key } });
  const peer = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const to = { transport: "udp" as const, hostname: "127.0.0.1", port: s.server.addr.port };
  const cid = new Uint8Array(randomBytes(8));
  const received: Uint8Array[] = [];
  const reading = (async () => {
    try {
      for (;;) received.push((await peer.receive())[0]);
    } catch { /* closed */ }
  })();
  const waitFor = async (n: number) => {
    const end = performance.now() + 2000;
    while (received.length < n && performance.now() < end) {
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  try {
    // A client that was sending fast: 50 records in flight when the server restarted.
    for (let i = 0; i < 50; i++) await peer.send(cidRecord(cid, 100), to);
    await waitFor(1);
    await new Promise((r) => setTimeout(r, 100));
    equal(received.length, 1);
    equal(s.server.stats.statelessResets.repeated, 49);
    // Its reset was lost, say: a record 600 ms later is answered again.
    await new Promise((r) => setTimeout(r, 600));
    await peer.send(cidRecord(cid, 100), to);
    await waitFor(2);
    equal(received.length, 2);
    deepEqual(received[1], encodeStatelessReset(statelessResetToken(key, cid)));
    equal(s.server.stats.statelessResets.sent, 2);
  } finally {
    peer.close();
    await reading;
    await s.crash();
  }
});
