/**
 * The admin API behind a real `Deno.serve` on 127.0.0.1 (port 0), spoken to over
 * raw TCP so the Host header can be the server domain (fetch always sends the
 * URL's host).
 */
import assert from "node:assert/strict";
import type { Hono } from "hono";
import { derivePsk } from "../../shared/credentials.ts";
import { TEST_BACKENDS } from "../../db/testing.ts";
import { parseCidrList } from "./cidr.ts";
import { ADMIN_KEY, fakeSession, openAdminFixture, SERVER_DOMAIN } from "./testing.ts";

interface RawResponse {
  status: number;
  headers: Map<string, string>;
  json: Record<string, unknown> & { success: boolean };
}

/** One HTTP/1.1 request on its own connection (`Connection: close`). */
async function rawRequest(
  port: number,
  method: string,
  path: string,
  options: { body?: string; host?: string; auth?: string | null } = {},
): Promise<RawResponse> {
  const body = new TextEncoder().encode(options.body ?? "");
  const auth = options.auth === undefined ? `Bearer ${ADMIN_KEY}` : options.auth;
  const head = [
    `${method} /api/v1/admin${path} HTTP/1.1`,
    `Host: ${options.host ?? `${SERVER_DOMAIN}:${port}`}`,
    "Connection: close",
    ...(auth === null ? [] : [`Authorization: ${auth}`]),
    ...(options.body === undefined
      ? []
      : ["Content-Type: application/json", `Content-Length: ${body.byteLength}`]),
    "",
    "",
  ].join("\r\n");
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(new TextEncoder().encode(head));
    if (body.byteLength > 0) await conn.write(body);
    const raw = new Uint8Array(await new Response(conn.readable).arrayBuffer());
    const text = new TextDecoder().decode(raw);
    const split = text.indexOf("\r\n\r\n");
    const [statusLine, ...headerLines] = text.slice(0, split).split("\r\n");
    const headers = new Map(headerLines.map((l) => {
      const i = l.indexOf(":");
      return [l.slice(0, i).toLowerCase(), l.slice(i + 1).trim()] as [string, string];
    }));
    let payload = text.slice(split + 4);
    if (headers.get("transfer-encoding") === "chunked") payload = dechunk(payload);
    return { status: Number(statusLine?.split(" ")[1]), headers, json: JSON.parse(payload) };
  } finally {
    try {
      conn.close();
    } catch { /* closed by the server already */ }
  }
}

function dechunk(s: string): string {
  let out = "";
  let rest = s;
  for (;;) {
    const eol = rest.indexOf("\r\n");
    const size = parseInt(rest.slice(0, eol), 16);
    if (!size) return out;
    out += rest.slice(eol + 2, eol + 2 + size);
    rest = rest.slice(eol + 2 + size + 2);
  }
}

async function withServer(app: Hono, fn: (port: number) => Promise<void>) {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req, info) => app.fetch(req, info),
  );
  try {
    await fn(server.addr.port);
  } finally {
    await server.shutdown();
  }
}

