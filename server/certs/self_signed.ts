/**
 * Self-signed certificates for debug mode (`HOP_SERVER_DEBUG=true`): ECDSA P-256,
 * one per name, valid for a year from an hour ago. Clients must skip verification
 * or trust the certificate itself; there is no CA.
 */
import * as x509 from "@peculiar/x509";
import type { CertifiedKey } from "../front/tls.ts";

const ALGORITHM = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
const DAY_MS = 86_400_000;

x509.cryptoProvider.set(crypto);

/** Creates a self-signed certificate for `names` (the first is the subject CN). */
export async function createSelfSignedCertificate(
  names: readonly string[],
  options: { now?: Date; validDays?: number } = {},
): Promise<CertifiedKey> {
  if (names.length === 0) throw new RangeError("Cannot create certificate: no names");
  const now = options.now ?? new Date();
  const keys = await crypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]);
  const serial = Array.from(crypto.getRandomValues(new Uint8Array(16)))
    .map((b) => b.toString(16).padStart(2, "0")).join("").replace(/^[89a-f]/, "7");
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial,
    name: `CN=${names[0]}`,
    notBefore: new Date(now.getTime() - 3_600_000),
    notAfter: new Date(now.getTime() + (options.validDays ?? 365) * DAY_MS),
    signingAlgorithm: ALGORITHM,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(
        names.map((n) =>
          /^[\d.]+$/.test(n) || n.includes(":")
            ? { type: "ip" as const, value: n }
            : { type: "dns" as const, value: n }
        ),
      ),
    ],
  });
  const pkcs8 = await crypto.subtle.exportKey("pkcs8", keys.privateKey);
  return {
    cert: cert.toString("pem") + "\n",
    key: x509.PemConverter.encode(pkcs8, "PRIVATE KEY") + "\n",
  };
}
