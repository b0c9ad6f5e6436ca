/**
 * A UDP relay on 127.0.0.1 for loss tests (tests only).
 *
 * It listens on an ephemeral port, remembers the first peer that sends to it as "the
 * client", and forwards datagrams between that client and one upstream address through a
 * second socket of its own. Each direction has its own impairments:
 *
 * - `loss`: probability that a datagram is dropped;
 * - `dropNext(dir, n)`: a burst loss, the next `n` datagrams in that direction are dropped;
 * - `duplicate`: probability that a datagram is sent twice;
 * - `reorder`: probability that a datagram is held back and released right after the next
 *   datagram in that direction (or after `reorderHoldMs` if none comes);
 * - `delayMs`: fixed extra delay before sending.
 *
 * The PRNGs are seeded (mulberry32, one per direction), so a direction's loss pattern is
 * reproducible for a given arrival order in that direction. `intercept` sees every datagram first and may replace it or drop it (for
 * tampering tests); `inject` sends a datagram of the caller's choosing in one direction
 * (for replay tests); `trace` keeps a log of what happened to each datagram. `rebind` moves
 * the upstream-facing side to a new socket, as a NAT that rebinds the client's port does.
 *
 * The receive loops reuse one buffer per socket (`receive(buf)`) and copy each datagram out.
 */
import { prng as mulberry32 } from "../../shared/testing/prng.ts";

/** `toServer`: client → upstream. `toClient`: upstream → client. */
export type Direction = "toServer" | "toClient";

export interface Address {
  hostname: string;
  port: number;
}

/** Impairments for one direction. All probabilities are in [0, 1]. */
export interface DirectionSettings {
  loss: number;
  duplicate: number;
  reorder: number;
  /** How long a held (reordered) datagram waits for a successor at most. */
  reorderHoldMs: number;
  delayMs: number;
}

export interface DirectionCounters {
  /** Datagrams that reached the relay in this direction (injections not counted). */
  received: number;
  /** Datagrams sent on (a duplicate counts twice, an injection once). */
  forwarded: number;
  /** Dropped by `loss`. */
  droppedRandom: number;
  /** Dropped by `dropNext`. */
  droppedBurst: number;
  /** Dropped by `intercept` returning null. */
  droppedIntercept: number;
  /** Dropped because no client was known yet (toClient) or the relay closed. */
  droppedOther: number;
  duplicated: number;
  reordered: number;
  injected: number;
}

export interface TraceEntry {
  /** ms since the relay started. */
  t: number;
  dir: Direction;
  action:
    | "forward"
    | "drop-loss"
    | "drop-burst"
    | "drop-intercept"
    | "duplicate"
    | "hold"
    | "inject";
  length: number;
  /** First bytes as hex: for DTLS, type(1) version(2) epoch(2) seq(6) length(2). */
  head: string;
}

export interface UdpRelayOptions {
  upstream: Address;
  /** PRNG seed; same seed and same arrivals → same decisions. Default 1. */
  seed?: number;
  toServer?: Partial<DirectionSettings>;
  toClient?: Partial<DirectionSettings>;
  /** Sees each arriving datagram before impairments; return a replacement, or null to drop. */
  intercept?: (dir: Direction, datagram: Uint8Array) => Uint8Array | null;
  /** Keep a `trace` of every decision (bounded to `traceLimit`, default 10,000 entries). */
  trace?: boolean;
  traceLimit?: number;
  /**
   * The client is whoever sent last (a client that dials again from a new socket is
   * followed); default: the first sender only, strangers ignored.
   */
  followClient?: boolean;
}

const DEFAULTS: DirectionSettings = {
  loss: 0,
  duplicate: 0,
  reorder: 0,
  reorderHoldMs: 50,
  delayMs: 0,
};

function emptyCounters(): DirectionCounters {
  return {
    received: 0,
    forwarded: 0,
    droppedRandom: 0,
    droppedBurst: 0,
    droppedIntercept: 0,
    droppedOther: 0,
    duplicated: 0,
    reordered: 0,
    injected: 0,
  };
}

export { mulberry32 };

function hexHead(d: Uint8Array, n = 13): string {
  let s = "";
  for (let i = 0; i < Math.min(n, d.length); i++) s += d[i]!.toString(16).padStart(2, "0");
  return s;
}

function checkProbability(name: string, p: number): void {
  if (!(p >= 0 && p <= 1)) throw new RangeError(`${name} must be in [0, 1], got ${p}`);
}

export class UdpRelay {
  /** Where the client should send: the relay's listening address. */
  readonly addr: Address;
  /** The client's address, once it has sent its first datagram. */
  client: Address | undefined;
  readonly counters: Record<Direction, DirectionCounters> = {
    toServer: emptyCounters(),
    toClient: emptyCounters(),
  };
  readonly trace: TraceEntry[] = [];

