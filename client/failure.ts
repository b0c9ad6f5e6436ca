/**
 * Why an attempt failed, in one clear line with a stable kind
 * (`classifyFailure`), and how long to wait before the next (`Backoff`).
 */
import { AlertDescription, alertName, DtlsError } from "../shared/dtls/mod.ts";
import { HelloRejectedError } from "../shared/handshake/mod.ts";
import { MuxSessionError } from "../shared/mux/mod.ts";
import type { FailureKind } from "./events.ts";
import { RaceError } from "./race.ts";
import { CLIENT_VERSION } from "./version.ts";

export interface BackoffOptions {
  /** First retry delay ceiling. Default 500 ms. */
  initialMs?: number;
  /** Largest delay. Default 30 000 ms. */
  maxMs?: number;
  /** A session that lived longer than this resets the backoff. Default 30 000 ms. */
  resetAfterMs?: number;
  /**
   * The first attempt after a tunnel that was up is lost waits up to this long
   * (`afterLoss`), at most `maxMs`, at least `initialMs`. Default 3 000 ms: one client is
   * back soon after its server restarts, and a node's clients arrive over 3 s, not at once.
   */
  reconnectSpreadMs?: number;
}

/**
 * Verdicts on the credentials, which every node shares (one database): after
 * one, no node is tried before its long wait is over.
 */
export const CLIENT_WIDE: ReadonlySet<FailureKind> = new Set(["bad_api_key", "unknown_domain"]);

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
    if (e.code === "HANDSHAKE_STALLED") {
      return new ClientFailure(
        "server_busy",
        `Server ${server} busy: it answered, then did not finish the DTLS handshake in time`,
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
  readonly reconnectSpreadMs: number;
  readonly #random: () => number;
  constructor(o: BackoffOptions = {}, random: () => number = Math.random) {
    this.initialMs = o.initialMs ?? 500;
    this.maxMs = o.maxMs ?? 30_000;
    this.resetAfterMs = o.resetAfterMs ?? 30_000;
    this.reconnectSpreadMs = o.reconnectSpreadMs ?? 3_000;
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
  /**
   * The delay before the first attempt after a tunnel that was up ended (call
   * `sessionEnded` first). A node that restarts or dies ends all its tunnels at once
   * (its CLOSE reaches every client together; a crash is noticed within one keepalive
   * period), and every client retrying within `initialMs` would bring thousands of
   * handshakes in the same second: more than the node finishes before the clients'
   * timeouts, so they would fail and come back together again. This first wait lies
   * anywhere between `initialMs / 2` and `reconnectSpreadMs` (at most `maxMs`, at least
   * `initialMs`): 10,000 clients arrive at ~1,000 a second. A backoff the tunnel did not
   * reset (it lived briefly: the connection flaps) goes on with `next`.
   */
  afterLoss(kind: FailureKind): number {
    if (PERSISTENT.has(kind) || this.#attempt > 0) return this.next(kind);
    this.#attempt++;
    const floor = this.initialMs / 2;
    const ceiling = Math.max(this.initialMs, Math.min(this.reconnectSpreadMs, this.maxMs));
    return Math.round(floor + this.#random() * (ceiling - floor));
  }
  /** A session lived `ms`: long enough resets the backoff. */
  sessionEnded(ms: number): void {
    if (ms > this.resetAfterMs) this.#attempt = 0;
  }
}
