/**
 * Everything the server needs from storage, opened in one call: the database
 * (PostgreSQL or PGlite, data directory locked), migrations applied, the
 * secret-box key loaded, and the stores on top (`DomainStore`, `CertificateStore`).
 */
import { sql } from "drizzle-orm";
import { CertificateStore } from "./cert_store.ts";
import { ClusterStore } from "./cluster_store.ts";
import { type Database, type DatabaseHandle, openDatabase } from "./database.ts";
import { DomainStore } from "./domain_store.ts";
import { QueryGuard, type StorageFailure } from "./guard.ts";
import { loadSecretKey, SecretBox } from "./secret_box.ts";

/** Where `openStorage` finds the database and the secret-box key. */
export interface StorageOptions {
  /** `HOP_DB_DSN`; unset means embedded PGlite in `dataDir`. */
  dsn?: string | undefined;
  /** `HOP_DB_MAX_OPEN_CONNS`. */
  maxConnections?: number | undefined;
  /** `HOP_DATA_DIR`: PGlite's files, its lock, and the generated secret key file. */
  dataDir: string;
  /** `HOP_SECRET_KEY`; unset means `<dataDir>/secret.key`. */
  secretKey?: string | undefined;
  /**
   * `HOP_DB_TIMEOUT_SECONDS` in ms: the bound on each store query and `ping()`
   * (and on each PostgreSQL connection attempt); default 5000. Not applied to
   * opening and migrating.
   */
  queryTimeoutMs?: number | undefined;
  /** Told about every failed store query (metrics). */
  onFailure?: ((failure: StorageFailure) => void) | undefined;
}

/** Open storage: the stores, the database behind them, and how to close it. */
export interface Storage {
  /** The registered domains and their PSKs. */
  readonly store: DomainStore;
  /** Certificates, ACME challenges and ACME account keys. */
  readonly certs: CertificateStore;
  /**
   * Cluster membership and placements, with LISTEN/NOTIFY; undefined on PGlite
   * (single-node: it has no other process to share the database with).
   */
  readonly cluster: ClusterStore | undefined;
  /** Which backend is open ("postgres" or "pglite"). */
  readonly backend: DatabaseHandle["backend"];
  /**
   * Runs a trivial query: resolves if the database answers (readiness checks);
   * rejects with `StorageUnavailableError` when it does not, within the query timeout.
   */
  ping(): Promise<void>;
  /** The database itself, for tests that inspect rows (server code uses the stores). */
  readonly db: Database;
  /** The secret box that seals the PSKs and certificate keys. */
  readonly secretBox: SecretBox;
  /** Where the secret-box key came from ("env", "file" or "new-file"), for a start-up log line. */
  readonly secretKeySource: "env" | "file" | "new-file";
  /** Closes the database and releases the data directory lock. Idempotent. */
  close(): Promise<void>;
}

/**
 * Opens storage for the server. Throws `DataDirLockedError` when another server
 * holds the data directory, `StoreError` when the database cannot be reached or
 * migrated, `SecretKeyMismatchError` when the key does not open the stored PSKs;
 * nothing stays open or locked after a failure.
 */
export async function openStorage(options: StorageOptions): Promise<Storage> {
  const handle = await openDatabase(
    options.dsn
      ? {
        dsn: options.dsn,
        ...(options.maxConnections ? { maxConnections: options.maxConnections } : {}),
        ...(options.queryTimeoutMs ? { connectTimeoutMs: options.queryTimeoutMs } : {}),
      }
      : { dataDir: options.dataDir },
  );
  try {
    await handle.migrate();
    const { key, source } = await loadSecretKey({
      secret: options.secretKey,
      dataDir: options.dataDir,
    });
    const secretBox = new SecretBox(key);
    const guard = new QueryGuard({
      ...(options.queryTimeoutMs !== undefined ? { timeoutMs: options.queryTimeoutMs } : {}),
      ...(options.onFailure ? { onFailure: options.onFailure } : {}),
    });
    const store = new DomainStore(handle.db, secretBox, { guard });
    await store.verifySecretKey();
    const db = handle.db;
    return {
      store,
      certs: new CertificateStore(db, secretBox, guard, handle.locks),
      cluster: handle.listen ? new ClusterStore(db, guard, handle.listen) : undefined,
      backend: handle.backend,
      ping: async () => {
        await guard.run("check database", () => db.execute(sql`select 1`));
      },
      db,
      secretBox,
      secretKeySource: source,
      close: () => handle.close(),
    };
  } catch (err) {
    await handle.close();
    throw err;
  }
}
