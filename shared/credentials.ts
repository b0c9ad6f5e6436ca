/**
 * Tunnel credentials: how a domain's client API key becomes the pre-shared key its
 * tunnel is authenticated with. One definition for both ends and for storage: the
 * client derives the PSK to connect, the server's database (`db/`) seals it at
 * registration and rotation, and the DTLS layer (`shared/dtls`) takes its bytes.
 *
 *   psk = HMAC-SHA256(key = client API key as UTF-8, data = "hopgate/dtls-psk/v1"), 32 bytes
 *
 * The raw API key never crosses the wire; the label binds the PSK to this protocol and
 * its version, so a new derivation gets a new label. The PSK identity (the domain) is
 * defined next to the DTLS handshake, in `shared/dtls/psk.ts`.
 */
import { createHmac } from "node:crypto";

/** The HMAC input that binds a PSK to this protocol and version. */
export const PSK_LABEL = "hopgate/dtls-psk/v1";

/** Derives a domain's 32-byte DTLS PSK from its client API key. */
export function derivePsk(apiKey: string): Uint8Array {
  const mac = createHmac("sha256", new TextEncoder().encode(apiKey)).update(PSK_LABEL).digest();
  return new Uint8Array(mac.buffer, mac.byteOffset, mac.byteLength);
}
