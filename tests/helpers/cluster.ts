/**
 * Several HopGate server processes on one PostgreSQL database in cluster mode
 * (docs/cluster.md), each on its own loopback ports, with the `server` task's
 * exact flags. Every process is stopped by its own id (`Proc.stop`); `kill9`
 * is the crash a test wants; `close()` stops them all and drops the database.
 */
import postgres from "postgres";
import { randomBytes } from "node:crypto";
import { ADMIN_KEY, curl, freePort, Proc, ROOT, taskFlags } from "./procs.ts";

const ADMIN_DSN = Deno.env.get("HOP_TEST_PG_DSN") ?? "postgres://postgres@127.0.0.1:5432/test";
/** The secret every node of a test cluster shares. */
export const CLUSTER_SECRET = "cluster-secret-key-0123456789abcdef";

/** One node of a test cluster. */
export interface ClusterNodeProc {
  proc: Proc;
  name: string;
  httpPort: number;
  dtlsPort: number;
  relayPort: number;
  /** The node id, from its "cluster joined" log line. */
  nodeId: string;
  /** Calls its admin API (Host gateway.test, bearer key). */
  admin(path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }>;
  /** Its `/metrics` text. */
  metrics(): Promise<string>;
  /** SIGKILL: the crash (no leave, no GOAWAY). */
  kill9(): Promise<void>;
  /** SIGTERM (a graceful stop), then the same node again on the same ports (a new node id). */
  restart(): Promise<void>;
}

/** A test cluster. */
export interface TestCluster extends AsyncDisposable {
  nodes: ClusterNodeProc[];
  /** DSN of its database (tests look at the rows). */
  dsn: string;
  /** Starts one more node on the same database (`env` overrides, e.g. another secret). */
  addNode(env?: Record<string, string>): Promise<ClusterNodeProc>;
  close(): Promise<void>;
}

/** Creates a database and starts `n` nodes on it. */
export async function startTestCluster(n: number, dsnOverride?: string): Promise<TestCluster> {
  const dbName = `hopgate_c_${randomBytes(6).toString("hex")}`;
  let dsn: string;
  if (dsnOverride) dsn = dsnOverride;
  else {
    const sql = postgres(ADMIN_DSN, { max: 1, onnotice: () => {} });
    await sql.unsafe(`CREATE DATABASE ${dbName}`).finally(() => sql.end());
    const u = new URL(ADMIN_DSN);
    u.pathname = `/${dbName}`;
    dsn = u.href;
  }
  const nodes: ClusterNodeProc[] = [];
  const dataDirs: string[] = [];
  const addNode = async (env: Record<string, string> = {}) => {
    const name = `node${nodes.length + 1}`;
    const httpPort = freePort("tcp");
    const httpsPort = freePort("tcp");
    const dtlsPort = freePort("udp");
    const relayPort = freePort("tcp");
    const dataDir = `./data/cluster-${randomBytes(4).toString("hex")}`;
    dataDirs.push(dataDir);
    const fullEnv = {
      HOP_SERVER_DEBUG: "true",
      HOP_SERVER_DOMAIN: "gateway.test",
      HOP_SERVER_HTTP_LISTEN: `127.0.0.1:${httpPort}`,
      HOP_SERVER_HTTPS_LISTEN: `127.0.0.1:${httpsPort}`,
      HOP_SERVER_DTLS_LISTEN: `127.0.0.1:${dtlsPort}`,
      HOP_ADMIN_API_KEY: ADMIN_KEY,
      HOP_DB_DSN: dsn,
      HOP_DB_MAX_OPEN_CONNS: "4",
      HOP_DATA_DIR: dataDir,
      HOP_SECRET_KEY: CLUSTER_SECRET,
      HOP_CLUSTER_LISTEN: `127.0.0.1:${relayPort}`,
      HOP_SHUTDOWN_TIMEOUT_SECONDS: "2",
      ...env,
    };
    const args = ["run", "--config", `${ROOT}deno.json`, ...taskFlags("server"), "server/main.ts"];
    const start = async () => {
      const proc = new Proc(args, fullEnv);
      try {
        await proc.waitFor('"server started"', 30_000);
      } catch (e) {
        await proc.stop("SIGKILL");
        throw e;
      }
      const joined = /"cluster joined".*?"node_id":"([0-9a-f-]{36})"/.exec(proc.output);
      return { proc, nodeId: joined?.[1] ?? "" };
    };
    const first = await start();
    const admin = async (path: string, body?: unknown) => {
      const r = await curl([
        "-s",
        "-H",
        "Host: gateway.test",
        "-H",
        `Authorization: Bearer ${ADMIN_KEY}`,
        ...(body === undefined
          ? []
          : ["-H", "content-type: application/json", "-d", JSON.stringify(body)]),
        `http://127.0.0.1:${httpPort}/api/v1/admin/${path}`,
      ]);
      return { status: r.status, json: JSON.parse(r.body) as Record<string, unknown> };
    };
    const node: ClusterNodeProc = {
      proc: first.proc,
      name,
      httpPort,
      dtlsPort,
      relayPort,
      nodeId: first.nodeId,
      admin,
      metrics: async () =>
        (await curl(["-s", "-H", "Host: gateway.test", `http://127.0.0.1:${httpPort}/metrics`]))
          .body,
      kill9: () => node.proc.stop("SIGKILL"),
      restart: async () => {
        await node.proc.stop();
        const next = await start();
        node.proc = next.proc;
        node.nodeId = next.nodeId;
      },
    };
    nodes.push(node);
    return node;
  };
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await Promise.all(nodes.map((n) => n.proc.stop()));
    if (!dsnOverride) {
      const sql = postgres(ADMIN_DSN, { max: 1, onnotice: () => {} });
      await sql.unsafe(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).finally(() => sql.end());
    }
    for (const d of dataDirs) await Deno.remove(`${ROOT}${d}`, { recursive: true }).catch(() => {});
  };
  try {
    // Started one after another: the first one migrates the database.
    for (let i = 0; i < n; i++) await addNode();
  } catch (e) {
    await close();
    throw e;
  }
  return { nodes, dsn, addNode, close, [Symbol.asyncDispose]: close };
}

/**
 * Polls `check` every 50 ms until it holds, or throws after `ms` naming `what` (a
 * function: asked then, so the message can say how far things got).
 */
export async function until(
  what: string | (() => string),
  check: () => Promise<boolean> | boolean,
  ms = 15_000,
) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${typeof what === "function" ? what() : what}`);
}
