/**
 * `/domains/*`: the original HopGate's routes (register, unregister, exists,
 * status; same paths and JSON fields) and the operators' additions (list, rotate,
 * delete). Responses that carry a client API key are `Cache-Control: no-store`.
 */
import { Hono } from "hono";
import { type DomainInfo, StorageUnavailableError } from "../../../db/mod.ts";
import type { AdminDeps, AdminEnv } from "../env.ts";
import { AdminHttpError } from "../errors.ts";
import { apiKeyField, domainField, limitParam, memoField } from "../fields.ts";
import { jsonBody } from "../middleware.ts";

const DEFAULT_PAGE_SIZE = 100;
const NO_STORE = { "Cache-Control": "no-store" };

export function domainRoutes(deps: AdminDeps): Hono<AdminEnv> {
  const { store, registry, pskLookup } = deps;
  const app = new Hono<AdminEnv>();

  /** Drops the cached PSK and closes live tunnels after the domain's key changed or went away. */
  const afterKeyChange = (domain: string, reason: string): number => {
    pskLookup.invalidate(domain);
    return registry.closeDomain(domain, reason);
  };
  /**
   * Runs a write that changes or removes a domain's key. When the database gives
   * no answer, the write may still be applied: the cached PSK (kept for outages)
   * is dropped all the same, so an old key is not let in on this node's word.
   */
  const keyWrite = async <T>(domain: string, write: () => Promise<T>): Promise<T> => {
    try {
      return await write();
    } catch (e) {
      if (e instanceof StorageUnavailableError) pskLookup.invalidate(domain);
      throw e;
    }
  };

  app.post(
    "/register",
    jsonBody((b) => ({ domain: domainField(b.domain), memo: memoField(b.memo) })),
    async (c) => {
      const { domain, memo } = c.req.valid("json");
      c.set("auditAction", "domains.register");
      c.set("auditDomain", domain);
      const issued = await store.register(domain, memo); // DomainExistsError → 409
      pskLookup.invalidate(domain); // a cached "not found" must not outlive this
      deps.onDomainRegistered?.(issued.domain.domain);
      return c.json(
        {
          success: true,
          domain: issued.domain.domain,
          client_api_key: issued.apiKey,
        },
        200,
        NO_STORE,
      );
    },
  );

  app.post(
    "/unregister",
    jsonBody((b) => ({ domain: domainField(b.domain), apiKey: apiKeyField(b.client_api_key) })),
    async (c) => {
      const { domain, apiKey } = c.req.valid("json");
      c.set("auditAction", "domains.unregister");
      c.set("auditDomain", domain);
      await keyWrite(domain, () => store.unregister(domain, apiKey));
      const closed = afterKeyChange(domain, "domain unregistered");
      return c.json({ success: true, closed_sessions: closed });
    },
  );

  app.get("/exists", async (c) => {
    const domain = domainField(c.req.query("domain"));
    c.set("auditAction", "domains.exists");
    c.set("auditDomain", domain);
    return c.json({ success: true, exists: await store.exists(domain) });
  });

  app.get("/status", async (c) => {
    const domain = domainField(c.req.query("domain"));
    c.set("auditAction", "domains.status");
    c.set("auditDomain", domain);
    const info = await store.get(domain);
    if (!info) {
      return c.json(
        { success: false, exists: false, error: `domain ${domain} is not registered` },
        404,
      );
    }
    return c.json({
      success: true,
      exists: true,
      ...domainJson(info),
      connected: registry.isConnected(domain),
      sessions: registry.sessions(domain).length,
    });
  });

  app.get("/", async (c) => {
    c.set("auditAction", "domains.list");
    const limit = limitParam(c.req.query("limit"), DEFAULT_PAGE_SIZE);
    const cursor = c.req.query("cursor") || undefined;
    if (cursor !== undefined && cursor.length > 253) {
      throw new AdminHttpError(400, `query parameter "cursor" is not a domain`);
    }
    const page = await store.list({ limit, after: cursor });
    return c.json({
      success: true,
      domains: page.domains.map((d) => ({
        ...domainJson(d),
        connected: registry.isConnected(d.domain),
      })),
      next_cursor: page.nextCursor ?? null,
    });
  });

  app.post(
    "/rotate",
    jsonBody((b) => ({ domain: domainField(b.domain) })),
    async (c) => {
      const { domain } = c.req.valid("json");
      c.set("auditAction", "domains.rotate");
      c.set("auditDomain", domain);
      const issued = await keyWrite(domain, () => store.rotate(domain));
      const closed = afterKeyChange(domain, "client API key rotated");
      return c.json(
        {
          success: true,
          domain: issued.domain.domain,
          client_api_key: issued.apiKey,
          key_rotated_at: issued.domain.keyRotatedAt?.toISOString() ?? null,
          closed_sessions: closed,
        },
        200,
        NO_STORE,
      );
    },
  );

  app.post(
    "/delete",
    jsonBody((b) => ({ domain: domainField(b.domain) })),
    async (c) => {
      const { domain } = c.req.valid("json");
      c.set("auditAction", "domains.delete");
      c.set("auditDomain", domain);
      await keyWrite(domain, () => store.delete(domain));
      const closed = afterKeyChange(domain, "domain deleted by admin");
      return c.json({ success: true, closed_sessions: closed });
    },
  );

  return app;
}

function domainJson(d: DomainInfo) {
  return {
    domain: d.domain,
    memo: d.memo,
    created_at: d.createdAt.toISOString(),
    updated_at: d.updatedAt.toISOString(),
    key_rotated_at: d.keyRotatedAt?.toISOString() ?? null,
  };
}
