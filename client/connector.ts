/**
 * The client's main loop: connect (DTLS) → mux session → hello → serve every stream
 * the server opens, concurrently → when the session ends, reconnect with exponential
 * backoff and jitter (`Backoff`). Runs until `signal` aborts, then drains its tunnels.
 * One tunnel's life is client/tunnel.ts; failures and the backoff client/failure.ts.
 *
 * Several nodes (docs/client-failover.md): the server entries resolve to nodes
 * (client/nodes.ts); the client keeps tunnels to `redundancy` distinct nodes at
 * once (default 2), each node with its own backoff. A lost tunnel is replaced by
 * a node that has not failed lately, else by the same one once its backoff
 * allows. A bad key or an unknown domain is every node's verdict (they share one
 * database): no node is tried again before that failure's long wait is over.
 *
 * Each failed attempt is reported once, as a `failure` with a stable `kind` and a
 * one-line message the CLI prints as is. Failures that retrying cannot fix soon (bad
 * API key, unknown domain, version mismatch) back off to the cap at once, so a
 * rejected key is never retried in a tight loop.
 */
import { type Clock, realClock } from "../shared/clock.ts";
import type { MuxParams } from "../shared/mux/mod.ts";
import { formatHostPort, type HostPort } from "../shared/names.ts";
import { sleep } from "../shared/sleep.ts";
import { OriginPool } from "./origin/pool.ts";
import type { ForwardOptions } from "./forwarder.ts";
import { dialerFor, type DtlsEngine, type TunnelDialer } from "./dialer.ts";
import type { ClientEvent } from "./events.ts";
import {
  Backoff,
  type BackoffOptions,
  classifyFailure,
  CLIENT_WIDE,
  ClientFailure,
} from "./failure.ts";
import {
  type Resolution,
  resolveDnsAll,
  resolveNodes,
  type Resolver,
  type ServerNode,
} from "./nodes.ts";
import { announce, bringUp, type Ctx, serveTunnel, startStats, tunnelList } from "./tunnel.ts";

export type { ClientEvent, FailureKind, TunnelInfo } from "./events.ts";
export { Backoff, type BackoffOptions, classifyFailure, ClientFailure } from "./failure.ts";
export { CLIENT_VERSION } from "./version.ts";

/** What `runClient` needs: where the servers are, the domain and its key, the local service. */
export interface ClientOptions {
  /** The HopGate server's DTLS address (one entry; `servers` lists several). */
  server?: HostPort;
  /**
   * The servers' DTLS addresses (`--server-addr a,b`): IP addresses or names, a
   * name standing for all its addresses. Either this or `server` is required.
   */
  servers?: readonly HostPort[];
  /**
   * Tunnels kept at once to distinct nodes, when that many are known. Default 2;
   * 1 is single-homed (a lost tunnel moves to the next node).
   */
  redundancy?: number;
  /** Host name resolution (A and AAAA). Default `resolveDnsAll` (Deno.resolveDns). */
  resolve?: Resolver;
  /** A name that does not resolve is dialled by name (the TCP path through a proxy). */
  keepUnresolved?: boolean;
  /**
   * The dialer for one node. Default: a DTLS dialer for `engine` to the node's
   * address. main.ts passes one that also knows the node's TCP path.
   */
  dialerForNode?: (node: ServerNode) => TunnelDialer;
  /**
   * On stop: how long a tunnel may take to finish its requests in flight after
   * the server was asked to drain it, before it is cut. Default 10 000 ms.
   */
  drainTimeoutMs?: number;
  /** The domain this client serves (the PSK identity). */
  domain: string;
  /** The domain's client API key (only its HMAC-derived PSK is used). */
  apiKey: string;
  /** The local service, e.g. `http://127.0.0.1:3000`. */
  target: URL;
  /** DTLS client implementation, when no `dialer` is given. Default "hopgate". */
  engine?: DtlsEngine;
  /**
   * How tunnels are dialled, when there is one fixed server (`server`, never
   * resolved here). Tests pass one on a simulated network.
   */
  dialer?: TunnelDialer;
  /** Timers (backoff, hello, mux, local connects, stats) run on this. Default realClock. */
  clock?: Clock;
  /** DTLS handshake deadline per attempt. Default 10 000 ms. */
  handshakeTimeoutMs?: number;
  /** Wait this long for the server's welcome. Default 10 000 ms. */
  helloTimeoutMs?: number;
  backoff?: BackoffOptions;
  /** Random numbers in [0, 1) for the jitter (tests pin it). Default Math.random. */
  random?: () => number;
  muxParams?: Partial<MuxParams>;
  /** Forwarder settings besides the target. */
  forward?: Omit<ForwardOptions, "target" | "pool">;
  /** Status events, for the status line and logs. */
  onEvent?: (event: ClientEvent) => void;
  /** How often a `stats` event is sent while connected. Default 1000 ms. */
  statsIntervalMs?: number;
  /**
   * Warm a new tunnel's path up both ways while it waits for its first request
   * (docs/congestion.md, "Warm-up"): over UDP off loopback, when the server grants it.
   * Default true (`--warm-up`).
   */
  warmUp?: boolean;
}

