/**
 * The TLS 1.2 PRF with SHA-256 (RFC 5246 5) and the key schedule built on it:
 * PSK premaster secrets (RFC 4279 2, RFC 5489 2), the master secret (RFC 5246 8.1,
 * extended per RFC 7627 4), the key block (RFC 5246 6.3) and Finished (7.4.9).
 */
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 as sha256Hash } from "@noble/hashes/sha2.js";
import { concatBytes } from "../bytes.ts";
import { utf8 } from "./bytes.ts";
import type { CipherSuite } from "./cipher.ts";

/**
 * HMAC-SHA256 under one key: the key's padded blocks are hashed once, and each call
 * hashes only its data. Pure JavaScript (@noble/hashes): the handshake's MACs are a
 * few dozen bytes each, where node:crypto's per-call setup (a native object, Buffer
 * copies) cost more than the hashing; a PRF call makes 2-4 MACs under one key.
 * One handshake's PRF calls and cookies: ~150 µs with node:crypto, ~85 µs now; a cookie
 * (one per ClientHello, also under a flood of them) ~9 µs, ~4.5 µs now.
 */
export function hmacSha256(key: Uint8Array): (...data: Uint8Array[]) => Uint8Array {
  const keyed = hmac.create(sha256Hash, key);
  return (...data) => {
    const h = keyed.clone();
    for (const d of data) h.update(d);
    return h.digest();
  };
}

/** PRF(secret, label, seed) = P_SHA256(secret, label || seed), `length` bytes. */
export function prf(secret: Uint8Array, label: string, seed: Uint8Array, length: number) {
  const labelSeed = concatBytes(utf8.encode(label), seed);
  const mac = hmacSha256(secret);
  const out = new Uint8Array(length);
  let a = labelSeed;
  let o = 0;
  while (o < length) {
    a = mac(a);
    const block = mac(a, labelSeed);
    out.set(block.subarray(0, Math.min(block.length, length - o)), o);
    o += block.length;
  }
  return out;
}

export function sha256(...parts: Uint8Array[]): Uint8Array {
  const h = sha256Hash.create();
  for (const p of parts) h.update(p);
  return h.digest();
}

/**
 * premaster = uint16 len || other_secret || uint16 len || psk, where other_secret
 * is len zero bytes for plain PSK, or the ECDH shared secret for ECDHE_PSK.
 */
export function pskPremaster(psk: Uint8Array, ecdhSecret?: Uint8Array): Uint8Array {
  const other = ecdhSecret ?? new Uint8Array(psk.length);
  const out = new Uint8Array(4 + other.length + psk.length);
  out[0] = other.length >>> 8;
  out[1] = other.length & 0xff;
  out.set(other, 2);
  out[2 + other.length] = psk.length >>> 8;
  out[3 + other.length] = psk.length & 0xff;
  out.set(psk, 4 + other.length);
  return out;
}

export function masterSecret(
  premaster: Uint8Array,
  clientRandom: Uint8Array,
  serverRandom: Uint8Array,
  sessionHash: Uint8Array | undefined,
): Uint8Array {
  return sessionHash
    ? prf(premaster, "extended master secret", sessionHash, 48)
    : prf(premaster, "master secret", concatBytes(clientRandom, serverRandom), 48);
}

export interface KeyBlock {
  clientKey: Uint8Array;
  serverKey: Uint8Array;
  clientIv: Uint8Array;
  serverIv: Uint8Array;
}

export function keyBlock(
  suite: CipherSuite,
  master: Uint8Array,
  clientRandom: Uint8Array,
  serverRandom: Uint8Array,
): KeyBlock {
  const k = suite.keyLength, iv = suite.fixedIvLength;
  const b = prf(master, "key expansion", concatBytes(serverRandom, clientRandom), 2 * (k + iv));
  return {
    clientKey: b.slice(0, k),
    serverKey: b.slice(k, 2 * k),
    clientIv: b.slice(2 * k, 2 * k + iv),
    serverIv: b.slice(2 * k + iv, 2 * (k + iv)),
  };
}

export function finishedVerifyData(
  master: Uint8Array,
  role: "client" | "server",
  transcriptHash: Uint8Array,
): Uint8Array {
  return prf(master, `${role} finished`, transcriptHash, 12);
}
