/**
 * The connector against a real DTLS server + mux + hello on 127.0.0.1 (see
 * testing/tunnel_server.ts), forwarding to a real local origin.
 */
import assert from "node:assert/strict";
import {
  Backoff,
  type BackoffOptions,
  classifyFailure,
  type ClientEvent,
  type ClientOptions,
  runClient,
} from "./connector.ts";
import { startTestServer, type TestServer } from "./testing/tunnel_server.ts";
import { readAnswer, readBytes, requestHead, within } from "./testing/tunnel.ts";
import { encodeHead } from "../shared/protocol/mod.ts";
import { type MuxSession, MuxSessionError } from "../shared/mux/mod.ts";
import { DtlsError } from "../shared/dtls/mod.ts";
import { HelloRejectedError } from "../shared/handshake/mod.ts";

const DOMAIN = "app.example.com";
const KEY = "k-0123456789abcdef";

/** Collects events; `waitFor` resolves with the first (past or future) event matching. */
class Events {
  readonly all: ClientEvent[] = [];
  #waiters: { pred: (e: ClientEvent) => boolean; resolve: (e: ClientEvent) => void }[] = [];
  #from = 0;
  readonly push = (e: ClientEvent) => {
    this.all.push(e);
    this.#waiters = this.#waiters.filter((w) => {
      if (!w.pred(e)) return true;
      w.resolve(e);
      return false;
    });
  };
  /** Waits for a matching event after the last one matched. */
  waitFor<T extends ClientEvent["type"]>(
    type: T,
    pred: (e: Extract<ClientEvent, { type: T }>) => boolean = () => true,
  ): Promise<Extract<ClientEvent, { type: T }>> {
    const match = (e: ClientEvent) =>
      e.type === type && pred(e as Extract<ClientEvent, { type: T }>);
    for (let i = this.#from; i < this.all.length; i++) {
      if (match(this.all[i]!)) {
        this.#from = i + 1;
        return Promise.resolve(this.all[i] as Extract<ClientEvent, { type: T }>);
      }
    }
    return within(
      new Promise((resolve) => {
        this.#waiters.push({
          pred: match,
          resolve: (e) => {
            this.#from = this.all.indexOf(e) + 1;
            resolve(e as Extract<ClientEvent, { type: T }>);
          },
        });
      }),
      20_000,
      `event ${type}`,
    );
  }
}

function startOrigin() {
  const srv = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => new Response(`origin saw ${req.headers.get("host")} ${new URL(req.url).pathname}`),
  );
  return { url: new URL(`http://127.0.0.1:${srv.addr.port}`), close: () => srv.shutdown() };
}

function start(
  server: { port: number },
  target: URL,
  extra: Partial<ClientOptions> = {},
) {
  const events = new Events();
  const ac = new AbortController();
  const done = runClient({
    server: { hostname: "127.0.0.1", port: server.port },
    domain: DOMAIN,
    apiKey: KEY,
    target,
    handshakeTimeoutMs: 2000,
    statsIntervalMs: 50,
    onEvent: events.push,
    ...extra,
  }, ac.signal);
  return {
    events,
    done,
    async stop() {
      ac.abort();
      await within(done, 10_000, "runClient to stop");
    },
  };
}

/** Plays the public server: one request over `session`, returns status and body text. */
async function request(session: MuxSession, path: string): Promise<[number, string]> {
  const s = session.openStream();
  const w = s.writable.getWriter();
  await w.write(encodeHead(requestHead({ url: path })));
  await w.close();
  const { head, body } = await readAnswer(s);
  assert.equal(head.t, "res");
  return [head.t === "res" ? head.status : 0, new TextDecoder().decode(await readBytes(body))];
}

async function servesRequests(engine: "hopgate" | "node-dtls-client") {
  const origin = startOrigin();
  const server = startTestServer({ keys: { [DOMAIN]: KEY } });
  const c = start(server, origin.url, { engine });
  try {
    const connected = await c.events.waitFor("connected");
    assert.equal(connected.domain, DOMAIN);
    assert.equal(connected.sessionId, "s1");
    assert.equal(connected.server, `127.0.0.1:${server.port}`);
    const session = await server.nextSession();
    assert.equal(server.hellos[0]?.domain, DOMAIN);
    assert.equal(server.hellos[0]?.target, origin.url.origin);
    // Several at once: each on its own stream.
    const answers = await Promise.all(
      ["/a", "/b", "/c"].map((p) => request(session, p)),
    );
    assert.deepEqual(answers, [
      [200, `origin saw ${DOMAIN} /a`],
      [200, `origin saw ${DOMAIN} /b`],
      [200, `origin saw ${DOMAIN} /c`],
    ]);
    const stats = await c.events.waitFor("stats", (e) => e.served === 3);
    assert.equal(stats.inFlight, 0);
    assert.equal(stats.failed, 0);
    assert.ok(stats.rttMs !== undefined && stats.rttMs >= 0);
    // Three at once took three kept-alive connections to the origin, idle now.
    assert.deepEqual(stats.local, { open: 3, idle: 3, opened: 3 });
    assert.deepEqual(await request(session, "/d"), [200, `origin saw ${DOMAIN} /d`]);
    const again = await c.events.waitFor("stats", (e) => e.served === 4);
    assert.equal(again.local.opened, 3, "the fourth request reused a connection");
  } finally {
    await c.stop();
    await server.close();
    await origin.close();
  }
  assert.equal(c.events.all.at(-1)?.type, "stopped");
  assert.ok(!c.events.all.some((e) => e.type === "failure"));
  // The server saw the session end when the client stopped.
  assert.ok(server.sessions[0]?.isClosed);
}

