/**
 * The gateway's own error responses: a small HTML page, or JSON when the caller
 * asks for JSON. Pages can be replaced by files `<status>.html` in a directory
 * (`HOP_SERVER_ERROR_PAGES_DIR`); `{{status}}`, `{{title}}`, `{{message}}` and
 * `{{request_id}}` in them are filled in.
 */

export type GatewayErrorKind =
  | "no_tunnel"
  | "local_unreachable"
  | "local_timeout"
  | "tunnel_lost"
  | "bad_request";

const STATUS: Record<GatewayErrorKind, number> = {
  no_tunnel: 404,
  local_unreachable: 502,
  local_timeout: 504,
  tunnel_lost: 503,
  bad_request: 400,
};

const TITLE: Record<number, string> = {
  400: "Bad Request",
  404: "No tunnel for this host",
  502: "Bad Gateway",
  503: "Tunnel unavailable",
  504: "Gateway Timeout",
};

const escapeHtml = (s: string) =>
  s.replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!,
  );

const DEFAULT_TEMPLATE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{status}} {{title}}</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;color:#222}
small{color:#777}</style></head>
<body><h1>{{status}} {{title}}</h1><p>{{message}}</p><small>HopGate · request {{request_id}}</small></body></html>
`;

export class ErrorPages {
  readonly #templates = new Map<number, string>();

  /** Loads `<status>.html` overrides from `dir` (missing files keep the default). */
  static async load(dir: string | undefined): Promise<ErrorPages> {
    const pages = new ErrorPages();
    if (!dir) return pages;
    for (const status of Object.keys(TITLE).map(Number)) {
      try {
        pages.#templates.set(status, await Deno.readTextFile(`${dir}/${status}.html`));
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
    }
    return pages;
  }

  /** The page for a gateway error: JSON when the caller accepts it rather than HTML. */
  render(
    kind: GatewayErrorKind,
    message: string,
    accept: string,
    requestId: string,
  ): { status: number; headers: [string, string][]; body: string } {
    const status = STATUS[kind];
    const title = TITLE[status] ?? "Error";
    const headers: [string, string][] = [
      ["x-request-id", requestId],
      ["cache-control", "no-store"],
    ];
    if (accept.includes("application/json") && !accept.includes("text/html")) {
      headers.push(["content-type", "application/json"]);
      const body = JSON.stringify({ success: false, error: kind, message, request_id: requestId });
      return { status, headers, body };
    }
    headers.push(["content-type", "text/html; charset=utf-8"]);
    const body = (this.#templates.get(status) ?? DEFAULT_TEMPLATE)
      .replaceAll("{{status}}", String(status))
      .replaceAll("{{title}}", escapeHtml(title))
      .replaceAll("{{message}}", escapeHtml(message))
      .replaceAll("{{request_id}}", escapeHtml(requestId));
    return { status, headers, body };
  }
}
