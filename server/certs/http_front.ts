/**
 * What the plain-HTTP listener does before routing:
 * 1. `/.well-known/acme-challenge/<token>` for any Host: the key authorization
 *    (text/plain) or 404. Never redirected, never routed to a tunnel.
 * 2. A Host that has a certificate: 308 to the same URL over HTTPS (if enabled).
 * 3. Everything else: the next handler (the ingress).
 * Gateway-owned responses here carry no HSTS: tenants decide that for themselves.
 */
import type { HeaderList } from "../../shared/protocol/mod.ts";
import { hostHeaderName } from "../../shared/names.ts";

/** The path prefix of HTTP-01 challenge requests (RFC 8555 8.3). */
export const CHALLENGE_PREFIX = "/.well-known/acme-challenge/";

/** Where the plain-HTTP front finds challenge answers and which hosts it redirects. */
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

/** What the plain-HTTP front reads of a request (a `FrontRequest` fits). */
export interface HttpFrontRequest {
  /** The request method. */
  readonly method: string;
  /** Path and query (origin-form). */
  readonly path: string;
  /** The Host field as received. */
  readonly host: string;
}

/** How the plain-HTTP front answers (a front `Responder` fits). */
export interface HttpFrontResponder {
  /** Sends the status line and fields; `length` is the body's Content-Length. */
  head(status: number, headers: HeaderList, length: number): void;
  /** Sends the last body bytes, if any, and ends the response. */
  end(chunk?: Uint8Array): Promise<void>;
}

const enc = new TextEncoder();

function answer(
  res: HttpFrontResponder,
  status: number,
  headers: [string, string][],
  body: string,
  head: boolean,
): Promise<void> {
  const bytes = enc.encode(body);
  res.head(status, headers, bytes.length);
  return res.end(head ? undefined : bytes);
}

/**
 * Wraps the plain-HTTP listener's handler `next`: ACME challenges and HTTPS redirects are
 * answered here, everything else goes on to `next`.
 */
export function withHttpFront<Req extends HttpFrontRequest, Res extends HttpFrontResponder>(
  next: (req: Req, res: Res) => Promise<void>,
  opts: HttpFrontOptions,
): (req: Req, res: Res) => Promise<void> {
  // Not async: a request for a tunnel goes on to `next` without a promise of its own.
  return function httpFront(req, res) {
    const path = req.path;
    if (path.startsWith(CHALLENGE_PREFIX)) return challenge(req, res, opts);
    const r = opts.redirect;
    if (r) {
      const host = hostHeaderName(req.host);
      if (host && r.hasCertificate(host)) {
        const port = r.httpsPort === 443 ? "" : `:${r.httpsPort}`;
        res.head(308, [["location", `https://${host}${port}${path}`]], 0);
        return res.end();
      }
    }
    return next(req, res);
  };
}

/** Answers an HTTP-01 challenge request: the key authorization, or 404. */
async function challenge(
  req: HttpFrontRequest,
  res: HttpFrontResponder,
  opts: HttpFrontOptions,
): Promise<void> {
  const path = req.path;
  const isHead = req.method === "HEAD";
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
