/**
 * A UDP socket with the receive loop DTLS needs: `Deno.listenDatagram` (needs
 * `--unstable-net`, set in deno.json) with one reused 64 KiB buffer, which receives
 * ~37k datagrams/s here against ~14k for node:dgram (it allocates per datagram).
 *
 * The datagram handed to `onDatagram` is a view into that buffer, valid only
 * until the handler returns: copy what must outlive the call.
 *
 * A socket bound with `quietBatchMs` batches its reads while nothing needs prompt
 * delivery (docs/operations.md, "Capacity of one node"): each time the process
 * was woken by a datagram, the loop waits `quietBatchMs` before reading on, so the
 * keepalives of thousands of idle tunnels are read in one wake-up each interval
 * instead of one each (a wake-up of a Deno process costs ~250 us of CPU on a small
 * virtual machine, ten times the datagram's own work). `hold()` asks for prompt
 * delivery until released (a handshake in progress, a session with streams or data
 * in flight), and the socket stays prompt for `lingerMs` after the last release.
 */
import type { PeerAddr } from "./connection.ts";

/**
 * Datagrams read since the last batching wait that make the next wake-up skip its
 * wait: the socket's queue held a burst (a few hundred small datagrams fill it), and
 * waiting again could let the next one overflow it.
 */
const BURST_DATAGRAMS = 64;

/** Called per datagram; the bytes are valid only until it returns. */
export type UdpHandler = (datagram: Uint8Array, from: Deno.NetAddr) => void;

/**
 * What the DTLS endpoints need from a socket. `UdpSocket` is the real one; tests
 * may pass an in-memory one (shared/dtls/testing/memory_net.ts).
 */
export interface PacketSocket {
  /** The bound local address. */
  readonly addr: PeerAddr;
  /** Sends one datagram to `to` (best effort, like UDP). */
  send(datagram: Uint8Array, to: Deno.NetAddr): void;
  /** Stops receiving and releases the socket. */
  close(): void;
  /** Settles once the socket stopped delivering. */
  readonly done: Promise<void>;
  /**
   * Asks for datagrams to be delivered as they arrive until the returned function is
   * called (once; later calls do nothing). Absent: the socket always delivers so.
   */
  hold?(): () => void;
}

/** How a socket that batches reads while quiet does it (`UdpSocket.bind`). */
export interface QuietBatching {
  /** Wait this long after a wake-up before reading on, while nothing holds the socket. */
  quietBatchMs: number;
  /** Stay prompt this long after the last hold is released. Default 1000 ms. */
  lingerMs?: number;
}

/** Opens a socket bound to (hostname, port) that calls `handler` per datagram. */
export type PacketSocketFactory = (
  hostname: string,
  port: number,
  handler: UdpHandler,
) => PacketSocket;

export class UdpSocket implements PacketSocket {
  readonly #sock: Deno.DatagramConn;
  readonly #buf = new Uint8Array(65536);
  #closed = false;
  readonly done: Promise<void>;
  /** Sends that failed (the kernel refused them); UDP gives no other signal. */
  sendErrors = 0;
  /** Waits between reads while quiet (each one at most `quietBatchMs` long). */
  batchWaits = 0;
  readonly #batchMs: number;
  readonly #lingerMs: number;
  /** Holds not yet released. */
  #holds = 0;
  /** When the last hold was released (performance.now()). */
  #releasedAt = -Infinity;
  /** Ends the current batching wait early (a hold arrived), or null. */
  #wake: (() => void) | null = null;

  private constructor(sock: Deno.DatagramConn, handler: UdpHandler, batching?: QuietBatching) {
    this.#sock = sock;
    this.#batchMs = batching?.quietBatchMs ?? 0;
    this.#lingerMs = batching?.lingerMs ?? 1000;
    this.done = this.#loop(handler);
  }

  static bind(
    hostname: string,
    port: number,
    handler: UdpHandler,
    batching?: QuietBatching,
  ): UdpSocket {
    return new UdpSocket(
      Deno.listenDatagram({ transport: "udp", hostname, port }),
      handler,
      batching,
    );
  }

  hold(): () => void {
    this.#holds++;
    this.#wake?.();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (--this.#holds === 0) this.#releasedAt = performance.now();
    };
  }

  /** True while reads may be batched (batching is on): nothing holds, the linger is over. */
  #quiet(now: number): boolean {
    return this.#holds === 0 && now - this.#releasedAt >= this.#lingerMs;
  }

  /** Waits up to `quietBatchMs`, less if a hold arrives meanwhile. */
  #batchWait(): Promise<void> {
    this.batchWaits++;
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.#wake = null;
        resolve();
      };
      const t = setTimeout(done, this.#batchMs);
      this.#wake = done;
    });
  }

  get addr(): PeerAddr {
    const a = this.#sock.addr as Deno.NetAddr;
    return { hostname: a.hostname, port: a.port };
  }

  async #loop(handler: UdpHandler): Promise<void> {
    let readSinceWait = 0;
    const batching = this.#batchMs > 0;
    while (!this.#closed) {
      let r: [Uint8Array, Deno.Addr];
      const asked = batching ? performance.now() : 0;
      try {
        r = await this.#sock.receive(this.#buf);
      } catch (e) {
        if (
          this.#closed || e instanceof Deno.errors.BadResource ||
          e instanceof Deno.errors.Interrupted
        ) return;
        continue; // e.g. ICMP port unreachable surfacing as ECONNREFUSED: keep serving
      }
      if (!batching) {
        handler(r[0], r[1] as Deno.NetAddr);
        continue;
      }
      // Waited for this datagram (it was not already in the socket's queue)?
      const woken = performance.now() - asked > 0.5;
      handler(r[0], r[1] as Deno.NetAddr);
      readSinceWait++;
      // While quiet, after a wake-up let the next datagrams gather for a while and read
      // them in one go; not after a burst (it may go on: read it as fast as it comes).
      if (woken && this.#quiet(performance.now())) {
        const burst = readSinceWait >= BURST_DATAGRAMS;
        readSinceWait = 0;
        if (!burst) await this.#batchWait();
      }
    }
  }

  readonly #onSendError = () => {
    this.sendErrors++;
  };
  #lastSend: Promise<unknown> = Promise.resolve();

  /** Fire-and-forget send; `to` should be reused per peer (it is not copied). */
  send(datagram: Uint8Array, to: Deno.NetAddr): void {
    if (this.#closed) return;
    this.#lastSend = this.#sock.send(datagram, to).catch(this.#onSendError);
  }

  /**
   * Settles once every send so far was taken by the kernel (sends complete in order
   * per socket). Fire-and-forget sends otherwise queue up inside the runtime.
   */
  flush(): Promise<unknown> {
    return this.#lastSend;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#wake?.();
    try {
      this.#sock.close();
    } catch { /* already closed */ }
  }
}

export function netAddr(a: PeerAddr): Deno.NetAddr {
  return { transport: "udp", hostname: a.hostname, port: a.port };
}

export const bindUdp: PacketSocketFactory = (hostname, port, handler) =>
  UdpSocket.bind(hostname, port, handler);

/** A factory of sockets that batch their reads while quiet (`QuietBatching`). */
export function bindUdpBatching(batching: QuietBatching): PacketSocketFactory {
  return (hostname, port, handler) => UdpSocket.bind(hostname, port, handler, batching);
}
