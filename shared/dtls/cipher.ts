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
 *
 * A record with a connection ID (RFC 9146 5.3) has the same nonce, but its own
 * additional data, and its plaintext carries the real content type at the end:
 *
 *   additional_data = 0xff(8) || 25 || cid_length(1) || 25 || version(2) || epoch(2)
 *                     || sequence(6) || cid || length_of_inner_plaintext(2)
 *   inner plaintext = content || real_type(1) || zeros (we send no padding)
 */
import { createCipheriv, createDecipheriv } from "node:crypto";
import { transientBytes } from "../bytes.ts";
import { ContentType, RECORD_HEADER_SIZE, WASM_AEAD_MAX_BYTES } from "./constants.ts";
export { WASM_AEAD_MAX_BYTES };
import type { WasmChaCha } from "./chacha_wasm.ts";

/** A cipher suite's parameters: its id, name, AEAD and key and nonce sizes. */
export interface CipherSuite {
  /** IANA code point. */
  readonly id: number;
  /** IANA name. */
  readonly name: string;
  /** The node:crypto AEAD. */
  readonly algorithm: "aes-128-gcm" | "chacha20-poly1305";
  /** Write key length in bytes. */
  readonly keyLength: number;
  /** Implicit IV length in bytes (from the key block). */
  readonly fixedIvLength: number;
  /** Nonce bytes sent in each record before the ciphertext. */
  readonly explicitNonceLength: number;
  /** Authentication tag length in bytes. */
  readonly tagLength: number;
  /** True for ECDHE_PSK (the server sends a ServerKeyExchange with its share). */
  readonly ecdhe: boolean;
}

/** TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256 (0xCCAC, RFC 7905): forward secrecy; our first choice. */
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

/** TLS_PSK_WITH_AES_128_GCM_SHA256 (0x00A8, RFC 5487): what node-dtls-client speaks. */
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
/** The IANA name of a suite we implement. */
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

/**
 * The most any suite's record adds (AES-128-GCM: header 13, explicit nonce 8, tag 16).
 * A datagram ceiling (`maxDatagramSize`) is counted against it: its UDP payloads stay
 * within ceiling + this, and a suite that adds less (ChaCha20-Poly1305 has no explicit
 * nonce) carries the difference as payload.
 */
export const MAX_RECORD_OVERHEAD = Math.max(...SUITES.map(recordOverhead));

/** Shared by every cipher object (node:crypto copies it); both suites use 16-byte tags. */
const AEAD_OPTIONS = { authTagLength: 16 };
/** A connection-ID record's inner plaintext (content, then its real type), being sealed. */
let innerScratch = new Uint8Array(2048);

/** The process's libsodium ChaCha20-Poly1305, once `useWasmChaCha` has loaded it. */
let processWasm: WasmChaCha | undefined;

/**
 * From now on, ChaCha20-Poly1305 records up to `WASM_AEAD_MAX_BYTES` made by new
 * `RecordCipher`s are sealed and opened by libsodium's wasm build instead of node:crypto: about
 * half the CPU per 1200-byte seal in a process whose wasm runs optimized, more under
 * `--liftoff-only` (chacha_wasm.ts). Loads it (~20 ms) on the first call. The client calls it at
 * start.
 */
export async function useWasmChaCha(): Promise<void> {
  if (processWasm) return;
  const { loadWasmChaCha } = await import("./chacha_wasm.ts");
  processWasm ??= await loadWasmChaCha();
}

/** Seals and opens records of one direction of one epoch. */
export class RecordCipher {
  readonly #nonce: Uint8Array;
  readonly #aad = new Uint8Array(13);
  /** The additional data of connection-ID records; sized to the first CID used. */
  #cidAad = new Uint8Array(0);
  /** libsodium for this suite's small records, or undefined: node:crypto for all. */
  readonly #wasm: WasmChaCha | undefined;

