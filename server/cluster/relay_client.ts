/**
 * The sending side of the relay: a request for a domain whose tunnel is on another
 * node goes to that node's relay listener as a `RelayStream`, which the ingress
 * uses exactly like a mux stream on a local tunnel (same head, body, FIN, reset).
 * The connection is opened lazily (the first write or read waits for it), so
 * routing stays synchronous; every failure to reach the node, or a refusal, is a
 * `RelayError` the ingress answers with 503.
 */
import { type ConnReader, line, writeAll } from "./relay_wire.ts";
import { RelayError, type RelayErrorReason, type RelayTarget } from "./relay_errors.ts";
import { dialRelay, type RelayPool } from "./relay_pool.ts";

export { RelayError, type RelayErrorReason, type RelayTarget } from "./relay_errors.ts";

/** What every relay from this node shares. */
export interface RelayDialer {
  /** This node's id. */
  readonly nodeId: string;
  /** The relay key (`relay_wire.ts`). */
  readonly key: Uint8Array;
  /** Longest wait for the TCP connection and the receiver's greeting. Default 3000 ms. */
  readonly connectTimeoutMs: number;
  /** Takes a slot for an outgoing relay connection; false when at the cap. */
  acquire(): boolean;
  /** Gives the slot back (once per successful `acquire`). */
  release(): void;
  /** A relay failed, by reason (metrics). */
  failed(reason: RelayErrorReason): void;
  /** A relay connection was accepted by the receiver (metrics). */
  relayed(): void;
  /** `nodeId` could not be reached: try it last for a while. */
  unreachable(nodeId: string): void;
  /** Connections kept ready per node (none: every relay dials). */
  readonly pool?: RelayPool | undefined;
}

/**
 * One relayed request: the stream the ingress reads and writes. It goes to the
 * first of `targets` that can be reached, on a connection kept ready if the pool
 * has one (watched while idle: one whose node went away is not handed out), else
 * on a new one: nothing of the request is sent before a node greeted, so a node
 * that is down (connection refused, no greeting in time, restarted under another
 * id) costs a retry on the next one, not the request. The receiver's answer
 * (`OK`/`ERR`) must come within `connectTimeoutMs` of the request's first bytes.
 */
export class RelayStream {
  readonly #dialer: RelayDialer;
  readonly #targets: readonly RelayTarget[];
  readonly #domain: string;
  #conn: Deno.TcpConn | undefined;
  #reader: ConnReader | undefined;
  readonly #ready: Promise<void>;
  #answered = false;
  /** The proof (on a new connection) and the domain line, until the first write sends them. */
  #greeting: Uint8Array | undefined;
  #closed = false;
  #writeDone = false;
  #readDone = false;
  #slot = false;
  #failure: RelayError | undefined;

  constructor(dialer: RelayDialer, targets: readonly RelayTarget[], domain: string) {
    this.#dialer = dialer;
    this.#targets = targets;
    this.#domain = domain;
    this.#ready = this.#open();
    this.#ready.catch(() => {});
  }

  /** Set once the relay failed (a connection error, a refusal). */
  get failure(): RelayError | undefined {
    return this.#failure;
  }

  /**
   * The relay failed, or the other node ended the response side: a head that did
   * not come whole means the tunnel there was lost (the ingress answers 503).
   */
  get ended(): boolean {
    return this.#failure !== undefined || this.#readDone;
  }

