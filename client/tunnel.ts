/**
 * One tunnel's life, from dial to close: the mux session and the hello
 * (`bringUp`), serving every stream the server opens (`serveSession`), on a
 * racing dialer's fallback re-probing the preferred transport and moving over
 * make-before-break (`serveTunnel`), and on stop draining it (`drainOnStop`).
 * `runClient` (connector.ts) decides which nodes get tunnels.
 */
import { type Clock } from "../shared/clock.ts";
import { sayHello, sendDrain } from "../shared/handshake/mod.ts";
import { type MuxParams, MuxSession, type MuxStream } from "../shared/mux/mod.ts";
import {
  FEATURE_ACK_TIMESTAMPS,
  FEATURE_COMPACT_HEADS,
  FEATURE_DRAIN,
  FEATURE_SPLICE,
  FEATURE_WARM_UP,
  type Welcome,
} from "../shared/protocol/mod.ts";
import { TUNNEL_MUX_PARAMS } from "../shared/tunnel_params.ts";
import { sleep } from "../shared/sleep.ts";
import type { DialedTunnel, TunnelDialer } from "./dialer.ts";
import type { ClientEvent, TunnelInfo } from "./events.ts";
import { classifyFailure, ClientFailure } from "./failure.ts";
import { type ForwardOptions, serveStream } from "./forwarder.ts";
import type { ServerNode } from "./nodes.ts";
import type { RacedTunnel, RacingDialer } from "./race.ts";
import { CLIENT_VERSION } from "./version.ts";
import { Buffer } from "node:buffer";

/** A tunnel that is up: its transport, its mux session and what the server said. */
export interface Up {
  readonly dialed: DialedTunnel;
  readonly session: MuxSession;
  readonly control: MuxStream;
  readonly welcome: Welcome;
  /** Which transport carries it (the racing dialer says which one won). */
  readonly transport: string;
  readonly since: number;
}

/** What a tunnel needs of the client's options (`ClientOptions` has them all). */
export interface TunnelSettings {
  readonly domain: string;
  readonly target: URL;
  readonly helloTimeoutMs?: number;
  readonly muxParams?: Partial<MuxParams>;
  readonly drainTimeoutMs?: number;
  readonly statsIntervalMs?: number;
  /** Warm-ups over UDP off loopback, both ways (shared/mux/warm_up.ts). Default true. */
  readonly warmUp?: boolean;
}

/** Shared by every tunnel of one `runClient`. */
export interface Ctx {
  readonly options: TunnelSettings;
  readonly clock: Clock;
  readonly signal: AbortSignal;
  readonly emit: (e: ClientEvent) => void;
  readonly forward: ForwardOptions;
  readonly counters: { inFlight: number; served: number; failed: number };
  /** Requests being served and retired tunnels draining: a stopping client awaits them. */
  readonly serving: Set<Promise<void>>;
  /** The tunnels up, by node key, and their sessions (for the stats). */
  readonly up: Map<string, { info: TunnelInfo; session: MuxSession }>;
  /** Tunnels aimed for now (`redundancy`, or fewer when fewer nodes are known). */
  wanted: number;
}

