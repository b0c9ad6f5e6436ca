/**
 * Relay connections kept ready: connected to a node, greeted, the proof sent, and
 * idle until a request takes one. A relayed request then costs no connect and no
 * greeting round trip. At most `perNode` per node, each for at most `idleMs` (under
 * the receiver's `RELAY_IDLE_MS`); a connection whose peer closes or speaks while
 * idle is dropped at once (a watched read), so a node that restarted or died is
 * not handed out. A request that uses one refills the pool in the background.
 */
import { ConnReader, line, RELAY_MAGIC, relayProof, writeAll } from "./relay_wire.ts";
import { RelayError, type RelayTarget } from "./relay_errors.ts";

/** A connection to a node, greeted; `proof` is the line to send (or already sent). */
export interface GreetedConn {
  conn: Deno.TcpConn;
  reader: ConnReader;
  /** The proof line; undefined once sent. */
  proof: Uint8Array | undefined;
}

/** Connects to `target`, reads its greeting, checks it is that node; the proof is not sent. */
export async function dialRelay(
  target: RelayTarget,
  self: { nodeId: string; key: Uint8Array; connectTimeoutMs: number },
  cancelled: () => boolean = () => false,
): Promise<GreetedConn> {
  const [hostname, port] = splitAddr(target.relayAddr);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(new RelayError("connect_timeout", "The node holding the tunnel is not answering.")),
      self.connectTimeoutMs,
    );
  });
  let conn: Deno.TcpConn | undefined;
  try {
    const connecting = Deno.connect({ hostname, port, transport: "tcp" });
    try {
      conn = await Promise.race([connecting, timeout]);
    } catch (e) {
      if (e instanceof RelayError) {
        // A connection that arrives after the timeout is closed, not leaked.
        connecting.then((c) => c.close(), () => {});
        throw e;
      }
      throw new RelayError("connect_failed", "The node holding the tunnel cannot be reached.");
    }
    if (cancelled()) throw new RelayError("connection_lost", "The relay was cancelled.");
    conn.setNoDelay(true);
    conn.setKeepAlive(true);
    const reader = new ConnReader(conn);
    let greeting: string;
    try {
      greeting = await Promise.race([reader.readLine(), timeout]);
    } catch (e) {
      if (e instanceof RelayError) throw e;
      throw new RelayError("bad_greeting", "The node holding the tunnel did not greet the relay.");
    }
    const [magic, challenge, receiver] = greeting.split(" ");
    if (magic !== RELAY_MAGIC || !challenge || !/^[0-9a-f]{32}$/.test(challenge)) {
      throw new RelayError("bad_greeting", "The relay peer is not a HopGate node.");
    }
    if (receiver !== target.nodeId) {
      // The address now belongs to another node (a restart): the placement is stale.
      throw new RelayError("wrong_node", "The node that held the tunnel has restarted.");
    }
    const proof = line(`${self.nodeId} ${relayProof(self.key, challenge, receiver, self.nodeId)}`);
    return { conn, reader, proof };
  } catch (e) {
    try {
      conn?.close();
    } catch { /* already closed */ }
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

interface Ready {
  got: GreetedConn;
  timer: ReturnType<typeof setTimeout> | undefined;
  relayAddr: string;
  until: number;
  alive: boolean;
  unwatch: () => void;
}

/** Ready relay connections per node. */
export class RelayPool {
  readonly #self: { nodeId: string; key: Uint8Array; connectTimeoutMs: number };
  readonly #perNode: number;
  readonly #idleMs: number;
  readonly #ready = new Map<string, Ready[]>();
  readonly #filling = new Map<string, number>();
  #closed = false;

  constructor(
    self: { nodeId: string; key: Uint8Array; connectTimeoutMs: number },
    options: { perNode?: number; idleMs?: number } = {},
  ) {
    this.#self = self;
    this.#perNode = options.perNode ?? 2;
    this.#idleMs = options.idleMs ?? 10_000;
  }

  /** Ready connections held now, over all nodes. */
  get size(): number {
    let n = 0;
    for (const list of this.#ready.values()) n += list.length;
    return n;
  }

  /** A ready connection to `target`, if one is alive and fresh. */
  take(target: RelayTarget): GreetedConn | undefined {
    const list = this.#ready.get(target.nodeId);
    const now = performance.now();
    while (list && list.length > 0) {
      const r = list.pop()!;
      r.unwatch();
      clearTimeout(r.timer);
      if (r.alive && r.until > now && r.relayAddr === target.relayAddr) return r.got;
      close(r.got);
    }
    return undefined;
  }

  /** Tops `target`'s ready connections up to `perNode`, in the background. */
  fill(target: RelayTarget): void {
    if (this.#closed) return;
    const have = (this.#ready.get(target.nodeId)?.length ?? 0) +
      (this.#filling.get(target.nodeId) ?? 0);
    for (let i = have; i < this.#perNode; i++) void this.#add(target);
  }

  async #add(target: RelayTarget): Promise<void> {
    const id = target.nodeId;
    this.#filling.set(id, (this.#filling.get(id) ?? 0) + 1);
    try {
      const got = await dialRelay(target, this.#self, () => this.#closed);
      await writeAll(got.conn, got.proof!);
      got.proof = undefined;
      if (this.#closed) return close(got);
      let list = this.#ready.get(id);
      if (!list) this.#ready.set(id, list = []);
      const r: Ready = {
        got,
        timer: undefined,
        relayAddr: target.relayAddr,
        until: performance.now() + this.#idleMs,
        alive: true,
        unwatch: () => {},
      };
      // The peer closing (or refusing the proof) while idle: drop it now.
      r.unwatch = got.reader.watch(() => {
        r.alive = false;
        clearTimeout(r.timer);
        const l = this.#ready.get(id);
        const i = l?.indexOf(r) ?? -1;
        if (l && i >= 0) l.splice(i, 1);
        close(got);
      }).unwatch;
      list.push(r);
      // Expired ones go when their time is up, not only when taken.
      r.timer = setTimeout(() => {
        const l = this.#ready.get(id);
        const i = l?.indexOf(r) ?? -1;
        if (l && i >= 0) {
          l.splice(i, 1);
          r.unwatch();
          close(got);
        }
      }, this.#idleMs);
    } catch {
      // Not reachable now: requests dial (and report) for themselves.
    } finally {
      const n = (this.#filling.get(id) ?? 1) - 1;
      if (n > 0) this.#filling.set(id, n);
      else this.#filling.delete(id);
    }
  }

  /** Closes every ready connection; fills stop. */
  close(): void {
    this.#closed = true;
    for (const list of this.#ready.values()) {
      for (const r of list) {
        r.unwatch();
        clearTimeout(r.timer);
        close(r.got);
      }
    }
    this.#ready.clear();
  }
}

function close(g: GreetedConn): void {
  try {
    g.conn.close();
  } catch { /* already closed */ }
}

/** `host:port` or `[v6]:port` → [host, port]. */
export function splitAddr(addr: string): [string, number] {
  const i = addr.lastIndexOf(":");
  const host = addr.slice(0, i).replace(/^\[(.*)\]$/, "$1");
  return [host, Number(addr.slice(i + 1))];
}
