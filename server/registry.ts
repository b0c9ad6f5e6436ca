/**
 * Live tunnel sessions by domain. The tunnel listener (`tunnels.ts`) adds a session
 * when a client's handshake completes and removes it when the tunnel ends; the
 * admin API reads it and closes a domain's sessions on unregister, delete and
 * key rotation.
 */

/** What the registry needs of a live tunnel session. */
export interface TunnelSession {
  /** Unique per session (e.g. a random id or the DTLS connection id). */
  readonly id: string;
  /** The client's address as `host:port`. */
  readonly remoteAddr: string;
  readonly connectedAt: Date;
  /** Closes the tunnel now; must not throw and must tolerate repeated calls. */
  close(reason: string): void;
}

/** A session as listed by `sessions()`. */
export interface SessionInfo {
  /** The domain the tunnel serves. */
  domain: string;
  /** The session's id (as in the client's Welcome). */
  id: string;
  /** The client's address as `host:port`. */
  remoteAddr: string;
  /** When the tunnel was established. */
  connectedAt: Date;
  /** The cluster node that holds it (cluster mode only). */
  node?: string;
}

/** Options of a `TunnelRegistry`. */
export interface TunnelRegistryOptions {
  /** Called after every change (a session added or removed); must not throw. */
  onChange?: () => void;
}

export class TunnelRegistry<S extends TunnelSession = TunnelSession> {
  readonly #byDomain = new Map<string, Map<string, S>>();
  readonly #onChange: (() => void) | undefined;

  constructor(options: TunnelRegistryOptions = {}) {
    this.#onChange = options.onChange;
  }

  /**
   * Adds a live session for `domain` (already normalized). Returns the function
   * that removes it; calling that function more than once is harmless.
   */
  add(domain: string, session: S): () => void {
    let sessions = this.#byDomain.get(domain);
    if (!sessions) {
      sessions = new Map();
      this.#byDomain.set(domain, sessions);
    }
    if (sessions.has(session.id)) {
      throw new Error(`Cannot add tunnel session: id ${session.id} is already registered`);
    }
    sessions.set(session.id, session);
    this.#onChange?.();
    return () => this.#remove(domain, session);
  }

  /** Live sessions of one domain, or of all domains, oldest first. */
  sessions(domain?: string): SessionInfo[] {
    const out: SessionInfo[] = [];
    const entries = domain === undefined
      ? [...this.#byDomain]
      : [[domain, this.#byDomain.get(domain) ?? new Map<string, S>()] as const];
    for (const [name, sessions] of entries) {
      for (const s of sessions.values()) {
        out.push({ domain: name, id: s.id, remoteAddr: s.remoteAddr, connectedAt: s.connectedAt });
      }
    }
    return out.sort((a, b) => a.connectedAt.getTime() - b.connectedAt.getTime());
  }

  /** The session objects of one domain (or all), for routing requests to them. */
  live(domain?: string): S[] {
    if (domain !== undefined) return [...(this.#byDomain.get(domain)?.values() ?? [])];
    return [...this.#byDomain.values()].flatMap((m) => [...m.values()]);
  }

  /** One domain's sessions without copying them (the per-request routing path). */
  sessionsOf(domain: string): Iterable<S> {
    return this.#byDomain.get(domain)?.values() ?? [];
  }

  isConnected(domain: string): boolean {
    return (this.#byDomain.get(domain)?.size ?? 0) > 0;
  }

  /** Number of live sessions over all domains. */
  get size(): number {
    let n = 0;
    for (const sessions of this.#byDomain.values()) n += sessions.size;
    return n;
  }

  /**
   * Closes and removes every session of `domain`; returns how many there were.
   * A session whose `close` throws is still removed.
   */
  closeDomain(domain: string, reason: string): number {
    const sessions = this.#byDomain.get(domain);
    if (!sessions) return 0;
    this.#byDomain.delete(domain);
    this.#onChange?.();
    for (const s of sessions.values()) {
      try {
        s.close(reason);
      } catch {
        // A failing close must not keep the other sessions open.
      }
    }
    return sessions.size;
  }

  #remove(domain: string, session: S): void {
    const sessions = this.#byDomain.get(domain);
    if (sessions?.get(session.id) !== session) return;
    sessions.delete(session.id);
    if (sessions.size === 0) this.#byDomain.delete(domain);
    this.#onChange?.();
  }
}
