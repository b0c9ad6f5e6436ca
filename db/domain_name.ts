/**
 * Domain names as HopGate stores them and uses them as DTLS PSK identities:
 * lowercase ASCII hostnames, internationalized names in punycode (UTS #46 via
 * `node:url`'s `domainToASCII`).
 */
import { domainToASCII } from "node:url";

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const MAX_INPUT_CHARS = 1024;

/** Why a string is not an acceptable domain. */
export class InvalidDomainError extends Error {
  override name = "InvalidDomainError";
}

/**
 * Returns the canonical form of `input` (trimmed, lowercase, punycode) or throws
 * `InvalidDomainError` naming the rule it breaks. Requires at least two labels
 * (a name ACME can issue for), each 1–63 of `a-z 0-9 -` not starting or ending with
 * `-`, at most 253 characters in all, and a top-level label that is not all digits
 * (so IPv4 addresses are refused). One trailing dot is accepted and removed.
 * `allowSingleLabel` accepts names like `localhost` (for the server's own name in debug).
 */
export function normalizeDomain(
  input: string,
  options: { allowSingleLabel?: boolean } = {},
): string {
  let name = input.trim();
  if (name === "") throw new InvalidDomainError("domain is empty");
  if (name.length > MAX_INPUT_CHARS) throw new InvalidDomainError("domain is too long");
  if (name.endsWith(".")) name = name.slice(0, -1);
  if (/[\s/:@?#[\]\\*_%]/.test(name)) {
    throw new InvalidDomainError(`domain "${clip(input)}" contains a character not allowed`);
  }
  const ascii = domainToASCII(name);
  if (ascii === "") throw new InvalidDomainError(`domain "${clip(input)}" is not a valid hostname`);
  if (ascii.length > 253) throw new InvalidDomainError("domain is longer than 253 characters");
  const labels = ascii.split(".");
  if (labels.length < 2 && !options.allowSingleLabel) {
    throw new InvalidDomainError(`domain "${clip(input)}" needs at least two labels`);
  }
  for (const label of labels) {
    if (!LABEL.test(label)) {
      throw new InvalidDomainError(`domain "${clip(input)}" has an invalid label "${clip(label)}"`);
    }
  }
  if (/^[0-9]+$/.test(labels[labels.length - 1]!)) {
    throw new InvalidDomainError(`domain "${clip(input)}" looks like an IP address`);
  }
  return ascii;
}

/** `normalizeDomain` that returns undefined instead of throwing. */
export function tryNormalizeDomain(input: string): string | undefined {
  try {
    return normalizeDomain(input);
  } catch {
    return undefined;
  }
}

function clip(s: string): string {
  return s.length > 80 ? s.slice(0, 77) + "..." : s;
}
