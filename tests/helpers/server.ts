/**
 * A whole HopGate server in-process for end-to-end tests: a fresh PostgreSQL
 * database (dropped afterwards), listeners on 127.0.0.1 ephemeral ports, debug
 * mode, an admin key. `admin(path, body?)` calls the admin API over real HTTP.
 */
import postgres from "postgres";
import { randomBytes } from "node:crypto";
import { loadServerConfig } from "../../server/config.ts";
import { MemoryLogger } from "../../server/log.ts";
import { type RunningServer, type RunOptions, runServer } from "../../server/run.ts";

const ADMIN_DSN = Deno.env.get("HOP_TEST_PG_DSN") ?? "postgres://postgres@127.0.0.1:5432/test";
export const ADMIN_KEY = "test-admin-key-0123456789";

export interface TestServer extends AsyncDisposable {
  server: RunningServer;
  logs: MemoryLogger;
  httpUrl: string;
  dtlsPort: number;
  /** The fresh PostgreSQL database's name (tests that take it away). */
  dbName: string;
  /** Calls the admin API (Host = the server domain, bearer key). */
  admin(path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }>;
  /** Registers a domain and returns its client API key. */
  register(domain: string): Promise<string>;
  close(): Promise<void>;
}

export async function startTestServer(
  env: Record<string, string> = {},
  options: RunOptions = {},
): Promise<TestServer> {
  const dbName = `hopgate_e2e_${randomBytes(6).toString("hex")}`;
  const sql = postgres(ADMIN_DSN, { max: 1, onnotice: () => {} });
  await sql.unsafe(`CREATE DATABASE ${dbName}`);
  await sql.end();
  const dsn = new URL(ADMIN_DSN);
  dsn.pathname = `/${dbName}`;
  const dataDir = await Deno.makeTempDir({ prefix: "hopgate-e2e-" });
  const config = loadServerConfig({
    HOP_SERVER_DEBUG: "true",
    HOP_SERVER_DOMAIN: "gateway.test",
    HOP_SERVER_HTTP_LISTEN: "127.0.0.1:0",
    HOP_SERVER_HTTPS_LISTEN: "127.0.0.1:0",
    HOP_SERVER_DTLS_LISTEN: "127.0.0.1:0",
    HOP_ADMIN_API_KEY: ADMIN_KEY,
    HOP_DB_DSN: dsn.href,
    HOP_DB_MAX_OPEN_CONNS: "4",
    HOP_DATA_DIR: dataDir,
    HOP_SECRET_KEY: "e2e-secret-key-0123456789abcdef0123",
    ...env,
  });
  const logs = new MemoryLogger();
  const dropAll = async () => {
    const sql = postgres(ADMIN_DSN, { max: 1, onnotice: () => {} });
    await sql.unsafe(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).finally(() => sql.end());
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  };
  let server: RunningServer;
  try {
    server = await runServer(config, { logger: logs, ...options });
  } catch (e) {
    await dropAll();
    throw e;
  }
  const httpUrl = `http://127.0.0.1:${server.httpAddr.port}`;
  const admin = async (path: string, body?: unknown) => {
    // fetch cannot set Host, so use node:http for the admin calls.
    const { request } = await import("node:http");
    return await new Promise<{ status: number; json: Record<string, unknown> }>(
      (resolve, reject) => {
        const payload = body === undefined ? undefined : JSON.stringify(body);
        const req = request({
          host: "127.0.0.1",
          port: server.httpAddr.port,
          path: `/api/v1/admin/${path}`,
          method: payload === undefined ? "GET" : "POST",
          headers: {
            host: "gateway.test",
            authorization: `Bearer ${ADMIN_KEY}`,
            ...(payload === undefined ? {} : { "content-type": "application/json" }),
          },
        }, (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (c) => text += c);
          res.on("end", () => {
            try {
              resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) });
            } catch (e) {
              reject(e);
            }
          });
        });
        req.on("error", reject);
        req.end(payload);
      },
    );
  };
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await server.close();
    await dropAll();
  };
  return {
    server,
    logs,
    httpUrl,
    dtlsPort: server.dtlsAddr.port,
    dbName,
    admin,
    register: async (domain) => {
      const r = await admin("domains/register", { domain, memo: "e2e" });
      if (r.status !== 200) {
        throw new Error(`register ${domain}: ${r.status} ${JSON.stringify(r.json)}`);
      }
      return r.json.client_api_key as string;
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}
