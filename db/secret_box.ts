/**
 * Encryption of secrets at rest (the per-domain DTLS PSKs).
 *
 * AES-256-GCM with a random 96-bit nonce per seal; the domain is bound as
 * additional authenticated data, so a sealed PSK copied onto another row does
 * not open. Sealed form: `v1.<base64url(nonce ‖ ciphertext ‖ tag)>`.
 *
 * Where the 32-byte key comes from (see `loadSecretKey`):
 * 1. `HOP_SECRET_KEY` if set: the key is HKDF-SHA256 of that string. Set it on
 *    every node that shares one PostgreSQL database.
 * 2. Otherwise a key file `secret.key` in `HOP_DATA_DIR`, created on first start
 *    with 32 random bytes and mode 0600, and read on every later start.
 *    Losing this file (or changing `HOP_SECRET_KEY`) makes stored PSKs unreadable:
 *    the affected domains must rotate their keys.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";
import { join } from "node:path";

const VERSION = "v1";
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;
const HKDF_INFO = "hopgate/secret-box/v1";
/** File name of the generated key inside the data directory. */
export const SECRET_KEY_FILE = "secret.key";

/** Seals and opens small secrets bound to a context string (the domain). */
export class SecretBox {
  readonly #key: Uint8Array;

  /** Takes the raw 32-byte key; see `loadSecretKey`. */
  constructor(key: Uint8Array) {
    if (key.byteLength !== KEY_BYTES) {
      throw new RangeError(`Cannot create SecretBox: key is ${key.byteLength} bytes, expected 32`);
    }
    this.#key = key.slice();
  }

  /** Encrypts `plaintext`, binding it to `context`. */
  seal(plaintext: Uint8Array, context: string): string {
    const nonce = randomBytes(NONCE_BYTES);
    const cipher = createCipheriv("aes-256-gcm", this.#key, nonce);
    cipher.setAAD(new TextEncoder().encode(context));
    const body = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
    return `${VERSION}.${Buffer.concat([nonce, body]).toString("base64url")}`;
  }

  /** Decrypts what `seal` produced for the same context; throws if it does not authenticate. */
  open(sealed: string, context: string): Uint8Array {
    const dot = sealed.indexOf(".");
    if (dot < 0 || sealed.slice(0, dot) !== VERSION) {
      throw new Error("Cannot open sealed secret: unknown format");
    }
    const raw = Buffer.from(sealed.slice(dot + 1), "base64url");
    if (raw.byteLength < NONCE_BYTES + TAG_BYTES) {
      throw new Error("Cannot open sealed secret: too short");
    }
    const nonce = raw.subarray(0, NONCE_BYTES);
    const tag = raw.subarray(raw.byteLength - TAG_BYTES);
    const body = raw.subarray(NONCE_BYTES, raw.byteLength - TAG_BYTES);
    const decipher = createDecipheriv("aes-256-gcm", this.#key, nonce);
    decipher.setAAD(new TextEncoder().encode(context));
    decipher.setAuthTag(tag);
    try {
      const plain = Buffer.concat([decipher.update(body), decipher.final()]);
      return new Uint8Array(plain.buffer, plain.byteOffset, plain.byteLength);
    } catch {
      throw new Error(
        "Cannot open sealed secret: authentication failed (was HOP_SECRET_KEY or the key file changed?)",
      );
    }
  }

  /**
   * A 32-byte key for another purpose, derived from this box's key with HKDF-SHA256
   * and `info` naming the purpose (e.g. the cluster relay's key). The box's own key
   * cannot be recovered from it; every node with the same secret derives the same key.
   */
  deriveKey(info: string): Uint8Array {
    return new Uint8Array(hkdfSync("sha256", this.#key, "", info, KEY_BYTES));
  }

  /** Never print the key. */
  toString(): string {
    return "SecretBox(***)";
  }
  /** Never serialize the key. */
  toJSON(): string {
    return this.toString();
  }
  /** Never show the key in Deno's inspector. */
  [Symbol.for("Deno.customInspect")](): string {
    return this.toString();
  }
  /** Never show the key in Node's inspector. */
  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return this.toString();
  }
}

/** Derives the 32-byte key from a configured secret string (`HOP_SECRET_KEY`). */
export function keyFromSecret(secret: string): Uint8Array {
  return new Uint8Array(hkdfSync("sha256", secret, "", HKDF_INFO, KEY_BYTES));
}

/**
 * The secret-box key: derived from `secret` (`HOP_SECRET_KEY`) when given, else read
 * from `<dataDir>/secret.key`, which is created (32 random bytes, hex, mode 0600) if
 * it does not exist yet.
 */
export async function loadSecretKey(
  options: { secret?: string | undefined; dataDir: string },
): Promise<{ key: Uint8Array; source: "env" | "file" | "new-file"; path?: string }> {
  if (options.secret !== undefined && options.secret !== "") {
    return { key: keyFromSecret(options.secret), source: "env" };
  }
  const path = join(options.dataDir, SECRET_KEY_FILE);
  await Deno.mkdir(options.dataDir, { recursive: true, mode: 0o700 });
  try {
    const hex = Buffer.from(randomBytes(KEY_BYTES)).toString("hex");
    await Deno.writeTextFile(path, hex + "\n", { createNew: true, mode: 0o600 });
    return { key: Uint8Array.from(Buffer.from(hex, "hex")), source: "new-file", path };
  } catch (err) {
    if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
  }
  const text = (await Deno.readTextFile(path)).trim();
  if (!/^[0-9a-f]{64}$/i.test(text)) {
    throw new Error(`Cannot read secret key file ${path}: expected 64 hex characters`);
  }
  return { key: Uint8Array.from(Buffer.from(text, "hex")), source: "file", path };
}