for (const backend of TEST_BACKENDS) {
  Deno.test(`admin API over HTTP (Deno.serve) on ${backend}`, async () => {
    const fx = await openAdminFixture(backend);
    try {
      await withServer(fx.app(), async (port) => {
        const post = (path: string, body: unknown) =>
          rawRequest(port, "POST", path, { body: JSON.stringify(body) });
        const get = (path: string) => rawRequest(port, "GET", path);

        // Concurrent registration of one domain over two connections: one 200, one 409.
        const both = await Promise.all(
          [1, 2].map(() => post("/domains/register", { domain: "web.example.com", memo: "m" })),
        );
        assert.deepEqual(both.map((r) => r.status).sort(), [200, 409]);
        const won = both.find((r) => r.status === 200)!;
        const lost = both.find((r) => r.status === 409)!;
        assert.equal(lost.json.success, false);
        const key1 = won.json.client_api_key as string;
        assert.match(key1, /^[0-9a-f]{64}$/);
        assert.equal(won.headers.get("content-type"), "application/json");
        assert.equal(won.headers.get("cache-control"), "no-store");
        assert.deepEqual(await fx.psk.lookupPsk("web.example.com"), derivePsk(key1));

        assert.deepEqual((await get("/domains/exists?domain=web.example.com")).json, {
          success: true,
          exists: true,
        });
        const { session, closed } = fakeSession("tunnel-1");
        fx.registry.add("web.example.com", session);
        const status = await get("/domains/status?domain=web.example.com");
        assert.equal(status.status, 200);
        assert.equal(status.json.connected, true);
        assert.equal(status.json.memo, "m");
        const sessions = await get("/sessions");
        assert.equal((sessions.json.sessions as unknown[]).length, 1);
        const list = await get("/domains?limit=10");
        assert.equal((list.json.domains as unknown[]).length, 1);

        const rotated = await post("/domains/rotate", { domain: "web.example.com" });
        assert.equal(rotated.status, 200);
        const key2 = rotated.json.client_api_key as string;
        assert.deepEqual(closed, ["client API key rotated"]);
        assert.deepEqual(await fx.psk.lookupPsk("web.example.com"), derivePsk(key2));
        assert.equal(
          (await post("/domains/unregister", { domain: "web.example.com", client_api_key: key1 }))
            .status,
          403,
        );
        const unreg = await post("/domains/unregister", {
          domain: "web.example.com",
          client_api_key: key2,
        });
        assert.deepEqual(unreg.json, { success: true, closed_sessions: 0 });
        assert.equal(await fx.psk.lookupPsk("web.example.com"), undefined);
        assert.equal((await get("/domains/status?domain=web.example.com")).status, 404);
        assert.equal((await post("/domains/delete", { domain: "web.example.com" })).status, 404);

        // Error paths over the wire.
        assert.equal((await rawRequest(port, "GET", "/domains", { auth: null })).status, 401);
        assert.equal(
          (await rawRequest(port, "GET", "/domains", { auth: "Bearer no" })).status,
          401,
        );
        assert.equal(
          (await rawRequest(port, "GET", "/domains", { host: "other.example.com" }))
            .status,
          404,
        );
        const wrongMethod = await rawRequest(port, "DELETE", "/domains/register");
        assert.equal(wrongMethod.status, 405);
        assert.equal(wrongMethod.headers.get("allow"), "POST");
        assert.equal(
          (await rawRequest(port, "POST", "/domains/register", { body: "{oops" })).status,
          400,
        );
        assert.equal(
          (await post("/domains/register", { domain: "x", memo: "y".repeat(30_000) }))
            .status,
          413,
        );
        assert.equal((await get("/nothing/here")).status, 404);

        const audits = fx.logger.entries.filter((e) => e.fields.event === "admin.audit");
        assert.ok(audits.length >= 15);
        assert.ok(audits.every((a) => a.fields.ip === "127.0.0.1"), "real peer address seen");
        const logged = JSON.stringify(fx.logger.entries);
        for (const secret of [key1, key2, ADMIN_KEY]) assert.ok(!logged.includes(secret));
      });
    } finally {
      await fx.close();
    }
  });
}

Deno.test("admin API over HTTP: the real peer address meets HOP_ADMIN_ALLOWED_IPS", async () => {
  const fx = await openAdminFixture("postgres");
  try {
    const elsewhere = fx.app({ adminAllowedIps: parseCidrList("10.0.0.0/8") });
    await withServer(elsewhere, async (port) => {
      const r = await rawRequest(port, "GET", "/domains");
      assert.equal(r.status, 403);
      assert.match(String(r.json.error), /not allowed/);
    });
    const loopback = fx.app({ adminAllowedIps: parseCidrList("127.0.0.0/8,::1") });
    await withServer(loopback, async (port) => {
      assert.equal((await rawRequest(port, "GET", "/domains")).status, 200);
    });
  } finally {
    await fx.close();
  }
});
