/**
 * An in-memory datagram link for mux tests and benches: two `DatagramConn` ends,
 * each direction a `SimPath` (shared/testing/sim_path.ts: loss, burst loss
 * (Gilbert-Elliott), reordering, duplication, delay, jitter, a path MTU and an
 * optional bottleneck). Deterministic for a given seed on a FakeClock.
 */
import type { DatagramConn, DatagramHandler } from "../../datagram.ts";
import { type PathOptions, type PathStats, SimPath } from "../../testing/sim_path.ts";

export interface LinkOptions extends PathOptions {
  seed?: number;
  /** maxDatagramSize both ends report; larger datagrams are dropped and counted. */
  mtu?: number;
  /** Closing one end tells the other (like DTLS close_notify). Default false (like UDP). */
  closeNotifiesPeer?: boolean;
}

/** What happened to one direction's datagrams. */
export type LinkStats = PathStats;

/** One direction of the link; its fields (loss, pathMtu, blackhole) may be changed mid-test. */
export class LinkDirection extends SimPath {}

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
  ab.connect((d) => b.receive(d));
  ba.connect((d) => a.receive(d));
  return { a, b, ab, ba };
}
