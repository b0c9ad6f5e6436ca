/**
 * Cluster mode (docs/cluster.md): several server nodes on one PostgreSQL, any
 * node serves any domain. `startCluster` joins the cluster and opens the relay
 * listener; the server then routes through `route` (local tunnels first, then a
 * relay to the node that holds one), lists and evicts through `tunnels`.
 *
 *   membership.ts     nodes, placements, LISTEN/NOTIFY, the in-memory cache
 *   relay_wire.ts     the relay greeting and its proof (key derived from the secret)
 *   relay_client.ts   sending side: a relayed request as a tunnel stream
 *   relay_server.ts   receiving side: the private listener, spliced onto a local tunnel
 */
import { Counter, Gauge, type Registry } from "prom-client";
import type { ClusterStore, Placement, SecretBox } from "../../db/mod.ts";
import type { ClusterConfig } from "../config.ts";
import type { Route } from "../ingress.ts";
import type { Logger } from "../log.ts";
import type { TunnelRegistry } from "../registry.ts";
import type { Tunnel } from "../tunnels.ts";
import type { AdminTunnels } from "../admin/env.ts";
import { ClusterMembership } from "./membership.ts";
import { type RelayDialer, type RelayErrorReason, RelayStream } from "./relay_client.ts";
import { RelayPool } from "./relay_pool.ts";
import { type IncomingRelayError, RelayListener } from "./relay_server.ts";
import { RELAY_KEY_INFO } from "./relay_wire.ts";

export { ClusterMembership } from "./membership.ts";
export { RelayError } from "./relay_client.ts";

/** What `startCluster` needs from the server. */
export interface ClusterDeps {
  config: ClusterConfig;
  store: ClusterStore;
  secretBox: SecretBox;
  registry: TunnelRegistry<Tunnel>;
  /** A local tunnel for a domain (`TunnelHub.pick`). */
  pickLocal(domain: string, exclude?: Set<Tunnel>): Tunnel | undefined;
  /** Another node evicted `domain`: forget its PSK here (the tunnels are closed by the cluster). */
  forgetPsk(domain: string): void;
  logger: Logger;
  /** Where the `hopgate_cluster_*` metrics are registered. */
  metrics: Registry;
  /** Test knobs: heartbeat and staleness. */
  timing?: { heartbeatMs?: number; staleMs?: number };
}

/** A running cluster node. */
export interface Cluster {
  readonly nodeId: string;
  readonly membership: ClusterMembership;
  /** The relay listener's address. */
  readonly relayAddr: Deno.NetAddr;
  /** Local tunnels first, then a relay to a node that has one. */
  route(domain: string, exclude?: Set<Route>): Route | undefined;
  /** The admin API's view: every node's tunnels; eviction on every node. */
  readonly tunnels: AdminTunnels;
  /** The own tunnels changed (the registry calls it). */
  ownChanged(): void;
  /**
   * The first step of a graceful shutdown: tells the other nodes this one holds no
   * tunnels any more (its tunnels keep serving relays already sent), then waits
   * `settleMs` for them to reload their routes before the tunnels are let go.
   */
  withdraw(settleMs?: number): Promise<void>;
  /** Stops relaying, leaves the cluster. */
  close(): Promise<void>;
}

/** Relay counters, read at scrape time. */
interface RelayCounts {
  out: number;
  in: number;
  errors: Record<string, number>;
  outgoing: number;
}

