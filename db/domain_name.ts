/**
 * Domain names as the database stores them: the canonical form defined in
 * `shared/names.ts` (lowercase ASCII, IDNs in punycode), re-exported for db/'s
 * own modules and its callers.
 */
export { InvalidDomainError, normalizeDomain, tryNormalizeDomain } from "../shared/names.ts";
