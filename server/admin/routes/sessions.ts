/** `/sessions`: live tunnel sessions, all or one domain's (`?domain=`). */
import { Hono } from "hono";
import type { AdminDeps, AdminEnv } from "../env.ts";
import { domainField } from "../fields.ts";

export function sessionRoutes(deps: AdminDeps): Hono<AdminEnv> {
  const app = new Hono<AdminEnv>();
  app.get("/", (c) => {
    c.set("auditAction", "sessions.list");
    const raw = c.req.query("domain");
    const domain = raw === undefined ? undefined : domainField(raw);
    if (domain !== undefined) c.set("auditDomain", domain);
    const sessions = deps.registry.sessions(domain).map((s) => ({
      domain: s.domain,
      id: s.id,
      remote_addr: s.remoteAddr,
      connected_at: s.connectedAt.toISOString(),
      ...(s.node !== undefined ? { node: s.node } : {}),
    }));
    return c.json({ success: true, sessions });
  });
  return app;
}
