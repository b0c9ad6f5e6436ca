/**
 * Stateless HelloVerifyRequest cookies (RFC 6347 4.2.1).
 *
 * cookie = HMAC-SHA256(secret, peer address || ClientHello fields but the cookie),
 * truncated to 20 bytes. The secret rotates; a cookie made with the previous
 * secret is still accepted, so a rotation never fails a handshake in flight.
 * No per-peer state exists until a ClientHello carries a valid cookie.
 */
import { createHmac, randomBytes } from "node:crypto";
import { equalBytes, utf8 } from "./bytes.ts";
import type { ClientHello } from "./messages.ts";

const COOKIE_LENGTH = 20;

export class CookieJar {
  #current = randomBytes(32);
  #previous = randomBytes(32);
  #rotatedAt: number;

  constructor(readonly rotateAfterMs = 60_000, readonly now: () => number = Date.now) {
    this.#rotatedAt = now();
  }

  #maybeRotate(): void {
    const t = this.now();
    if (t - this.#rotatedAt >= this.rotateAfterMs) {
      this.#previous = this.#current;
      this.#current = randomBytes(32);
      this.#rotatedAt = t;
    }
  }

  #mac(secret: Uint8Array, peer: string, ch: ClientHello): Uint8Array {
    const h = createHmac("sha256", secret).update(utf8.encode(peer));
    h.update(new Uint8Array([ch.version >>> 8, ch.version & 0xff]));
    h.update(ch.random).update(ch.sessionId);
    for (const s of ch.cipherSuites) h.update(new Uint8Array([s >>> 8, s & 0xff]));
    h.update(ch.compressionMethods);
    return new Uint8Array(h.digest().subarray(0, COOKIE_LENGTH));
  }

  make(peer: string, ch: ClientHello): Uint8Array {
    this.#maybeRotate();
    return this.#mac(this.#current, peer, ch);
  }

  verify(peer: string, ch: ClientHello): boolean {
    if (ch.cookie.length !== COOKIE_LENGTH) return false;
    this.#maybeRotate();
    return equalBytes(ch.cookie, this.#mac(this.#current, peer, ch)) ||
      equalBytes(ch.cookie, this.#mac(this.#previous, peer, ch));
  }
}
