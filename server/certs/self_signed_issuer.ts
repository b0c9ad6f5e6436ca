/** Debug mode's issuer: a self-signed certificate per name, no CA. */
import type { IssuedCertificate, Issuer } from "./manager.ts";
import { createSelfSignedCertificate } from "./self_signed.ts";

const VALID_DAYS = 365;

/** Debug mode's issuer: a self-signed certificate per name. */
export class SelfSignedIssuer implements Issuer {
  readonly kind = "self-signed";
  readonly #now: () => number;

  /** An issuer; `now` is the clock (tests). */
  constructor(options: { now?: () => number } = {}) {
    this.#now = options.now ?? Date.now;
  }

  /** A fresh self-signed certificate for `domain`, valid for a year. */
  async issue(domain: string): Promise<IssuedCertificate> {
    const now = new Date(this.#now());
    const pair = await createSelfSignedCertificate([domain], { now, validDays: VALID_DAYS });
    return {
      ...pair,
      notBefore: new Date(now.getTime() - 3_600_000),
      notAfter: new Date(now.getTime() + VALID_DAYS * 86_400_000),
    };
  }
}
