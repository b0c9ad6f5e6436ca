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

Deno.test("hmacSha256 and sha256 match node:crypto's for empty, short, block-sized and long inputs, in one part or several", async () => {
  const { createHash, createHmac, randomBytes } = await import("node:crypto");
  const { hmacSha256, sha256 } = await import("./prf.ts");
  for (const keyLen of [0, 1, 32, 64, 65, 200]) {
    const key = new Uint8Array(randomBytes(keyLen));
    const mac = hmacSha256(key);
    for (const n of [0, 1, 55, 56, 63, 64, 65, 1000]) {
      const data = new Uint8Array(randomBytes(n));
      const want = createHmac("sha256", key).update(data).digest("hex");
      equal(hex(mac(data)), want, `hmac key ${keyLen} data ${n}`);
      const cut = n >> 1;
      equal(hex(mac(data.subarray(0, cut), data.subarray(cut))), want, "in two parts");
      equal(hex(mac(data)), want, "the keyed MAC is reusable");
      equal(
        hex(sha256(data.subarray(0, cut), data.subarray(cut))),
        createHash("sha256").update(data).digest("hex"),
      );
    }
  }
});
