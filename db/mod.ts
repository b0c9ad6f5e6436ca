/**
 * The storage layer's public face (imported by `server/` only).
 *
 * Start-up, in `server/main.ts`:
 * ```ts
 * const handle = await openDatabase(config.dbDsn
 *   ? { dsn: config.dbDsn.reveal(), maxConnections: config.dbMaxOpenConns }
 *   : { dataDir: config.dataDir });
 * await handle.migrate();
 * const { key } = await loadSecretKey({ secret: config.secretKey?.reveal(), dataDir: config.dataDir });
 * const store = new DomainStore(handle.db, new SecretBox(key));
 * // ... on shutdown: await handle.close();
 * ```
 */
export {
  type Database,
  type DatabaseHandle,
  type DatabaseOptions,
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
export { InvalidDomainError, normalizeDomain, tryNormalizeDomain } from "./domain_name.ts";
export {
  ApiKeyMismatchError,
  DomainExistsError,
  DomainNotFoundError,
  StoreError,
} from "./errors.ts";
export { type DataDirLock, DataDirLockedError, LOCK_FILE, lockDataDir } from "./lock.ts";
export { keyFromSecret, loadSecretKey, SECRET_KEY_FILE, SecretBox } from "./secret_box.ts";
