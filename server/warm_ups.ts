/**
 * The node's tunnel warm-ups (shared/mux/warm_up.ts; docs/congestion.md, "Warm-up"). A
 * client that asks for one (FEATURE_WARM_UP in its hello) and gets a grant here has the
 * feature listed in its welcome: it then warms up its sending direction (responses, which
 * visitors download) and the server its own (requests and their bodies). Each fills the
 * path for a few round trips (~6 BDPs, at most 4 MiB and 3 s), and after a restart every
 * client reconnects at once: padding from a thousand clients together would fill the
 * node's own link. So at most `concurrency` grants are held at a time, each from the
 * welcome for at least `holdMs` (what a client's warm-up may last) and until the server's
 * warm-up ended. A client that asks while none is free goes without either way (counted
 * `skipped`): it learns its path on its first transfer, as without warm-ups.
 */
import type { Clock } from "../shared/clock.ts";
import {
  type MuxSession,
  WARM_UP_DEFAULT_MAX_MS,
  type WarmUpEnd,
  type WarmUpOptions,
} from "../shared/mux/mod.ts";

export interface WarmUpGrantsOptions {
  /** Grants held at once. Default 4. */
  concurrency?: number;
  /** A grant is held at least this long from the welcome. Default 3000 ms (a warm-up's time bound). */
  holdMs?: number;
  /** The server's warm-ups' bounds. */
  warmUp?: WarmUpOptions;
  clock: Clock;
}

/** The server's warm-ups by how they ended; `skipped`: a client asked while no grant was free. */
export type WarmUpCounts = Record<WarmUpEnd | "skipped", number>;

/** Every count at 0. */
export function zeroWarmUpCounts(): WarmUpCounts {
  return { modelled: 0, bytes: 0, time: 0, closed: 0, "not-needed": 0, skipped: 0 };
}

/** One tunnel's grant: exactly one of `start` (the tunnel is up) or `drop` (it is not). */
export interface WarmUpGrant {
  start(session: MuxSession): void;
  drop(): void;
}

export class WarmUpGrants {
  readonly counts: WarmUpCounts = zeroWarmUpCounts();
  /** Bytes of the server's warm-up packets, all tunnels. */
  bytesSent = 0;
  readonly #concurrency: number;
  readonly #holdMs: number;
  readonly #warmUp: WarmUpOptions;
  readonly #clock: Clock;
  #held = 0;

  constructor(o: WarmUpGrantsOptions) {
    this.#concurrency = o.concurrency ?? 4;
    this.#holdMs = o.holdMs ?? WARM_UP_DEFAULT_MAX_MS;
    this.#warmUp = o.warmUp ?? {};
    this.#clock = o.clock;
    if (!Number.isInteger(this.#concurrency) || this.#concurrency < 1) {
      throw new RangeError(`warm-up concurrency must be a positive integer, got ${o.concurrency}`);
    }
  }

  /** Grants held now. */
  get held(): number {
    return this.#held;
  }

  /** A grant if one is free (the welcome then lists the feature), else null (counted). */
  tryGrant(): WarmUpGrant | null {
    if (this.#held >= this.#concurrency) {
      this.counts.skipped++;
      return null;
    }
    this.#held++;
    // Released once both the hold time passed and the server's warm-up ended (or never ran).
    let parts = 2;
    const release = () => {
      if (--parts === 0) this.#held--;
    };
    this.#clock.setTimer(release, this.#holdMs);
    let used = false;
    return {
      start: (session) => {
        if (used) return;
        used = true;
        void session.warmUp(this.#warmUp).then((r) => {
          this.counts[r.end]++;
          this.bytesSent += r.bytes;
          release();
        });
      },
      drop: () => {
        if (used) return;
        used = true;
        release();
      },
    };
  }
}
