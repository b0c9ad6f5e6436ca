/**
 * libsodium's ChaCha20-Poly1305 (chacha_wasm.ts) against node:crypto's, the trusted peer: the
 * same ciphertext and tag for the same inputs, each opens what the other sealed, and any altered
 * byte fails to open. Then RecordCipher with each engine: records (with and without a connection
 * ID) come out byte for byte the same and open across engines.
 */
import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { loadWasmChaCha } from "./chacha_wasm.ts";
import { ECDHE_PSK_CHACHA20, RecordCipher, WASM_AEAD_MAX_BYTES } from "./cipher.ts";

const wasm = await loadWasmChaCha();
const AEAD = "chacha20-poly1305" as "aes-128-gcm";
const OPTS = { authTagLength: 16 };

function bytes(n: number): Uint8Array {
  return new Uint8Array(randomBytes(n));
}

function nodeSeal(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, pt: Uint8Array) {
  const c = createCipheriv(AEAD, key, nonce, OPTS);
  c.setAAD(aad, { plaintextLength: pt.length });
  const body = c.update(pt);
  c.final();
  const out = new Uint8Array(pt.length + 16);
  out.set(body);
  out.set(c.getAuthTag(), pt.length);
  return out;
}

function nodeOpen(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array) {
  const n = sealed.length - 16;
  try {
    const d = createDecipheriv(AEAD, key, nonce, OPTS);
    d.setAAD(aad, { plaintextLength: n });
    d.setAuthTag(sealed.subarray(n));
    const pt = d.update(sealed.subarray(0, n));
    d.final();
    return new Uint8Array(pt);
  } catch {
    return undefined;
  }
}

function wasmSeal(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, pt: Uint8Array) {
  const out = new Uint8Array(pt.length + 16 + 5);
  wasm.seal(key, nonce, aad, pt, out, 5); // at an offset, as a record's body is written
  return out.subarray(5);
}

function wasmOpen(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array) {
  const n = sealed.length - 16;
  return wasm.open(key, nonce, aad, sealed.subarray(0, n), sealed.subarray(n));
}

const SIZES = [0, 1, 15, 16, 17, 63, 64, 65, 255, 1200, 1350, 4095, WASM_AEAD_MAX_BYTES];

Deno.test("wasm ChaCha20-Poly1305 seals as node:crypto does, and each opens the other's", () => {
  let cases = 0;
  for (const n of SIZES) {
    for (const aadLen of [0, 13, 24, 40, 278]) {
      const key = bytes(32), nonce = bytes(12), aad = bytes(aadLen), pt = bytes(n);
      const byNode = nodeSeal(key, nonce, aad, pt);
      const byWasm = wasmSeal(key, nonce, aad, pt);
      deepEqual(byWasm, byNode, `size ${n}, aad ${aadLen}`);
      deepEqual(wasmOpen(key, nonce, aad, byNode), pt);
      deepEqual(nodeOpen(key, nonce, aad, byWasm), pt);
      cases++;
    }
  }
  for (let i = 0; i < 300; i++) { // random sizes too
    const n = Math.floor(Math.random() * (WASM_AEAD_MAX_BYTES + 1));
    const key = bytes(32), nonce = bytes(12), aad = bytes(13), pt = bytes(n);
    deepEqual(wasmSeal(key, nonce, aad, pt), nodeSeal(key, nonce, aad, pt), `size ${n}`);
    cases++;
  }
  equal(cases, SIZES.length * 5 + 300);
});

