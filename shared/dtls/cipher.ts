/**
 * The two cipher suites and AEAD record protection (RFC 5246 6.2.3.3).
 *
 *   additional_data = seq_num(8: epoch || sequence) || type(1) || version(2) || length(2)
 *
 * TLS_PSK_WITH_AES_128_GCM_SHA256 (RFC 5487, nonce per RFC 5288 3):
 *   nonce = client/server_write_IV(4) || explicit(8); the explicit part (we use
 *   epoch || sequence, which never repeats) is sent before the ciphertext.
 * TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256 (RFC 7905 2):
 *   nonce = write_IV(12) XOR (0(4) || epoch || sequence); nothing explicit on the wire.
 */
import { createCipheriv, createDecipheriv } from "node:crypto";
import { RECORD_HEADER_SIZE } from "./constants.ts";

export interface CipherSuite {
  readonly id: number;
  readonly name: string;
  readonly algorithm: "aes-128-gcm" | "chacha20-poly1305";
  readonly keyLength: number;
  readonly fixedIvLength: number;
  readonly explicitNonceLength: number;
  readonly tagLength: number;
  /** True for ECDHE_PSK (the server sends a ServerKeyExchange with its share). */
  readonly ecdhe: boolean;
}

export const ECDHE_PSK_CHACHA20: CipherSuite = {
  id: 0xccac,
  name: "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256",
  algorithm: "chacha20-poly1305",
  keyLength: 32,
  fixedIvLength: 12,
  explicitNonceLength: 0,
  tagLength: 16,
  ecdhe: true,
};

export const PSK_AES128_GCM: CipherSuite = {
  id: 0x00a8,
  name: "TLS_PSK_WITH_AES_128_GCM_SHA256",
  algorithm: "aes-128-gcm",
  keyLength: 16,
  fixedIvLength: 4,
  explicitNonceLength: 8,
  tagLength: 16,
  ecdhe: false,
};

/** Our preference order. */
export const SUITES: readonly CipherSuite[] = [ECDHE_PSK_CHACHA20, PSK_AES128_GCM];
export type SuiteName = typeof ECDHE_PSK_CHACHA20.name | typeof PSK_AES128_GCM.name;

export function suiteById(id: number): CipherSuite | undefined {
  return SUITES.find((s) => s.id === id);
}
export function suiteByName(name: string): CipherSuite | undefined {
  return SUITES.find((s) => s.name === name);
}

/** Bytes a protected record adds to its plaintext, header included. */
export function recordOverhead(suite: CipherSuite | undefined): number {
  return RECORD_HEADER_SIZE + (suite ? suite.explicitNonceLength + suite.tagLength : 0);
}

/** Seals and opens records of one direction of one epoch. */
export class RecordCipher {
  readonly #nonce: Uint8Array;
  readonly #aad = new Uint8Array(13);

  constructor(readonly suite: CipherSuite, readonly key: Uint8Array, readonly iv: Uint8Array) {
    this.#nonce = new Uint8Array(12);
  }

  /** Writes the 12-byte nonce for (epoch, seq) into #nonce; `seq8` is epoch||seq as 8 bytes. */
  #makeNonce(seq8: Uint8Array): Uint8Array {
    const n = this.#nonce;
    if (this.suite.explicitNonceLength === 0) {
      n.set(this.iv);
      for (let i = 0; i < 8; i++) n[4 + i]! ^= seq8[i]!;
    } else {
      n.set(this.iv.subarray(0, 4));
      n.set(seq8, 4);
    }
    return n;
  }

  /**
   * Builds a whole protected record. `header` is the 13-byte record header already
   * written for it (its length field is overwritten with the ciphertext length).
   */
  seal(header: Uint8Array, plaintext: Uint8Array): Uint8Array {
    const s = this.suite;
    const seq8 = header.subarray(3, 11);
    const aad = this.#aad;
    aad.set(seq8, 0);
    aad.set(header.subarray(0, 3), 8);
    aad[11] = plaintext.length >>> 8;
    aad[12] = plaintext.length & 0xff;
    const c = createCipheriv(s.algorithm as "aes-128-gcm", this.key, this.#makeNonce(seq8), {
      authTagLength: 16,
    });
    c.setAAD(aad, { plaintextLength: plaintext.length });
    const body = c.update(plaintext);
    c.final();
    const tag = c.getAuthTag();
    const fragLen = s.explicitNonceLength + body.length + tag.length;
    const out = new Uint8Array(RECORD_HEADER_SIZE + fragLen);
    out.set(header.subarray(0, 11));
    out[11] = fragLen >>> 8;
    out[12] = fragLen & 0xff;
    let o = RECORD_HEADER_SIZE;
    if (s.explicitNonceLength) {
      out.set(seq8, o);
      o += 8;
    }
    out.set(body, o);
    out.set(tag, o + body.length);
    return out;
  }

  /**
   * Opens a record's fragment. Returns the plaintext, or undefined if it does not
   * authenticate (wrong key, tampered, truncated).
   */
  open(header: Uint8Array, fragment: Uint8Array): Uint8Array | undefined {
    const s = this.suite;
    const ptLen = fragment.length - s.explicitNonceLength - s.tagLength;
    if (ptLen < 0) return undefined;
    const seq8 = header.subarray(3, 11);
    const aad = this.#aad;
    aad.set(seq8, 0);
    aad.set(header.subarray(0, 3), 8);
    aad[11] = ptLen >>> 8;
    aad[12] = ptLen & 0xff;
    let nonce: Uint8Array;
    if (s.explicitNonceLength) {
      nonce = this.#nonce;
      nonce.set(this.iv.subarray(0, 4));
      nonce.set(fragment.subarray(0, 8), 4);
    } else {
      nonce = this.#makeNonce(seq8);
    }
    try {
      const d = createDecipheriv(s.algorithm as "aes-128-gcm", this.key, nonce, {
        authTagLength: 16,
      });
      d.setAAD(aad, { plaintextLength: ptLen });
      d.setAuthTag(fragment.subarray(fragment.length - s.tagLength));
      const pt = d.update(fragment.subarray(s.explicitNonceLength, fragment.length - s.tagLength));
      d.final();
      return new Uint8Array(pt.buffer, pt.byteOffset, pt.byteLength);
    } catch {
      return undefined;
    }
  }
}
