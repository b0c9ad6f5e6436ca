/**
 * Per-domain pre-shared keys (DESIGN.md "DTLS").
 *
 * identity = the domain, lowercase ASCII (IDNs in punycode)
 * psk      = HMAC-SHA256(key = client API key as UTF-8, data = "hopgate/dtls-psk/v1")
 *
 * The raw API key never crosses the wire; only the identity does, in the clear.
 */
import { createHmac } from "node:crypto";

/** The HMAC input that binds a PSK to this protocol and version. */
export const PSK_LABEL = "hopgate/dtls-psk/v1";

/** Derives a domain's 32-byte DTLS PSK from its client API key. */
export function derivePsk(apiKey: string): Uint8Array {
  const mac = createHmac("sha256", new TextEncoder().encode(apiKey)).update(PSK_LABEL).digest();
  return new Uint8Array(mac.buffer, mac.byteOffset, mac.byteLength);
}

/** The PSK identity for a domain: its lowercase ASCII form. */
export function pskIdentity(domain: string): string {
  return domain.trim().toLowerCase();
}
