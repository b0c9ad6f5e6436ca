/**
 * The relay listener's bounds against peers that do not follow the greeting, over
 * real loopback sockets: silence, an endless line, too many connections, a wrong
 * proof; and a right proof for a domain with no tunnel here (never relayed on).
 */
import assert from "node:assert/strict";
import { silentLogger } from "../log.ts";
import { ConnReader, line, MAX_LINE_BYTES, relayProof } from "./relay_wire.ts";
import { type IncomingRelayError, RelayListener } from "./relay_server.ts";

const KEY = new Uint8Array(32).fill(3);

function listen(maxConnections = 4, idleTimeoutMs = 30_000) {
  const refused: IncomingRelayError[] = [];
  const listener = new RelayListener({
    hostname: "127.0.0.1",
    port: 0,
    nodeId: "receiver",
    key: KEY,
    pick: () => undefined,
    maxConnections,
    greetingTimeoutMs: 200,
    idleTimeoutMs,
    logger: silentLogger,
    refused: (r) => refused.push(r),
    accepted: () => {},
  });
  return { listener, refused };
}

async function dial(l: RelayListener) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: l.addr.port });
  const reader = new ConnReader(conn);
  const [magic, challenge, receiver] = (await reader.readLine()).split(" ");
  return { conn, reader, magic, challenge: challenge!, receiver: receiver! };
}

Deno.test("relay listener: a silent peer is refused after the greeting timeout, counted", async () => {
  const { listener, refused } = listen();
  try {
    const c = await dial(listener);
    assert.equal(c.magic, "HOPGATE-RELAY/1");
    assert.match(c.challenge, /^[0-9a-f]{32}$/);
    const t0 = performance.now();
    assert.match(await c.reader.readLine(), /^ERR bad_greeting /);
    assert.ok(performance.now() - t0 < 2000);
    assert.equal(await c.reader.read(), null);
    c.conn.close();
    assert.deepEqual(refused, ["in_greeting_timeout"]);
  } finally {
    await listener.close();
  }
});

Deno.test("relay listener: a line past the bound is refused without waiting for more", async () => {
  const { listener, refused } = listen();
  try {
    const c = await dial(listener);
    await c.conn.write(new Uint8Array(MAX_LINE_BYTES + 100).fill(0x61));
    assert.match(await c.reader.readLine(), /^ERR bad_greeting /);
    c.conn.close();
    assert.deepEqual(refused, ["in_bad_greeting"]);
  } finally {
    await listener.close();
  }
});

Deno.test("relay listener: connections beyond the cap are refused busy, counted", async () => {
  const { listener, refused } = listen(2);
  try {
    const held = [await dial(listener), await dial(listener)];
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
    const reader = new ConnReader(conn);
    assert.match(await reader.readLine(), /^ERR busy /);
    conn.close();
    assert.deepEqual(refused, ["in_max_relays"]);
    assert.equal(listener.size, 2);
    for (const h of held) h.conn.close();
  } finally {
    await listener.close();
  }
});

Deno.test("relay listener: a wrong proof is refused; a right one for a domain with no tunnel here is not relayed on", async () => {
  const { listener, refused } = listen();
  try {
    const bad = await dial(listener);
    const wrong = relayProof(new Uint8Array(32), bad.challenge, bad.receiver, "s");
    await bad.conn.write(line(`s ${wrong}`));
    assert.match(await bad.reader.readLine(), /^ERR auth_failed /);
    bad.conn.close();
    const good = await dial(listener);
    const proof = relayProof(KEY, good.challenge, good.receiver, "s");
    await good.conn.write(line(`s ${proof}`));
    await good.conn.write(line("a.example.com"));
    assert.match(await good.reader.readLine(), /^ERR no_tunnel /);
    good.conn.close();
    assert.deepEqual(refused, ["in_auth_failed", "in_no_tunnel"]);
  } finally {
    await listener.close();
  }
});

Deno.test("relay listener: an authenticated connection that carries nothing is closed after the idle bound", async () => {
  const { listener, refused } = listen(4, 300);
  try {
    const c = await dial(listener);
    await c.conn.write(line(`s ${relayProof(KEY, c.challenge, c.receiver, "s")}`));
    const t0 = performance.now();
    assert.equal(await c.reader.read(), null, "closed without an answer");
    assert.ok(performance.now() - t0 >= 250);
    assert.equal(listener.size, 0);
    assert.deepEqual(refused, []);
    c.conn.close();
  } finally {
    await listener.close();
  }
});
