/**
 * The client's main loop: connect (DTLS) → mux session → hello → serve every stream
 * the server opens, concurrently → when the session ends, reconnect with exponential
 * backoff and jitter (`Backoff`). Runs until `signal` aborts.
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
import { formatHostPort } from "../shared/names.ts";
import { sleep } from "../shared/sleep.ts";
import { type DialedTunnel, dialerFor, type DtlsEngine, type TunnelDialer } from "./dialer.ts";
import { type RacedTunnel, RaceError, type RacingDialer } from "./race.ts";

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
  /** The HopGate server's DTLS address. */
  server: { hostname: string; port: number };
  /** The domain this client serves (the PSK identity). */
  domain: string;
  /** The domain's client API key (only its HMAC-derived PSK is used). */
  apiKey: string;
  /** The local service, e.g. `http://127.0.0.1:3000`. */
  target: URL;
  /** DTLS client implementation, when no `dialer` is given. Default "hopgate". */
  engine?: DtlsEngine;
  /**
   * How tunnels are dialled. Default: a DTLS dialer for `engine` to `server`.
   * Tests pass one on a simulated network.
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

export type ClientEvent =
  | { type: "connecting"; attempt: number; server: string; transport: string }
  | {
    type: "connected";
    server: string;
    domain: string;
    sessionId: string;
    serverVersion: string;
    /** Which transport carries the tunnel (a re-probe that moved it sends another). */
    transport: string;
  }
  /** A re-probe of the preferred transport failed; the tunnel stays where it is. */
  | { type: "probe"; transport: string; ok: false; message: string }
  | {
    type: "stats";
    rttMs: number | undefined;
    inFlight: number;
    served: number;
    failed: number;
    /** Connections to the local service: open now, idle of those, opened so far. */
    local: { open: number; idle: number; opened: number };
  }
  | { type: "request"; outcome: ForwardOutcome; durationMs: number }
  | { type: "failure"; kind: FailureKind; message: string; retryInMs: number }
  | { type: "stopped" };

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
  /** Stops listening for the client's own stop signal. */
  readonly release: () => void;
}

/** Shared by every session of one `runClient`. */
interface Ctx {
  readonly options: ClientOptions;
  readonly clock: Clock;
  readonly signal: AbortSignal;
  readonly server: string;
  readonly emit: (e: ClientEvent) => void;
  readonly forward: ForwardOptions;
  readonly counters: { inFlight: number; served: number; failed: number };
  readonly serving: Set<Promise<void>>;
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
  const release = () => signal.removeEventListener("abort", onAbort);
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
    return { dialed, session, control, welcome, transport, since: clock.now(), release };
  } catch (e) {
    release();
    session.abort(0, "client giving up on this session");
    await session.closed;
    await tearDown(dialed);
    throw e;
  }
}

async function tearDown(dialed: DialedTunnel): Promise<void> {
  dialed.conn.close();
  await dialed.closed();
}

function connectedEvent(up: Up, ctx: Ctx): ClientEvent {
  return {
    type: "connected",
    server: ctx.server,
    domain: ctx.options.domain,
    sessionId: up.welcome.session,
    serverVersion: up.welcome.server,
    transport: up.transport,
  };
}

/**
 * While the tunnel runs on a racing dialer's fallback: waits the re-probe interval,
 * then tries the preferred transport. Resolves with a new tunnel, or undefined
 * (failed, or stopped) for the caller to try again later.
 */
async function reprobe(
  dialer: RacingDialer,
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
      const f = classifyFailure(e, ctx.server, ctx.options.domain);
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
  old.release();
  await tearDown(old.dialed);
}

/**
 * Serves `first` and, on a racing dialer's fallback, moves to the preferred
 * transport when a re-probe finds it again. Resolves with why the tunnel in use
 * ended (its session closed).
 */