/** Joins the cluster and opens the relay listener. */
export async function startCluster(d: ClusterDeps): Promise<Cluster> {
  const nodeId = crypto.randomUUID();
  const key = d.secretBox.deriveKey(RELAY_KEY_INFO);
  const counts: RelayCounts = { out: 0, in: 0, errors: {}, outgoing: 0 };
  const error = (reason: RelayErrorReason | IncomingRelayError) => {
    counts.errors[reason] = (counts.errors[reason] ?? 0) + 1;
  };
  const log = d.logger;
  const membership = new ClusterMembership({
    store: d.store,
    nodeId,
    relayAddr: d.config.advertise,
    ownTunnels: () => d.registry.live(),
    onEvict: (domain) => {
      d.forgetPsk(domain);
      const n = d.registry.closeDomain(domain, "evicted by another cluster node");
      if (n > 0) {
        log.info("tunnels evicted", { component: "cluster", domain, closed: n });
      }
    },
    logger: log,
    ...(d.timing?.heartbeatMs ? { heartbeatMs: d.timing.heartbeatMs } : {}),
    ...(d.timing?.staleMs ? { staleMs: d.timing.staleMs } : {}),
  });
  const listener = new RelayListener({
    hostname: d.config.listen.hostname,
    port: d.config.listen.port,
    nodeId,
    key,
    pick: (domain) => d.pickLocal(domain),
    maxConnections: d.config.maxRelays,
    logger: log,
    refused: error,
    accepted: () => counts.in++,
  });
  const connectTimeoutMs = 3000;
  const pool = new RelayPool({ nodeId, key, connectTimeoutMs });
  const dialer: RelayDialer = {
    nodeId,
    key,
    connectTimeoutMs,
    pool,
    acquire: () => {
      if (counts.outgoing >= d.config.maxRelays) return false;
      counts.outgoing++;
      return true;
    },
    release: () => void counts.outgoing--,
    failed: error,
    relayed: () => counts.out++,
    unreachable: (id) => membership.suspect(id),
  };
  try {
    await membership.start();
  } catch (e) {
    pool.close();
    await listener.close();
    throw e;
  }
  registerMetrics(d.metrics, membership, listener, counts, pool);
  log.info("cluster joined", {
    component: "cluster",
    node_id: nodeId,
    relay: `${listener.addr.hostname}:${listener.addr.port}`,
    advertise: d.config.advertise,
    nodes: membership.liveNodes,
  });

  const route = (domain: string, exclude?: Set<Route>): Route | undefined => {
    const local = d.pickLocal(domain, exclude as Set<Tunnel> | undefined);
    if (local) return local;
    const targets = membership.route(domain);
    if (targets.length === 0) return undefined;
    let stream: RelayStream | undefined;
    return {
      splice: true,
      inFlight: 0,
      served: 0,
      session: {
        get isClosed() {
          return stream?.ended ?? false;
        },
        openStream: () => stream = new RelayStream(dialer, targets, domain),
      },
    };
  };

  const tunnels: AdminTunnels = {
    isConnected: (domain) =>
      d.registry.isConnected(domain) || membership.remoteTunnels(domain).length > 0,
    sessions: (domain) => {
      const mine = d.registry.sessions(domain).map((s) => ({ ...s, node: nodeId }));
      const theirs = membership.remoteTunnels(domain).map((p: Placement) => ({
        domain: p.domain,
        id: p.sessionId,
        remoteAddr: p.remoteAddr,
        connectedAt: p.connectedAt,
        node: p.nodeId,
      }));
      return [...mine, ...theirs].sort((a, b) => +a.connectedAt - +b.connectedAt);
    },
    closeDomain: (domain, reason) => {
      const remote = membership.remoteTunnels(domain).length;
      membership.evict(domain).catch((e) =>
        log.warn(
          "eviction not announced: other nodes close the tunnels when the database is back",
          {
            component: "cluster",
            domain,
            error: String(e),
          },
        )
      );
      return d.registry.closeDomain(domain, reason) + remote;
    },
  };

  return {
    nodeId,
    membership,
    relayAddr: listener.addr,
    route,
    tunnels,
    ownChanged: () => membership.ownChanged(),
    withdraw: async (settleMs = 300) => {
      await membership.withdraw();
      await new Promise((r) => setTimeout(r, settleMs));
    },
    close: async () => {
      pool.close();
      await listener.close();
      await membership.close();
    },
  };
}

function registerMetrics(
  registry: Registry,
  membership: ClusterMembership,
  listener: RelayListener,
  counts: RelayCounts,
  pool: RelayPool,
): void {
  const registers = [registry];
  new Gauge({
    name: "hopgate_cluster_nodes",
    help: "Cluster nodes with a fresh heartbeat, this one included, as this node sees them.",
    registers,
    collect() {
      this.set(membership.liveNodes);
    },
  });
  new Gauge({
    name: "hopgate_cluster_remote_tunnels",
    help: "Tunnels held by other live nodes (placements cached in memory).",
    registers,
    collect() {
      this.set(membership.remoteTunnels().length);
    },
  });
  new Gauge({
    name: "hopgate_cluster_leader",
    help: "1 if this node is the oldest live node (it runs certificate renewals).",
    registers,
    collect() {
      this.set(membership.isLeader ? 1 : 0);
    },
  });
  new Gauge({
    name: "hopgate_cluster_relay_connections",
    help: "Relay connections open, by direction (out: carrying a request to another node; " +
      "in: from other nodes, ready ones included; ready: kept ready to other nodes, at most " +
      "2 per node). out and in are each capped by HOP_CLUSTER_MAX_RELAYS.",
    labelNames: ["direction"],
    registers,
    collect() {
      this.labels("out").set(counts.outgoing);
      this.labels("in").set(listener.size);
      this.labels("ready").set(pool.size);
    },
  });
  new Counter({
    name: "hopgate_cluster_relayed_requests_total",
    help: "Requests relayed between nodes, by direction (out: sent to the node holding the " +
      "tunnel; in: taken onto a tunnel here).",
    labelNames: ["direction"],
    registers,
    collect() {
      this.reset();
      this.labels("out").inc(counts.out);
      this.labels("in").inc(counts.in);
    },
  });
  new Counter({
    name: "hopgate_cluster_relay_errors_total",
    help: "Relays that failed, by reason (connect_failed, connect_timeout, max_relays, " +
      "wrong_node, refused_*: the receiver's answer; in_*: relays this node refused, e.g. " +
      "in_auth_failed for a wrong key, in_max_relays at the cap).",
    labelNames: ["reason"],
    registers,
    collect() {
      this.reset();
      for (const [reason, n] of Object.entries(counts.errors)) this.labels(reason).inc(n);
    },
  });
  new Counter({
    name: "hopgate_cluster_heartbeat_failures_total",
    help: "Heartbeats that could not be written (the database was unreachable).",
    registers,
    collect() {
      this.reset();
      this.inc(membership.stats.heartbeatFailures);
    },
  });
}