Deno.test("connector: connects, says hello and serves concurrent requests (hopgate DTLS)", () =>
  servesRequests("hopgate"));

Deno.test("connector: the node-dtls-client engine connects and serves too", () =>
  servesRequests("node-dtls-client"));

Deno.test("connector: a wrong API key is reported as such and backs off long", async () => {
  const server = startTestServer({ keys: { [DOMAIN]: "another-key" } });
  const c = start(server, new URL("http://127.0.0.1:9"));
  try {
    const f = await c.events.waitFor("failure");
    assert.equal(f.kind, "bad_api_key");
    assert.match(f.message, /^Bad API key/);
    assert.ok(!f.message.includes(KEY), "the key never appears");
    assert.ok(f.retryInMs >= 15_000, `retry in ${f.retryInMs} ms`);
  } finally {
    await c.stop(); // aborting the long wait returns at once
    await server.close();
  }
  assert.equal(c.events.all.filter((e) => e.type === "connecting").length, 1);
});

Deno.test("connector: a server name that does not resolve is reported as such, either engine", async () => {
  for (const engine of ["hopgate", "node-dtls-client"] as const) {
    const c = start({ port: 9 }, new URL("http://127.0.0.1:9"), {
      server: { hostname: "no-such-host.invalid", port: 9 },
      engine,
    });
    try {
      const f = await c.events.waitFor("failure");
      assert.equal(f.kind, "resolve_failed", `${engine}: ${f.message}`);
      assert.match(f.message, /^Server address unknown: .*no-such-host\.invalid/);
    } finally {
      await c.stop();
    }
  }
});

Deno.test("connector: an unregistered domain is reported as such, with either engine", async () => {
  const server = startTestServer({ keys: { "other.example.com": KEY } });
  for (const engine of ["hopgate", "node-dtls-client"] as const) {
    const c = start(server, new URL("http://127.0.0.1:9"), { engine });
    try {
      const f = await c.events.waitFor("failure");
      assert.equal(f.kind, "unknown_domain", engine);
      assert.match(f.message, /^Domain not registered: app\.example\.com/);
      assert.ok(f.retryInMs >= 15_000);
    } finally {
      await c.stop();
    }
  }
  await server.close();
});

Deno.test("connector: a version mismatch reject is reported and not retried quickly", async () => {
  const server = startTestServer({
    keys: { [DOMAIN]: KEY },
    decide: () => ({ t: "reject", code: "version_mismatch", message: "server speaks protocol 2" }),
  });
  const c = start(server, new URL("http://127.0.0.1:9"));
  try {
    const f = await c.events.waitFor("failure");
    assert.equal(f.kind, "version_mismatch");
    assert.match(f.message, /^Version mismatch: server speaks protocol 2/);
    assert.ok(f.retryInMs >= 15_000);
  } finally {
    await c.stop();
    await server.close();
  }
});

Deno.test("connector: server goes away → reports it, retries, and reconnects when it is back on the same port", async () => {
  const origin = startOrigin();
  let server: TestServer = startTestServer({ keys: { [DOMAIN]: KEY } });
  const port = server.port;
  const c = start(server, origin.url, {
    handshakeTimeoutMs: 500,
    backoff: { initialMs: 50, maxMs: 400 },
  });
  try {
    await c.events.waitFor("connected");
    await server.close();
    const lost = await c.events.waitFor("failure");
    assert.equal(lost.kind, "session_lost");
    // While it is down: at least one attempt fails as unreachable.
    const down = await c.events.waitFor("failure");
    assert.equal(down.kind, "unreachable");
    assert.match(down.message, new RegExp(`^Server 127\\.0\\.0\\.1:${port} unreachable`));
    server = startTestServer({ keys: { [DOMAIN]: KEY }, port });
    const again = await c.events.waitFor("connected");
    assert.equal(again.sessionId, "s1"); // a new server's first session
    const session = await server.nextSession();
    assert.deepEqual(await request(session, "/back"), [200, `origin saw ${DOMAIN} /back`]);
  } finally {
    await c.stop();
    await server.close();
    await origin.close();
  }
});

