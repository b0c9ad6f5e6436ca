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
import { HelloRejectedError, sayHello } from "../shared/handshake/mod.ts";
import { OriginPool } from "./origin/pool.ts";
import { type MuxParams, MuxSession, MuxSessionError, type MuxStream } from "../shared/mux/mod.ts";
import { type ForwardOptions, type ForwardOutcome, serveStream } from "./forwarder.ts";
import { TUNNEL_MUX_PARAMS } from "../shared/tunnel_params.ts";
import { FEATURE_SPLICE } from "../shared/protocol/mod.ts";
import { formatHostPort } from "../shared/names.ts";
import { sleep } from "../shared/sleep.ts";
import { type DialedTunnel, dialerFor, type DtlsEngine, type TunnelDialer } from "./dialer.ts";

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
  }
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
  const counters = { inFlight: 0, served: 0, failed: 0 };
  const serving = new Set<Promise<void>>();
  let attempt = 0;

  try {
    while (!signal.aborted) {
      attempt++;
      emit({ type: "connecting", attempt, server, transport: dialer.transport });
      let connected: DialedTunnel | undefined;
      let session: MuxSession | undefined;
      let upSince = 0;
      let failure: ClientFailure;
      try {
        connected = await dialer.dial(signal);
        session = new MuxSession(connected.conn, {
          role: "client",
          clock,
          params: { ...TUNNEL_MUX_PARAMS, ...options.muxParams },
        });
        const s = session;
        const onAbort = () => s.abort(0, "client stopping");
        signal.addEventListener("abort", onAbort, { once: true });
        try {
          const { welcome, control } = await sayHello(
            s,
            {
              client: CLIENT_VERSION,
              domain: options.domain,
              target: options.target.origin,
              features: [FEATURE_SPLICE],
            },
            options.helloTimeoutMs ?? 10_000,
            clock,
          );
          upSince = clock.now();
          emit({
            type: "connected",
            server,
            domain: options.domain,
            sessionId: welcome.session,
            serverVersion: welcome.server,
          });
          await serveSession(s, control, forward, counters, serving, emit, options, signal);
        } finally {
          signal.removeEventListener("abort", onAbort);
        }
        const info = await s.closed;
        failure = new ClientFailure(
          "session_lost",
          `Connection to ${server} lost: ${info.remote ? "closed by the server" : "closed"}${
            info.reason ? ` (${info.reason})` : ""
          }`,
        );
      } catch (e) {
        session?.abort(0, "client giving up on this session");
        failure = classifyFailure(e, server, options.domain);
      } finally {
        if (session) await session.closed;
        connected?.conn.close();
        await connected?.closed();
      }
      if (signal.aborted) break;
      if (upSince > 0) backoff.sessionEnded(clock.now() - upSince);
      const retryInMs = backoff.next(failure.kind);
      emit({ type: "failure", kind: failure.kind, message: failure.message, retryInMs });
      await sleep(retryInMs, signal, clock);
    }
  } finally {
    await Promise.all(serving);
    pool.close();
    emit({ type: "stopped" });
  }
}

/** Accepts streams until the session ends, serving each concurrently. */
async function serveSession(
  session: MuxSession,
  _control: MuxStream,
  forward: ForwardOptions,
  counters: { inFlight: number; served: number; failed: number },
  serving: Set<Promise<void>>,
  emit: (e: ClientEvent) => void,
  options: ClientOptions,
  signal: AbortSignal,
): Promise<void> {
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