async function serveTunnel(first: Up, dialer: TunnelDialer, ctx: Ctx): Promise<ClientFailure> {
  const racing = isRacing(dialer) ? dialer : undefined;
  const probing = new AbortController();
  const stopProbing = () => probing.abort();
  ctx.signal.addEventListener("abort", stopProbing, { once: true });
  const retiring = new Set<Promise<void>>();
  let current = first;
  let probe: Promise<Up | undefined> | undefined;
  try {
    let served = serveSession(current.session, current.control, ctx);
    for (;;) {
      if (
        racing && current.transport !== racing.preferred.transport && !probing.signal.aborted
      ) {
        probe ??= reprobe(racing, ctx, probing.signal);
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
      served = serveSession(current.session, current.control, ctx);
      ctx.emit(connectedEvent(current, ctx));
      const r = retire(old).catch(() => {});
      retiring.add(r);
      r.finally(() => retiring.delete(r));
    }
    const info = await current.session.closed;
    current.release();
    return new ClientFailure(
      "session_lost",
      `Connection to ${ctx.server} lost: ${info.remote ? "closed by the server" : "closed"}${
        info.reason ? ` (${info.reason})` : ""
      }`,
    );
  } finally {
    ctx.signal.removeEventListener("abort", stopProbing);
    probing.abort();
    // A probe that connected just as the tunnel ended: it is not used.
    const late = await probe;
    if (late) {
      late.release();
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

/**
 * Runs the client until `signal` aborts; resolves once everything is closed.
 * Never rejects for network reasons (they are reported as `failure` events).
 */
export async function runClient(options: ClientOptions, signal: AbortSignal): Promise<void> {
  const emit = options.onEvent ?? (() => {});
  const server = formatHostPort(options.server);
  const clock = options.clock ?? realClock;
  const dialer = options.dialer ?? dialerFor(options.engine ?? "hopgate", {
    server: options.server,
    domain: options.domain,
    apiKey: options.apiKey,
    handshakeTimeoutMs: options.handshakeTimeoutMs ?? 10_000,
  });
  const backoff = new Backoff(options.backoff, options.random);
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
    server,
    emit,
    forward,
    counters: { inFlight: 0, served: 0, failed: 0 },
    serving: new Set<Promise<void>>(),
  };
  let attempt = 0;

  try {
    while (!signal.aborted) {
      attempt++;
      emit({ type: "connecting", attempt, server, transport: dialer.transport });
      let upSince = 0;
      let failure: ClientFailure;
      try {
        const up = await bringUp(dialer, ctx, signal);
        upSince = up.since;
        emit(connectedEvent(up, ctx));
        failure = await serveTunnel(up, dialer, ctx);
      } catch (e) {
        failure = classifyFailure(e, server, options.domain);
      }
      if (signal.aborted) break;
      if (upSince > 0) backoff.sessionEnded(clock.now() - upSince);
      const retryInMs = backoff.next(failure.kind);
      emit({ type: "failure", kind: failure.kind, message: failure.message, retryInMs });
      await sleep(retryInMs, signal, clock);
    }
  } finally {
    await Promise.all(ctx.serving);
    pool.close();
    emit({ type: "stopped" });
  }
}

/** Accepts streams until the session ends, serving each concurrently. */
async function serveSession(session: MuxSession, _control: MuxStream, ctx: Ctx): Promise<void> {
  const { forward, counters, serving, emit, options, signal } = ctx;
  const stats = () => {
    const rtt = session.rtt;
    emit({
      type: "stats",
      rttMs: rtt.minMs > 0 ? rtt.smoothedMs : undefined,
      ...counters,
      local: { open: forward.pool.size, idle: forward.pool.idleCount, opened: forward.pool.opened },
    });
  };
  const clock = options.clock ?? realClock;
  const every = options.statsIntervalMs ?? 1000;
  let timer: unknown;
  const tick = () => {
    stats();
    timer = clock.setTimer(tick, every);
  };
  timer = clock.setTimer(tick, every);
  try {
    for (;;) {
      const stream = await session.acceptStream();
      if (!stream || signal.aborted) {
        if (stream) stream.reset(0);
        break;
      }
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
    clock.clearTimer(timer);
    stats();
  }
}
