/**
 * The client's main loop: connect (DTLS) → mux session → hello → serve every stream
 * the server opens, concurrently → when the session ends, reconnect with exponential
 * backoff and jitter (`Backoff`). Runs until `signal` aborts, then drains its tunnels.
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
import { AlertDescription, alertName, DtlsError } from "../shared/dtls/mod.ts";
import { type Clock, realClock } from "../shared/clock.ts";
import { HelloRejectedError, sayHello, sendDrain } from "../shared/handshake/mod.ts";
import { OriginPool } from "./origin/pool.ts";
import { type MuxParams, MuxSession, MuxSessionError, type MuxStream } from "../shared/mux/mod.ts";
import { type ForwardOptions, type ForwardOutcome, serveStream } from "./forwarder.ts";
import { TUNNEL_MUX_PARAMS } from "../shared/tunnel_params.ts";
import { FEATURE_DRAIN, FEATURE_SPLICE, type Welcome } from "../shared/protocol/mod.ts";
import { formatHostPort, type HostPort } from "../shared/names.ts";
import { sleep } from "../shared/sleep.ts";
import { type DialedTunnel, dialerFor, type DtlsEngine, type TunnelDialer } from "./dialer.ts";
import { type RacedTunnel, RaceError, type RacingDialer } from "./race.ts";
import {
  type Resolution,
  resolveDnsAll,
  resolveNodes,
  type Resolver,
  type ServerNode,
} from "./nodes.ts";

export const CLIENT_VERSION = "hopgate-client/0.1.0";

export interface BackoffOptions {
  /** First retry delay ceiling. Default 500 ms. */
  initialMs?: number;
  /** Largest delay. Default 30 000 ms. */
  maxMs?: number;
  /** A session that lived longer than this resets the backoff. Default 30 000 ms. */
  resetAfterMs?: number;
}

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
}

/** Why an attempt failed or a session ended. */
export type FailureKind =
  | "unreachable" // no DTLS answer in time
  | "resolve_failed" // the server's host name did not resolve
  | "bad_api_key" // alert decrypt_error: the key is not this domain's
  | "unknown_domain" // alert unknown_psk_identity: domain not registered
  | "storage_unavailable" // alert internal_error: the server could not look the key up
  | "handshake_failed" // any other DTLS failure
  | "version_mismatch"
  | "domain_mismatch"
  | "server_busy"
  | "bad_hello"
  | "protocol_error"
  | "session_lost"; // the session ended after it was up

/** A tunnel that is up, as events list them. */
export interface TunnelInfo {
  /** The node's `ip:port` (`ServerNode.key`). */
  readonly node: string;
  /** The node for people (`ServerNode.label`). */
  readonly server: string;
  readonly transport: string;
}

export type ClientEvent =
  | { type: "connecting"; attempt: number; server: string; node: string; transport: string }
  | {
    type: "connected";
    server: string;
    node: string;
    domain: string;
    sessionId: string;
    serverVersion: string;
    /** Which transport carries the tunnel (a re-probe that moved it sends another). */
    transport: string;
    /** Every tunnel up now, this one included. */
    tunnels: TunnelInfo[];
    /** Tunnels the client aims for: `redundancy`, or fewer when fewer nodes are known. */
    wanted: number;
  }
  /** A tunnel that was up ended (lost, or drained on stop). */
  | { type: "disconnected"; server: string; node: string; tunnels: TunnelInfo[]; wanted: number }
  /** The nodes the server entries resolve to, when that changes. */
  | { type: "nodes"; nodes: string[]; problems: string[]; dropped: number }
  /** A re-probe of the preferred transport failed; the tunnel stays where it is. */
  | { type: "probe"; transport: string; ok: false; message: string }
  | {
    type: "stats";
    /** The lowest smoothed RTT of the tunnels up (undefined: none measured). */
    rttMs: number | undefined;
    /** Tunnels up. */
    tunnels: number;
    inFlight: number;
    served: number;
    failed: number;
    /** Connections to the local service: open now, idle of those, opened so far. */
    local: { open: number; idle: number; opened: number };
  }
  | { type: "request"; outcome: ForwardOutcome; durationMs: number }
  | {
    type: "failure";
    kind: FailureKind;
    message: string;
    /** When this node (or, without a node, the resolution) is tried again. */
    retryInMs: number;
    /** The node that failed (absent: no entry resolved to any node). */
    server?: string;
    node?: string;
    /** The tunnels still up, serving meanwhile. */
    tunnels: TunnelInfo[];
    /** Nodes known: with more than one, another may be tried sooner. */
    nodes: number;
  }
  | { type: "stopped" };

