/**
 * Debian's `pebble` (a real ACME CA, RFC 8555) and `pebble-challtestsrv` (its DNS)
 * for the certificate tests, on 127.0.0.1 ephemeral ports:
 * - pebble really validates (`PEBBLE_VA_ALWAYS_VALID=0`), without its random
 *   validation sleeps, and sends HTTP-01 requests to `httpPort` (our listener);
 * - every name resolves to 127.0.0.1 unless `setA` says otherwise;
 * - pebble's own HTTPS certificate is self-signed here (`directoryCa`); the
 *   certificates it issues chain to `root()`, which is new on every start.
 */
import { createSelfSignedCertificate } from "../../server/certs/self_signed.ts";

export interface Pebble extends AsyncDisposable {
  directoryUrl: string;
  /** PEM file trusted for the directory's HTTPS (HOP_ACME_CA_CERT). */
  directoryCaFile: string;
  /** The root that issued certificates chain to (PEM). */
  root(): Promise<string>;
  /** Makes `host` resolve to `addresses` (challtestsrv's mock DNS). */
  setA(host: string, addresses: string[]): Promise<void>;
  /** Back to the default answer (127.0.0.1). */
  clearA(host: string): Promise<void>;
  close(): Promise<void>;
}

/** A port that was free a moment ago (bind :0, close). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

function freeUdpPort(): number {
  const l = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

export async function startPebble(opts: { httpPort: number }): Promise<Pebble> {
  const dir = await Deno.makeTempDir({ prefix: "hopgate-pebble-" });
  const procs: Deno.ChildProcess[] = [];
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    for (const p of procs) {
      try {
        p.kill("SIGTERM");
      } catch { /* already gone */ }
    }
    await Promise.all(procs.map((p) => p.status));
    httpClient?.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  let httpClient: Deno.HttpClient | undefined;
  try {
    const tlsCert = await createSelfSignedCertificate(["localhost", "127.0.0.1"]);
    await Deno.writeTextFile(`${dir}/cert.pem`, tlsCert.cert);
    await Deno.writeTextFile(`${dir}/key.pem`, tlsCert.key);
    const dnsPort = freeUdpPort();
    const challMgmt = freePort();
    const acmePort = freePort();
    const mgmtPort = freePort();
    await Deno.writeTextFile(
      `${dir}/pebble.json`,
      JSON.stringify({
        pebble: {
          listenAddress: `127.0.0.1:${acmePort}`,
          managementListenAddress: `127.0.0.1:${mgmtPort}`,
          certificate: `${dir}/cert.pem`,
          privateKey: `${dir}/key.pem`,
          httpPort: opts.httpPort,
          tlsPort: freePort(),
          ocspResponderURL: "",
          externalAccountBindingRequired: false,
        },
      }),
    );
    const spawn = (cmd: string, args: string[], env: Record<string, string> = {}) => {
      const p = new Deno.Command(cmd, { args, env, stdout: "null", stderr: "null" }).spawn();
      procs.push(p);
    };
    spawn("pebble-challtestsrv", [
      "-management",
      `127.0.0.1:${challMgmt}`,
      "-dns01",
      `127.0.0.1:${dnsPort}`,
      "-http01",
      "",
      "-https01",
      "",
      "-tlsalpn01",
      "",
      "-defaultIPv4",
      "127.0.0.1",
      "-defaultIPv6",
      "",
    ]);
    spawn("pebble", ["-config", `${dir}/pebble.json`, "-dnsserver", `127.0.0.1:${dnsPort}`], {
      PEBBLE_VA_ALWAYS_VALID: "0",
      PEBBLE_VA_NOSLEEP: "1",
      PEBBLE_WFE_NONCEREJECT: "0",
      PEBBLE_AUTHZREUSE: "0",
    });
    httpClient = Deno.createHttpClient({ caCerts: [tlsCert.cert] });
    const hc = httpClient;
    const directoryUrl = `https://127.0.0.1:${acmePort}/dir`;
    const ready = async (url: string, init: RequestInit = {}) => {
      const deadline = Date.now() + 15_000;
      for (;;) {
        try {
          const r = await fetch(url, init);
          await r.body?.cancel();
          return;
        } catch (e) {
          if (Date.now() > deadline) throw new Error(`pebble not ready at ${url}: ${e}`);
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    };
    await ready(directoryUrl, { client: hc } as RequestInit);
    await ready(`http://127.0.0.1:${challMgmt}/`);
    const mgmt = async (path: string, body: unknown) => {
      const r = await fetch(`http://127.0.0.1:${challMgmt}${path}`, {
        method: "POST",
        body: JSON.stringify(body),
      });
      await r.body?.cancel();
      if (!r.ok) throw new Error(`challtestsrv ${path}: ${r.status}`);
    };
    const fqdn = (h: string) => h.endsWith(".") ? h : `${h}.`;
    return {
      directoryUrl,
      directoryCaFile: `${dir}/cert.pem`,
      root: async () => {
        const r = await fetch(
          `https://127.0.0.1:${mgmtPort}/roots/0`,
          { client: hc } as RequestInit,
        );
        return await r.text();
      },
      setA: (host, addresses) => mgmt("/add-a", { host: fqdn(host), addresses }),
      clearA: (host) => mgmt("/clear-a", { host: fqdn(host) }),
      close,
      [Symbol.asyncDispose]: close,
    };
  } catch (e) {
    await close();
    throw e;
  }
}
