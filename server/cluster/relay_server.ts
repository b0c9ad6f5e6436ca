/**
 * The receiving side of the relay: a private TCP listener (`HOP_CLUSTER_LISTEN`)
 * that takes requests other nodes relay for domains whose tunnels are here.
 *
 *   accept ─► cap (HOP_CLUSTER_MAX_RELAYS) ─► greeting + challenge ─► proof checked
 *          ─► a local tunnel for the domain ─► OK ─► bytes spliced both ways
 *
 * The receiver never relays again: it only ever opens a stream on one of its own
 * tunnels, and answers `ERR no_tunnel` when it has none (one hop at most, by
 * construction). It parses no HTTP: the sending node's ingress did that and the
 * bytes are the tunnel stream format (`relay_wire.ts`). Backpressure both ways:
 * each side is read only as fast as the other side takes the bytes.
 */
import { randomBytes } from "node:crypto";
import { StreamErrorCode } from "../../shared/mux/mod.ts";
import { canonicalDomain } from "../../shared/names.ts";
import type { Logger } from "../log.ts";
import type { Tunnel } from "../tunnels.ts";
import {
  ConnReader,
  line,
  proofMatches,
  RELAY_MAGIC,
  relayProof,
  type RelayRefusal,
  writeAll,
} from "./relay_wire.ts";

/** Why an incoming relay was refused (the `reason` label of the relay error counter). */
export type IncomingRelayError =
  | "in_auth_failed"
  | "in_bad_greeting"
  | "in_greeting_timeout"
  | "in_no_tunnel"
  | "in_max_relays";

/** What the relay listener needs. */
export interface RelayListenerOptions {
  hostname: string;
  port: number;
  /** This node's id (sent in the greeting; proofs are bound to it). */
  nodeId: string;
  /** The relay key. */
  key: Uint8Array;
  /** A local tunnel for a domain (`TunnelHub.pick`). */
  pick(domain: string): Tunnel | undefined;
  /** Relay connections open at once; more are refused `ERR busy`. */
  maxConnections: number;
  /** Time from accept to a complete greeting. Default 5000 ms. */
  greetingTimeoutMs?: number;
  /**
   * How long an authenticated connection may wait for its request (a sender keeps
   * a few ready); then it is closed. Default 30 000 ms (`RELAY_IDLE_MS`).
   */
  idleTimeoutMs?: number;
  logger: Logger;
  /** A relay was refused (metrics). */
  refused(reason: IncomingRelayError): void;
  /** A relay was accepted onto a local tunnel (metrics). */
  accepted(): void;
}

/** The relay listener; `close()` stops accepting and cuts open relays. */
export class RelayListener {
  readonly #o: RelayListenerOptions;
  readonly #listener: Deno.TcpListener;
  readonly #open = new Set<Deno.Conn>();
  readonly #serving: Promise<void>;
  #closed = false;

  constructor(o: RelayListenerOptions) {
    this.#o = o;
    this.#listener = Deno.listen({ hostname: o.hostname, port: o.port, transport: "tcp" });
    this.#serving = this.#accept();
  }

  /** Where it listens. */
  get addr(): Deno.NetAddr {
    return this.#listener.addr;
  }

  /** Relay connections open now. */
  get size(): number {
    return this.#open.size;
  }