/**
 * Verdicts on the credentials, which every node shares (one database): after
 * one, no node is tried before its long wait is over.
 */
const CLIENT_WIDE: ReadonlySet<FailureKind> = new Set(["bad_api_key", "unknown_domain"]);

/** Failures that retrying soon cannot fix. */
const PERSISTENT: ReadonlySet<FailureKind> = new Set([
  "bad_api_key",
  "unknown_domain",
  "version_mismatch",
  "domain_mismatch",
  "bad_hello",
]);

export class ClientFailure extends Error {
  override name = "ClientFailure";
  constructor(readonly kind: FailureKind, message: string) {
    super(message);
  }
}

/**
 * Turns a connect or hello error into a kind and one clear line, by the error's
 * class and code, never its text. Both DTLS engines raise `DtlsError`s
 * (`client/dtls_node.ts` translates node-dtls-client's failures into the same codes).
 */
export function classifyFailure(e: unknown, server: string, domain: string): ClientFailure {
  if (e instanceof ClientFailure) return e;
  if (e instanceof RaceError) {
    // Both transports failed: the preferred one's kind leads unless the server
    // answered over the fallback (a bad key, a busy server…); the line says both.
    const p = classifyFailure(e.preferred, server, domain);
    const f = classifyFailure(e.fallback, server, domain);
    const lead = PERSISTENT.has(f.kind) || f.kind === "server_busy" ? f : p;
    return new ClientFailure(lead.kind, `${p.message}; over ${e.fallbackTransport}: ${f.message}`);
  }
  if (e instanceof DtlsError) {
    if (e.code === "HANDSHAKE_TIMEOUT") {
      return new ClientFailure(
        "unreachable",
        `Server ${server} unreachable: no DTLS answer in time (is the server up, the UDP port open?)`,
      );
    }
    if (
      e.code === "ALERT_RECEIVED" &&
      (e.alert === AlertDescription.DecryptError || e.alert === AlertDescription.BadRecordMac)
    ) {
      return badKey(domain);
    }
    if (e.code === "ALERT_RECEIVED" && e.alert === AlertDescription.UnknownPskIdentity) {
      return unknownDomain(domain, server);
    }
    if (e.code === "ALERT_RECEIVED" && e.alert === AlertDescription.InternalError) {
      // The server's PSK lookup failed (its database is down or slow): not a verdict
      // on the domain or the key, so the usual short backoff applies.
      return new ClientFailure(
        "storage_unavailable",
        `Server storage unavailable: the server at ${server} cannot look up ${domain} right now`,
      );
    }
    if (e.code === "RESOLVE_FAILED") {
      return new ClientFailure("resolve_failed", `Server address unknown: ${e.message}`);
    }
    const alert = e.alert !== undefined ? ` (alert ${alertName(e.alert)})` : "";
    return new ClientFailure("handshake_failed", `DTLS handshake failed${alert}: ${e.message}`);
  }
  if (e instanceof HelloRejectedError) {
    switch (e.code) {
      case "version_mismatch":
        return new ClientFailure(
          "version_mismatch",
          `Version mismatch: ${e.message} (this is ${CLIENT_VERSION})`,
        );
      case "domain_mismatch":
        return new ClientFailure("domain_mismatch", `Domain mismatch: ${e.message}`);
      case "server_busy":
        return new ClientFailure("server_busy", `Server busy: ${e.message}`);
      case "bad_hello":
        return new ClientFailure("bad_hello", `Server refused the hello: ${e.message}`);
      default:
        return new ClientFailure("protocol_error", `Protocol error: ${e.message}`);
    }
  }
  const message = e instanceof Error ? e.message : String(e);
  if (e instanceof MuxSessionError) {
    return new ClientFailure("session_lost", `Connection lost: ${message}`);
  }
  return new ClientFailure("handshake_failed", `Connection failed: ${message}`);
}

