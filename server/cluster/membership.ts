/**
 * This node's view of the cluster: its own row and placements in PostgreSQL, and
 * every other node's placements cached in memory, so routing a request costs no
 * query (docs/cluster.md).
 *
 *   every HEARTBEAT_MS   heartbeat (and remove stale nodes) ─► reload the node list
 *   tunnel up / down     sync own placements (coalesced), NOTIFY p:<me>
 *   NOTIFY p:<node>      reload that node's placements
 *   NOTIFY n             reload the node list
 *   NOTIFY e:<domain>    close the domain's tunnels here, forget its PSK
 *   LISTEN (re)connected reload everything (notifications sent meanwhile are lost)
 *
 * A placement counts only while its node's heartbeat is fresh (by the database's
 * clock, at the last reload). While the database is unreachable nothing is
 * expired: the tunnels here keep serving, relays go by the last known placements,
 * and once the database answers again the own row and placements are written
 * back and everyone else's are reloaded.
 */
import type { ClusterMessage, ClusterNode, ClusterStore, Placement } from "../../db/mod.ts";
import type { Logger } from "../log.ts";
import type { RelayTarget } from "./relay_client.ts";

/** Heartbeat period. */
export const HEARTBEAT_MS = 2000;
/** A node whose heartbeat is older than this is dead: its placements stop counting, its rows go. */
export const STALE_MS = 6000;
/**
 * How long a domain whose tunnel was on a node that died answers 503 (the client
 * is reconnecting) instead of 404 (no tunnel at all), unless a tunnel comes back.
 */
export const LOST_GRACE_MS = 60_000;
/** Domains remembered as lost at most (bounded memory; the oldest goes first). */
const MAX_LOST = 100_000;

/** A local tunnel as the cluster records it. */
export interface OwnTunnel {
  readonly id: string;
  readonly domain: string;
  readonly remoteAddr: string;
  readonly transport: string;
  readonly connectedAt: Date;
}

/** What membership needs of the database (`ClusterStore` fits; tests pass a fake). */
export type MembershipStore = Pick<
  ClusterStore,
  "heartbeat" | "nodes" | "placements" | "syncPlacements" | "leave" | "evict" | "listen"
>;

/** What a `ClusterMembership` is built from. */
export interface ClusterMembershipOptions {
  store: MembershipStore;
  /** This node's id (random per start). */
  nodeId: string;
  /** `host:port` other nodes dial (`HOP_CLUSTER_ADVERTISE`). */
  relayAddr: string;
  /** The tunnels held here now. */
  ownTunnels: () => Iterable<OwnTunnel>;
  /** Another node asked to evict `domain` (its key changed or went away). */
  onEvict: (domain: string) => void;
  logger: Logger;
  heartbeatMs?: number;
  staleMs?: number;
  /** Clock for the lost-domain grace, in ms. */
  now?: () => number;
}

interface KnownNode {
  relayAddr: string;
  startedAt: Date;
  fresh: boolean;
}

/** Membership, placements and the cluster channel for one node. */
export class ClusterMembership {
  readonly nodeId: string;
  readonly #o: ClusterMembershipOptions;
  readonly #now: () => number;
  readonly #nodes = new Map<string, KnownNode>();
  /** Other nodes' placements, by node. */
  readonly #placements = new Map<string, Placement[]>();
  /** Domain → nodes (fresh ones only) with a tunnel for it; rebuilt on every change. */
  #routes = new Map<string, RelayTarget[]>();
  readonly #lost = new Map<string, number>();
  /** Placement reloads in flight, by node: whether another was asked for meanwhile. */
  readonly #reloading = new Map<string, boolean>();
  /**
   * Placement queries are numbered when sent; per node, the number of the answer in
   * use. Answers can come back out of order (pooled connections), and an older one
   * must never replace a newer one: a node's placements are announced once.
   */
  #querySeq = 0;
  /** Shutting down: the own placements are announced empty (`withdraw`). */
  #withdrawn = false;
  readonly #appliedSeq = new Map<string, number>();
  /** The query number of the latest reload of all placements applied. */
  #reloadedAllSeq = 0;
  /** Nodes a relay could not reach lately, until when. */
  readonly #suspects = new Map<string, number>();
  #rr = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #unlisten: (() => Promise<void>) | undefined;
  #syncing: Promise<void> | undefined;
  #syncAgain = false;
  /** The own row or placements may be missing from the database (a failure, a removal). */
  #needsSync = true;
  #dbOk = true;
  /**
   * Start, or the database coming back after an outage: for one staleness period
   * from then, no node is removed and a node known to be live stays live, because
   * every node's heartbeat is as old as the outage until each writes its next one.
   */
  #graceFrom: number;
  #closed = false;
  /** Counters for metrics. */
  readonly stats = { heartbeatFailures: 0, reloads: 0, evictionsReceived: 0 };

