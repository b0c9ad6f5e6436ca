import { deepEqual, equal } from "node:assert/strict";
import { prf, pskPremaster } from "./prf.ts";
import { utf8 } from "./bytes.ts";

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

/** OpenSSL's own TLS1-PRF (SHA-256) as the reference: `openssl kdf ... TLS1-PRF`. */
async function opensslPrf(
  secret: Uint8Array,
  label: string,
  seed: Uint8Array,
  n: number,
): Promise<string> {
  const out = await new Deno.Command("openssl", {
    args: [
      "kdf",
      "-keylen",
      String(n),
      "-kdfopt",
      "digest:SHA256",
      "-kdfopt",
      `hexsecret:${hex(secret)}`,
      "-kdfopt",
      `hexseed:${hex(utf8.encode(label))}`,
      "-kdfopt",
      `hexseed:${hex(seed)}`,
      "TLS1-PRF",
    ],
    stdout: "piped",
  }).output();
  return new TextDecoder().decode(out.stdout).trim().replaceAll(":", "").toLowerCase();
}

Deno.test("TLS 1.2 PRF (SHA-256) matches OpenSSL's for several lengths", async () => {
  const secret = new Uint8Array(48).map((_, i) => i * 7);
  const seed = new Uint8Array(64).map((_, i) => 255 - i);
  for (
    const [label, n] of [["master secret", 48], ["key expansion", 88], [
      "client finished",
      12,
    ]] as const
  ) {
    equal(hex(prf(secret, label, seed, n)), await opensslPrf(secret, label, seed, n));
  }
});

Deno.test("PSK premaster: zeros for plain PSK, the ECDH secret for ECDHE_PSK (RFC 4279, 5489)", () => {
  const psk = new Uint8Array([1, 2, 3]);
  deepEqual(pskPremaster(psk), new Uint8Array([0, 3, 0, 0, 0, 0, 3, 1, 2, 3]));
  deepEqual(pskPremaster(psk, new Uint8Array([9, 9])), new Uint8Array([0, 2, 9, 9, 0, 3, 1, 2, 3]));
});
