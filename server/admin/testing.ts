/**
 * Fixture for admin API tests: a real store (on a test database), a real
 * registry and PSK lookup, and the admin app mounted where the server mounts it.
 */
import { Hono } from "hono";
import { DomainStore } from "../../db/mod.ts";
import {
  openTestDatabase,
  type TestBackend,
  type TestDatabase,
  testSecretBox,
} from "../../db/testing.ts";
import { Secret } from "../config.ts";
import { MemoryLogger } from "../log.ts";
import { createPskLookup, type PskLookup } from "../psk_store.ts";
import { TunnelRegistry, type TunnelSession } from "../registry.ts";
import { ADMIN_BASE_PATH, createAdminApp } from "./app.ts";
import type { AdminConfig, AdminDeps } from "./env.ts";

export const ADMIN_KEY = "admin-key-for-tests-0123456789";
export const SERVER_DOMAIN = "admin.example.com";

export interface AdminFixture {
  db: TestDatabase;
  store: DomainStore;
  registry: TunnelRegistry;
  psk: PskLookup;
  logger: MemoryLogger;
  /** Builds an app (the parent with the admin app mounted) for a configuration. */
  app(config?: Partial<AdminConfig>, extra?: Partial<AdminDeps>): Hono;
  close(): Promise<void>;
}

export function adminConfig(overrides: Partial<AdminConfig> = {}): AdminConfig {
  return {
    serverDomain: SERVER_DOMAIN,
    debug: false,
    adminApiKey: new Secret(ADMIN_KEY),
    adminAllowedIps: [],
    ...overrides,
  };
}

export async function openAdminFixture(backend: TestBackend): Promise<AdminFixture> {
  const db = await openTestDatabase(backend);
  const store = new DomainStore(db.db, testSecretBox());
  const registry = new TunnelRegistry();
  const logger = new MemoryLogger();
  const psk = createPskLookup(store, { cacheTtlMs: 60_000, logger });
  return {
    db,
    store,
    registry,
    psk,
    logger,
    app(config = {}, extra = {}) {
      const admin = createAdminApp({
        store,
        registry,
        pskLookup: psk,
        config: adminConfig(config),
        logger,
        ...extra,
      });
      return new Hono().route(ADMIN_BASE_PATH, admin);
    },
    close: () => db.close(),
  };
}

/** A live-session stand-in that records how it was closed. */
export function fakeSession(id: string, remoteAddr = "203.0.113.7:40000") {
  const closed: string[] = [];
  const session: TunnelSession = {
    id,
    remoteAddr,
    connectedAt: new Date(),
    close(reason) {
      closed.push(reason);
    },
  };
  return { session, closed };
}
