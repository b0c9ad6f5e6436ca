/**
 * Test fixture: a small but real tunnel server — DtlsServer on 127.0.0.1, one
 * MuxSession per connection, `awaitHello` with a pluggable decision — standing in
 * for server/ so client tests do not import it (layering).
 */
import { derivePsk, DtlsServer } from "../../shared/dtls/mod.ts";
import { awaitHello } from "../../shared/handshake/mod.ts";
import { MuxSession } from "../../shared/mux/mod.ts";
import type { Hello, Reject, Welcome } from "../../shared/protocol/mod.ts";

export interface TestServerOptions {
  /** domain → API key */
  keys: Record<string, string>;
  port?: number;
  decide?: (hello: Hello) => Welcome | Reject;
}

export interface TestServer {
  readonly port: number;
  /** Sessions whose hello was accepted, in order. */
  readonly sessions: MuxSession[];
  /** Resolves with the next accepted session. */
  nextSession(): Promise<MuxSession>;
  hellos: Hello[];
  close(): Promise<void>;
}

export function startTestServer(o: TestServerOptions): TestServer {
  const sessions: MuxSession[] = [];
  const all = new Set<MuxSession>();
  const hellos: Hello[] = [];
  const waiters: ((s: MuxSession) => void)[] = [];
  const queued: MuxSession[] = [];
  let n = 0;
  const dtls = DtlsServer.listen({
    hostname: "127.0.0.1",
    port: o.port ?? 0,
    lookupPsk: (id) => Promise.resolve(o.keys[id] ? derivePsk(o.keys[id]) : undefined),
    onConnection(conn) {
      const session = new MuxSession(conn, { role: "server" });
      all.add(session);
      session.closed.then(() => all.delete(session));
      awaitHello(session, (hello) => {
        hellos.push(hello);
        return o.decide?.(hello) ?? { t: "welcome", session: `s${++n}`, server: "test-server/0" };
      }, 5000).then(() => {
        sessions.push(session);
        const w = waiters.shift();
        if (w) w(session);
        else queued.push(session);
      }).catch(() => setTimeout(() => session.abort(0, "rejected"), 100));
    },
  });
  return {
    port: dtls.addr.port,
    sessions,
    hellos,
    nextSession() {
      const s = queued.shift();
      return s ? Promise.resolve(s) : new Promise((r) => waiters.push(r));
    },
    async close() {
      for (const s of all) s.abort(0, "server shutting down");
      await Promise.all([...all].map((s) => s.closed));
      await dtls.close();
    },
  };
}
