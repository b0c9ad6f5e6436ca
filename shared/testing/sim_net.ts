/**
 * The simulated datagram network in-process tests share: `PacketSocket`s bound
 * to made-up addresses that deliver to each other asynchronously, as UDP does,
 * on a `Clock` (real or fake), each direction through a `SimPath` (delay,
 * seeded loss and bursts, duplication, reordering, a bottleneck, an MTU), plus a
 * per-datagram filter. DTLS endpoints and a
 * whole tunnel (server hub + client connector) run on it. No real sockets; deterministic for a given seed on a fake clock.
 */
import { type Clock, realClock } from "../clock.ts";
import { prng } from "./prng.ts";
import { emptyPathStats, type PathOptions, type PathStats, SimPath } from "./sim_path.ts";

/** Called per datagram; the view is valid only during the call (as with a real socket). */
export type SimHandler = (datagram: Uint8Array, from: Deno.NetAddr) => void;

/** The socket side `SimNet.socket` hands out (the shape of shared/dtls's PacketSocket). */
export interface SimSocket {
  readonly addr: { hostname: string; port: number };
  send(datagram: Uint8Array, to: Deno.NetAddr): void;
  close(): void;
  /** Settles once the socket is closed. */
  readonly done: Promise<void>;
}

export interface SimNetOptions extends Omit<PathOptions, "clock"> {
  seed?: number;
  /** Timers (delay, reordering, the bottleneck) run on this. Default realClock. */
  clock?: Clock;
  /** Datagrams larger than this are dropped by the sender's socket (counted in `oversize`). */
  mtu?: number;
  /** Last word on each datagram: return false to drop it. */
  filter?: (datagram: Uint8Array, from: string, to: string) => boolean;
}

/**
 * Sockets on made-up addresses; each (from, to) pair of addresses gets its own
 * one-way `SimPath` with the net's impairments (seeded per pair), created on first use.
 */
export class SimNet {
  readonly #sockets = new Map<string, (d: Uint8Array, from: Deno.NetAddr) => void>();
  readonly #paths = new Map<string, SimPath>();
  readonly #pathOptions: PathOptions;
  readonly #seed: number;
  #nextPort = 40000;
  #loss: number;
  #blackhole = false;
  /** Datagrams dropped by `filter`. */
  filtered = 0;

  constructor(readonly opts: SimNetOptions = {}) {
    this.#seed = opts.seed ?? 1;
    this.#loss = opts.loss ?? 0;
    const { seed: _s, mtu: _m, filter: _f, ...path } = opts;
    this.#pathOptions = { ...path, clock: opts.clock ?? realClock };
  }

  /** Loss probability on every path, now and for paths made later. */
  get loss(): number {
    return this.#loss;
  }
  set loss(p: number) {
    this.#loss = p;
    for (const path of this.#paths.values()) path.loss = p;
  }

  /** While true every path drops everything (an outage). */
  get blackhole(): boolean {
    return this.#blackhole;
  }
  set blackhole(on: boolean) {
    this.#blackhole = on;
    for (const path of this.#paths.values()) path.blackhole = on;
  }

  /** The one-way path from one "host:port" to another (made on first use). */
  path(from: string, to: string): SimPath {
    const key = `${from}>${to}`;
    let p = this.#paths.get(key);
    if (!p) {
      p = new SimPath(this.#pathOptions, (this.#seed * 0x9e3779b1 + hash(key)) >>> 0);
      p.loss = this.#loss;
      p.blackhole = this.#blackhole;
      p.connect((d) => this.#sockets.get(to)?.(d, parseAddr(from)));
      this.#paths.set(key, p);
    }
    return p;
  }

  /** Every path's counters summed. */
  get stats(): PathStats {
    const sum = emptyPathStats();
    for (const p of this.#paths.values()) {
      for (const k of Object.keys(sum) as (keyof PathStats)[]) {
        sum[k] = k === "largestDelivered" ? Math.max(sum[k], p.stats[k]) : sum[k] + p.stats[k];
      }
    }
    return sum;
  }
  /** Datagrams delivered to a bound socket's path end. */
  get delivered(): number {
    return this.stats.delivered;
  }
  /** Datagrams dropped on the way (loss, filter, MTU, queue, blackhole). */
  get dropped(): number {
    const s = this.stats;
    return s.lost + s.oversize + s.pathMtuDrops + s.queueDrops + this.filtered;
  }

  /** Binds a socket at (hostname, port); port 0 picks a free one. A `PacketSocketFactory`. */
  readonly socket = (hostname: string, port: number, handler: SimHandler): SimSocket => {
    const p = port || this.#nextPort++;
    const key = `${hostname}:${p}`;
    if (this.#sockets.has(key)) throw new Deno.errors.AddrInUse(key);
    let resolveDone!: () => void;
    const done = new Promise<void>((r) => resolveDone = r);
    // The real socket hands out a view into one reused buffer; do the same (a copy the
    // handler must not keep), so code that keeps views is caught by tests.
    const scratch = new Uint8Array(65536);
    this.#sockets.set(key, (d, from) => {
      scratch.set(d);
      handler(scratch.subarray(0, d.length), from);
      scratch.fill(0xee, 0, d.length);
    });
    let closed = false;
    const mtu = this.opts.mtu ?? Infinity;
    return {
      addr: { hostname, port: p },
      send: (d, to) => {
        if (closed) return;
        const dest = `${to.hostname}:${to.port}`;
        if (this.opts.filter && !this.opts.filter(d, key, dest)) {
          this.filtered++;
          return;
        }
        this.path(key, dest).transmit(d.slice(), mtu);
      },
      close: () => {
        if (closed) return;
        closed = true;
        this.#sockets.delete(key);
        resolveDone();
      },
      done,
    };
  };

  /** Cancels deliveries still in flight (call at the end of a test). */
  close(): void {
    for (const p of this.#paths.values()) p.close();
  }
}

function parseAddr(hostPort: string): Deno.NetAddr {
  const i = hostPort.lastIndexOf(":");
  return { transport: "udp", hostname: hostPort.slice(0, i), port: Number(hostPort.slice(i + 1)) };
}

/** FNV-1a over the string's UTF-16 units: a stable per-path seed. */
function hash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

export { prng };