/** Dials, starts the mux session and says hello. Cleans up and throws on failure. */
export async function bringUp(dialer: TunnelDialer, ctx: Ctx, signal: AbortSignal): Promise<Up> {
  const { options, clock } = ctx;
  const dialed = await dialer.dial(signal);
  const session = new MuxSession(dialed.conn, {
    role: "client",
    clock,
    params: { ...TUNNEL_MUX_PARAMS, ...options.muxParams },
  });
  const onAbort = () => session.abort(0, "client stopping");
  signal.addEventListener("abort", onAbort, { once: true });
  const warmUp = (options.warmUp ?? true) && dialed.udpPath === true;
  try {
    const { welcome, control } = await sayHello(
      session,
      {
        client: CLIENT_VERSION,
        domain: options.domain,
        target: options.target.origin,
        features: [
          FEATURE_SPLICE,
          FEATURE_COMPACT_HEADS,
          FEATURE_ACK_TIMESTAMPS,
          ...(warmUp ? [FEATURE_WARM_UP] : []),
        ],
      },
      options.helloTimeoutMs ?? 10_000,
      clock,
    );
    if (welcome.features?.includes(FEATURE_ACK_TIMESTAMPS)) session.sendAckTimestamps();
    // Our sending direction (responses, what visitors download) learns its path while the
    // tunnel waits for requests; the server warms its own (requests) up likewise. The welcome
    // lists the feature only when the server granted this tunnel a warm-up.
    if (warmUp && welcome.features?.includes(FEATURE_WARM_UP)) void session.warmUp();
    // From now on a restarted server's stateless reset ends this tunnel at once.
    if (welcome.reset) dialed.expectStatelessReset?.(Buffer.from(welcome.reset, "hex"));
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

export function tunnelList(ctx: Ctx): TunnelInfo[] {
  return [...ctx.up.values()].map((t) => t.info);
}

/** Records `up` as the node's tunnel and says so. */
export function announce(up: Up, node: ServerNode, ctx: Ctx): void {
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
    return await bringUp(dialer.preferred, ctx, signal);
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
 * Requests in flight on it finish either way. A server that never closes it is cut
 * after `RETIRE_TIMEOUT_MS` (the server itself gives a draining tunnel 5 minutes):
 * until then the old session holds its socket and its node's slot. When the client
 * stops meanwhile, the old tunnel gets what the one in use gets: `drainTimeoutMs`.
 */
async function retire(old: Up, ctx: Ctx): Promise<void> {
  const timers = [
    ctx.clock.setTimer(
      () => old.session.abort(0, "retired tunnel not closed by the server in time"),
      RETIRE_TIMEOUT_MS,
    ),
  ];
  const onStop = () =>
    timers.push(ctx.clock.setTimer(
      () => old.session.abort(0, "client stopping: drain took too long"),
      ctx.options.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS,
    ));
  if (ctx.signal.aborted) onStop();
  else ctx.signal.addEventListener("abort", onStop, { once: true });
  try {
    if (old.welcome.features?.includes(FEATURE_DRAIN)) {
      await sendDrain(old.control).catch(() => old.session.goAway());
    } else {
      old.session.goAway();
    }
    await old.session.closed;
  } finally {
    ctx.signal.removeEventListener("abort", onStop);
    for (const t of timers) ctx.clock.clearTimer(t);
    await tearDown(old.dialed);
  }
}

/** Longest wait for the server to close a retired tunnel (longer than its 5 min drain). */
const RETIRE_TIMEOUT_MS = 6 * 60_000;

/** Default `drainTimeoutMs`: how long a stopping client waits for its tunnels to drain. */
const DEFAULT_DRAIN_TIMEOUT_MS = 10_000;

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
    ctx.options.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS,
  );
  up.session.closed.then(() => ctx.clock.clearTimer(timer));
  sendDrain(up.control).catch(() => up.session.abort(0, "client stopping"));
}

/**
 * Serves `first` and, on a racing dialer's fallback, moves to the preferred
 * transport when a re-probe finds it again. Resolves with why the tunnel in use
 * ended (its session closed). On stop, drains it (`drainOnStop`).
 */
export async function serveTunnel(
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
      // Not awaited here: a tunnel in use that ends reconnects at once, however long
      // the old one drains. The client's stop awaits it (`ctx.serving`).
      const r = retire(old, ctx).catch(() => {});
      ctx.serving.add(r);
      r.finally(() => ctx.serving.delete(r));
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
  }
}

function isRacing(d: TunnelDialer): d is RacingDialer {
  return "preferred" in d && "fallback" in d && "reprobeIntervalMs" in d;
}

/** Emits a `stats` event every `statsIntervalMs` until the returned function is called. */
export function startStats(ctx: Ctx): () => void {
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
