import { deepEqual, equal, ok } from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { ECDHE_PSK_CHACHA20, PSK_AES128_GCM, RecordCipher, recordOverhead } from "./cipher.ts";

function header(epoch: number, seq: number): Uint8Array {
  return new Uint8Array([23, 0xfe, 0xfd, 0, epoch, 0, 0, 0, 0, 0, seq, 0, 0]);
}

for (const suite of [ECDHE_PSK_CHACHA20, PSK_AES128_GCM]) {
  const key = new Uint8Array(randomBytes(suite.keyLength));
  const iv = new Uint8Array(randomBytes(suite.fixedIvLength));

  Deno.test(`${suite.name}: seal then open returns the plaintext; overhead is as declared`, () => {
    const c = new RecordCipher(suite, key, iv);
    for (const n of [0, 1, 1200, 16384]) {
      const pt = new Uint8Array(randomBytes(n));
      const rec = c.seal(header(1, 5), pt);
      equal(rec.length, n + recordOverhead(suite));
      equal((rec[11]! << 8) | rec[12]!, rec.length - 13);
      deepEqual(c.open(rec.subarray(0, 13), rec.subarray(13)), pt);
    }
  });

  Deno.test(`${suite.name}: any flipped bit, a wrong sequence number or key fails to open`, () => {
    const c = new RecordCipher(suite, key, iv);
    const rec = c.seal(header(1, 5), new TextEncoder().encode("attack at dawn"));
    for (let i = 13; i < rec.length; i++) {
      const bad = rec.slice();
      bad[i]! ^= 0x01;
      equal(c.open(bad.subarray(0, 13), bad.subarray(13)), undefined, `byte ${i}`);
    }
    const moved = rec.slice();
    moved[10] = 6; // header says seq 6: the AAD (and for ChaCha the nonce) differ
    equal(c.open(moved.subarray(0, 13), moved.subarray(13)), undefined);
    const other = new RecordCipher(suite, new Uint8Array(randomBytes(suite.keyLength)), iv);
    equal(other.open(rec.subarray(0, 13), rec.subarray(13)), undefined);
    equal(c.open(rec.subarray(0, 13), rec.subarray(13, 20)), undefined); // truncated
    ok(c.open(rec.subarray(0, 13), rec.subarray(13)));
  });
}