/** With fewer nodes known than `redundancy`, the entries are resolved again this often. */
const RESOLVE_AGAIN_MS = 60_000;

/** What the client keeps per node: its dialer, backoff and when it may be tried. */
interface NodeState {
  node: ServerNode;
  readonly dialer: TunnelDialer;
  readonly backoff: Backoff;
  /** Not tried before this time (its backoff). */
  retryAt: number;
  /** When it last failed (-Infinity: never); the least recent is tried first. */
  failedAt: number;
  /** A tunnel attempt or session on it is running. */
  busy: boolean;
}

/**
 * Runs the client until `signal` aborts; resolves once everything is closed.
 * Never rejects for network reasons (they are reported as `failure` events).
 */
export async function runClient(options: ClientOptions, signal: AbortSignal): Promise<void> {
  const emit = options.onEvent ?? (() => {});
  const clock = options.clock ?? realClock;
  const entries = options.servers ?? (options.server ? [options.server] : []);
  if (entries.length === 0) throw new TypeError("runClient needs `server` or `servers`");
  const fixed = options.dialer;
  if (fixed && entries.length !== 1) {
    throw new TypeError("a fixed `dialer` goes with one `server`, not several");
  }
  const makeDialer = (node: ServerNode): TunnelDialer =>
    fixed ?? options.dialerForNode?.(node) ?? dialerFor(options.engine ?? "hopgate", {
      server: node.address,
      domain: options.domain,
      apiKey: options.apiKey,
      handshakeTimeoutMs: options.handshakeTimeoutMs ?? 10_000,
    });
  const redundancy = Math.max(1, options.redundancy ?? 2);
  const timeout = options.forward?.connectTimeoutMs;
  const pool = new OriginPool(
    options.target,
    timeout ? { connectTimeoutMs: timeout, clock } : { clock },
  );
  const forward: ForwardOptions = { ...options.forward, target: options.target, pool };
  const ctx: Ctx = {
    options,
    clock,
    signal,
    emit,
    forward,
    counters: { inFlight: 0, served: 0, failed: 0 },
    serving: new Set<Promise<void>>(),
    up: new Map(),
    wanted: 1,
  };
  const states = new Map<string, NodeState>();
  const running = new Set<Promise<void>>();
  const resolveBackoff = new Backoff(options.backoff, options.random);
  let resolution: Resolution | undefined;
  let resolvedAt = -Infinity;
  let attempt = 0;
  /** A credentials verdict (CLIENT_WIDE): no node is tried before this. */
  let holdUntil = -Infinity;
  let wake = Promise.withResolvers<void>();
  const stopStats = startStats(ctx);

  /**
   * Entries to nodes, resolving names again; says when the set changes. Called
   * only before dialling, so as often as the backoff lets attempts start.
   */
  const refresh = async (): Promise<void> => {
    if (fixed) {
      const node: ServerNode = {
        key: formatHostPort(entries[0]!),
        address: entries[0]!,
        entry: entries[0]!,
        index: 0,
        label: formatHostPort(entries[0]!),
      };
      resolution = { nodes: [node], problems: [], dropped: 0 };
    } else {
      const before = resolution?.nodes.map((n) => n.key).join(",");
      resolvedAt = clock.now();
      resolution = await resolveNodes(entries, {
        resolve: options.resolve ?? resolveDnsAll,
        signal,
        ...(resolution ? { previous: resolution } : {}),
        ...(options.keepUnresolved ? { keepUnresolved: true } : {}),
      });
      const nodes = resolution.nodes.map((n) => n.key);
      if (nodes.join(",") !== before || resolution.problems.length > 0) {
        emit({ type: "nodes", nodes, problems: resolution.problems, dropped: resolution.dropped });
      }
    }
    for (const node of resolution.nodes) {
      const s = states.get(node.key);
      if (s) s.node = node;
      else {
        states.set(node.key, {
          node,
          dialer: makeDialer(node),
          backoff: new Backoff(options.backoff, options.random),
          retryAt: -Infinity,
          failedAt: -Infinity,
          busy: false,
        });
      }
    }
    // Nodes no entry names any more are forgotten once idle.
    const current = new Set(resolution.nodes.map((n) => n.key));
    for (const [key, s] of states) if (!current.has(key) && !s.busy) states.delete(key);
  };

  /** One attempt on a node: dial, serve until the tunnel ends, back off that node. */
  const attemptOn = async (s: NodeState): Promise<void> => {
    const { node, dialer } = s;
    emit({
      type: "connecting",
      attempt: ++attempt,
      server: node.label,
      node: node.key,
      transport: dialer.transport,
    });
    let upSince = 0;
    let failure: ClientFailure;
    try {
      const up = await bringUp(dialer, ctx, signal);
      upSince = up.since;
      announce(up, node, ctx);
      try {
        failure = await serveTunnel(up, dialer, node, ctx);
      } finally {
        ctx.up.delete(node.key);
        emit({
          type: "disconnected",
          server: node.label,
          node: node.key,
          tunnels: tunnelList(ctx),
          wanted: ctx.wanted,
        });
      }
    } catch (e) {
      failure = classifyFailure(e, node.label, options.domain);
    }
    if (signal.aborted) return;
    const now = clock.now();
    if (upSince > 0) s.backoff.sessionEnded(now - upSince);
    // A lost tunnel's first retry is spread over a window: its node may have dropped
    // every client at once (failure.ts, `afterLoss`).
    const retryInMs = upSince > 0
      ? s.backoff.afterLoss(failure.kind)
      : s.backoff.next(failure.kind);
    s.retryAt = now + retryInMs;
    s.failedAt = now;
    if (CLIENT_WIDE.has(failure.kind)) holdUntil = Math.max(holdUntil, s.retryAt);
    emit({
      type: "failure",
      kind: failure.kind,
      message: failure.message,
      retryInMs,
      server: node.label,
      node: node.key,
      tunnels: tunnelList(ctx),
      nodes: resolution?.nodes.length ?? 1,
    });
  };

  /** The node to dial next: idle, its backoff over, the least recently failed first. */
  const pick = (now: number): NodeState | undefined => {
    if (now < holdUntil) return undefined;
    let best: NodeState | undefined;
    for (const node of resolution?.nodes ?? []) {
      const s = states.get(node.key)!;
      if (s.busy || s.retryAt > now) continue;
      if (!best || s.failedAt < best.failedAt) best = s;
    }
    return best;
  };

  try {
    while (!signal.aborted) {
      // A node is busy exactly while its attempt is in `running`.
      const busy = running.size;
      const now = clock.now();
      const due = !resolution || resolution.nodes.length === 0 || pick(now) !== undefined ||
        now - resolvedAt >= RESOLVE_AGAIN_MS;
      if (busy < redundancy && now >= holdUntil && due) await refresh();
      if (signal.aborted) break;
      const known = resolution?.nodes.length ?? 0;
      ctx.wanted = Math.max(1, Math.min(redundancy, known));
      if (known === 0) {
        // No entry resolved to any address: retry the resolution with the backoff.
        const retryInMs = resolveBackoff.next("resolve_failed");
        emit({
          type: "failure",
          kind: "resolve_failed",
          message: `Server address unknown: ${resolution?.problems.join("; ") ?? "no address"}`,
          retryInMs,
          tunnels: [],
          nodes: 0,
        });
        await sleep(retryInMs, signal, clock);
        continue;
      }
      resolveBackoff.sessionEnded(Infinity);
      for (let n = busy; n < ctx.wanted; n++) {
        const s = pick(now); // the time `due` was judged at: no dial without resolving first
        if (!s) break;
        s.busy = true;
        const p = attemptOn(s).finally(() => {
          s.busy = false;
          running.delete(p);
          wake.resolve();
        });
        running.add(p);
      }
      // Sleep until an attempt ends, a node's backoff is over, or the client stops.
      let nextAt = Infinity;
      for (const s of states.values()) if (!s.busy) nextAt = Math.min(nextAt, s.retryAt);
      if (running.size >= ctx.wanted) nextAt = Infinity;
      nextAt = Math.max(nextAt, holdUntil);
      // Fewer nodes known than wanted: look again now and then (DNS may list more).
      if (known < redundancy && !fixed) nextAt = Math.min(nextAt, clock.now() + RESOLVE_AGAIN_MS);
      const stop = new AbortController();
      const onAbort = () => stop.abort();
      signal.addEventListener("abort", onAbort, { once: true });
      const waits: Promise<void>[] = [wake.promise];
      if (nextAt !== Infinity) {
        waits.push(sleep(Math.max(0, nextAt - clock.now()), stop.signal, clock));
      }
      waits.push(
        new Promise((r) => stop.signal.addEventListener("abort", () => r(), { once: true })),
      );
      await Promise.race(waits);
      stop.abort();
      signal.removeEventListener("abort", onAbort);
      wake = Promise.withResolvers<void>();
    }
  } finally {
    await Promise.all(running);
    await Promise.all(ctx.serving);
    stopStats();
    pool.close();
    emit({ type: "stopped" });
  }
}
