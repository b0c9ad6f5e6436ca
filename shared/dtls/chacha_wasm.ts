/**
 * ChaCha20-Poly1305 (RFC 8439, the IETF variant) through libsodium's WebAssembly build, called
 * through its raw exports on memory allocated once: a record costs two copies and the cipher.
 *
 * Why: node:crypto in Deno builds a `Cipheriv` (a Node stream.Transform) and several Buffers per
 * record: timed inside the client on a 1215-byte datagram path, a seal took 9-11 µs through
 * node:crypto and 5.5-6 µs through this. Under `--v8-flags=--liftoff-only` (the server's flag,
 * docs/operations.md) wasm runs on V8's baseline compiler only and an open took 25 µs against
 * node:crypto's 8-9, so only a process that runs wasm optimized loads it (`useWasmChaCha` in
 * cipher.ts; the client does). Above `WASM_AEAD_MAX_BYTES` node:crypto's fixed cost is outweighed
 * by its native speed, so larger records stay with it. docs/architecture.md, "Why we own DTLS",
 * has the figures.
 *
 * The output is byte for byte node:crypto's (chacha_wasm_test.ts checks both ways on random keys,
 * nonces, additional data and sizes, and that any altered byte fails to open).
 */
import loadSodium from "libsodium";
import { WASM_AEAD_MAX_BYTES } from "./constants.ts";

/** The raw exports used (emscripten: 64-bit lengths are passed as two 32-bit halves). */
interface SodiumRaw {
  HEAPU8: Uint8Array;
  _sodium_init(): number;
  _malloc(n: number): number;
  _crypto_aead_chacha20poly1305_ietf_encrypt_detached(
    c: number,
    mac: number,
    maclenP: number,
    m: number,
    mlenLo: number,
    mlenHi: number,
    ad: number,
    adlenLo: number,
    adlenHi: number,
    nsec: number,
    npub: number,
    k: number,
  ): number;
  _crypto_aead_chacha20poly1305_ietf_decrypt_detached(
    m: number,
    nsec: number,
    c: number,
    clenLo: number,
    clenHi: number,
    mac: number,
    ad: number,
    adlenLo: number,
    adlenHi: number,
    npub: number,
    k: number,
  ): number;
}

/** Additional data up to this size: 13 bytes, or 23 + a connection ID of up to 255. */
const AAD_MAX = 288;
const TAG = 16;

/** One process-wide instance: the memory below is reused by every record, one at a time. */
export class WasmChaCha {
  readonly #s: SodiumRaw;
  #heap: Uint8Array;
  readonly #key: number;
  readonly #nonce: number;
  readonly #aad: number;
  readonly #tag: number;
  readonly #in: number;
  readonly #out: number;

  constructor(s: SodiumRaw) {
    if (s._sodium_init() < 0) throw new Error("libsodium failed to initialize");
    this.#s = s;
    const base = s._malloc(32 + 16 + AAD_MAX + TAG + 2 * WASM_AEAD_MAX_BYTES);
    if (!base) throw new Error("libsodium could not allocate its record buffers");
    this.#key = base;
    this.#nonce = base + 32;
    this.#aad = this.#nonce + 16;
    this.#tag = this.#aad + AAD_MAX;
    this.#in = this.#tag + TAG;
    this.#out = this.#in + WASM_AEAD_MAX_BYTES;
    this.#heap = s.HEAPU8;
  }

  /** The current view of wasm memory (a new one if the memory grew and detached the old). */
  #memory(): Uint8Array {
    if (this.#heap.byteLength === 0) this.#heap = this.#s.HEAPU8;
    return this.#heap;
  }

  #load(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array): Uint8Array {
    if (key.length !== 32 || nonce.length !== 12 || aad.length > AAD_MAX) {
      throw new RangeError("ChaCha20-Poly1305 needs a 32-byte key, a 12-byte nonce, short AAD");
    }
    const h = this.#memory();
    h.set(key, this.#key);
    h.set(nonce, this.#nonce);
    h.set(aad, this.#aad);
    return h;
  }

  /**
   * Encrypts `plaintext` (at most `WASM_AEAD_MAX_BYTES`) and writes the ciphertext then the
   * 16-byte tag into `out` at `offset`.
   */
  seal(
    key: Uint8Array,
    nonce: Uint8Array,
    aad: Uint8Array,
    plaintext: Uint8Array,
    out: Uint8Array,
    offset: number,
  ): void {
    const n = plaintext.length;
    if (n > WASM_AEAD_MAX_BYTES) throw new RangeError(`plaintext over ${WASM_AEAD_MAX_BYTES}`);
    const h = this.#load(key, nonce, aad);
    h.set(plaintext, this.#in);
    this.#s._crypto_aead_chacha20poly1305_ietf_encrypt_detached(
      this.#out,
      this.#tag,
      0,
      this.#in,
      n,
      0,
      this.#aad,
      aad.length,
      0,
      0,
      this.#nonce,
      this.#key,
    );
    h.fill(0, this.#key, this.#key + 32);
    out.set(h.subarray(this.#out, this.#out + n), offset);
    out.set(h.subarray(this.#tag, this.#tag + TAG), offset + n);
  }

  /**
   * Decrypts `ciphertext` (at most `WASM_AEAD_MAX_BYTES`) against `tag`. Returns the plaintext in
   * a buffer of its own, or undefined if it does not authenticate.
   */
  open(
    key: Uint8Array,
    nonce: Uint8Array,
    aad: Uint8Array,
    ciphertext: Uint8Array,
    tag: Uint8Array,
  ): Uint8Array | undefined {
    const n = ciphertext.length;
    if (n > WASM_AEAD_MAX_BYTES) throw new RangeError(`ciphertext over ${WASM_AEAD_MAX_BYTES}`);
    if (tag.length !== TAG) return undefined;
    const h = this.#load(key, nonce, aad);
    h.set(ciphertext, this.#in);
    h.set(tag, this.#tag);
    const rc = this.#s._crypto_aead_chacha20poly1305_ietf_decrypt_detached(
      this.#out,
      0,
      this.#in,
      n,
      0,
      this.#tag,
      this.#aad,
      aad.length,
      0,
      this.#nonce,
      this.#key,
    );
    h.fill(0, this.#key, this.#key + 32);
    return rc === 0 ? h.slice(this.#out, this.#out + n) : undefined;
  }
}

/** Instantiates libsodium's wasm (~20 ms) and the record buffers. */
export async function loadWasmChaCha(): Promise<WasmChaCha> {
  const s = await (loadSodium as unknown as () => Promise<SodiumRaw>)();
  return new WasmChaCha(s);
}
