/**
 * An in-memory datagram link with loss, burst loss (Gilbert-Elliott), reordering,
 * duplication, delay, jitter, an MTU and an optional bottleneck (rate + drop-tail
 * queue). Deterministic for a given seed on a FakeClock.
 */
import { setImmediate } from "node:timers";
import type { DatagramConn, DatagramHandler } from "../../datagram.ts";
import type { Clock } from "../clock.ts";
import { prng } from "./fake_clock.ts";

export interface LinkOptions {
  clock: Clock;
  seed?: number;
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
  /** maxDatagramSize both ends report; larger datagrams are dropped and counted. */
  mtu?: number;
  /**
   * What the path carries, if less than `mtu` (PMTU discovery tests): larger
   * datagrams vanish silently (counted in `pathMtuDrops`). May change mid-test.
   */
  pathMtu?: number;
  /** Bottleneck rate in bytes per ms (0 = unlimited). */
  rateBytesPerMs?: number;
  /** Bottleneck queue limit in bytes (drop-tail). */
  queueBytes?: number;
  /** Deliver zero-delay datagrams in a setImmediate batch instead of a clock timer (real-clock benches). */
  immediate?: boolean;
  /** Closing one end tells the other (like DTLS close_notify). Default false (like UDP). */
  closeNotifiesPeer?: boolean;
}

export interface LinkStats {
  sent: number;
  delivered: number;
  lost: number;
  queueDrops: number;
  duplicated: number;
  reordered: number;
  oversize: number;
  pathMtuDrops: number;
  /** Largest datagram delivered. */
  largestDelivered: number;
}

/** One direction of the link; its fields may be changed mid-test. */
export class LinkDirection {
  loss: number;
  /** Datagrams above this are dropped silently (see LinkOptions.pathMtu). */
  pathMtu: number;
  /** While true, everything is dropped (a vanished peer). */
  blackhole = false;
  readonly stats: LinkStats = {
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
  #o: LinkOptions;
  #rand: () => number;
  #bad = false;
  #busyUntil = 0;
  #to: MemoryConn | null = null;
  #immediate: Uint8Array[] = [];
  #immediateScheduled = false;

  constructor(o: LinkOptions, seed: number) {
    this.#o = o;
    this.loss = o.loss ?? 0;
    this.pathMtu = o.pathMtu ?? Infinity;
    this.#rand = prng(seed);
  }
  connect(to: MemoryConn): void {
    this.#to = to;
  }

  transmit(d: Uint8Array, mtu: number): void {
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

  #schedule(d: Uint8Array, delay: number): void {
    if (delay <= 0 && this.#o.immediate) {
      this.#immediate.push(d);
      if (!this.#immediateScheduled) {
        this.#immediateScheduled = true;
        setImmediate(() => this.#flushImmediate());
      }
      return;
    }
    this.#o.clock.setTimer(() => this.#deliver(d), delay);
  }
  #flushImmediate(): void {
    this.#immediateScheduled = false;
    const q = this.#immediate;
    this.#immediate = [];
    for (const d of q) this.#deliver(d);
  }
  #deliver(d: Uint8Array): void {
    const to = this.#to;
    if (to === null || this.blackhole) return;
    this.stats.delivered++;
    if (d.length > this.stats.largestDelivered) this.stats.largestDelivered = d.length;
    to.receive(d);
  }
}

/** One end of the link. */
export class MemoryConn implements DatagramConn {
  readonly maxDatagramSize: number;
  #out: LinkDirection;
  #handler: DatagramHandler | null = null;
  #queue: Uint8Array[] = [];
  #closed = false;
  #closeReason = "";
  peer: MemoryConn | null = null;
  #notifyPeer: boolean;

  constructor(out: LinkDirection, mtu: number, notifyPeer: boolean) {
    this.#out = out;
    this.maxDatagramSize = mtu;
    this.#notifyPeer = notifyPeer;
  }
  get closed(): boolean {
    return this.#closed;
  }
  send(d: Uint8Array): void {
    if (this.#closed) return;
    this.#out.transmit(d, this.maxDatagramSize);
  }
  attach(h: DatagramHandler): void {
    this.#handler = h;
    if (this.#closed) {
      h.onClose(this.#closeReason);
      return;
    }
    const q = this.#queue;
    this.#queue = [];
    for (const d of q) h.onDatagram(d);
  }
  receive(d: Uint8Array): void {
    if (this.#closed) return;
    if (this.#handler === null) {
      if (this.#queue.length < 1024) this.#queue.push(d);
      return;
    }
    this.#handler.onDatagram(d);
  }
  close(reason = "closed"): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closeReason = reason;
    this.#handler?.onClose(reason);
    if (this.#notifyPeer) this.peer?.close("peer closed");
  }
}

export interface LinkPair {
  a: MemoryConn;
  b: MemoryConn;
  /** a → b */
  ab: LinkDirection;
  /** b → a */
  ba: LinkDirection;
}

/** Two connected ends; options apply to both directions (seeded differently). */
export function createLinkPair(o: LinkOptions): LinkPair {
  const mtu = o.mtu ?? 1200;
  const seed = o.seed ?? 1;
  const ab = new LinkDirection(o, seed);
  const ba = new LinkDirection(o, seed ^ 0x5bd1e995);
  const notify = o.closeNotifiesPeer ?? false;
  const a = new MemoryConn(ab, mtu, notify);
  const b = new MemoryConn(ba, mtu, notify);
  a.peer = b;
  b.peer = a;
  ab.connect(b);
  ba.connect(a);
  return { a, b, ab, ba };
}
