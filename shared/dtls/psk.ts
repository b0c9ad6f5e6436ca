/**
 * Per-domain pre-shared keys: the identity a client presents.
 *
 * identity = the domain, lowercase ASCII (IDNs in punycode)
 * psk      = derived from the client API key by `derivePsk` in `shared/credentials.ts`
 *
 * The raw API key never crosses the wire; only the identity does, in the clear.
 */
import { canonicalDomain } from "../names.ts";

/**
 * The PSK identity for a domain: its canonical form (`canonicalDomain` in
 * `shared/names.ts`: lowercase ASCII, IDNs in punycode), the form the server
 * looks PSKs up by and registers tunnels under.
 */
export function pskIdentity(domain: string): string {
  return canonicalDomain(domain);
}