  constructor(o: ClusterMembershipOptions) {
    this.#o = o;
    this.nodeId = o.nodeId;
    this.#now = o.now ?? (() => performance.now());
    this.#graceFrom = this.#now();
  }

  /** Joins: heartbeat, LISTEN (which loads everything), own placements; then the timer. */
  async start(): Promise<void> {
    await this.heartbeat();
    const { unlisten } = await this.#o.store.listen(
      (m) => this.#onMessage(m),
      () => void this.#reloadAll("listen connection established"),
    );
    this.#unlisten = unlisten;
    this.#schedule();
  }

  /**
   * Shutting down: announces no tunnels here from now on (this node's tunnels still
   * serve what other nodes already relayed), so that they route to other nodes
   * before this one's tunnels close. Resolves once written (or failed: best effort).
   */
  async withdraw(): Promise<void> {
    this.#withdrawn = true;
    await this.#syncing?.catch(() => {});
    this.ownChanged();
    await this.#syncing?.catch(() => {});
  }

  /** Leaves: stops the timer and LISTEN, removes the own row (best effort). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    await this.#unlisten?.().catch(() => {});
    await this.#syncing?.catch(() => {});
    await this.#o.store.leave(this.nodeId).catch(() => {});
  }

  /** The own tunnels changed: write them (coalesced; retried after failures). */
  ownChanged(): void {
    if (this.#closed) return;
    if (this.#syncing) {
      this.#syncAgain = true;
      return;
    }
    this.#syncing = this.#sync().finally(() => {
      this.#syncing = undefined;
      if (this.#syncAgain) {
        this.#syncAgain = false;
        this.ownChanged();
      }
    });
  }

  /**
   * The nodes holding a tunnel for `domain` (fresh ones), in the order to try them:
   * round robin, nodes that failed a relay lately last. Empty if none.
   */
  route(domain: string): RelayTarget[] {
    const targets = this.#routes.get(domain);
    if (!targets || targets.length === 0) return [];
    if (targets.length === 1) return targets;
    const k = this.#rr++ % targets.length;
    const ordered = [...targets.slice(k), ...targets.slice(0, k)];
    if (this.#suspects.size === 0) return ordered;
    const now = this.#now();
    const ok = (t: RelayTarget) => !((this.#suspects.get(t.nodeId) ?? 0) > now);
    return [...ordered.filter(ok), ...ordered.filter((t) => !ok(t))];
  }

  /**
   * A relay to `nodeId` could not connect: try it last for a staleness period
   * (by then its heartbeat says whether it is alive).
   */
  suspect(nodeId: string): void {
    this.#suspects.set(nodeId, this.#now() + (this.#o.staleMs ?? STALE_MS));
    if (this.#suspects.size > 1000) this.#suspects.delete(this.#suspects.keys().next().value!);
  }

  /** Whether `domain`'s tunnel was on a node that died within `LOST_GRACE_MS`. */
  recentlyLost(domain: string): boolean {
    const until = this.#lost.get(domain);
    if (until === undefined) return false;
    if (until > this.#now()) return true;
    this.#lost.delete(domain);
    return false;
  }

  /** Nodes with a fresh heartbeat, this one included. */
  get liveNodes(): number {
    let n = 0;
    for (const node of this.#nodes.values()) if (node.fresh) n++;
    return this.#nodes.has(this.nodeId) ? n : n + 1;
  }

  /** The own node is the oldest live node (renewals and other once-per-cluster work run here). */
  get isLeader(): boolean {
    const me = this.#nodes.get(this.nodeId);
    if (!me) return false;
    for (const [id, n] of this.#nodes) {
      if (id === this.nodeId || !n.fresh) continue;
      if (n.startedAt < me.startedAt || (+n.startedAt === +me.startedAt && id < this.nodeId)) {
        return false;
      }
    }
    return true;
  }

  /** Whether the last database call of the cluster worked. */
  get databaseOk(): boolean {
    return this.#dbOk;
  }

  /** Other nodes' tunnels (fresh nodes), with their node. */
  remoteTunnels(domain?: string): Placement[] {
    const out: Placement[] = [];
    for (const [nodeId, ps] of this.#placements) {
      if (!this.#nodes.get(nodeId)?.fresh) continue;
      for (const p of ps) if (domain === undefined || p.domain === domain) out.push(p);
    }
    return out;
  }

  /** Tells every node to close `domain`'s tunnels and forget its PSK (NOTIFY). */
  evict(domain: string): Promise<void> {
    return this.#o.store.evict(domain);
  }

  #schedule(): void {
    if (this.#closed) return;
    this.#timer = setTimeout(async () => {
      await this.heartbeat();
      this.#schedule();
    }, this.#o.heartbeatMs ?? HEARTBEAT_MS);
  }

  /**
   * One heartbeat now (the timer runs one every `heartbeatMs`): writes it, removes
   * stale nodes (outside the grace period), reloads the node list; after an outage,
   * writes the own placements back and reloads everything.
   */
  async heartbeat(): Promise<void> {
    const staleMs = this.#o.staleMs ?? STALE_MS;
    try {
      // Computed before the call: the first heartbeat after an outage removes nobody.
      const removeStale = !this.#inGrace();
      const { created } = await this.#o.store.heartbeat(
        this.nodeId,
        this.#o.relayAddr,
        staleMs,
        removeStale,
      );
      if (!this.#dbOk) {
        this.#graceFrom = this.#now();
        this.#o.logger.info("cluster database reachable again: reconciling", {
          component: "cluster",
        });
      }
      const wasDown = !this.#dbOk;
      this.#dbOk = true;
      if (created || this.#needsSync) this.ownChanged();
      if (wasDown) await this.#reloadAll("database back");
      else await this.#reloadNodes();
    } catch (e) {
      this.stats.heartbeatFailures++;
      this.#needsSync = true;
      if (this.#dbOk) {
        this.#o.logger.warn("cluster heartbeat failed: serving from the placements in memory", {
          component: "cluster",
          error: String(e),
        });
      }
      this.#dbOk = false;
    }
  }

  async #sync(): Promise<void> {
    const own: Placement[] = [];
    for (const t of this.#withdrawn ? [] : this.#o.ownTunnels()) {
      own.push({
        sessionId: t.id,
        nodeId: this.nodeId,
        domain: t.domain,
        remoteAddr: t.remoteAddr,
        transport: t.transport,
        connectedAt: t.connectedAt,
      });
    }
    try {
      this.#needsSync = false;
      await this.#o.store.syncPlacements(this.nodeId, own);
    } catch (e) {
      // The next heartbeat that works writes them again.
      this.#needsSync = true;
      if (this.#dbOk) {
        this.#o.logger.warn("cluster placements not written; retrying", {
          component: "cluster",
          error: String(e),
        });
      }
    }
  }

  #onMessage(m: ClusterMessage): void {
    if (this.#closed) return;
    switch (m.kind) {
      case "nodes":
        void this.#reloadNodes().catch(() => {});
        return;
      case "placements":
        if (m.nodeId === this.nodeId) return;
        this.#placementsChanged(m.nodeId);
        return;
      case "evict":
        this.stats.evictionsReceived++;
        this.#o.onEvict(m.domain);
        return;
    }
  }

  async #reloadAll(why: string): Promise<void> {
    try {
      const seq = ++this.#querySeq;
      const [nodes, placements] = await Promise.all([
        this.#o.store.nodes(this.#o.staleMs ?? STALE_MS),
        this.#o.store.placements(),
      ]);
      this.stats.reloads++;
      this.#reloadedAllSeq = Math.max(this.#reloadedAllSeq, seq);
      const byNode = new Map<string, Placement[]>();
      for (const p of placements) {
        if (p.nodeId === this.nodeId) continue;
        let list = byNode.get(p.nodeId);
        if (!list) byNode.set(p.nodeId, list = []);
        list.push(p);
      }
      // Nodes whose placements were loaded by a later query keep those.
      for (const id of [...this.#placements.keys()]) {
        if ((this.#appliedSeq.get(id) ?? 0) < seq) this.#placements.delete(id);
      }
      for (const [id, list] of byNode) {
        if ((this.#appliedSeq.get(id) ?? 0) > seq) continue;
        this.#placements.set(id, list);
        this.#appliedSeq.set(id, seq);
      }
      this.#setNodes(nodes);
      this.#o.logger.debug("cluster reloaded", {
        component: "cluster",
        why,
        nodes: nodes.length,
        placements: placements.length,
      });
    } catch (e) {
      this.#o.logger.warn("cluster reload failed", { component: "cluster", why, error: String(e) });
    }
  }

  async #reloadNodes(): Promise<void> {
    const nodes = await this.#o.store.nodes(this.#o.staleMs ?? STALE_MS);
    // A node seen for the first time (its placements may have been announced before
    // this node listened), or live again after its heartbeat was late (its placements
    // were dropped here, and its rows may never have changed): load its placements.
    const load = nodes.filter((n) =>
      n.id !== this.nodeId && n.fresh && this.#nodes.get(n.id)?.fresh !== true
    );
    this.#setNodes(nodes);
    // Through the per-node queue, so that this load and an announced one never race.
    for (const n of load) this.#placementsChanged(n.id);
  }

  /**
   * A node announced new placements: one reload at a time per node, and one more
   * after it for everything announced meanwhile (a burst of reconnecting tunnels
   * costs two queries, not one per tunnel).
   */
  #placementsChanged(nodeId: string): void {
    if (this.#reloading.has(nodeId)) {
      this.#reloading.set(nodeId, true);
      return;
    }
    this.#reloading.set(nodeId, false);
    void this.#reloadPlacements(nodeId).catch(() => {}).finally(() => {
      const again = this.#reloading.get(nodeId);
      this.#reloading.delete(nodeId);
      if (again && !this.#closed) this.#placementsChanged(nodeId);
    });
  }

  async #reloadPlacements(nodeId: string): Promise<void> {
    const seq = ++this.#querySeq;
    const ps = await this.#o.store.placements(nodeId);
    // A later answer is in use, or a later reload of all placements (which may have
    // found none for this node, and so stamped no answer for it).
    if ((this.#appliedSeq.get(nodeId) ?? 0) > seq || this.#reloadedAllSeq > seq) return;
    this.#appliedSeq.set(nodeId, seq);
    if (ps.length === 0) this.#placements.delete(nodeId);
    else this.#placements.set(nodeId, ps);
    if (!this.#nodes.has(nodeId)) {
      await this.#reloadNodes();
      return;
    }
    this.#rebuild();
  }

  /** Takes a fresh node list; placements of nodes that died are dropped (their domains "lost"). */
  #setNodes(nodes: ClusterNode[]): void {
    const seen = new Set<string>();
    const grace = this.#inGrace();
    for (const n of nodes) {
      seen.add(n.id);
      const fresh = n.fresh || (grace && this.#nodes.get(n.id)?.fresh === true);
      if (!fresh) this.#dropNode(n.id);
      this.#nodes.set(n.id, { relayAddr: n.relayAddr, startedAt: n.startedAt, fresh });
    }
    for (const id of [...this.#nodes.keys()]) {
      if (!seen.has(id)) {
        // Gone: left (its placements were announced empty first) or removed as stale.
        this.#dropNode(id);
        this.#nodes.delete(id);
        this.#appliedSeq.delete(id);
      }
    }
    this.#rebuild();
  }

  /** In an outage (as far as this node knows), or within a staleness period after one. */
  #inGrace(): boolean {
    return !this.#dbOk || this.#now() - this.#graceFrom < (this.#o.staleMs ?? STALE_MS);
  }

  #dropNode(id: string): void {
    const ps = this.#placements.get(id);
    if (!ps) return;
    this.#placements.delete(id);
    const until = this.#now() + LOST_GRACE_MS;
    for (const p of ps) {
      this.#lost.delete(p.domain);
      if (this.#lost.size >= MAX_LOST) this.#lost.delete(this.#lost.keys().next().value!);
      this.#lost.set(p.domain, until);
    }
  }

  #rebuild(): void {
    const routes = new Map<string, RelayTarget[]>();
    for (const [nodeId, ps] of this.#placements) {
      const node = this.#nodes.get(nodeId);
      if (!node?.fresh) continue;
      const target = { nodeId, relayAddr: node.relayAddr };
      for (const p of ps) {
        let list = routes.get(p.domain);
        if (!list) routes.set(p.domain, list = []);
        if (!list.some((t) => t.nodeId === nodeId)) list.push(target);
        this.#lost.delete(p.domain);
      }
    }
    this.#routes = routes;
  }
}
