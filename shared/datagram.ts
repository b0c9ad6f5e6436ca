/**
 * The seam between a datagram transport (plain UDP, DTLS, an in-memory test link)
 * and the reliable stream layer above it (shared/mux). See docs/architecture.md, "Layers".
 *
 * A transport delivers whole datagrams, unreliably: they may be lost, reordered or
 * duplicated. Delivery is push-based (a handler, not an async iterator) because the
 * receive path runs once per datagram and must not allocate a promise each time.
 */

/** What a transport calls as datagrams arrive and when it closes. */
export interface DatagramHandler {
  /** One datagram's payload. The receiver owns the buffer from now on. */
  onDatagram(datagram: Uint8Array): void;
  /** The transport closed (locally, by the peer, or on error). Called at most once. */
  onClose(reason: string): void;
  /**
   * The peer is now reached at another address (DTLS with a connection ID followed
   * a NAT rebinding, and the new address answered): what was sent before may have
   * gone to an address that no longer reaches it, so it is worth sending again now.
   */
  onPathChanged?(): void;
}

/** An established, unreliable, message-oriented connection to one peer. */
export interface DatagramConn {
  /**
   * Sends one datagram of at most `maxDatagramSize` bytes. Never blocks; a transport
   * that cannot send (closed, socket error) drops the datagram, as UDP would.
   * The caller must not modify the buffer afterwards, unless `sendCopies` is true.
   */
  send(datagram: Uint8Array): void;
  /**
   * Sets the receiver. Datagrams that arrive before a handler is attached are
   * queued (bounded) and delivered on attach. If the transport already closed,
   * `onClose` is called on attach.
   */
  attach(handler: DatagramHandler): void;
  /**
   * True if `send` is done with the buffer when it returns (DTLS: the record is sealed into
   * a buffer of its own), so the caller may reuse it for the next datagram. Absent or false:
   * the transport may hold it (an async socket send, a delayed in-memory link).
   */
  readonly sendCopies?: boolean;
  /** Largest payload `send` accepts, in bytes. */
  readonly maxDatagramSize: number;
  /**
   * Asks the transport to deliver this connection's datagrams as they arrive until
   * the returned function is called: a server socket may batch its reads while none
   * of its connections has work in flight (shared/dtls/udp.ts). Absent: always so.
   */
  hold?(): () => void;
  /** Closes the connection (for DTLS: sends close_notify). Idempotent. */
  close(reason?: string): void;
  /** True once closed from either side. */
  readonly closed: boolean;
}
