/**
 * The storage layer's public face: `server/` reaches the database only through this
 * module (tests/architecture_test.ts checks it). Tests may also import `db/testing.ts`,
 * the one test entry (a migrated database per backend), which this module does not
 * re-export. No SQL outside `db/`: the server gets stores and `Storage.ping`.
 *
 * Start-up, in `server/main.ts`:
 * ```ts
 * const storage = await openStorage({
 *   dsn: config.dbDsn?.reveal(),
 *   maxConnections: config.dbMaxOpenConns,
 *   dataDir: config.dataDir,
 *   secretKey: config.secretKey?.reveal(),
 * }); // opens, locks (PGlite), migrates, loads the secret-box key
 * // storage.store: domains; storage.certs: certificates; on shutdown: await storage.close();
 * ```
 */
export {
  type AdvisoryLocks,
  type Database,
  type DatabaseHandle,
  type DatabaseOptions,
  type Listener,
  LOCK_QUERY_TIMEOUT_MS,
  LockTimeoutError,
  MIGRATIONS_DIR,
  openDatabase,
} from "./database.ts";
export {
  type DomainInfo,
  type DomainPage,
  DomainStore,
  generateApiKey,
  hashApiKey,
  type IssuedKey,
  MAX_MEMO_CHARS,
  MAX_PAGE_SIZE,
} from "./domain_store.ts";
export { openStorage, type Storage, type StorageOptions } from "./storage.ts";
export { CertificateStore, type StoredCertificate } from "./cert_store.ts";
export {
  CLUSTER_CHANNEL,
  type ClusterMessage,
  type ClusterNode,
  ClusterStore,
  decodeClusterMessage,
  type Placement,
} from "./cluster_store.ts";
export { InvalidDomainError, normalizeDomain, tryNormalizeDomain } from "./domain_name.ts";
export {
  ApiKeyMismatchError,
  DomainExistsError,
  DomainNotFoundError,
  SecretKeyMismatchError,
  StorageUnavailableError,
  StoreError,
} from "./errors.ts";
export {
  DEFAULT_QUERY_TIMEOUT_MS,
  QueryGuard,
  type QueryGuardOptions,
  type StorageFailure,
} from "./guard.ts";
export { type DataDirLock, DataDirLockedError, LOCK_FILE, lockDataDir } from "./lock.ts";
export { keyFromSecret, loadSecretKey, SECRET_KEY_FILE, SecretBox } from "./secret_box.ts";
