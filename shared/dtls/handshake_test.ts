/**
 * Our client against our server over an in-memory network: both suites, wrong and
 * unknown keys, fragmentation of flights, loss, duplication and reordering.
 * (Interop with OpenSSL, GnuTLS and node-dtls-client is in tests/dtls_interop_test.ts.)
 */
import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import {
  AlertDescription,
  derivePsk,
  type DtlsClientOptions,
  type DtlsConn,
  dtlsConnect,
  DtlsError,
  DtlsServer,
  type DtlsServerOptions,
  type SuiteName,
} from "./mod.ts";
import { MemoryNet, type MemoryNetOptions } from "./testing/memory_net.ts";

const DOMAIN = "app.example.test";
const PSK = derivePsk("the-api-key");
const SUITE_NAMES: SuiteName[] = [
  "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256",
  "TLS_PSK_WITH_AES_128_GCM_SHA256",
];

/** Starts an echo server on a memory network and runs `body`; cleans up after. */
async function withServer(
  netOpts: MemoryNetOptions,
  serverOpts: Partial<DtlsServerOptions>,
  body: (
    ctx: {
      net: MemoryNet;
      server: DtlsServer;
      connect: (o?: Partial<DtlsClientOptions>) => Promise<DtlsConn>;
    },
  ) => Promise<void>,
) {
  const net = new MemoryNet(netOpts);
  const accepted: DtlsConn[] = [];
  const server = DtlsServer.listen({
    hostname: "10.0.0.1",
    port: 5684,
    socket: net.socket,
    lookupPsk: (id) => Promise.resolve(id === DOMAIN ? PSK : undefined),
    onConnection: (c) => {
      accepted.push(c);
      c.attach({ onDatagram: (d) => c.send(new Uint8Array([...d].reverse())), onClose: () => {} });
    },
    ...serverOpts,
  });
  const clients: DtlsConn[] = [];
  const connect = async (o: Partial<DtlsClientOptions> = {}) => {
    const c = await dtlsConnect({
      hostname: "10.0.0.1",
      port: 5684,
      identity: DOMAIN,
      psk: PSK,
      handshakeTimeoutMs: 10_000,
      socket: (_host, port, handler) => net.socket("10.0.0.2", port, handler),
      ...o,
    });
    clients.push(c);
    return c;
  };
  try {
    await body({ net, server, connect });
  } finally {
    for (const c of clients) c.close();
    await server.close();
    net.close();
  }
}

/** Sends datagrams and waits for the reversed echoes. */
async function roundTrip(conn: DtlsConn, payloads: Uint8Array[]): Promise<Uint8Array[]> {
  const got: Uint8Array[] = [];
  const done = new Promise<void>((resolve) => {
    conn.attach({
      onDatagram: (d) => {
        got.push(d);
        if (got.length === payloads.length) resolve();
      },
      onClose: () => resolve(),
    });
  });
  for (const p of payloads) conn.send(p);
  await done;
  return got;
}

for (const suite of SUITE_NAMES) {
  Deno.test(`handshake completes and carries data both ways: ${suite}`, async () => {
    await withServer({}, {}, async ({ server, connect }) => {
      const c = await connect({ suites: [suite] });
      equal(c.suite, suite);
      equal(c.identity, DOMAIN);
      const got = await roundTrip(c, [
        new Uint8Array([1, 2, 3]),
        new Uint8Array(c.maxDatagramSize).fill(7),
      ]);
      deepEqual(got[0], new Uint8Array([3, 2, 1]));
      equal(got[1]!.length, c.maxDatagramSize);
      equal(server.stats.handshakesCompleted, 1);
      equal(server.stats.helloVerifyRequestsSent, 1);
    });
  });
}

// The default ceiling off loopback (1215) bounds the UDP payload at 1215 + 37 = 1252
// bytes, what a 1280-byte MTU carries over IPv4; each record fills it under its suite.
for (
  const [suite, toClient, toServer] of [
    ["TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256", 1223, 1214],
    ["TLS_PSK_WITH_AES_128_GCM_SHA256", 1215, 1206],
  ] as const
) {
  Deno.test(`a record fills the 1280-byte-MTU budget under its suite: ${suite}`, async () => {
    const largest = new Map<string, number>();
    const filter = (d: Uint8Array, from: string, to: string) => {
      const dir = `${from.split(":")[0]}>${to.split(":")[0]}`;
      largest.set(dir, Math.max(largest.get(dir) ?? 0, d.length));
      return true;
    };
    let serverConn: DtlsConn | undefined;
    const serverGot: Uint8Array[] = [];
    await withServer({ mtu: 1252, filter }, {
      onConnection: (c) => {
        serverConn = c;
        c.attach({ onDatagram: (d) => serverGot.push(d), onClose: () => {} });
      },
    }, async ({ net, connect }) => {
      const c = await connect({ suites: [suite] });
      // The client sends the server's connection ID in each record; the server none.
      equal(c.maxDatagramSize, toServer);
      equal(serverConn!.maxDatagramSize, toClient);
      const got: Uint8Array[] = [];
      const arrived = new Promise<void>((resolve) => {
        c.attach({ onDatagram: (d) => (got.push(d), resolve()), onClose: () => {} });
      });
      c.send(new Uint8Array(toServer).fill(1));
      serverConn!.send(new Uint8Array(toClient).fill(2));
      await arrived;
      while (serverGot.length === 0) await new Promise((r) => setTimeout(r, 5));
      equal(got[0]!.length, toClient);
      equal(serverGot[0]!.length, toServer);
      equal(largest.get("10.0.0.2>10.0.0.1"), 1252);
      equal(largest.get("10.0.0.1>10.0.0.2"), 1252);
      equal(net.stats.oversize, 0);
    });
  });
}

