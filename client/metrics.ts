/**
 * The client's Prometheus metrics, opt-in (`--metrics-listen` /
 * `HOP_CLIENT_METRICS_LISTEN`), built from the connector's events: nothing is
 * added to the request path.
 *
 * | metric                                  | type      | labels  |
 * |-----------------------------------------|-----------|---------|
 * | hopgate_client_connected                | gauge     |         |
 * | hopgate_client_tunnels                  | gauge     | node, transport |
 * | hopgate_client_tunnels_wanted           | gauge     |         |
 * | hopgate_client_nodes                    | gauge     |         |
 * | hopgate_client_nodes_dropped            | gauge     |         |
 * | hopgate_client_connects_total           | counter   | transport |
 * | hopgate_client_transport                | gauge     | transport |
 * | hopgate_client_failures_total           | counter   | kind    |
 * | hopgate_client_requests_total           | counter   | outcome |
 * | hopgate_client_request_duration_seconds | histogram | outcome |
 * | hopgate_client_requests_in_flight       | gauge     |         |
 * | hopgate_client_srtt_seconds             | gauge     |         |
 * | hopgate_client_local_connections        | gauge     | state   |
 * | hopgate_client_local_connects_total     | counter   |         |
 * | hopgate_client_process_memory_bytes     | gauge     | kind    |
 *
 * `node`: a server node's `ip:port` (docs/client-failover.md); one series per tunnel
 * up, so `sum(hopgate_client_tunnels) < hopgate_client_tunnels_wanted` says a node
 * is missing. Nodes are bounded (client/nodes.ts `MAX_NODES`).
 * `outcome`: the status class of the local service's answer (`2xx`...), `websocket`,
 * `aborted` (the caller went away), or the forwarder's error code (`refused`...).
 * `state`: `busy` or `idle` connections to the local service. The connects counter
 * rising with requests means the local service does not keep connections alive.
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { processMemoryGauge, REQUEST_DURATION_BUCKETS_SECONDS } from "../shared/process_metrics.ts";
import type { ClientEvent, TunnelInfo } from "./connector.ts";

export class ClientMetrics {
  readonly registry = new Registry();
  readonly #connected: Gauge<string>;
  readonly #transport: Gauge<string>;
  readonly #tunnels: Gauge<string>;
  readonly #wanted: Gauge<string>;
  readonly #nodes: Gauge<string>;
  readonly #nodesDropped: Gauge<string>;
  readonly #connects: Counter<string>;
  readonly #failures: Counter<string>;
  readonly #requests: Counter<string>;
  readonly #duration: Histogram<string>;
  readonly #inFlight: Gauge<string>;
  readonly #srtt: Gauge<string>;
  readonly #local: Gauge<string>;
  readonly #localConnects: Counter<string>;
  #localOpened = 0;

  constructor() {
    const registers = [this.registry];
    this.#connected = new Gauge({
      name: "hopgate_client_connected",
      help: "1 while at least one tunnel is up.",
      registers,
    });
    this.#connected.set(0);
    this.#transport = new Gauge({
      name: "hopgate_client_transport",
      help: "Tunnels up on each transport (dtls, or the TCP path): 1 with one tunnel.",
      labelNames: ["transport"],
      registers,
    });
    this.#tunnels = new Gauge({
      name: "hopgate_client_tunnels",
      help: "1 for each tunnel up, by server node (ip:port) and transport.",
      labelNames: ["node", "transport"],
      registers,
    });
    this.#wanted = new Gauge({
      name: "hopgate_client_tunnels_wanted",
      help:
        "Tunnels the client aims for: --server-redundancy, or fewer when fewer nodes are known.",
      registers,
    });
    this.#nodes = new Gauge({
      name: "hopgate_client_nodes",
      help: "Server nodes the --server-addr entries resolved to at the last resolution.",
      registers,
    });
    this.#nodesDropped = new Gauge({
      name: "hopgate_client_nodes_dropped",
      help: "Addresses left out at the last resolution (over the per-name or total cap).",
      registers,
    });
    this.#connects = new Counter({
      name: "hopgate_client_connects_total",
      help: "Tunnels established (first connect, every reconnect, every move between transports).",
      labelNames: ["transport"],
      registers,
    });
    this.#failures = new Counter({
      name: "hopgate_client_failures_total",
      help: "Connection failures by kind.",
      labelNames: ["kind"],
      registers,
    });
    this.#requests = new Counter({
      name: "hopgate_client_requests_total",
      help: "Requests forwarded to the local service, by outcome.",
      labelNames: ["outcome"],
      registers,
    });
    this.#duration = new Histogram({
      name: "hopgate_client_request_duration_seconds",
      help: "Time to forward a request to the local service and relay its response.",
      labelNames: ["outcome"],
      buckets: REQUEST_DURATION_BUCKETS_SECONDS,
      registers,
    });
    this.#inFlight = new Gauge({
      name: "hopgate_client_requests_in_flight",
      help: "Requests being forwarded now.",
      registers,
    });
    this.#srtt = new Gauge({
      name: "hopgate_client_srtt_seconds",
      help: "Smoothed RTT of the tunnel at the last status report.",
      registers,
    });
    this.#local = new Gauge({
      name: "hopgate_client_local_connections",
      help: "Connections to the local service at the last status report, busy or idle.",
      labelNames: ["state"],
      registers,
    });
    this.#localConnects = new Counter({
      name: "hopgate_client_local_connects_total",
      help: "Connections opened to the local service.",
      registers,
    });
    processMemoryGauge("hopgate_client_process_memory_bytes", registers);
  }

  /** Pass to `runClient`'s `onEvent` (next to the status reporter). */
  onEvent(event: ClientEvent): void {
    switch (event.type) {
      case "connected":
        this.#setTunnels(event.tunnels);
        this.#wanted.set(event.wanted);
        this.#connects.labels(event.transport).inc();
        break;
      case "disconnected":
        this.#setTunnels(event.tunnels);
        this.#wanted.set(event.wanted);
        break;
      case "nodes":
        this.#nodes.set(event.nodes.length);
        this.#nodesDropped.set(event.dropped);
        break;
      case "failure":
        this.#setTunnels(event.tunnels);
        this.#failures.labels(event.kind).inc();
        break;
      case "stopped":
        this.#setTunnels([]);
        break;
      case "stats":
        this.#inFlight.set(event.inFlight);
        if (event.rttMs !== undefined) this.#srtt.set(event.rttMs / 1000);
        this.#local.labels("busy").set(event.local.open - event.local.idle);
        this.#local.labels("idle").set(event.local.idle);
        if (event.local.opened > this.#localOpened) {
          this.#localConnects.inc(event.local.opened - this.#localOpened);
          this.#localOpened = event.local.opened;
        }
        break;
      case "request": {
        const o = event.outcome;
        const outcome = o.kind === "error"
          ? o.code
          : o.kind === "aborted"
          ? "aborted"
          : o.kind === "websocket"
          ? "websocket"
          : `${Math.floor(o.status / 100)}xx`;
        this.#requests.labels(outcome).inc();
        this.#duration.labels(outcome).observe(event.durationMs / 1000);
        break;
      }
    }
  }

  #setTunnels(tunnels: readonly TunnelInfo[]): void {
    this.#connected.set(tunnels.length > 0 ? 1 : 0);
    this.#transport.reset();
    this.#tunnels.reset();
    for (const t of tunnels) {
      this.#transport.labels(t.transport).inc();
      this.#tunnels.labels(t.node, t.transport).set(1);
    }
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }
}

/** Serves `GET /metrics` on `addr` until `signal` aborts. */
export function serveClientMetrics(
  metrics: ClientMetrics,
  addr: { hostname: string; port: number },
  signal: AbortSignal,
): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve({ ...addr, signal, onListen: () => {} }, async (req) => {
    if (new URL(req.url).pathname !== "/metrics") {
      return new Response("Not Found\n", { status: 404 });
    }
    return new Response(await metrics.render(), {
      headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
    });
  });
}
