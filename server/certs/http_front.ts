/**
 * What the plain-HTTP listener does before routing:
 * 1. `/.well-known/acme-challenge/<token>` for any Host: the key authorization
 *    (text/plain) or 404. Never redirected, never routed to a tunnel.
 * 2. A Host that has a certificate: 308 to the same URL over HTTPS (if enabled).
 * 3. Everything else: the next handler (the ingress).
 * Gateway-owned responses here carry no HSTS: tenants decide that for themselves.
 */
import { type Handler, routingHost } from "../ingress.ts";

export const CHALLENGE_PREFIX = "/.well-known/acme-challenge/";

export interface HttpFrontOptions {
  /** The key authorization for a token, if an order waits for it. */
  challenge: (token: string) => Promise<string | undefined>;
  /** Redirect hosts that have a certificate; omit to never redirect. */
  redirect?: {
    hasCertificate: (host: string) => boolean;
    /** Port of the HTTPS listener; 443 is left out of the Location. */
    httpsPort: number;
  };
}

export function withHttpFront(next: Handler, opts: HttpFrontOptions): Handler {
  return async function httpFront(req, info) {
    const url = new URL(req.url);
    if (url.pathname.startsWith(CHALLENGE_PREFIX)) {
      const token = url.pathname.slice(CHALLENGE_PREFIX.length);
      const answer = req.method === "GET" || req.method === "HEAD"
        ? await opts.challenge(token)
        : undefined;
      return answer === undefined
        ? new Response("Not Found\n", { status: 404, headers: { "content-type": "text/plain" } })
        : new Response(req.method === "HEAD" ? null : answer, {
          headers: { "content-type": "text/plain", "cache-control": "no-store" },
        });
    }
    const r = opts.redirect;
    if (r) {
      const host = routingHost(req.headers.get("host"));
      if (host && r.hasCertificate(host)) {
        const port = r.httpsPort === 443 ? "" : `:${r.httpsPort}`;
        return new Response(null, {
          status: 308,
          headers: { location: `https://${host}${port}${url.pathname}${url.search}` },
        });
      }
    }
    return next(req, info);
  };
}