Deno.test("the server prefers ECDHE_PSK_CHACHA20 when both are offered", async () => {
  await withServer({}, {}, async ({ connect }) => {
    const c = await connect({ suites: [...SUITE_NAMES].reverse() });
    equal(c.suite, "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256");
  });
});

Deno.test("a wrong key fails with decrypt_error and leaves no session", async () => {
  await withServer({}, {}, async ({ server, connect }) => {
    const err = await rejects(connect({ psk: derivePsk("not-the-key") }), (e: unknown) => {
      ok(e instanceof DtlsError);
      equal(e.code, "ALERT_RECEIVED");
      equal(e.alert, AlertDescription.DecryptError);
      return true;
    });
    void err;
    equal(server.stats.handshakesFailed, 1);
    equal(server.connectionCount, 0);
  });
});

Deno.test("an unknown identity fails with unknown_psk_identity", async () => {
  await withServer({}, {}, async ({ server, connect }) => {
    await rejects(connect({ identity: "nobody.example.test" }), (e: unknown) => {
      ok(e instanceof DtlsError);
      equal(e.alert, AlertDescription.UnknownPskIdentity);
      return true;
    });
    equal(server.connectionCount, 0);
  });
});

Deno.test("a failing PSK lookup fails the handshake with internal_error, not a crash", async () => {
  await withServer(
    {},
    { lookupPsk: () => Promise.reject(new Error("db down")) },
    async ({ server, connect }) => {
      await rejects(
        connect(),
        (e: unknown) => e instanceof DtlsError && e.alert === AlertDescription.InternalError,
      );
      equal(server.stats.handshakesFailed, 1);
    },
  );
});

Deno.test("flights fragment to fit a small MTU and reassemble, with reordering and duplicates", async () => {
  let fragments = 0;
  let largest = 0;
  const sawFragment = (d: Uint8Array, from: string) => {
    if (from.startsWith("10.0.0.1")) largest = Math.max(largest, d.length);
    // an epoch-0 handshake record whose fragment_length < length
    if (d[0] === 22 && d[4] === 0 && d.length > 25) {
      const length = (d[14]! << 16) | (d[15]! << 8) | d[16]!;
      const fragLength = (d[22]! << 16) | (d[23]! << 8) | d[24]!;
      if (fragLength < length) fragments++;
    }
    return true;
  };
  await withServer(
    { seed: 7, reorder: 0.3, duplicate: 0.2, filter: sawFragment },
    { handshakeMtu: 70 },
    async ({ net, connect }) => {
      for (const suite of SUITE_NAMES) {
        const c = await connect({ suites: [suite], handshakeMtu: 140, initialRtoMs: 50 });
        equal(c.suite, suite);
        const got = await roundTrip(c, [new Uint8Array([9, 8])]);
        deepEqual(got[0], new Uint8Array([8, 9]));
      }
      ok(net.delivered > 0);
      ok(fragments > 0, "expected fragmented handshake messages");
      ok(largest <= 70, `server sent a ${largest}-byte datagram over a 70-byte MTU`);
    },
  );
});

Deno.test("the handshake completes at 20% loss in both directions", async () => {
  for (const seed of [1, 2, 3, 4, 5]) {
    await withServer(
      { seed, loss: 0.2 },
      { initialRtoMs: 20, maxRtoMs: 200 },
      async ({ server, connect }) => {
        const c = await connect({ initialRtoMs: 20, maxRtoMs: 200 });
        ok(c.suite.length > 0);
        equal(server.stats.handshakesCompleted, 1);
      },
    );
  }
});

Deno.test("a lost final flight is resent when the client resends its Finished", async () => {
  // Drop the first datagram the server sends after its ServerHello flight (CCS+Finished).
  let serverFlights = 0;
  await withServer(
    {
      filter: (_d, from) => {
        if (from.startsWith("10.0.0.1")) serverFlights++;
        return !(from.startsWith("10.0.0.1") && serverFlights === 3);
      },
    },
    {},
    async ({ server, connect }) => {
      const c = await connect({ initialRtoMs: 30 });
      ok(c.suite);
      ok(server.stats.flightsRetransmitted >= 1);
    },
  );
});

Deno.test("a client that never answers is timed out and gives up", async () => {
  await withServer({ loss: 1 }, {}, async ({ connect }) => {
    await rejects(
      connect({ handshakeTimeoutMs: 300, initialRtoMs: 50 }),
      (e: unknown) => e instanceof DtlsError && e.code === "HANDSHAKE_TIMEOUT",
    );
  });
});

Deno.test("close_notify closes the peer's side", async () => {
  await withServer({}, {}, async ({ server, connect }) => {
    const c = await connect();
    await roundTrip(c, [new Uint8Array([1])]);
    equal(server.connectionCount, 1);
    c.close();
    for (let i = 0; i < 50 && server.connectionCount > 0; i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
    equal(server.connectionCount, 0);
    ok(c.closed);
  });
});

Deno.test("sending more than maxDatagramSize is refused with a RangeError", async () => {
  await withServer({}, {}, async ({ connect }) => {
    const c = await connect();
    let threw = false;
    try {
      c.send(new Uint8Array(c.maxDatagramSize + 1));
    } catch (e) {
      threw = e instanceof RangeError;
    }
    ok(threw);
  });
});