  async #open(): Promise<void> {
    const d = this.#dialer;
    if (!d.acquire()) {
      throw this.#fail(
        "max_relays",
        "This node relays too many requests at once (HOP_CLUSTER_MAX_RELAYS).",
      );
    }
    this.#slot = true;
    for (let i = 0;; i++) {
      const target = this.#targets[i]!;
      try {
        await this.#connect(target);
        d.pool?.fill(target);
        return;
      } catch (e) {
        const retry = e instanceof RelayError && RETRYABLE.has(e.reason);
        if (retry) d.unreachable(target.nodeId);
        if (!retry || i + 1 >= this.#targets.length || this.#closed) {
          const err = e instanceof RelayError
            ? e
            : new RelayError("connection_lost", "The relay to the node holding the tunnel failed.");
          throw this.#fail(err.reason, err.message);
        }
        // Counted, then the next node.
        d.failed(e.reason);
        this.#closeConn();
      }
    }
  }

  /** A ready connection to `target` from the pool, or a new one, greeted. */
  async #connect(target: RelayTarget): Promise<void> {
    const d = this.#dialer;
    const domain = line(this.#domain);
    const ready = d.pool?.take(target);
    if (ready) {
      this.#conn = ready.conn;
      this.#reader = ready.reader;
      this.#greeting = domain;
      return;
    }
    const got = await dialRelay(target, d, () => this.#closed);
    this.#conn = got.conn;
    this.#reader = got.reader;
    if (this.#closed) throw new RelayError("connection_lost", "The relay was cancelled.");
    // Proof and domain go out with the first bytes of the request (one write, one segment).
    const both = new Uint8Array(got.proof!.length + domain.length);
    both.set(got.proof!);
    both.set(domain, got.proof!.length);
    this.#greeting = both;
  }

  #fail(reason: RelayErrorReason, message: string): RelayError {
    if (!this.#failure) {
      this.#failure = new RelayError(reason, message);
      this.#dialer.failed(reason);
    }
    this.#shut();
    return this.#failure;
  }

  /** Sends request bytes (the head first); waits for the connection first. */
  async write(chunk: Uint8Array): Promise<void> {
    await this.#ready;
    try {
      const greeting = this.#greeting;
      if (greeting) {
        this.#greeting = undefined;
        const both = new Uint8Array(greeting.length + chunk.length);
        both.set(greeting);
        both.set(chunk, greeting.length);
        await writeAll(this.#conn!, both);
      } else await writeAll(this.#conn!, chunk);
    } catch {
      // The receiver refused (and closed) or went away: its answer says which.
      if (!this.#answered && !this.#failure) await this.read();
      throw this.#failure ?? this.#fail("connection_lost", "The relay connection was lost.");
    }
  }

  /** The request is complete: half-close (the receiver's tunnel stream gets FIN). */
  close(): void {
    this.#ready.then(async () => {
      await this.#sendGreeting();
      await this.#conn?.closeWrite();
      this.#writeDone = true;
      if (this.#readDone) this.#shut();
    }).catch(() => {});
  }

  /** The next response bytes (the head first), or null at the end. */
  async read(): Promise<Uint8Array | null> {
    await this.#ready;
    const reader = this.#reader!;
    // Nothing written yet (never the ingress's order): the receiver answers only after the proof.
    await this.#sendGreeting().catch(() => {});
    if (!this.#answered) {
      let answer: string;
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        // The receiver answers as soon as it has the domain: a silent one is not waited on.
        answer = await Promise.race([
          reader.readLine(),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error("timeout")), this.#dialer.connectTimeoutMs);
          }),
        ]);
      } catch {
        throw this.#fail(
          "connection_lost",
          "The node holding the tunnel did not answer the relay.",
        );
      } finally {
        clearTimeout(timer);
      }
      if (answer === "OK") {
        this.#answered = true;
        this.#dialer.relayed();
      } else {
        const m = /^ERR ([a-z_]{1,32}) ?(.*)$/.exec(answer);
        const code = m?.[1] ?? "bad_greeting";
        const reason = (["auth_failed", "no_tunnel", "busy", "bad_greeting"].includes(code)
          ? `refused_${code}`
          : "bad_greeting") as RelayErrorReason;
        throw this.#fail(reason, refusalMessage(code));
      }
    }
    let chunk: Uint8Array | null;
    try {
      chunk = await reader.read();
    } catch {
      throw this.#fail("connection_lost", "The relay connection was lost.");
    }
    if (chunk === null) {
      // Both halves done: the connection closes and its slot is free.
      this.#readDone = true;
      if (this.#writeDone) this.#shut();
    }
    return chunk;
  }

  /** Sends the proof line if no write has carried it yet. */
  async #sendGreeting(): Promise<void> {
    const greeting = this.#greeting;
    if (!greeting || !this.#conn) return;
    this.#greeting = undefined;
    await writeAll(this.#conn, greeting);
  }

  /** Never whole in advance: the ingress streams. */
  readRest(): Uint8Array | null {
    return null;
  }

  /** Gives up the request: the connection closes (the receiver resets its tunnel stream). */
  reset(_code: number): void {
    this.#closed = true;
    this.#shut();
  }

  /** As `reset`: one TCP connection carries both halves. */
  stopSending(_code: number): void {
    this.reset(0);
  }

  #closeConn(): void {
    try {
      this.#conn?.close();
    } catch { /* already closed */ }
    this.#conn = undefined;
    this.#reader = undefined;
  }

  /** Closes the socket and frees the slot, once. */
  #shut(): void {
    try {
      this.#conn?.close();
    } catch { /* already closed */ }
    if (this.#slot) {
      this.#slot = false;
      this.#dialer.release();
    }
  }
}

/** Failures before anything of the request was sent: the next node holding the tunnel is tried. */
const RETRYABLE: ReadonlySet<RelayErrorReason> = new Set([
  "connect_failed",
  "connect_timeout",
  "wrong_node",
  "bad_greeting",
]);

function refusalMessage(code: string): string {
  switch (code) {
    case "no_tunnel":
      return "The node that held the tunnel no longer has it; the client is reconnecting.";
    case "auth_failed":
      return "The cluster relay was refused: the nodes do not share HOP_SECRET_KEY.";
    case "busy":
      return "The node holding the tunnel has too many relays open.";
    default:
      return "The node holding the tunnel refused the relay.";
  }
}