  async #accept(): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch (e) {
        if (this.#closed) return;
        // EMFILE and friends: back off, keep the listener.
        this.#o.logger.warn("relay accept failed", { component: "cluster", error: String(e) });
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      void this.#handle(conn);
    }
  }

  async #handle(conn: Deno.TcpConn): Promise<void> {
    const o = this.#o;
    if (this.#open.size >= o.maxConnections) {
      o.refused("in_max_relays");
      await writeAll(conn, line("ERR busy too many relays open")).catch(() => {});
      conn.close();
      return;
    }
    this.#open.add(conn);
    try {
      conn.setNoDelay(true);
      conn.setKeepAlive(true);
      await this.#serve(conn);
    } catch {
      /* the peer went away */
    } finally {
      this.#open.delete(conn);
      try {
        conn.close();
      } catch { /* already closed */ }
    }
  }

  async #serve(conn: Deno.TcpConn): Promise<void> {
    const o = this.#o;
    const challenge = randomBytes(16).toString("hex");
    await writeAll(conn, line(`${RELAY_MAGIC} ${challenge} ${o.nodeId}`));
    const reader = new ConnReader(conn);
    const refuse = async (reason: IncomingRelayError, code: RelayRefusal, message: string) => {
      o.refused(reason);
      await writeAll(conn, line(`ERR ${code} ${message}`)).catch(() => {});
    };
    let greeting: string;
    const ms = o.greetingTimeoutMs ?? 5000;
    try {
      greeting = await within(reader.readLine(), ms);
    } catch (e) {
      const timedOut = e instanceof Error && e.message === "timeout";
      o.logger.info("relay refused", {
        component: "cluster",
        peer: peerOf(conn),
        error: timedOut ? `no greeting within ${ms} ms` : "malformed greeting",
      });
      return refuse(
        timedOut ? "in_greeting_timeout" : "in_bad_greeting",
        "bad_greeting",
        "expected a relay greeting",
      );
    }
    const [sender, proof, extra] = greeting.split(" ");
    if (!sender || !proof || extra !== undefined || !/^[0-9a-f]{64}$/.test(proof)) {
      o.logger.info("relay refused", {
        component: "cluster",
        peer: peerOf(conn),
        error: "malformed greeting",
      });
      return refuse("in_bad_greeting", "bad_greeting", "expected <node> <proof>");
    }
    const expected = relayProof(o.key, challenge, o.nodeId, sender);
    if (!proofMatches(expected, proof)) {
      // Never logged: the proof or the key. A wrong HOP_SECRET_KEY on one node shows here.
      o.logger.warn("relay refused: authentication failed", {
        component: "cluster",
        peer: peerOf(conn),
        sender_claimed: sender.slice(0, 64),
        hint: "every node needs the same HOP_SECRET_KEY",
      });
      return refuse("in_auth_failed", "auth_failed", "authentication failed");
    }
    // Authenticated: the request may come now or after a while (a connection kept ready).
    let rawDomain: string;
    try {
      rawDomain = await within(reader.readLine(), o.idleTimeoutMs ?? RELAY_IDLE_MS);
    } catch {
      return; // idle too long, or the sender closed it: not an error
    }
    if (!/^[a-z0-9.-]{1,253}$/i.test(rawDomain)) {
      return refuse("in_bad_greeting", "bad_greeting", "expected a domain");
    }
    const domain = canonicalDomain(rawDomain);
    const tunnel = o.pick(domain);
    let stream;
    try {
      stream = tunnel?.session.openStream();
    } catch { /* closing, or out of stream credit */ }
    if (!tunnel || !stream) {
      return refuse("in_no_tunnel", "no_tunnel", `no tunnel for ${domain} on this node`);
    }
    o.accepted();
    tunnel.inFlight++;
    try {
      await writeAll(conn, line("OK"));
      const s = stream;
      const up = (async () => {
        for (let v; (v = await reader.read()) !== null;) await s.write(v);
        s.close();
      })();
      const down = (async () => {
        for (let v; (v = await s.read()) !== null;) await writeAll(conn, v);
        await conn.closeWrite();
      })();
      // One direction failing ends both: the stream is reset, the connection closed.
      const stop = () => {
        try {
          s.abort(StreamErrorCode.CANCELLED);
        } catch { /* already closed */ }
        try {
          conn.close();
        } catch { /* already closed */ }
      };
      up.catch(stop);
      down.catch(stop);
      await Promise.allSettled([up, down]);
    } finally {
      tunnel.inFlight--;
      tunnel.served++;
    }
  }

  /** Stops accepting and cuts every relay still open. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#listener.close();
    } catch { /* already closed */ }
    for (const c of this.#open) {
      try {
        c.close();
      } catch { /* already closed */ }
    }
    await this.#serving;
  }
}

/** How long an authenticated relay connection may wait for its request. */
export const RELAY_IDLE_MS = 30_000;

/** `p`, or a rejection with "timeout" after `ms`. */
async function within<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("timeout")), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function peerOf(conn: Deno.Conn): string {
  const a = conn.remoteAddr as Deno.NetAddr;
  return `${a.hostname}:${a.port}`;
}
