/**
 * Cluster membership and tunnel placements in PostgreSQL (docs/cluster.md).
 *
 *   cluster_nodes      one row per running node: relay address, heartbeat
 *   tunnel_placements  one row per live tunnel: domain -> node, session
 *
 * Every change is published with `NOTIFY hopgate_cluster` in the same transaction
 * as the write, so a listener that reloads on a message sees the committed rows.
 * Messages (at most a few hundred bytes):
 *
 * | payload         | meaning                                          |
 * |-----------------|--------------------------------------------------|
 * | `p:<node id>`   | that node's placements changed: reload them      |
 * | `n`             | a node joined or left: reload the node list      |
 * | `e:<domain>`    | the domain's key changed or went away: evict it  |
 *
 * Freshness is judged by the database's clock (`now()`), never the nodes', so
 * clock skew between nodes does not make a node look dead or alive.
 */
import { and, eq, notInArray, sql } from "drizzle-orm";
import type { Database, Listener } from "./database.ts";
import { QueryGuard } from "./guard.ts";
import { clusterNodes, tunnelPlacements } from "./schema.ts";

/** The NOTIFY channel every node LISTENs on. */
export const CLUSTER_CHANNEL = "hopgate_cluster";

/** One node as the database last saw it. */
export interface ClusterNode {
  /** Random per process start. */
  id: string;
  /** `host:port` of its private relay listener. */
  relayAddr: string;
  /** When it first wrote its row. */
  startedAt: Date;
  /** Its last heartbeat (the database's clock). */
  heartbeatAt: Date;
  /** Its heartbeat is younger than the staleness bound (by the database's clock). */
  fresh: boolean;
}

/** One live tunnel, on some node. */
export interface Placement {
  /** The tunnel session's id (unique across nodes: a random UUID). */
  sessionId: string;
  /** The node that holds it. */
  nodeId: string;
  /** The domain it serves (canonical form). */
  domain: string;
  /** The client's address as `host:port`, as that node sees it. */
  remoteAddr: string;
  /** "udp" or "ws". */
  transport: string;
  /** When the tunnel was established. */
  connectedAt: Date;
}

/** A cluster message, decoded (see the module comment). */
export type ClusterMessage =
  | { kind: "placements"; nodeId: string }
  | { kind: "nodes" }
  | { kind: "evict"; domain: string };

/** Decodes a NOTIFY payload; undefined for anything else (ignored). */
export function decodeClusterMessage(payload: string): ClusterMessage | undefined {
  if (payload === "n") return { kind: "nodes" };
  if (payload.startsWith("p:") && payload.length > 2) {
    return { kind: "placements", nodeId: payload.slice(2) };
  }
  if (payload.startsWith("e:") && payload.length > 2 && payload.length <= 255) {
    return { kind: "evict", domain: payload.slice(2) };
  }
  return undefined;
}

/** The `cluster_nodes` and `tunnel_placements` tables, and the channel that announces changes. */
export class ClusterStore {
  readonly #db: Database;
  readonly #guard: QueryGuard;
  readonly #listener: Listener;

  /** A store over `db` (PostgreSQL only: `listener` is its LISTEN connection). */
  constructor(db: Database, guard: QueryGuard, listener: Listener) {
    this.#db = db;
    this.#guard = guard;
    this.#listener = listener;
  }

