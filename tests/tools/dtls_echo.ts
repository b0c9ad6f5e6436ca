/**
 * An echo app on our DTLS server, for interop, loss and hostile tests: every datagram a
 * connection receives is sent back as `ECHO:` + the datagram with ASCII a-z uppercased, so a
 * test sees which side produced what it reads (a peer that only reflected its own bytes, or
 * a server that never decrypted, cannot produce it).
 */
import assert from "node:assert/strict";
import {
  type DtlsConn,
  dtlsConnect,
  DtlsServer,
  type DtlsServerOptions,
} from "../../shared/dtls/mod.ts";
import {
  delay,
  freeUdpPort,
  OPENSSL_CIPHER,
  startOpenSslServer,
  type SuiteName,
  waitUntil,
} from "./dtls_peers.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const PREFIX = enc.encode("ECHO:");

/** What the echo app sends back for `d`. */
export function echoOf(d: Uint8Array): Uint8Array {
  const out = new Uint8Array(PREFIX.length + d.length);
  out.set(PREFIX);
  for (let i = 0; i < d.length; i++) {
    const b = d[i]!;
    out[PREFIX.length + i] = b >= 0x61 && b <= 0x7a ? b - 32 : b;
  }
  return out;
}

/** The text the echo app sends back for `text`. */
export function echoText(text: string): string {
  return dec.decode(echoOf(enc.encode(text)));
}

export interface EchoServer {
  server: DtlsServer;
  port: number;
  /** Established connections, in order. */
  conns: DtlsConn[];
  /** Every datagram received, as text, with the connection's identity. */
  received: { identity: string; suite: string; text: string }[];
  /** Close reasons seen, by connection index. */
  closes: Map<number, string>;
  /** Identities `lookupPsk` was asked about. */
  lookups: string[];
  close(): Promise<void>;
}

/** Starts our DTLS server on 127.0.0.1:0 with the echo app. `keys`: identity → PSK. */
export function startEchoServer(
  keys: Record<string, Uint8Array>,
  extra: Partial<Omit<DtlsServerOptions, "lookupPsk" | "onConnection">> = {},
): EchoServer {
  const conns: DtlsConn[] = [];
  const received: EchoServer["received"] = [];
  const closes = new Map<number, string>();
  const lookups: string[] = [];
  const server = DtlsServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    ...extra,
    lookupPsk: async (identity) => {
      lookups.push(identity);
      await delay(1); // really asynchronous, like a database lookup
      return Object.hasOwn(keys, identity) ? keys[identity] : undefined;
    },
    onConnection: (conn) => {
      const index = conns.push(conn) - 1;
      conn.attach({
        onDatagram: (d) => {
          received.push({ identity: conn.identity, suite: conn.suite, text: dec.decode(d) });
          if (!conn.closed) conn.send(echoOf(d));
        },
        onClose: (reason) => closes.set(index, reason),
      });
    },
  });
  return {
    server,
    port: server.addr.port,
    conns,
    received,
    closes,
    lookups,
    close: () => server.close(),
  };
}

/** Collects what a DatagramConn receives, as text, with a wait helper. */
export class Inbox {
  readonly texts: string[] = [];
  closedWith: string | undefined;
  #waiters: (() => void)[] = [];

  constructor(
    conn: { attach(h: { onDatagram(d: Uint8Array): void; onClose(r: string): void }): void },
  ) {
    conn.attach({
      onDatagram: (d) => {
        this.texts.push(dec.decode(d));
        this.#wake();
      },
      onClose: (r) => {
        this.closedWith = r;
        this.#wake();
      },
    });
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }

  count(text: string): number {
    return this.texts.filter((t) => t === text).length;
  }

  /** Waits until `text` was received (exactly, as one datagram); throws after `ms`. */
  async waitFor(text: string, ms = 5000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!this.texts.includes(text)) {
      if (this.closedWith !== undefined) {
        throw new Error(`closed (${this.closedWith}) before receiving ${JSON.stringify(text)}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `no ${JSON.stringify(text)} within ${ms} ms; got ${this.texts.length} datagrams, last: ${
            JSON.stringify(this.texts.slice(-5))
          }`,
        );
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        timer = setTimeout(resolve, left);
        this.#waiters.push(resolve);
      });
      clearTimeout(timer);
    }
  }
}

export function bytes(text: string): Uint8Array {
  return enc.encode(text);
}

/**
 * Our client against `openssl s_server` with `suite`: connects, checks the suite on both ends,
 * then for each of `pads` sends a line (a token and that many filler bytes) and reads one back
 * from the server's side. Throws with the server's output on failure; stops the server.
 */
export async function exchangeWithOpenSslServer(
  o: { suite: SuiteName; identity: string; psk: Uint8Array; pads: number[] },
): Promise<void> {
  const port = freeUdpPort();
  const server = await startOpenSslServer({ port, psk: o.psk, suite: o.suite });
  let conn: DtlsConn | undefined;
  try {
    conn = await dtlsConnect({
      hostname: "127.0.0.1",
      port,
      identity: o.identity,
      psk: o.psk,
      suites: [o.suite],
      handshakeTimeoutMs: 10_000,
    });
    assert.equal(conn.suite, o.suite);
    await server.waitFor(`CIPHER is ${OPENSSL_CIPHER[o.suite]}`, 5000);
    const inbox = new Inbox(conn);
    for (const pad of o.pads) {
      const t = crypto.randomUUID().slice(0, 8);
      const out = `from-hopgate-client-${t}${"x".repeat(pad)}`;
      conn.send(bytes(`${out}\n`));
      await server.waitFor(out, 5000);
      const back = `from-openssl-server-${t}${"y".repeat(pad)}\n`;
      await server.write(back);
      await waitUntil(
        () => inbox.texts.join("").includes(back),
        5000,
        () => `client got ${JSON.stringify(inbox.texts).slice(0, 500)}`,
      );
    }
  } catch (e) {
    throw new Error(`${(e as Error).message}\n${server.output()}`, { cause: e });
  } finally {
    conn?.close();
    await server.kill();
  }
}