Deno.test("connector: backoff is exponential with jitter in the upper half, capped, reset by a long session", () => {
  const b = new Backoff({ initialMs: 500, maxMs: 30_000, resetAfterMs: 30_000 }, () => 0.999999);
  const delays = Array.from({ length: 10 }, () => b.next("unreachable"));
  assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]);
  b.sessionEnded(10_000); // short: no reset
  assert.equal(b.next("session_lost"), 30_000);
  b.sessionEnded(31_000);
  assert.equal(b.next("session_lost"), 500);
  const zero = new Backoff({}, () => 0);
  // the least jitter: half of each ceiling, so the waits still double
  assert.deepEqual([1, 2, 3, 4].map(() => zero.next("unreachable")), [250, 500, 1000, 2000]);
  assert.equal(zero.next("bad_api_key"), 15_000); // persistent: at least half the cap
  assert.equal(new Backoff({}, () => 0.999999).next("unknown_domain"), 30_000);
});

Deno.test("connector: the first retry after a lost tunnel is spread over reconnectSpreadMs", () => {
  const at = (r: number, o: BackoffOptions = {}) =>
    new Backoff(o, () => r).afterLoss("session_lost");
  // Anywhere from half the initial wait to the spread (3 s by default).
  assert.equal(at(0), 250);
  assert.equal(at(0.5), 1625);
  assert.equal(at(0.999999), 3000);
  assert.equal(at(0.999999, { reconnectSpreadMs: 10_000 }), 10_000);
  // Never past the cap, never under the initial wait's window.
  assert.equal(at(0.999999, { maxMs: 2000 }), 2000);
  assert.equal(at(0.999999, { initialMs: 20_000, maxMs: 30_000 }), 20_000);
  // Only once: a tunnel that comes up and is lost again soon backs off as usual.
  const b = new Backoff({}, () => 0.999999);
  assert.equal(b.afterLoss("session_lost"), 3000);
  b.sessionEnded(1000);
  assert.equal(b.afterLoss("session_lost"), 1000);
  assert.equal(b.afterLoss("session_lost"), 2000);
  // A long-lived tunnel lost again: spread again.
  b.sessionEnded(60_000);
  assert.equal(b.afterLoss("session_lost"), 3000);
  // A verdict that retrying cannot fix waits as long as ever.
  assert.equal(new Backoff({}, () => 0.999999).afterLoss("bad_api_key"), 30_000);
});

Deno.test("connector: classifyFailure gives one clear line per cause", () => {
  const s = "hop.example.net:4433";
  const cases: [unknown, string, RegExp][] = [
    [
      new DtlsError("HANDSHAKE_TIMEOUT", "x"),
      "unreachable",
      /^Server hop\.example\.net:4433 unreachable/,
    ],
    [
      new DtlsError("HANDSHAKE_STALLED", "x"),
      "server_busy",
      /^Server hop\.example\.net:4433 busy: it answered/,
    ],
    [new DtlsError("ALERT_RECEIVED", "x", 51), "bad_api_key", /^Bad API key/],
    [new DtlsError("ALERT_RECEIVED", "x", 115), "unknown_domain", /^Domain not registered/],
    [
      new DtlsError("RESOLVE_FAILED", "Cannot resolve nope: ENOTFOUND"),
      "resolve_failed",
      /^Server address unknown/,
    ],
    // by code, not text: a closed socket whose message mentions resolving is not a DNS failure
    [new DtlsError("CLOSED", "Cannot resolve nope"), "handshake_failed", /^DTLS handshake failed/],
    [new DtlsError("ALERT_RECEIVED", "x", 20), "bad_api_key", /^Bad API key/], // bad_record_mac
    [new DtlsError("ALERT_RECEIVED", "x", 40), "handshake_failed", /HandshakeFailure/],
    [new HelloRejectedError("server_busy", "full"), "server_busy", /^Server busy: full/],
    [new HelloRejectedError("domain_mismatch", "m"), "domain_mismatch", /^Domain mismatch/],
    [new HelloRejectedError("protocol_error", "timed out"), "protocol_error", /^Protocol error/],
    [new MuxSessionError(0, true, "bye"), "session_lost", /^Connection lost: Session closed/],
    // Text alone classifies nothing (node-dtls-client's texts become codes in dtls_node.ts).
    [
      new Error("node-dtls-client: ... failed: received fatal alert: decrypt_error"),
      "handshake_failed",
      /^Connection failed/,
    ],
    [new Error("getaddrinfo ENOTFOUND x; session"), "handshake_failed", /^Connection failed/],
  ];
  for (const [e, kind, re] of cases) {
    const f = classifyFailure(e, s, "app.example.com");
    assert.equal(f.kind, kind, String(e));
    assert.match(f.message, re);
  }
});
