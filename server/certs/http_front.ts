/**
 * What the plain-HTTP listener does before routing:
 * 1. `/.well-known/acme-challenge/<token>` for any Host: the key authorization
 *    (text/plain) or 404. Never redirected, never routed to a tunnel.
 * 2. A Host that has a certificate: 308 to the same URL over HTTPS (if enabled).
 * 3. Everything else: the next handler (the ingress).
 * Gateway-owned responses here carry no HSTS: tenants decide that for themselves.
 */
import type { FrontHandler, Responder } from "../front/http1.ts";
import { routingHost } from "../ingress.ts";

export const CHALLENGE_PREFIX = "/.well-known/acme-challenge/";

export interface HttpFrontOptions {
  /** The key authorization for a token, if an order waits for it (from memory). */
  challenge: (token: string) => Promise<string | undefined>;
  /** Redirect hosts that have a certificate; omit to never redirect. */
  redirect?: {
    hasCertificate: (host: string) => boolean;
    /** Port of the HTTPS listener; 443 is left out of the Location. */
    httpsPort: number;
  };
}

const enc = new TextEncoder();

function answer(
  res: Responder,
  status: number,
  headers: [string, string][],
  body: string,
  head: boolean,
): Promise<void> {
  const bytes = enc.encode(body);
  res.head(status, headers, bytes.length);
  return res.end(head ? undefined : bytes);
}

export function withHttpFront(next: FrontHandler, opts: HttpFrontOptions): FrontHandler {
  return async function httpFront(req, res) {
    const path = req.path;
    const isHead = req.method === "HEAD";
    if (path.startsWith(CHALLENGE_PREFIX)) {
      const q = path.indexOf("?");
      const token = path.slice(CHALLENGE_PREFIX.length, q < 0 ? undefined : q);
      const key = req.method === "GET" || isHead ? await opts.challenge(token) : undefined;
      return key === undefined
        ? answer(res, 404, [["content-type", "text/plain"]], "Not Found\n", isHead)
        : answer(
          res,
          200,
          [["content-type", "text/plain"], ["cache-control", "no-store"]],
          key,
          isHead,
        );
    }
    const r = opts.redirect;
    if (r) {
      const host = routingHost(req.host);
      if (host && r.hasCertificate(host)) {
        const port = r.httpsPort === 443 ? "" : `:${r.httpsPort}`;
        res.head(308, [["location", `https://${host}${port}${path}`]], 0);
        return res.end();
      }
    }
    return next(req, res);
  };
}
