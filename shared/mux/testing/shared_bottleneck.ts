/**
 * Several in-memory links whose datagrams cross one bottleneck: every pair's a → b
 * traffic goes through one shared `SimPath` (its rate, drop-tail queue, delay and loss)
 * and every b → a through another, so flows compete for the same queue the way
 * connections through one router do. Deterministic on a FakeClock. `duplicate` is not
 * supported (a copy would not know which pair it belongs to).
 */
import type { PathOptions } from "../../testing/sim_path.ts";
import { SimPath } from "../../testing/sim_path.ts";
import { LinkDirection, MemoryConn } from "./lossy_link.ts";

export interface SharedBottleneckOptions {
  /** How many a/b pairs share the paths. */
  pairs: number;
  /** The a → b path (every pair's): the bottleneck under test. */
  forward: PathOptions;
  /** The b → a path (ACKs, mostly). */
  reverse: PathOptions;
  /** maxDatagramSize of every end (default 1200). */
  mtu?: number;
  seed?: number;
}

export interface SharedBottleneck {
  pairs: { a: MemoryConn; b: MemoryConn }[];
  forward: SimPath;
  reverse: SimPath;
}

/** One pair's way into a shared path: remembers where each datagram it sends must go. */
class Entry extends LinkDirection {
  readonly #shared: SimPath;
  readonly #route: WeakMap<Uint8Array, MemoryConn>;
  to: MemoryConn | null = null;

  constructor(shared: SimPath, route: WeakMap<Uint8Array, MemoryConn>, o: PathOptions) {
    super({ clock: o.clock }, 0);
    this.#shared = shared;
    this.#route = route;
  }

  override transmit(d: Uint8Array, mtu = Infinity): void {
    this.stats.sent++;
    if (this.to !== null) this.#route.set(d, this.to);
    this.#shared.transmit(d, mtu);
  }
}

export function createSharedBottleneck(o: SharedBottleneckOptions): SharedBottleneck {
  const mtu = o.mtu ?? 1200;
  const seed = o.seed ?? 1;
  const forward = new SimPath(o.forward, seed);
  const reverse = new SimPath(o.reverse, seed ^ 0x5bd1e995);
  const route = new WeakMap<Uint8Array, MemoryConn>();
  const deliver = (d: Uint8Array) => route.get(d)?.receive(d);
  forward.connect(deliver);
  reverse.connect(deliver);
  const pairs: { a: MemoryConn; b: MemoryConn }[] = [];
  for (let i = 0; i < o.pairs; i++) {
    const ab = new Entry(forward, route, o.forward);
    const ba = new Entry(reverse, route, o.reverse);
    const a = new MemoryConn(ab, mtu, false);
    const b = new MemoryConn(ba, mtu, false);
    a.peer = b;
    b.peer = a;
    ab.to = b;
    ba.to = a;
    pairs.push({ a, b });
  }
  return { pairs, forward, reverse };
}
