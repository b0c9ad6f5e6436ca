/**
 * The relay's framing between two nodes: a short line-based greeting on a TCP
 * connection, then the tunnel stream format itself (docs/protocol.md: a
 * `RequestHead`, the body, the sender's half-close as FIN; a `ResponseHead`, the
 * body, the receiver's half-close as FIN), so the receiving node splices bytes
 * between the connection and one of its tunnel streams without parsing HTTP.
 *
 *   receiver → sender   HOPGATE-RELAY/1 <challenge: 32 hex> <receiver node id>\n
 *   sender → receiver   <sender node id> <proof: 64 hex>\n
 *                       (authenticated: the sender may keep it ready, idle, up to 30 s)
 *   sender → receiver   <domain>\n   then stream bytes
 *   receiver → sender   OK\n   then stream bytes
 *                   or  ERR <code> <message>\n   and close
 *
 * proof = HMAC-SHA256(relay key, "hopgate/relay/v1\n" challenge \n receiver \n sender), hex.
 * The relay key is derived from the secret-box key (`HOP_SECRET_KEY`) with HKDF
 * (`RELAY_KEY_INFO`): the secret itself never crosses the wire, and a proof is good
 * for one connection (the challenge is fresh) to one receiver. The domain is not
 * under the proof: nothing after the greeting is (the relay is authenticated, not
 * encrypted or integrity-protected; docs/cluster.md), and leaving it out lets a
 * sender authenticate connections before it knows what they will carry.
 */
import { createHmac, timingSafeEqual } from "node:crypto";

/** HKDF info for the relay key (a different key from anything else derived from the secret). */
export const RELAY_KEY_INFO = "hopgate/cluster-relay-key/v1";
/** The greeting's first word. */
export const RELAY_MAGIC = "HOPGATE-RELAY/1";
/** Longest greeting line accepted, in bytes (a domain is at most 253). */
export const MAX_LINE_BYTES = 512;

/** Stable codes a receiver refuses a relay with (`ERR <code> …`). */
export type RelayRefusal = "auth_failed" | "bad_greeting" | "no_tunnel" | "busy";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** The proof a sender shows for one connection. */
export function relayProof(
  key: Uint8Array,
  challenge: string,
  receiver: string,
  sender: string,
): string {
  return createHmac("sha256", key)
    .update(`hopgate/relay/v1\n${challenge}\n${receiver}\n${sender}`)
    .digest("hex");
}

/** Compares two proofs in constant time (for equal lengths). */
export function proofMatches(expected: string, given: string): boolean {
  if (expected.length !== given.length) return false;
  return timingSafeEqual(enc.encode(expected), enc.encode(given));
}

/** A line of the greeting, encoded. */
export function line(text: string): Uint8Array {
  return enc.encode(`${text}\n`);
}

/** The connection ended, or sent more than a line's worth, before a newline. */
export class RelayFramingError extends Error {
  override name = "RelayFramingError";
}

/**
 * Reads a TCP connection: greeting lines first (bounded), then chunks; bytes read
 * past a line are handed out first. Each chunk is a new buffer (the reader's
 * consumer may keep it).
 */
export class ConnReader {
  readonly #conn: Deno.Conn;
  #pending: Uint8Array | undefined;
  /** A read started by `watch()`, delivered to the next reader. */
  #watched: Promise<Uint8Array | null> | undefined;
  /**
   * The next read's buffer size: small first (most relayed requests and answers
   * are a few KiB, and a new buffer is zeroed per read), doubled up to 64 KiB
   * each time a read fills it (a large body).
   */
  #size = 8 * 1024;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  /**
   * Starts a read while nobody reads (an idle connection kept ready): `onActivity`
   * runs if it completes (the peer closed, or sent something) while still watched.
   * The bytes (or the end) go to the next `read`/`readLine`.
   */
  watch(onActivity: () => void): { unwatch(): void } {
    let watching = true;
    const buf = new Uint8Array(MAX_LINE_BYTES);
    this.#watched = this.#conn.read(buf).then((n) => n === null ? null : buf.subarray(0, n));
    this.#watched.then(() => watching && onActivity(), () => watching && onActivity());
    return { unwatch: () => void (watching = false) };
  }

  /** The watched read's result, if one was started. */
  async #takeWatched(): Promise<Uint8Array | null | undefined> {
    const w = this.#watched;
    if (!w) return undefined;
    this.#watched = undefined;
    return await w;
  }

  /** The next line without its newline; throws `RelayFramingError` past `MAX_LINE_BYTES`. */
  async readLine(): Promise<string> {
    const watched = await this.#takeWatched();
    if (watched === null) throw new RelayFramingError("connection ended inside the greeting");
    let buf = joinBytes(this.#pending, watched);
    this.#pending = undefined;
    for (;;) {
      const nl = buf.indexOf(10);
      if (nl >= 0) {
        if (nl + 1 < buf.length) this.#pending = buf.slice(nl + 1);
        return dec.decode(buf.subarray(0, nl));
      }
      if (buf.length >= MAX_LINE_BYTES) {
        throw new RelayFramingError(`greeting line longer than ${MAX_LINE_BYTES} bytes`);
      }
      const chunk = new Uint8Array(MAX_LINE_BYTES);
      const n = await this.#conn.read(chunk);
      if (n === null) throw new RelayFramingError("connection ended inside the greeting");
      const joined = new Uint8Array(buf.length + n);
      joined.set(buf);
      joined.set(chunk.subarray(0, n), buf.length);
      buf = joined;
    }
  }

  /** The next chunk of bytes (at most 64 KiB, each a new buffer), or null at the peer's half-close. */
  async read(): Promise<Uint8Array | null> {
    const watched = await this.#takeWatched();
    if (watched !== undefined) {
      if (watched === null || !this.#pending) return watched;
      const joined = joinBytes(this.#pending, watched);
      this.#pending = undefined;
      return joined;
    }
    const p = this.#pending;
    if (p) {
      this.#pending = undefined;
      return p;
    }
    const buf = new Uint8Array(this.#size);
    const n = await this.#conn.read(buf);
    if (n === null) return null;
    if (n === buf.length && this.#size < 64 * 1024) this.#size *= 2;
    return buf.subarray(0, n);
  }
}

/** Writes all of `p` (a socket write may take part of it). */
export async function writeAll(conn: Deno.Conn, p: Uint8Array): Promise<void> {
  let off = 0;
  while (off < p.length) off += await conn.write(p.subarray(off));
}

function joinBytes(a: Uint8Array | undefined, b: Uint8Array | undefined): Uint8Array {
  if (!a) return b ?? new Uint8Array(0);
  if (!b) return a;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
