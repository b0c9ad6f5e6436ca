/**
 * An in-memory datagram network for DTLS tests: `PacketSocket`s that deliver to
 * each other asynchronously (like UDP), with seeded loss, duplication, reordering
 * and a per-datagram filter. No real sockets, deterministic for a given seed.
 */
import { prng } from "../../testing/prng.ts";
import type { PacketSocket, PacketSocketFactory, UdpHandler } from "../udp.ts";

export interface MemoryNetOptions {
  seed?: number;
  /** Probability a datagram is dropped. */
  loss?: number;
  /** Probability a datagram is delivered twice. */
  duplicate?: number;
  /** Probability a datagram is held back and delivered after the next one. */
  reorder?: number;
  /** Last word on each datagram: return false to drop it. */
  filter?: (datagram: Uint8Array, from: string, to: string) => boolean;
}

export class MemoryNet {
  readonly #sockets = new Map<string, (d: Uint8Array, from: Deno.NetAddr) => void>();
  readonly #rand: () => number;
  #nextPort = 40000;
  #held: (() => void) | undefined;
  readonly #timers = new Set<ReturnType<typeof setTimeout>>();
  delivered = 0;
  dropped = 0;

  constructor(readonly opts: MemoryNetOptions = {}) {
    this.#rand = prng(opts.seed ?? 1);
  }

  readonly socket: PacketSocketFactory = (hostname: string, port: number, handler: UdpHandler) => {
    const p = port || this.#nextPort++;
    const key = `${hostname}:${p}`;
    if (this.#sockets.has(key)) throw new Deno.errors.AddrInUse(key);
    const self: Deno.NetAddr = { transport: "udp", hostname, port: p };
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
    const sock: PacketSocket = {
      addr: { hostname, port: p },
      send: (d, to) => this.#send(d.slice(), self, `${to.hostname}:${to.port}`),
      close: () => {
        this.#sockets.delete(key);
        resolveDone();
      },
      done,
    };
    return sock;
  };

  #send(d: Uint8Array, from: Deno.NetAddr, to: string): void {
    const o = this.opts, r = this.#rand;
    if (
      (o.loss && r() < o.loss) || (o.filter && !o.filter(d, `${from.hostname}:${from.port}`, to))
    ) {
      this.dropped++;
      return;
    }
    const deliver = () => {
      const target = this.#sockets.get(to);
      if (target) {
        this.delivered++;
        target(d, from);
      }
    };
    const copies = o.duplicate && r() < o.duplicate ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      if (o.reorder && !this.#held && r() < o.reorder) {
        // Held until the next datagram passes it, or 5 ms at most.
        this.#held = deliver;
        this.#later(() => this.#releaseHeld(deliver), 5);
        continue;
      }
      this.#later(deliver);
      const held = this.#held;
      if (held) this.#later(() => this.#releaseHeld(held));
    }
  }

  #releaseHeld(f: () => void): void {
    if (this.#held !== f) return;
    this.#held = undefined;
    f();
  }

  #later(f: () => void, ms = 0): void {
    const t = setTimeout(() => {
      this.#timers.delete(t);
      f();
    }, ms);
    this.#timers.add(t);
  }

  /** Cancels deliveries still in flight (call at the end of a test). */
  close(): void {
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    this.#held = undefined;
  }
}

export { prng };