Deno.test("wasm ChaCha20-Poly1305: any altered byte of ciphertext, tag, AAD, nonce or key fails", () => {
  const key = bytes(32), nonce = bytes(12), aad = bytes(13), pt = bytes(300);
  const sealed = wasmSeal(key, nonce, aad, pt);
  deepEqual(wasmOpen(key, nonce, aad, sealed), pt);
  for (let i = 0; i < sealed.length; i++) {
    const bad = sealed.slice();
    bad[i]! ^= 0x80;
    equal(wasmOpen(key, nonce, aad, bad), undefined, `sealed byte ${i}`);
  }
  for (const [name, v] of [["aad", aad], ["nonce", nonce], ["key", key]] as const) {
    for (let i = 0; i < v.length; i++) {
      const alt = v.slice();
      alt[i]! ^= 0x01;
      const args: [Uint8Array, Uint8Array, Uint8Array] = name === "aad"
        ? [key, nonce, alt]
        : name === "nonce"
        ? [key, alt, aad]
        : [alt, nonce, aad];
      equal(wasmOpen(...args, sealed), undefined, `${name} byte ${i}`);
    }
  }
  equal(wasm.open(key, nonce, aad, sealed.subarray(0, 300), sealed.subarray(300, 310)), undefined);
  // A failed open leaves nothing behind that a later good one could trip on.
  deepEqual(wasmOpen(key, nonce, aad, sealed), pt);
});

Deno.test("wasm ChaCha20-Poly1305 refuses what it was not built for, with a clear error", () => {
  const out = new Uint8Array(WASM_AEAD_MAX_BYTES + 64);
  throws(
    () => wasm.seal(bytes(32), bytes(12), bytes(13), bytes(WASM_AEAD_MAX_BYTES + 1), out, 0),
    /over 4096/,
  );
  throws(() => wasm.seal(bytes(16), bytes(12), bytes(13), bytes(10), out, 0), /32-byte key/);
  throws(() => wasm.seal(bytes(32), bytes(8), bytes(13), bytes(10), out, 0), /12-byte nonce/);
  throws(
    () => wasm.open(bytes(32), bytes(12), bytes(13), bytes(WASM_AEAD_MAX_BYTES + 1), bytes(16)),
    /over 4096/,
  );
});

function header(epoch: number, seq: number, type = 23): Uint8Array {
  return new Uint8Array([type, 0xfe, 0xfd, 0, epoch, 0, 0, 0, 0, seq >> 8, seq & 0xff, 0, 0]);
}

Deno.test("RecordCipher: records sealed with wasm and with node:crypto are the same and cross-open", () => {
  const key = bytes(32), iv = bytes(12);
  const viaWasm = new RecordCipher(ECDHE_PSK_CHACHA20, key, iv, wasm);
  const viaNode = new RecordCipher(ECDHE_PSK_CHACHA20, key, iv, null);
  const cid = bytes(8);
  // Both sides of the wasm limit: the larger records go to node:crypto in either cipher.
  for (const n of [0, 1, 1200, WASM_AEAD_MAX_BYTES - 1, WASM_AEAD_MAX_BYTES, 6000, 16384]) {
    const pt = bytes(n);
    const a = viaWasm.seal(header(1, n & 0xfff), pt).slice();
    const b = viaNode.seal(header(1, n & 0xfff), pt).slice();
    deepEqual(a, b, `record of ${n}`);
    deepEqual(viaNode.open(a.subarray(0, 13), a.subarray(13)), pt);
    deepEqual(viaWasm.open(b.subarray(0, 13), b.subarray(13)), pt);
    const bad = a.slice();
    bad[bad.length - 1]! ^= 1;
    equal(viaWasm.open(bad.subarray(0, 13), bad.subarray(13)), undefined);

    const ca = viaWasm.sealCid(header(1, 7, 25), cid, pt, 23).slice();
    const cb = viaNode.sealCid(header(1, 7, 25), cid, pt, 23).slice();
    deepEqual(ca, cb, `cid record of ${n}`);
    const body = ca.subarray(13 + cid.length);
    const inner = viaWasm.openCid(ca, cid, body);
    ok(inner);
    deepEqual(inner.subarray(0, n), pt);
    equal(inner[n], 23);
    deepEqual(viaNode.openCid(ca, cid, body), inner);
  }
});
