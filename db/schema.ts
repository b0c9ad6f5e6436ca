/**
 * The database schema (Drizzle `pg-core`). One schema serves both backends:
 * PostgreSQL through `npm:postgres` and embedded PGlite. Migrations are generated
 * from this file by drizzle-kit (`deno task db:generate`) into `db/migrations/`.
 */
import { sql } from "drizzle-orm";
import { check, pgTable, text, timestamp, uuid } from "drizzle-orm/pg-core";

/**
 * One row per domain the server routes to a tunnel client.
 *
 * Secrets are never stored raw:
 * - `api_key_sha256`: hex SHA-256 of the client API key, to verify `unregister`
 *   requests. The key is 32 random bytes, so a fast hash cannot be brute-forced.
 * - `psk_sealed`: the domain's DTLS PSK (derived from the API key), encrypted with
 *   AES-256-GCM under the server's secret key (see `db/secret_box.ts`). The server
 *   needs the PSK itself at handshake time, so a one-way hash would not do.
 */
export const domains = pgTable("domains", {
  id: uuid("id").primaryKey().defaultRandom(),
  /** Lowercase ASCII hostname; IDNs are stored as punycode. */
  domain: text("domain").notNull().unique("domains_domain_unique"),
  memo: text("memo").notNull().default(""),
  apiKeySha256: text("api_key_sha256").notNull(),
  pskSealed: text("psk_sealed").notNull(),
  createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
  updatedAt: timestamp("updated_at", { withTimezone: true }).notNull().defaultNow(),
  /** When the client API key was last rotated; null if never. */
  keyRotatedAt: timestamp("key_rotated_at", { withTimezone: true }),
}, (t) => [
  check("domains_domain_lowercase", sql`${t.domain} = lower(${t.domain})`),
  check("domains_domain_length", sql`char_length(${t.domain}) between 1 and 253`),
]);

export type DomainRow = typeof domains.$inferSelect;