  readonly #upstream: Address;
  readonly #front: Deno.DatagramConn; // faces the client
  #back: Deno.DatagramConn; // faces the upstream
  readonly #settings: Record<Direction, DirectionSettings>;
  readonly #burst: Record<Direction, number> = { toServer: 0, toClient: 0 };
  readonly #held: Record<
    Direction,
    { d: Uint8Array; timer: ReturnType<typeof setTimeout> } | undefined
  > = {
    toServer: undefined,
    toClient: undefined,
  };
  readonly #timers = new Set<ReturnType<typeof setTimeout>>();
  readonly #sends = new Set<Promise<void>>();
  readonly #random: Record<Direction, () => number>;
  readonly #intercept: UdpRelayOptions["intercept"];
  readonly #tracing: boolean;
  readonly #traceLimit: number;
  readonly #followClient: boolean;
  readonly #start = performance.now();
  readonly #loops: Promise<void>[];
  #closed = false;

  constructor(options: UdpRelayOptions) {
    this.#upstream = { ...options.upstream };
    // One PRNG per direction, so each direction's pattern depends only on its own arrivals.
    const seed = options.seed ?? 1;
    this.#random = { toServer: mulberry32(seed), toClient: mulberry32(seed ^ 0x5bd1e995) };
    this.#intercept = options.intercept;
    this.#tracing = options.trace ?? false;
    this.#traceLimit = options.traceLimit ?? 10_000;
    this.#followClient = options.followClient ?? false;
    this.#settings = {
      toServer: { ...DEFAULTS },
      toClient: { ...DEFAULTS },
    };
    this.set("toServer", options.toServer ?? {});
    this.set("toClient", options.toClient ?? {});
    this.#front = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    try {
      this.#back = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    } catch (e) {
      this.#front.close();
      throw e;
    }
    const a = this.#front.addr as Deno.NetAddr;
    this.addr = { hostname: a.hostname, port: a.port };
    this.#loops = [this.#frontLoop(), this.#backLoop(this.#back)];
  }

  /** The upstream-facing socket's address: the source the upstream sees. */
  get upstreamFacing(): Address {
    const a = this.#back.addr as Deno.NetAddr;
    return { hostname: a.hostname, port: a.port };
  }

  /**
   * Moves the upstream-facing side to a new socket (a new source port), as a NAT that
   * rebinds does: the old socket is closed, so what the upstream still sends to the old
   * port is lost. Returns the new address.
   */
  rebind(): Address {
    if (this.#closed) throw new Error("relay is closed");
    const old = this.#back;
    this.#back = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    try {
      old.close();
    } catch { /* already closed */ }
    this.#loops.push(this.#backLoop(this.#back));
    return this.upstreamFacing;
  }

  /** Changes a direction's impairments from now on (unset fields keep their value). */
  set(dir: Direction, settings: Partial<DirectionSettings>): void {
    const next = { ...this.#settings[dir], ...settings };
    checkProbability("loss", next.loss);
    checkProbability("duplicate", next.duplicate);
    checkProbability("reorder", next.reorder);
    if (!(next.delayMs >= 0) || !(next.reorderHoldMs >= 0)) {
      throw new RangeError("delayMs and reorderHoldMs must be >= 0");
    }
    this.#settings[dir] = next;
  }

  /** Current settings of a direction (a copy). */
  settings(dir: Direction): DirectionSettings {
    return { ...this.#settings[dir] };
  }

  /** Drops the next `n` datagrams that arrive in `dir` (adds to a burst in progress). */
  dropNext(dir: Direction, n: number): void {
    if (!Number.isInteger(n) || n < 0) throw new RangeError(`n must be a natural number: ${n}`);
    this.#burst[dir] += n;
  }

  /** How many datagrams of the current burst in `dir` are still to be dropped. */
  burstRemaining(dir: Direction): number {
    return this.#burst[dir];
  }

  /**
   * Sends `datagram` in `dir` now, bypassing all impairments. `toClient` needs a known
   * client. The relay copies the bytes.
   */
  inject(dir: Direction, datagram: Uint8Array): void {
    if (this.#closed) throw new Error("relay is closed");
    const target = dir === "toServer" ? this.#upstream : this.client;
    if (!target) throw new Error("no client known yet: cannot inject toClient");
    const copy = datagram.slice();
    this.counters[dir].injected++;
    this.#record(dir, "inject", copy);
    this.#send(dir, copy);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Stops forwarding, cancels held/delayed datagrams, closes both sockets. Idempotent. */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      for (const t of this.#timers) clearTimeout(t);
      this.#timers.clear();
      for (const dir of ["toServer", "toClient"] as const) {
        const h = this.#held[dir];
        if (h) clearTimeout(h.timer);
        this.#held[dir] = undefined;
      }
      try {
        this.#front.close();
      } catch { /* already closed */ }
      try {
        this.#back.close();
      } catch { /* already closed */ }
    }
    await Promise.all([...this.#loops, ...this.#sends]);
  }

  async #frontLoop(): Promise<void> {
    const buf = new Uint8Array(65_536);
    while (!this.#closed) {
      let view: Uint8Array;
      let from: Deno.Addr;
      try {
        [view, from] = await this.#front.receive(buf);
      } catch {
        if (this.#closed) return;
        continue; // e.g. ICMP port unreachable surfaced as an error: keep going
      }
      if (this.#closed) return;
      const f = from as Deno.NetAddr;
      if (!this.client) this.client = { hostname: f.hostname, port: f.port };
      else if (this.client.hostname !== f.hostname || this.client.port !== f.port) {
        if (!this.#followClient) continue; // one client only: ignore strangers
        this.client = { hostname: f.hostname, port: f.port };
      }
      this.#arrive("toServer", view.slice());
    }
  }

  async #backLoop(sock: Deno.DatagramConn): Promise<void> {
    const buf = new Uint8Array(65_536);
    while (!this.#closed && sock === this.#back) {
      let view: Uint8Array;
      let from: Deno.Addr;
      try {
        [view, from] = await sock.receive(buf);
      } catch {
        if (this.#closed || sock !== this.#back) return;
        continue;
      }
      if (this.#closed || sock !== this.#back) return;
      const f = from as Deno.NetAddr;
      if (f.port !== this.#upstream.port) continue; // only the upstream may talk back
      this.#arrive("toClient", view.slice());
    }
  }

  #arrive(dir: Direction, datagram: Uint8Array): void {
    const c = this.counters[dir];
    c.received++;
    let d: Uint8Array | null = datagram;
    if (this.#intercept) {
      d = this.#intercept(dir, datagram);
      if (d === null) {
        c.droppedIntercept++;
        this.#record(dir, "drop-intercept", datagram);
        return;
      }
    }
    if (this.#burst[dir] > 0) {
      this.#burst[dir]--;
      c.droppedBurst++;
      this.#record(dir, "drop-burst", d);
      return;
    }
    const s = this.#settings[dir];
    // Draw every random number every time, so one setting does not shift the others' pattern.
    const random = this.#random[dir];
    const rLoss = random();
    const rDup = random();
    const rReorder = random();
    if (rLoss < s.loss) {
      c.droppedRandom++;
      this.#record(dir, "drop-loss", d);
      return;
    }
    const copies = rDup < s.duplicate ? 2 : 1;
    if (copies === 2) {
      c.duplicated++;
      this.#record(dir, "duplicate", d);
    }
    const held = this.#held[dir];
    if (!held && rReorder < s.reorder) {
      c.reordered++;
      this.#record(dir, "hold", d);
      const timer = setTimeout(() => {
        if (this.#held[dir]?.timer === timer) {
          this.#held[dir] = undefined;
          this.#emit(dir, d, copies);
        }
      }, s.reorderHoldMs);
      this.#held[dir] = { d, timer };
      return;
    }
    this.#emit(dir, d, copies);
    if (held) {
      // Release the held datagram right after its successor.
      clearTimeout(held.timer);
      this.#held[dir] = undefined;
      this.#emit(dir, held.d, 1);
    }
  }

  /** Applies the delay, then sends `copies` times. */
  #emit(dir: Direction, d: Uint8Array, copies: number): void {
    const delay = this.#settings[dir].delayMs;
    const go = () => {
      for (let i = 0; i < copies; i++) {
        this.counters[dir].forwarded++;
        this.#record(dir, "forward", d);
        this.#send(dir, d);
      }
    };
    if (delay <= 0) go();
    else {
      const t = setTimeout(() => {
        this.#timers.delete(t);
        go();
      }, delay);
      this.#timers.add(t);
    }
  }

  #send(dir: Direction, d: Uint8Array): void {
    if (this.#closed) {
      this.counters[dir].droppedOther++;
      return;
    }
    const sock = dir === "toServer" ? this.#back : this.#front;
    const target = dir === "toServer" ? this.#upstream : this.client;
    if (!target) {
      this.counters[dir].droppedOther++;
      return;
    }
    const p = sock.send(d, { transport: "udp", hostname: target.hostname, port: target.port })
      .then(() => {}, () => {/* like UDP: a failed send is a lost datagram */})
      .finally(() => this.#sends.delete(p));
    this.#sends.add(p);
  }

  #record(dir: Direction, action: TraceEntry["action"], d: Uint8Array): void {
    if (!this.#tracing || this.trace.length >= this.#traceLimit) return;
    this.trace.push({
      t: Math.round((performance.now() - this.#start) * 1000) / 1000,
      dir,
      action,
      length: d.length,
      head: hexHead(d),
    });
  }

  /** The trace as text lines, for failure messages. */
  formatTrace(last = 200): string {
    return this.trace.slice(-last).map((e) =>
      `${e.t.toFixed(3).padStart(10)}ms ${e.dir.padEnd(8)} ${e.action.padEnd(14)} ${
        String(e.length).padStart(5)
      }B ${e.head}`
    ).join("\n");
  }
}

/** Convenience: `new UdpRelay(options)`. */
export function startUdpRelay(options: UdpRelayOptions): UdpRelay {
  return new UdpRelay(options);
}