  /**
   * Records this node's heartbeat (creating its row if it is missing: first
   * start, or another node removed it while this one could not reach the
   * database), and, with `removeStale`, removes every node whose heartbeat is
   * older than `staleMs` (their placements go with them). Returns whether the own
   * row was created.
   */
  heartbeat(
    nodeId: string,
    relayAddr: string,
    staleMs: number,
    removeStale = true,
  ): Promise<{ created: boolean }> {
    return this.#guard.run("cluster heartbeat", () =>
      this.#db.transaction(async (tx) => {
        const [row] = await tx.insert(clusterNodes).values({ id: nodeId, relayAddr })
          .onConflictDoUpdate({
            target: clusterNodes.id,
            set: { heartbeatAt: sql`now()`, relayAddr },
          })
          .returning({ created: sql<boolean>`(xmax = 0)` });
        const gone = !removeStale ? [] : await tx.delete(clusterNodes)
          .where(
            sql`${clusterNodes.heartbeatAt} < now() - make_interval(secs => ${staleMs / 1000})`,
          )
          .returning({ id: clusterNodes.id });
        const created = row?.created === true;
        if (created || gone.length > 0) await notify(tx, "n");
        return { created };
      }));
  }

  /** Every node with its freshness by the database's clock. */
  async nodes(staleMs: number): Promise<ClusterNode[]> {
    const rows = await this.#guard.run("list cluster nodes", () =>
      this.#db.select({
        id: clusterNodes.id,
        relayAddr: clusterNodes.relayAddr,
        startedAt: clusterNodes.startedAt,
        heartbeatAt: clusterNodes.heartbeatAt,
        fresh: sql<boolean>`(${clusterNodes.heartbeatAt} >= now() - make_interval(secs => ${
          staleMs / 1000
        }))`,
      }).from(clusterNodes));
    return rows.map((r) => ({ ...r, fresh: r.fresh === true }));
  }

  /** The placements of one node, or of all nodes. */
  async placements(nodeId?: string): Promise<Placement[]> {
    const rows = await this.#guard.run(
      "list tunnel placements",
      () =>
        this.#db.select().from(tunnelPlacements)
          .where(nodeId === undefined ? undefined : eq(tunnelPlacements.nodeId, nodeId)),
    );
    return rows;
  }

  /**
   * Makes the database's placements of `nodeId` exactly `own` (removes the rest,
   * adds the missing) and announces it, in one transaction. The node's row must
   * exist (a heartbeat first).
   */
  syncPlacements(nodeId: string, own: readonly Placement[]): Promise<void> {
    return this.#guard.run("sync tunnel placements", () =>
      this.#db.transaction(async (tx) => {
        const ids = own.map((p) => p.sessionId);
        await tx.delete(tunnelPlacements).where(
          ids.length > 0
            ? and(eq(tunnelPlacements.nodeId, nodeId), notInArray(tunnelPlacements.sessionId, ids))
            : eq(tunnelPlacements.nodeId, nodeId),
        );
        if (own.length > 0) {
          await tx.insert(tunnelPlacements).values(own.map((p) => ({ ...p, nodeId })))
            .onConflictDoNothing();
        }
        await notify(tx, `p:${nodeId}`);
      }));
  }

  /** Removes this node and its placements (graceful shutdown), announced. */
  leave(nodeId: string): Promise<void> {
    return this.#guard.run("leave cluster", () =>
      this.#db.transaction(async (tx) => {
        await tx.delete(clusterNodes).where(eq(clusterNodes.id, nodeId));
        await notify(tx, "n");
      }));
  }

  /** Tells every node to close `domain`'s tunnels and forget its cached PSK. */
  async evict(domain: string): Promise<void> {
    await this.#guard.run("announce eviction", () => notify(this.#db, `e:${domain}`));
  }

  /**
   * LISTENs on `CLUSTER_CHANNEL` through a dedicated connection. `onListen` runs
   * each time the listen connection is (re)established: messages sent while it
   * was away are lost, so the caller reloads everything then. The driver
   * reconnects on its own after a lost connection. Resolves once listening the
   * first time (rejects if the database cannot be reached then).
   */
  listen(
    onMessage: (m: ClusterMessage) => void,
    onListen: () => void,
  ): Promise<{ unlisten(): Promise<void> }> {
    return this.#listener(CLUSTER_CHANNEL, (payload) => {
      const m = decodeClusterMessage(payload);
      if (m) onMessage(m);
    }, onListen);
  }
}

// deno-lint-ignore no-explicit-any
async function notify(db: { execute(q: any): PromiseLike<unknown> }, payload: string) {
  await db.execute(sql`select pg_notify(${CLUSTER_CHANNEL}, ${payload})`);
}
