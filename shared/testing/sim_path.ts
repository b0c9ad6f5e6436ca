/**
 * One direction of a simulated network path: loss (independent and
 * Gilbert-Elliott bursts), reordering, duplication, delay and jitter, a path MTU,
 * a bottleneck (rate + drop-tail queue) and a blackhole switch, on a `Clock`.
 * Deterministic for a given seed on a fake clock. Both in-memory simulators use
 * it: the mux's link pair (shared/mux/testing/lossy_link.ts) and the socket
 * network (shared/testing/sim_net.ts). Its fields may be changed mid-test.
 */
import { setImmediate } from "node:timers";
import type { Clock } from "../clock.ts";
import { prng } from "./prng.ts";

/** Impairments of one direction. */
export interface PathOptions {
  clock: Clock;
  /** Independent loss probability per datagram (0..1). */
  loss?: number;
  /** Burst loss: probability to enter the lossy state per datagram, and to leave it. */
  burst?: { enter: number; exit: number };
  /** Probability a datagram is held back by `reorderDelayMs` (so later ones overtake it). */
  reorder?: number;
  reorderDelayMs?: number;
  /** Probability a datagram is delivered twice. */
  duplicate?: number;
  /** One-way delay. */
  delayMs?: number;
  /** Uniform extra delay in [0, jitterMs); reorders too. */
  jitterMs?: number;
  /** What the path carries: larger datagrams vanish silently (counted in `pathMtuDrops`). */
  pathMtu?: number;
  /** Bottleneck rate in bytes per ms (0 = unlimited). */
  rateBytesPerMs?: number;
  /** Bottleneck queue limit in bytes (drop-tail). */
  queueBytes?: number;
  /** Deliver zero-delay datagrams in a setImmediate batch instead of a clock timer (real-clock benches). */
  immediate?: boolean;
  /**
   * With `immediate`: microtask turns to yield after each datagram of a batch (default 0, the
   * whole batch at once). The UDP loop reads a burst so: every `receive` completes at once and
   * resumes in a microtask, all within one macrotask.
   */
  microtaskTurns?: number;
}

/** What happened to the datagrams sent into a path. */
export interface PathStats {
  sent: number;
  delivered: number;
  lost: number;
  queueDrops: number;
  duplicated: number;
  reordered: number;
  /** Larger than the sender's own limit (`transmit`'s `mtu`). */
  oversize: number;
  pathMtuDrops: number;
  /** Largest datagram delivered. */
  largestDelivered: number;
}

/** Counters at zero. */
export function emptyPathStats(): PathStats {
  return {
    sent: 0,
    delivered: 0,
    lost: 0,
    queueDrops: 0,
    duplicated: 0,
    reordered: 0,
    oversize: 0,
    pathMtuDrops: 0,
    largestDelivered: 0,
  };
}

export class SimPath {
  loss: number;
  /** Datagrams above this are dropped silently. */
  pathMtu: number;
  /** While true, everything is dropped (a vanished peer, an outage). */
  blackhole = false;
  readonly stats: PathStats = emptyPathStats();
  readonly #o: PathOptions;
  readonly #rand: () => number;
  #bad = false;
  #busyUntil = 0;
  #deliver: ((d: Uint8Array) => void) | null = null;
  #immediate: Uint8Array[] = [];
  #immediateScheduled = false;
  #closed = false;
  readonly #timers = new Set<unknown>();

  constructor(o: PathOptions, seed: number) {
    this.#o = o;
    this.loss = o.loss ?? 0;
    this.pathMtu = o.pathMtu ?? Infinity;
    this.#rand = prng(seed);
  }

  /** Where datagrams that make it through go. */
  connect(deliver: (d: Uint8Array) => void): void {
    this.#deliver = deliver;
  }

  /** Sends `d` into the path; `mtu` is the sender's own limit (larger is dropped, counted). */
  transmit(d: Uint8Array, mtu = Infinity): void {
    const st = this.stats;
    st.sent++;
    if (d.length > mtu) {
      st.oversize++;
      return;
    }
    if (d.length > this.pathMtu) {
      st.pathMtuDrops++;
      return;
    }
    const o = this.#o;
    const r = this.#rand;
    if (o.burst !== undefined) {
      if (this.#bad) {
        if (r() < o.burst.exit) this.#bad = false;
      } else if (r() < o.burst.enter) this.#bad = true;
    }
    if (this.blackhole || this.#bad || (this.loss > 0 && r() < this.loss)) {
      st.lost++;
      return;
    }
    const clock = o.clock;
    const now = clock.now();
    let at = now;
    const rate = o.rateBytesPerMs ?? 0;
    if (rate > 0) {
      const queued = Math.max(0, this.#busyUntil - now) * rate;
      if (queued + d.length > (o.queueBytes ?? Infinity)) {
        st.queueDrops++;
        return;
      }
      this.#busyUntil = Math.max(now, this.#busyUntil) + d.length / rate;
      at = this.#busyUntil;
    }
    at += o.delayMs ?? 0;
    if (o.jitterMs) at += r() * o.jitterMs;
    if (o.reorder !== undefined && r() < o.reorder) {
      at += o.reorderDelayMs ?? 5;
      st.reordered++;
    }
    this.#schedule(d, at - now);
    if (o.duplicate !== undefined && r() < o.duplicate) {
      st.duplicated++;
      this.#schedule(d.slice(), at - now + r() * 2);
    }
  }

  /** Cancels deliveries still in flight. */
  close(): void {
    this.#closed = true;
    for (const t of this.#timers) this.#o.clock.clearTimer(t);
    this.#timers.clear();
    this.#immediate = [];
  }

  #schedule(d: Uint8Array, delay: number): void {
    if (delay <= 0 && this.#o.immediate) {
      this.#immediate.push(d);
      if (!this.#immediateScheduled) {
        this.#immediateScheduled = true;
        setImmediate(() => this.#flushImmediate());
      }
      return;
    }
    const t = this.#o.clock.setTimer(() => {
      this.#timers.delete(t);
      this.#arrive(d);
    }, delay);
    this.#timers.add(t);
  }

  async #flushImmediate(): Promise<void> {
    this.#immediateScheduled = false;
    const q = this.#immediate;
    this.#immediate = [];
    const turns = this.#o.microtaskTurns ?? 0;
    for (const d of q) {
      if (this.#closed) return;
      this.#arrive(d);
      for (let i = 0; i < turns; i++) await null;
    }
  }

  #arrive(d: Uint8Array): void {
    const to = this.#deliver;
    if (to === null || this.blackhole) return;
    this.stats.delivered++;
    if (d.length > this.stats.largestDelivered) this.stats.largestDelivered = d.length;
    to(d);
  }
}
