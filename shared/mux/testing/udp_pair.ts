/**
 * A plain-UDP DatagramConn pair on 127.0.0.1 (test fixture): two sockets from
 * Deno.listenDatagram, each sending to the other. One reused receive buffer per
 * socket; each datagram is copied out. Optional seeded send-side loss.
 */
import type { DatagramConn, DatagramHandler } from "../../datagram.ts";
import { prng } from "./fake_clock.ts";

export class UdpConn implements DatagramConn {
  readonly maxDatagramSize: number;
  /** Resolves when the receive loop ended and no send is pending. */
  readonly done: Promise<void>;
  #sock: Deno.DatagramConn;
  #peer: Deno.NetAddr;
  #handler: DatagramHandler | null = null;
  #queue: Uint8Array[] = [];
  #closed = false;
  #closeReason = "";
  #sending = 0;
  #drained: (() => void) | null = null;
  #loss: number;
  #rand: () => number;
  #sendOp = (): void => {
    if (--this.#sending === 0 && this.#drained !== null) this.#drained();
  };

  constructor(
    sock: Deno.DatagramConn,
    peer: Deno.NetAddr,
    maxDatagramSize: number,
    loss = 0,
    seed = 1,
  ) {
    this.#sock = sock;
    this.#peer = peer;
    this.maxDatagramSize = maxDatagramSize;
    this.#loss = loss;
    this.#rand = prng(seed);
    this.done = this.#receiveLoop().then(() => this.#waitSends());
  }

  get closed(): boolean {
    return this.#closed;
  }

  async #receiveLoop(): Promise<void> {
    const buf = new Uint8Array(65536);
    for (;;) {
      let n: Uint8Array;
      let addr: Deno.Addr;
      try {
        [n, addr] = await this.#sock.receive(buf);
      } catch {
        break;
      }
      if (this.#closed) break;
      const a = addr as Deno.NetAddr;
      if (a.port !== this.#peer.port || a.hostname !== this.#peer.hostname) continue;
      const d = n.slice();
      if (this.#handler === null) {
        if (this.#queue.length < 1024) this.#queue.push(d);
      } else this.#handler.onDatagram(d);
    }
    this.close("socket closed");
  }

  #waitSends(): Promise<void> {
    if (this.#sending === 0) return Promise.resolve();
    return new Promise((r) => (this.#drained = r));
  }

  send(d: Uint8Array): void {
    if (this.#closed) return;
    if (this.#loss > 0 && this.#rand() < this.#loss) return;
    this.#sending++;
    this.#sock.send(d, this.#peer).then(this.#sendOp, this.#sendOp);
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

  close(reason = "closed"): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closeReason = reason;
    try {
      this.#sock.close();
    } catch {
      // already closed
    }
    this.#handler?.onClose(reason);
  }
}

export interface UdpPair {
  a: UdpConn;
  b: UdpConn;
  /** Closes both ends and waits for their loops and sends to finish. */
  close(): Promise<void>;
}

export function createUdpPair(
  o: { maxDatagramSize?: number; loss?: number; seed?: number } = {},
): UdpPair {
  const mds = o.maxDatagramSize ?? 1200;
  const sa = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const sb = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const seed = o.seed ?? 1;
  const a = new UdpConn(sa, sb.addr as Deno.NetAddr, mds, o.loss ?? 0, seed);
  const b = new UdpConn(sb, sa.addr as Deno.NetAddr, mds, o.loss ?? 0, seed + 1);
  return {
    a,
    b,
    async close() {
      a.close();
      b.close();
      await Promise.all([a.done, b.done]);
    },
  };
}
