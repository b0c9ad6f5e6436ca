/** Ephemeral ECDH for ECDHE_PSK: X25519 (preferred) and P-256, via node:crypto. */
import { createECDH, createPublicKey, diffieHellman, generateKeyPairSync } from "node:crypto";
import { NamedGroup } from "./constants.ts";

/** DER SubjectPublicKeyInfo prefix of an X25519 key (RFC 8410); the raw key follows. */
const X25519_SPKI_PREFIX = new Uint8Array([
  0x30,
  0x2a,
  0x30,
  0x05,
  0x06,
  0x03,
  0x2b,
  0x65,
  0x6e,
  0x03,
  0x21,
  0x00,
]);

export const SUPPORTED_GROUPS = [NamedGroup.X25519, NamedGroup.Secp256r1];

export interface EphemeralKey {
  readonly group: number;
  readonly publicKey: Uint8Array;
  /** The shared secret with the peer's public key, or undefined if the key is invalid. */
  deriveSecret(peerPublic: Uint8Array): Uint8Array | undefined;
}

export function generateEphemeral(group: number): EphemeralKey {
  if (group === NamedGroup.X25519) {
    const { publicKey, privateKey } = generateKeyPairSync("x25519");
    const spki = publicKey.export({ type: "spki", format: "der" });
    return {
      group,
      publicKey: new Uint8Array(spki.subarray(spki.length - 32)),
      deriveSecret(peer) {
        if (peer.length !== 32) return undefined;
        try {
          const der = new Uint8Array(44);
          der.set(X25519_SPKI_PREFIX);
          der.set(peer, 12);
          const pub = createPublicKey({
            key: der as unknown as Buffer,
            format: "der",
            type: "spki",
          });
          const secret = new Uint8Array(diffieHellman({ privateKey, publicKey: pub }));
          // RFC 7748 6.1: an all-zero result means a low-order point; reject it.
          return secret.some((b) => b !== 0) ? secret : undefined;
        } catch {
          return undefined;
        }
      },
    };
  }
  if (group === NamedGroup.Secp256r1) {
    const ecdh = createECDH("prime256v1");
    ecdh.generateKeys();
    return {
      group,
      publicKey: new Uint8Array(ecdh.getPublicKey()),
      deriveSecret(peer) {
        if (peer.length !== 65 || peer[0] !== 4) return undefined;
        try {
          return new Uint8Array(ecdh.computeSecret(peer));
        } catch {
          return undefined;
        }
      },
    };
  }
  throw new RangeError(`Unsupported ECDH group ${group}`);
}
