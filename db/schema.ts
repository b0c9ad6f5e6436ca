/**
 * The database schema (Drizzle `pg-core`). One schema serves both backends:
 * PostgreSQL through `npm:postgres` and embedded PGlite. Migrations are generated
 * from this file by drizzle-kit (`deno task db:generate`) into `db/migrations/`.
 */
import { sql } from "drizzle-orm";
import { check, index, integer, pgTable, text, timestamp, uuid } from "drizzle-orm/pg-core";

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

/**
 * ACME accounts, one per directory URL. `key_sealed` is the account's private key
 * (PEM), sealed with the server's secret box (context `acme-account:<directory>`).
 */
export const acmeAccounts = pgTable("acme_accounts", {
  directoryUrl: text("directory_url").primaryKey(),
  keySealed: text("key_sealed").notNull(),
  accountUrl: text("account_url"),
  createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
});

/**
 * Pending HTTP-01 challenges, so that whichever node the CA reaches can answer
 * `/.well-known/acme-challenge/<token>`. The key authorization is not a secret
 * (the CA fetches it over plain HTTP); rows are deleted when the order ends.
 */
export const acmeChallenges = pgTable("acme_challenges", {
  token: text("token").primaryKey(),
  domain: text("domain").notNull(),
  keyAuthorization: text("key_authorization").notNull(),
  expiresAt: timestamp("expires_at", { withTimezone: true }).notNull(),
});

/**
 * One certificate per name (served by SNI), and the issuance state of that name.
 * `key_sealed`: the certificate's private key (PEM), sealed with the secret box
 * (context `certificate:<domain>`). `cert_pem` is null until the first issuance
 * succeeds; `failures`/`last_error`/`next_attempt_at` drive retries with backoff.
 */
export const certificates = pgTable("certificates", {
  domain: text("domain").primaryKey(),
  certPem: text("cert_pem"),
  keySealed: text("key_sealed"),
  notBefore: timestamp("not_before", { withTimezone: true }),
  notAfter: timestamp("not_after", { withTimezone: true }),
  issuedAt: timestamp("issued_at", { withTimezone: true }),
  failures: integer("failures").notNull().default(0),
  lastError: text("last_error"),
  lastAttemptAt: timestamp("last_attempt_at", { withTimezone: true }),
  nextAttemptAt: timestamp("next_attempt_at", { withTimezone: true }),
  updatedAt: timestamp("updated_at", { withTimezone: true }).notNull().defaultNow(),
}, (t) => [
  check("certificates_domain_lowercase", sql`${t.domain} = lower(${t.domain})`),
]);

export type CertificateRow = typeof certificates.$inferSelect;

/**
 * Cluster membership: one row per running server node that shares this database
 * in cluster mode (docs/cluster.md). `relay_addr` is the node's private relay
 * listener (`HOP_CLUSTER_ADVERTISE`); `heartbeat_at` moves every ~2 s, and a row
 * whose heartbeat is stale is deleted by any node (its placements with it). The
 * id is new at every start, so a restarted node never inherits a dead one's rows.
 */
export const clusterNodes = pgTable("cluster_nodes", {
  id: uuid("id").primaryKey(),
  relayAddr: text("relay_addr").notNull(),
  startedAt: timestamp("started_at", { withTimezone: true }).notNull().defaultNow(),
  heartbeatAt: timestamp("heartbeat_at", { withTimezone: true }).notNull().defaultNow(),
});

/**
 * Live tunnel placements: which node holds a tunnel (session) of which domain.
 * Written by the node that holds the tunnel; read by every node into memory, so
 * routing a request never queries the database. No secrets.
 */
export const tunnelPlacements = pgTable("tunnel_placements", {
  sessionId: text("session_id").primaryKey(),
  nodeId: uuid("node_id").notNull().references(() => clusterNodes.id, { onDelete: "cascade" }),
  domain: text("domain").notNull(),
  remoteAddr: text("remote_addr").notNull(),
  transport: text("transport").notNull(),
  connectedAt: timestamp("connected_at", { withTimezone: true }).notNull(),
}, (t) => [index("tunnel_placements_node_idx").on(t.nodeId)]);

export type TunnelPlacementRow = typeof tunnelPlacements.$inferSelect;
