/**
 * Stateless HelloVerifyRequest cookies (RFC 6347 4.2.1).
 *
 * cookie = HMAC-SHA256(secret, peer address || ClientHello fields but the cookie),
 * truncated to 20 bytes. The secret rotates; a cookie made with the previous
 * secret is still accepted, so a rotation never fails a handshake in flight.
 * No per-peer state exists until a ClientHello carries a valid cookie.
 */
import { randomBytes } from "node:crypto";
import { equalBytes, utf8 } from "./bytes.ts";
import type { ClientHello } from "./messages.ts";
import { hmacSha256 } from "./prf.ts";

const COOKIE_LENGTH = 20;

type Mac = (...data: Uint8Array[]) => Uint8Array;

export class CookieJar {
  #current: Mac = hmacSha256(randomBytes(32));
  #previous: Mac = hmacSha256(randomBytes(32));
  #rotatedAt: number;

  constructor(readonly rotateAfterMs = 60_000, readonly now: () => number = Date.now) {
    this.#rotatedAt = now();
  }

  #maybeRotate(): void {
    const t = this.now();
    if (t - this.#rotatedAt >= this.rotateAfterMs) {
      this.#previous = this.#current;
      this.#current = hmacSha256(randomBytes(32));
      this.#rotatedAt = t;
    }
  }

  #mac(mac: Mac, peer: string, ch: ClientHello): Uint8Array {
    const version = new Uint8Array([ch.version >>> 8, ch.version & 0xff]);
    const suites = new Uint8Array(2 * ch.cipherSuites.length);
    ch.cipherSuites.forEach((s, i) => {
      suites[2 * i] = s >>> 8;
      suites[2 * i + 1] = s & 0xff;
    });
    const peerBytes = utf8.encode(peer);
    return mac(peerBytes, version, ch.random, ch.sessionId, suites, ch.compressionMethods)
      .subarray(0, COOKIE_LENGTH);
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
