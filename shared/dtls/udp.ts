/**
 * A UDP socket with the receive loop DTLS needs: `Deno.listenDatagram` (needs
 * `--unstable-net`, set in deno.json) with one reused 64 KiB buffer, which receives
 * ~37k datagrams/s here against ~14k for node:dgram (it allocates per datagram).
 *
 * The datagram handed to `onDatagram` is a view into that buffer, valid only
 * until the handler returns: copy what must outlive the call.
 */
import type { PeerAddr } from "./connection.ts";

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

  private constructor(sock: Deno.DatagramConn, handler: UdpHandler) {
    this.#sock = sock;
    this.done = this.#loop(handler);
  }

  static bind(hostname: string, port: number, handler: UdpHandler): UdpSocket {
    return new UdpSocket(Deno.listenDatagram({ transport: "udp", hostname, port }), handler);
  }

  get addr(): PeerAddr {
    const a = this.#sock.addr as Deno.NetAddr;
    return { hostname: a.hostname, port: a.port };
  }

  async #loop(handler: UdpHandler): Promise<void> {
    while (!this.#closed) {
      let r: [Uint8Array, Deno.Addr];
      try {
        r = await this.#sock.receive(this.#buf);
      } catch (e) {
        if (
          this.#closed || e instanceof Deno.errors.BadResource ||
          e instanceof Deno.errors.Interrupted
        ) return;
        continue; // e.g. ICMP port unreachable surfacing as ECONNREFUSED: keep serving
      }
      handler(r[0], r[1] as Deno.NetAddr);
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