function badKey(domain: string): ClientFailure {
  return new ClientFailure(
    "bad_api_key",
    `Bad API key: the server rejected the key for ${domain} (check HOP_CLIENT_API_KEY / --api-key)`,
  );
}
function unknownDomain(domain: string, server: string): ClientFailure {
  return new ClientFailure(
    "unknown_domain",
    `Domain not registered: ${domain} is unknown to the server at ${server}`,
  );
}

/**
 * Exponential backoff with jitter; persistent failures jump to the cap. The n-th
 * wait lies between half and all of a ceiling that doubles from `initialMs` to
 * `maxMs` ("equal jitter"), so every wait is at least as long as the previous
 * ceiling allowed: the waits visibly grow while clients stay spread out. (Full
 * jitter, anywhere from 0 to the ceiling, gave 17 ms, 489 ms, 414 ms… in a row.)
 */
export class Backoff {
  #attempt = 0;
  readonly initialMs: number;
  readonly maxMs: number;
  readonly resetAfterMs: number;
  readonly #random: () => number;
  constructor(o: BackoffOptions = {}, random: () => number = Math.random) {
    this.initialMs = o.initialMs ?? 500;
    this.maxMs = o.maxMs ?? 30_000;
    this.resetAfterMs = o.resetAfterMs ?? 30_000;
    this.#random = random;
  }
  /** The delay before the next attempt after a failure of `kind`. */
  next(kind: FailureKind): number {
    if (PERSISTENT.has(kind)) {
      this.#attempt = Math.max(this.#attempt, 64);
      // At least half the cap: never a tight loop, still spread across clients.
      return Math.round(this.maxMs / 2 + this.#random() * this.maxMs / 2);
    }
    const ceiling = Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.#attempt, 30));
    this.#attempt++;
    return Math.round(ceiling / 2 + this.#random() * ceiling / 2);
  }
  /** A session lived `ms`: long enough resets the backoff. */
  sessionEnded(ms: number): void {
    if (ms > this.resetAfterMs) this.#attempt = 0;
  }
}

/** A tunnel that is up: its transport, its mux session and what the server said. */
interface Up {
  readonly dialed: DialedTunnel;
  readonly session: MuxSession;
  readonly control: MuxStream;
  readonly welcome: Welcome;
  /** Which transport carries it (the racing dialer says which one won). */
  readonly transport: string;
  readonly since: number;
}

/** Shared by every session of one `runClient`. */
interface Ctx {
  readonly options: ClientOptions;
  readonly clock: Clock;
  readonly signal: AbortSignal;
  readonly emit: (e: ClientEvent) => void;
  readonly forward: ForwardOptions;
  readonly counters: { inFlight: number; served: number; failed: number };
  readonly serving: Set<Promise<void>>;
  /** The tunnels up, by node key, and their sessions (for the stats). */
  readonly up: Map<string, { info: TunnelInfo; session: MuxSession }>;
  /** Tunnels aimed for now (`redundancy`, or fewer when fewer nodes are known). */
  wanted: number;
}

/** Dials, starts the mux session and says hello. Cleans up and throws on failure. */
async function bringUp(dialer: TunnelDialer, ctx: Ctx, signal: AbortSignal): Promise<Up> {
  const { options, clock } = ctx;
  const dialed = await dialer.dial(signal);
  const session = new MuxSession(dialed.conn, {
    role: "client",
    clock,
    params: { ...TUNNEL_MUX_PARAMS, ...options.muxParams },
  });
  const onAbort = () => session.abort(0, "client stopping");
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    const { welcome, control } = await sayHello(
      session,
      {
        client: CLIENT_VERSION,
        domain: options.domain,
        target: options.target.origin,
        features: [FEATURE_SPLICE],
      },
      options.helloTimeoutMs ?? 10_000,
      clock,
    );
    const transport = (dialed as Partial<RacedTunnel>).transport ?? dialer.transport;
    return { dialed, session, control, welcome, transport, since: clock.now() };
  } catch (e) {
    session.abort(0, "client giving up on this session");
    await session.closed;
    await tearDown(dialed);
    throw e;
  } finally {
    // From here on, stopping drains the tunnel (serveTunnel), it does not cut it.
    signal.removeEventListener("abort", onAbort);
  }
}

async function tearDown(dialed: DialedTunnel): Promise<void> {
  dialed.conn.close();
  await dialed.closed();
}

function tunnelList(ctx: Ctx): TunnelInfo[] {
  return [...ctx.up.values()].map((t) => t.info);
}

/** Records `up` as the node's tunnel and says so. */
function announce(up: Up, node: ServerNode, ctx: Ctx): void {
  const info: TunnelInfo = { node: node.key, server: node.label, transport: up.transport };
  ctx.up.set(node.key, { info, session: up.session });
  ctx.emit({
    type: "connected",
    server: node.label,
    node: node.key,
    domain: ctx.options.domain,
    sessionId: up.welcome.session,
    serverVersion: up.welcome.server,
    transport: up.transport,
    tunnels: tunnelList(ctx),
    wanted: ctx.wanted,
  });
}

/**
 * While the tunnel runs on a racing dialer's fallback: waits the re-probe interval,
 * then tries the preferred transport. Resolves with a new tunnel, or undefined
 * (failed, or stopped) for the caller to try again later.
 */
async function reprobe(
  dialer: RacingDialer,
  node: ServerNode,
  ctx: Ctx,
  signal: AbortSignal,
): Promise<Up | undefined> {
  await sleep(dialer.reprobeIntervalMs, signal, ctx.clock);
  if (signal.aborted) return undefined;
  try {
    const up = await bringUp(dialer.preferred, ctx, signal);
    return { ...up, transport: dialer.preferred.transport };
  } catch (e) {
    if (!signal.aborted) {
      const f = classifyFailure(e, node.label, ctx.options.domain);
      ctx.emit({
        type: "probe",
        transport: dialer.preferred.transport,
        ok: false,
        message: f.message,
      });
    }
    return undefined;
  }
}

/**
 * Moves off `old` make-before-break: the new tunnel already serves; the server is
 * asked to send no more requests to the old one and to close it once they are
 * done (FEATURE_DRAIN), else the old session says GOAWAY and closes gracefully.
 * Requests in flight on it finish either way.
 */
async function retire(old: Up): Promise<void> {
  if (old.welcome.features?.includes(FEATURE_DRAIN)) {
    await sendDrain(old.control).catch(() => old.session.goAway());
  } else {
    old.session.goAway();
  }
  await old.session.closed;
  await tearDown(old.dialed);
}

/**
 * The client is stopping: a server that drains (FEATURE_DRAIN) is asked to send
 * no more requests on `up` and to close it once those in flight are done; it is
 * cut after `drainTimeoutMs` all the same. An older server's tunnel is cut at once.
 */
function drainOnStop(up: Up, ctx: Ctx): void {
  if (up.session.isClosed) return;
  if (!up.welcome.features?.includes(FEATURE_DRAIN)) {
    up.session.abort(0, "client stopping");
    return;
  }
  const timer = ctx.clock.setTimer(
    () => up.session.abort(0, "client stopping: drain took too long"),
    ctx.options.drainTimeoutMs ?? 10_000,
  );
  up.session.closed.then(() => ctx.clock.clearTimer(timer));
  sendDrain(up.control).catch(() => up.session.abort(0, "client stopping"));
}

/**
 * Serves `first` and, on a racing dialer's fallback, moves to the preferred
 * transport when a re-probe finds it again. Resolves with why the tunnel in use
 * ended (its session closed). On stop, drains it (`drainOnStop`).
 */
async function serveTunnel(
  first: Up,
  dialer: TunnelDialer,
  node: ServerNode,
  ctx: Ctx,
): Promise<ClientFailure> {
  const racing = isRacing(dialer) ? dialer : undefined;
  const probing = new AbortController();
  let current = first;
  const onStop = () => {
    probing.abort();
    drainOnStop(current, ctx);
  };
  ctx.signal.addEventListener("abort", onStop, { once: true });
  if (ctx.signal.aborted) onStop();
  const retiring = new Set<Promise<void>>();
  let probe: Promise<Up | undefined> | undefined;
  try {
    let served = serveSession(current.session, ctx);
    for (;;) {
      if (
        racing && current.transport !== racing.preferred.transport && !probing.signal.aborted
      ) {
        probe ??= reprobe(racing, node, ctx, probing.signal);
      }
      const next = await Promise.race([
        served.then(() => null),
        probe ?? new Promise<never>(() => {}),
      ]);
      if (next === null) break; // the tunnel in use ended
      probe = undefined;
      // The probe failed (serve on, probe again later) or was stopped (serve until the end).
      if (next === undefined) continue;
      const old = current;
      current = next;
      served = serveSession(current.session, ctx);
      announce(current, node, ctx);
      const r = retire(old).catch(() => {});
      retiring.add(r);
      r.finally(() => retiring.delete(r));
    }
    const info = await current.session.closed;
    return new ClientFailure(
      "session_lost",
      `Connection to ${node.label} lost: ${info.remote ? "closed by the server" : "closed"}${
        info.reason ? ` (${info.reason})` : ""
      }`,
    );
  } finally {
    ctx.signal.removeEventListener("abort", onStop);
    probing.abort();
    // A probe that connected just as the tunnel ended: it is not used.
    const late = await probe;
    if (late) {
      late.session.abort(0, "client giving up on this session");
      await late.session.closed;
      await tearDown(late.dialed);
    }
    await current.session.closed;
    await tearDown(current.dialed);
    await Promise.all(retiring);
  }
}

function isRacing(d: TunnelDialer): d is RacingDialer {
  return "preferred" in d && "fallback" in d && "reprobeIntervalMs" in d;
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
    const retryInMs = s.backoff.next(failure.kind);
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
      const busy = [...states.values()].filter((s) => s.busy).length;
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
      const inUse = [...states.values()].filter((s) => s.busy).length;
      if (inUse >= ctx.wanted) nextAt = Infinity;
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

/** Emits a `stats` event every `statsIntervalMs` until the returned function is called. */
function startStats(ctx: Ctx): () => void {
  const every = ctx.options.statsIntervalMs ?? 1000;
  let timer: unknown;
  const tick = () => {
    emitStats(ctx);
    timer = ctx.clock.setTimer(tick, every);
  };
  timer = ctx.clock.setTimer(tick, every);
  return () => ctx.clock.clearTimer(timer);
}

function emitStats(ctx: Ctx): void {
  const { forward, counters } = ctx;
  let rttMs: number | undefined;
  for (const { session } of ctx.up.values()) {
    const rtt = session.rtt;
    if (rtt.minMs > 0 && (rttMs === undefined || rtt.smoothedMs < rttMs)) rttMs = rtt.smoothedMs;
  }
  ctx.emit({
    type: "stats",
    rttMs,
    tunnels: ctx.up.size,
    ...counters,
    local: { open: forward.pool.size, idle: forward.pool.idleCount, opened: forward.pool.opened },
  });
}

/**
 * Accepts streams until the session ends, serving each concurrently. Streams
 * that arrive while the client stops are still served: the server sent them
 * before it read the drain.
 */
async function serveSession(session: MuxSession, ctx: Ctx): Promise<void> {
  const { forward, counters, serving, emit, clock } = ctx;
  try {
    for (;;) {
      const stream = await session.acceptStream();
      if (!stream) break;
      counters.inFlight++;
      const started = clock.now();
      const p = serveStream(stream, forward).then((outcome) => {
        counters.inFlight--;
        counters.served++;
        if (outcome.kind !== "response" && outcome.kind !== "websocket") counters.failed++;
        emit({ type: "request", outcome, durationMs: clock.now() - started });
      });
      serving.add(p);
      p.finally(() => serving.delete(p));
    }
  } finally {
    emitStats(ctx);
  }
}