  /**
   * `wasm`: the libsodium engine for ChaCha20-Poly1305 records up to `WASM_AEAD_MAX_BYTES`
   * (default: the process's, once `useWasmChaCha` ran; null: node:crypto only).
   */
  constructor(
    readonly suite: CipherSuite,
    readonly key: Uint8Array,
    readonly iv: Uint8Array,
    wasm?: WasmChaCha | null,
  ) {
    this.#nonce = new Uint8Array(12);
    this.#wasm = suite.algorithm === "chacha20-poly1305"
      ? (wasm === undefined ? processWasm : wasm ?? undefined)
      : undefined;
  }

  /**
   * Writes the AAD (seq_num || type || version || length) and the nonce for the
   * record whose header starts at `header[0]`. Indexes bytes directly: a subarray
   * per field costs more than the copy.
   */
  #prepare(header: Uint8Array, ptLen: number): void {
    const aad = this.#aad;
    for (let i = 0; i < 8; i++) aad[i] = header[3 + i]!;
    aad[8] = header[0]!;
    aad[9] = header[1]!;
    aad[10] = header[2]!;
    aad[11] = ptLen >>> 8;
    aad[12] = ptLen & 0xff;
    this.#prepareNonce(header);
  }

  /** The AAD of a connection-ID record (RFC 9146 5.3), then the nonce. */
  #prepareCid(header: Uint8Array, cid: Uint8Array, innerLen: number): Uint8Array {
    const n = cid.length;
    if (this.#cidAad.length !== 23 + n) this.#cidAad = new Uint8Array(23 + n);
    const aad = this.#cidAad;
    aad.fill(0xff, 0, 8);
    aad[8] = ContentType.Tls12Cid;
    aad[9] = n;
    aad[10] = ContentType.Tls12Cid;
    aad[11] = header[1]!;
    aad[12] = header[2]!;
    for (let i = 0; i < 8; i++) aad[13 + i] = header[3 + i]!;
    aad.set(cid, 21);
    aad[21 + n] = innerLen >>> 8;
    aad[22 + n] = innerLen & 0xff;
    this.#prepareNonce(header);
    return aad;
  }

  /** ChaCha20: write_IV XOR epoch||seq. AES-GCM: the salt; the caller adds the explicit part. */
  #prepareNonce(header: Uint8Array): void {
    const n = this.#nonce, iv = this.iv;
    for (let i = 0; i < 4; i++) n[i] = iv[i]!;
    if (this.suite.explicitNonceLength === 0) {
      for (let i = 0; i < 8; i++) n[4 + i] = iv[4 + i]! ^ header[3 + i]!;
    } else {
      for (let i = 0; i < 8; i++) n[4 + i] = header[3 + i]!;
    }
  }

  /**
   * Builds a whole protected record. `header` is the 13-byte record header already
   * written for it (its length field is overwritten with the ciphertext length).
   */
  seal(header: Uint8Array, plaintext: Uint8Array): Uint8Array {
    this.#prepare(header, plaintext.length);
    return this.#record(header, undefined, this.#aad, plaintext);
  }

  /**
   * Builds a whole tls12_cid record (RFC 9146 4): `header`'s first 11 bytes (type
   * 25, version, epoch, sequence) are copied, then `cid`, then the length. The
   * inner plaintext is `content` followed by `realType`, without padding.
   */
  sealCid(header: Uint8Array, cid: Uint8Array, content: Uint8Array, realType: number): Uint8Array {
    const innerLen = content.length + 1;
    const aad = this.#prepareCid(header, cid, innerLen);
    // One encryption over content and type: each node:crypto `update` returns a Buffer of its
    // own (~1-2 µs in Deno), dearer than copying a datagram's content next to its type byte.
    // Both engines copy their input at once, so one scratch array serves every record.
    if (innerScratch.length < innerLen) innerScratch = new Uint8Array(Math.max(innerLen, 2048));
    const inner = innerScratch.subarray(0, innerLen);
    inner.set(content);
    inner[content.length] = realType;
    return this.#record(header, cid, aad, inner);
  }

  /**
   * The record: `header`'s first 11 bytes, `cid` if any, the length, the explicit nonce
   * (AES-GCM), then `plaintext` sealed with `aad` and the nonce `#prepare` set. A fresh
   * ArrayBuffer per record (on top of the one node:crypto's `update` allocates) cost ~1-3 µs at
   * 1200 B and ~5-10 µs at 16 KiB per seal (bench/dtls_bench.ts); sealed records only go to the
   * socket, so they come out of the shared slab.
   */
  #record(
    header: Uint8Array,
    cid: Uint8Array | undefined,
    aad: Uint8Array,
    plaintext: Uint8Array,
  ): Uint8Array {
    const s = this.suite;
    const explicit = s.explicitNonceLength;
    const headerLen = RECORD_HEADER_SIZE + (cid?.length ?? 0);
    const n = plaintext.length;
    const fragLen = explicit + n + s.tagLength;
    const out = transientBytes(headerLen + fragLen); // every byte is written below
    for (let i = 0; i < 11; i++) out[i] = header[i]!;
    if (cid) out.set(cid, 11);
    out[headerLen - 2] = fragLen >>> 8;
    out[headerLen - 1] = fragLen & 0xff;
    let o = headerLen;
    if (explicit) {
      for (let i = 0; i < 8; i++) out[o + i] = header[3 + i]!;
      o += 8;
    }
    const wasm = this.#wasm;
    if (wasm && n <= WASM_AEAD_MAX_BYTES) {
      wasm.seal(this.key, this.#nonce, aad, plaintext, out, o);
      return out;
    }
    const c = createCipheriv(s.algorithm as "aes-128-gcm", this.key, this.#nonce, AEAD_OPTIONS);
    c.setAAD(aad, { plaintextLength: n });
    out.set(c.update(plaintext), o); // both AEADs are stream ciphers: all n bytes at once
    c.final();
    out.set(c.getAuthTag(), o + n);
    return out;
  }

  /**
   * Opens a record's fragment. `header` starts with the record's 13-byte header (the whole
   * record will do: only its first 11 bytes are read). Returns the plaintext, or undefined
   * if it does not authenticate (wrong key, tampered, truncated).
   */
  open(header: Uint8Array, fragment: Uint8Array): Uint8Array | undefined {
    const ptLen = fragment.length - this.suite.explicitNonceLength - this.suite.tagLength;
    if (ptLen < 0) return undefined;
    this.#prepare(header, ptLen);
    return this.#decrypt(this.#aad, fragment, ptLen);
  }

  /**
   * Opens a tls12_cid record's fragment (`header`: the record, whose first 11 bytes
   * are read; `cid`: the connection ID it carried). Returns the inner plaintext
   * (content, real type, padding), or undefined if it does not authenticate.
   */
  openCid(header: Uint8Array, cid: Uint8Array, fragment: Uint8Array): Uint8Array | undefined {
    const innerLen = fragment.length - this.suite.explicitNonceLength - this.suite.tagLength;
    if (innerLen < 1) return undefined;
    return this.#decrypt(this.#prepareCid(header, cid, innerLen), fragment, innerLen);
  }

  #decrypt(aad: Uint8Array, fragment: Uint8Array, ptLen: number): Uint8Array | undefined {
    const s = this.suite;
    const explicit = s.explicitNonceLength;
    const nonce = this.#nonce;
    if (explicit) { for (let i = 0; i < 8; i++) nonce[4 + i] = fragment[i]!; }
    const wasm = this.#wasm;
    if (wasm && ptLen <= WASM_AEAD_MAX_BYTES) {
      const end = fragment.length - s.tagLength;
      return wasm.open(
        this.key,
        nonce,
        aad,
        fragment.subarray(explicit, end),
        fragment.subarray(end),
      );
    }
    try {
      const d = createDecipheriv(s.algorithm as "aes-128-gcm", this.key, nonce, AEAD_OPTIONS);
      d.setAAD(aad, { plaintextLength: ptLen });
      d.setAuthTag(fragment.subarray(fragment.length - s.tagLength));
      const pt = d.update(fragment.subarray(explicit, fragment.length - s.tagLength));
      d.final();
      return new Uint8Array(pt.buffer, pt.byteOffset, pt.byteLength);
    } catch {
      return undefined;
    }
  }
}
