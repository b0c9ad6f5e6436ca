/**
 * `ClusterMembership` on a store in memory and an injected clock: what counts as a
 * route, when a node's placements stop counting, what an outage expires (nothing),
 * what the first heartbeat after one removes (nobody), who is elected.
 */
import assert from "node:assert/strict";
import type { ClusterMessage, ClusterNode, Placement } from "../../db/mod.ts";
import { silentLogger } from "../log.ts";
import { ClusterMembership, LOST_GRACE_MS, type MembershipStore, STALE_MS } from "./membership.ts";

/** The database, as far as membership sees it: rows, a switch for an outage, the calls made. */
class FakeStore implements MembershipStore {
  nodesRows: ClusterNode[] = [];
  placementRows: Placement[] = [];
  down = false;
  heartbeats: { nodeId: string; removeStale: boolean }[] = [];
  synced: { nodeId: string; own: readonly Placement[] }[] = [];
  evicted: string[] = [];
  onMessage: ((m: ClusterMessage) => void) | undefined;
  onListen: (() => void) | undefined;

  #check() {
    if (this.down) return Promise.reject(new Error("database unavailable"));
    return Promise.resolve();
  }
  async heartbeat(nodeId: string, _relayAddr: string, _staleMs: number, removeStale = true) {
    await this.#check();
    this.heartbeats.push({ nodeId, removeStale });
    return { created: this.heartbeats.length === 1 };
  }
  async nodes() {
    await this.#check();
    return this.nodesRows.map((n) => ({ ...n }));
  }
  async placements(nodeId?: string) {
    await this.#check();
    return this.placementRows.filter((p) => nodeId === undefined || p.nodeId === nodeId);
  }
  async syncPlacements(nodeId: string, own: readonly Placement[]) {
    await this.#check();
    this.synced.push({ nodeId, own });
  }
  async leave() {}
  async evict(domain: string) {
    await this.#check();
    this.evicted.push(domain);
  }
  listen(onMessage: (m: ClusterMessage) => void, onListen: () => void) {
    this.onMessage = onMessage;
    this.onListen = onListen;
    onListen();
    return Promise.resolve({ unlisten: () => Promise.resolve() });
  }
}

const node = (id: string, startedAt: number, fresh = true): ClusterNode => ({
  id,
  relayAddr: `${id}.internal:7443`,
  startedAt: new Date(startedAt),
  heartbeatAt: new Date(startedAt),
  fresh,
});
const placement = (nodeId: string, domain: string, sessionId = `${nodeId}-${domain}`) => ({
  sessionId,
  nodeId,
  domain,
  remoteAddr: "198.51.100.7:5000",
  transport: "udp",
  connectedAt: new Date(0),
});
const settle = async () => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 0));
};

async function setup(opts: { own?: { id: string; domain: string }[] } = {}) {
  const store = new FakeStore();
  let now = 1_000_000;
  const evicted: string[] = [];
  store.nodesRows = [node("me", 3000), node("b", 1000), node("c", 2000)];
  store.placementRows = [placement("b", "app.example.com"), placement("c", "app.example.com")];
  const m = new ClusterMembership({
    store,
    nodeId: "me",
    relayAddr: "me.internal:7443",
    ownTunnels: () =>
      (opts.own ?? []).map((t) => ({
        ...t,
        remoteAddr: "192.0.2.1:1",
        transport: "udp",
        connectedAt: new Date(0),
      })),
    onEvict: (d) => evicted.push(d),
    logger: silentLogger,
    heartbeatMs: 1e9, // the test calls heartbeat() itself
    now: () => now,
  });
  await m.start();
  await settle();
  return {
    store,
    m,
    evicted,
    advance: (ms: number) => void (now += ms),
    [Symbol.asyncDispose]: () => m.close(),
  };
}

Deno.test("membership: fresh nodes' placements route round robin; the own node is not a route", async () => {
  await using s = await setup({ own: [{ id: "mine", domain: "own.example.com" }] });
  const seen = new Set([
    s.m.route("app.example.com")[0]?.nodeId,
    s.m.route("app.example.com")[0]?.nodeId,
  ]);
  assert.deepEqual([...seen].sort(), ["b", "c"]);
  assert.equal(s.m.route("app.example.com")[0]?.relayAddr.endsWith(".internal:7443"), true);
  assert.deepEqual(s.m.route("own.example.com"), []);
  assert.deepEqual(s.m.route("nobody.example.com"), []);
  assert.equal(s.m.liveNodes, 3);
  assert.equal(s.m.remoteTunnels("app.example.com").length, 2);
  // The own tunnels were written once joined.
  assert.deepEqual(s.store.synced.at(-1)?.own.map((p) => p.sessionId), ["mine"]);
});

