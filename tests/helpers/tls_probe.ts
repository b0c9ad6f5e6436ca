/**
 * TLS probes for the HTTPS tests: handshake with a chosen SNI against 127.0.0.1
 * (no DNS needed) and report the certificate, or request a URL through curl with
 * `--resolve`, verifying against a given CA.
 */
import { connect } from "node:tls";

export interface Probe {
  ok: boolean;
  /** Serial number (hex) and subject CN of the leaf certificate, when `ok`. */
  serial?: string;
  subject?: string | undefined;
  error?: string;
}

/** Handshakes with `servername` and verifies against `ca` (PEM). Never throws. */
export function probeTls(port: number, servername: string, ca: string): Promise<Probe> {
  return new Promise((resolve) => {
    const socket = connect({
      host: "127.0.0.1",
      port,
      servername,
      ca,
      ALPNProtocols: ["http/1.1"],
    });
    const done = (p: Probe) => {
      socket.destroy();
      resolve(p);
    };
    socket.setTimeout(5000, () => done({ ok: false, error: "timeout" }));
    socket.once("secureConnect", () => {
      const c = socket.getPeerCertificate();
      done({ ok: true, serial: c.serialNumber, subject: c.subject?.CN as string | undefined });
    });
    socket.once("error", (e) => done({ ok: false, error: e.message }));
  });
}

/** `curl` through `--resolve host:port:127.0.0.1`; status, body, and curl's exit code. */
export async function curl(
  url: string,
  opts: { caFile?: string; resolvePort?: number; insecure?: boolean } = {},
): Promise<{ code: number; status: number; body: string; location: string; stderr: string }> {
  const u = new URL(url);
  const port = Number(u.port || (u.protocol === "https:" ? 443 : 80));
  const args = ["-sS", "-o", "-", "-w", "\n%{http_code} %{redirect_url}", "--max-time", "10"];
  args.push("--resolve", `${u.hostname}:${opts.resolvePort ?? port}:127.0.0.1`);
  if (opts.caFile) args.push("--cacert", opts.caFile);
  if (opts.insecure) args.push("-k");
  args.push(url);
  const out = await new Deno.Command("curl", { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout);
  const nl = text.lastIndexOf("\n");
  const [status, location = ""] = text.slice(nl + 1).split(" ");
  return {
    code: out.code,
    status: Number(status),
    body: text.slice(0, nl),
    location,
    stderr: new TextDecoder().decode(out.stderr),
  };
}
