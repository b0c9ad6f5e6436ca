/**
 * Racing two ways to the server (docs/tcp-fallback.md): the preferred transport
 * (DTLS over UDP) starts at once; the fallback (the TCP path) starts when the
 * preferred one has not connected within `fallbackDelayMs`, or at once when it
 * fails without the server having answered. The first to connect carries the
 * tunnel and the other is abandoned (closed, if it connected too).
 *
 * An answer from the server over the preferred transport (a DTLS alert: bad key,
 * unknown domain…) is final: the fallback would hear the same, so it is not
 * waited for. When both fail, `RaceError` holds both errors.
 *
 * While the tunnel runs on the fallback, the connector dials `preferred` again
 * every `reprobeIntervalMs` and moves over make-before-break (client/connector.ts).
 */
import { type Clock, realClock } from "../shared/clock.ts";
import { DtlsError } from "../shared/dtls/mod.ts";
import type { DialedTunnel, TunnelDialer } from "./dialer.ts";

/** What `racingDialer` needs. */
export interface RaceOptions {
  /** Tried first (our DTLS over UDP). */
  preferred: TunnelDialer;
  /** Raced when the preferred one is slow or fails unanswered (the TCP path). */
  fallback: TunnelDialer;
  /** Head start of the preferred transport. Default 1500 ms. */
  fallbackDelayMs?: number;
  /** While on the fallback, the preferred transport is tried again this often. Default 300 000 ms. */
  reprobeIntervalMs?: number;
  /** Timers run on this (tests pass a fake clock). Default realClock. */
  clock?: Clock;
}

/** A raced tunnel says which transport carries it. */
export interface RacedTunnel extends DialedTunnel {
  readonly transport: string;
}

/** A dialer that races two transports; the connector reads `preferred` to re-probe. */
export interface RacingDialer extends TunnelDialer {
  dial(signal: AbortSignal): Promise<RacedTunnel>;
  readonly preferred: TunnelDialer;
  readonly fallback: TunnelDialer;
  readonly reprobeIntervalMs: number;
}

/** Both transports failed: the preferred one's error and the fallback's. */
export class RaceError extends Error {
  override name = "RaceError";
  constructor(
    readonly preferredTransport: string,
    readonly preferred: unknown,
    readonly fallbackTransport: string,
    readonly fallback: unknown,
  ) {
    super(
      `${preferredTransport}: ${messageOf(preferred)}; ${fallbackTransport}: ${
        messageOf(fallback)
      }`,
    );
  }
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** The server answered (an alert): another transport would hear the same. */
function answered(e: unknown): boolean {
  return e instanceof DtlsError && e.code === "ALERT_RECEIVED";
}

/** A dialer racing `preferred` against `fallback` (see the module comment). */
export function racingDialer(o: RaceOptions): RacingDialer {
  const clock = o.clock ?? realClock;
  const delay = o.fallbackDelayMs ?? 1500;
  return {
    transport: `${o.preferred.transport}, else ${o.fallback.transport}`,
    preferred: o.preferred,
    fallback: o.fallback,
    reprobeIntervalMs: o.reprobeIntervalMs ?? 300_000,
    dial: (signal) => race(o.preferred, o.fallback, delay, clock, signal),
  };
}

type Outcome = { ok: true; tunnel: RacedTunnel } | { ok: false; error: unknown };

function race(
  preferred: TunnelDialer,
  fallback: TunnelDialer,
  delayMs: number,
  clock: Clock,
  signal: AbortSignal,
): Promise<RacedTunnel> {
  const first = new AbortController();
  const second = new AbortController();
  const onAbort = () => {
    first.abort(signal.reason);
    second.abort(signal.reason);
  };
  signal.addEventListener("abort", onAbort, { once: true });
  return new Promise<RacedTunnel>((resolve, reject) => {
    let settled = false;
    let timer: unknown;
    let fallbackStarted = false;
    let preferredResult: Outcome | undefined;
    let fallbackResult: Outcome | undefined;
    const finish = (r: Outcome) => {
      settled = true;
      if (timer !== undefined) clock.clearTimer(timer);
      signal.removeEventListener("abort", onAbort);
      if (r.ok) resolve(r.tunnel);
      else reject(r.error);
    };
    const discard = (t: DialedTunnel) => {
      t.conn.close();
      t.closed().catch(() => {});
    };
    const startFallback = () => {
      if (fallbackStarted || settled) return;
      fallbackStarted = true;
      if (timer !== undefined) clock.clearTimer(timer);
      fallback.dial(second.signal).then(
        (t) => {
          const tunnel = { ...t, transport: fallback.transport };
          fallbackResult = { ok: true, tunnel };
          if (settled) return discard(tunnel);
          first.abort(new Error(`${fallback.transport} connected first`));
          finish({ ok: true, tunnel });
        },
        (error) => {
          fallbackResult = { ok: false, error };
          if (settled) return;
          if (preferredResult && !preferredResult.ok) {
            finish({ ok: false, error: both(preferredResult.error, error) });
          }
        },
      );
    };
    preferred.dial(first.signal).then(
      (t) => {
        const tunnel = { ...t, transport: preferred.transport };
        preferredResult = { ok: true, tunnel };
        if (settled) return discard(tunnel);
        second.abort(new Error(`${preferred.transport} connected first`));
        finish({ ok: true, tunnel });
      },
      (error) => {
        preferredResult = { ok: false, error };
        if (settled) return;
        if (signal.aborted || answered(error)) {
          second.abort(error);
          return finish({ ok: false, error });
        }
        if (fallbackResult && !fallbackResult.ok) {
          return finish({ ok: false, error: both(error, fallbackResult.error) });
        }
        startFallback();
      },
    );
    timer = clock.setTimer(() => {
      timer = undefined;
      startFallback();
    }, delayMs);
  });

  function both(p: unknown, f: unknown): unknown {
    // The fallback's own answer from the server (an alert over the TCP path) says most.
    if (answered(f)) return f;
    return new RaceError(preferred.transport, p, fallback.transport, f);
  }
}