Deno.test("membership: a node whose heartbeat is stale stops counting, its domains answer 'lost' for a while", async () => {
  await using s = await setup();
  s.advance(STALE_MS + 1); // out of the start-up grace
  s.store.placementRows = [
    placement("b", "app.example.com"),
    placement("b", "only-b.example.com"),
    placement("c", "app.example.com"),
  ];
  s.store.onMessage?.({ kind: "placements", nodeId: "b" });
  await settle();
  assert.equal(s.m.route("only-b.example.com")[0]?.nodeId, "b");
  s.store.nodesRows = [node("me", 3000), node("b", 1000, false), node("c", 2000)];
  await s.m.heartbeat();
  assert.deepEqual(s.store.heartbeats.at(-1), { nodeId: "me", removeStale: true });
  assert.deepEqual(s.m.route("only-b.example.com"), []);
  assert.equal(s.m.recentlyLost("only-b.example.com"), true);
  assert.equal(s.m.liveNodes, 2);
  assert.equal(s.m.route("app.example.com")[0]?.nodeId, "c", "c still holds one");
  assert.equal(s.m.recentlyLost("app.example.com"), false);
  // c's tunnel closes normally: no route, and not 'lost' (a 404, no client is coming back).
  s.store.placementRows = [];
  s.store.onMessage?.({ kind: "placements", nodeId: "c" });
  await settle();
  assert.deepEqual(s.m.route("app.example.com"), []);
  assert.equal(s.m.recentlyLost("app.example.com"), false);
  s.advance(LOST_GRACE_MS + 1);
  assert.equal(s.m.recentlyLost("only-b.example.com"), false);
});

Deno.test("membership: a database outage expires nothing; the first heartbeat back removes nobody", async () => {
  await using s = await setup();
  s.advance(STALE_MS + 1);
  s.store.down = true;
  await s.m.heartbeat();
  assert.equal(s.m.databaseOk, false);
  s.advance(60_000);
  await s.m.heartbeat();
  // Nothing known expired while the database was away.
  assert.ok(s.m.route("app.example.com").length > 0);
  assert.equal(s.m.liveNodes, 3);
  // Back: every other heartbeat is as old as the outage, so the database calls them stale.
  s.store.down = false;
  s.store.nodesRows = [node("me", 3000), node("b", 1000, false), node("c", 2000, false)];
  const before = s.store.synced.length;
  await s.m.heartbeat();
  await settle();
  assert.deepEqual(s.store.heartbeats.at(-1), { nodeId: "me", removeStale: false });
  assert.ok(
    s.m.route("app.example.com").length > 0,
    "known nodes stay live for one staleness period",
  );
  assert.ok(s.store.synced.length > before, "own placements written back");
  // A full staleness period later, a node that still has not written a heartbeat is dead.
  s.advance(STALE_MS + 1);
  s.store.nodesRows = [node("me", 3000), node("b", 1000), node("c", 2000, false)];
  await s.m.heartbeat();
  assert.deepEqual(s.store.heartbeats.at(-1), { nodeId: "me", removeStale: true });
  assert.deepEqual(s.m.remoteTunnels().map((p) => p.nodeId), ["b"]);
});

Deno.test("membership: a node whose heartbeat was late and is fresh again has its placements reloaded", async () => {
  await using s = await setup();
  s.advance(STALE_MS + 1);
  s.store.nodesRows = [node("me", 3000), node("b", 1000, false), node("c", 2000)];
  s.store.placementRows = [placement("c", "app.example.com"), placement("b", "b.example.com")];
  await s.m.heartbeat();
  assert.deepEqual(s.m.route("b.example.com"), []);
  // b's heartbeat comes back; its rows never changed, so it announces nothing.
  s.store.nodesRows = [node("me", 3000), node("b", 1000), node("c", 2000)];
  await s.m.heartbeat();
  assert.equal(s.m.route("b.example.com")[0]?.nodeId, "b");
});

Deno.test("membership: a burst of placement messages from one node costs two reloads", async () => {
  await using s = await setup();
  let queries = 0;
  const placements = s.store.placements.bind(s.store);
  s.store.placements = (nodeId?: string) => (queries++, placements(nodeId));
  s.store.placementRows = [placement("c", "late.example.com")];
  for (let i = 0; i < 50; i++) s.store.onMessage?.({ kind: "placements", nodeId: "c" });
  await settle();
  assert.equal(queries, 2);
  assert.equal(s.m.route("late.example.com")[0]?.nodeId, "c", "the last state is loaded");
});

Deno.test("membership: the listen connection coming back reloads every placement", async () => {
  await using s = await setup();
  s.store.placementRows = [placement("c", "new.example.com")];
  s.store.onListen?.();
  await settle();
  assert.equal(s.m.route("new.example.com")[0]?.nodeId, "c");
  assert.deepEqual(s.m.route("app.example.com"), []);
});

Deno.test("membership: a node a relay could not reach is tried last until its heartbeat tells", async () => {
  await using s = await setup();
  s.m.suspect("b");
  for (let i = 0; i < 4; i++) {
    assert.deepEqual(s.m.route("app.example.com").map((t) => t.nodeId), ["c", "b"]);
  }
  s.advance(STALE_MS + 1);
  const firsts = new Set([0, 1, 2, 3].map(() => s.m.route("app.example.com")[0]!.nodeId));
  assert.deepEqual([...firsts].sort(), ["b", "c"]);
});

Deno.test("membership: eviction messages reach onEvict; the oldest live node is the leader", async () => {
  await using s = await setup();
  s.store.onMessage?.({ kind: "evict", domain: "app.example.com" });
  assert.deepEqual(s.evicted, ["app.example.com"]);
  assert.equal(s.m.isLeader, false, "b started first");
  s.advance(STALE_MS + 1);
  s.store.nodesRows = [node("me", 3000), node("b", 1000, false), node("c", 2000, false)];
  await s.m.heartbeat();
  assert.equal(s.m.isLeader, true, "the others are dead");
});
