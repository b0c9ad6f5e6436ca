import { sql } from "drizzle-orm";
import assert from "node:assert/strict";
import type { Hono } from "hono";
import { derivePsk } from "../../shared/credentials.ts";
import { TEST_BACKENDS } from "../../db/testing.ts";
import { createAdminHandler, isAdminRequest } from "./app.ts";
import { parseCidrList } from "./cidr.ts";
import {
  ADMIN_KEY,
  adminConfig,
  type AdminFixture,
  fakeSession,
  openAdminFixture,
  SERVER_DOMAIN,
} from "./testing.ts";

interface CallOptions {
  body?: unknown;
  rawBody?: string;
  headers?: Record<string, string>;
  auth?: string | null;
  ip?: string | null;
  scheme?: "http" | "https";
  host?: string;
}

async function call(app: Hono, method: string, path: string, o: CallOptions = {}) {
  const headers: Record<string, string> = { host: o.host ?? SERVER_DOMAIN, ...o.headers };
  const auth = o.auth === undefined ? `Bearer ${ADMIN_KEY}` : o.auth;
  if (auth !== null) headers.authorization = auth;
  let body: string | undefined = o.rawBody;
  if (o.body !== undefined) {
    body = JSON.stringify(o.body);
    headers["content-type"] = "application/json";
  }
  const url = `${o.scheme ?? "http"}://${o.host ?? SERVER_DOMAIN}/api/v1/admin${path}`;
  const ip = o.ip === undefined ? "127.0.0.1" : o.ip;
  const env = ip === null ? undefined : { remoteAddr: { transport: "tcp", hostname: ip, port: 5 } };
  const res = await app.request(
    url,
    { method, headers, ...(body === undefined ? {} : { body }) },
    env,
  );
  const text = await res.text();
  const json = text === "" ? undefined : JSON.parse(text);
  return { status: res.status, headers: res.headers, json };
}

function assertError(r: { status: number; json: unknown }, status: number, pattern?: RegExp) {
  assert.equal(r.status, status, JSON.stringify(r.json));
  const j = r.json as { success: unknown; error: unknown };
  assert.equal(j.success, false);
  assert.equal(typeof j.error, "string");
  if (pattern) assert.match(j.error as string, pattern);
}

for (const backend of TEST_BACKENDS) {
  Deno.test(`admin API via app.request on ${backend}`, async (t) => {
    const fx: AdminFixture = await openAdminFixture(backend);
    const app = fx.app();
    const step = (name: string, fn: () => Promise<void>) =>
      t.step(name, async () => {
        await fx.db.reset();
        fx.logger.entries.length = 0;
        await fn();
      });
    const register = async (domain: string, memo?: string) => {
      const r = await call(app, "POST", "/domains/register", { body: { domain, memo } });
      assert.equal(r.status, 200, JSON.stringify(r.json));
      return r.json.client_api_key as string;
    };
    try {
      await step("register → 200 with a one-time key, no-store; then exists/status", async () => {
        const r = await call(app, "POST", "/domains/register", {
          body: { domain: "App.Example.com", memo: "first" },
        });
        assert.equal(r.status, 200);
        assert.equal(r.json.success, true);
        assert.equal(r.json.domain, "app.example.com");
        assert.match(r.json.client_api_key, /^[0-9a-f]{64}$/);
        assert.equal(r.headers.get("cache-control"), "no-store");
        const ex = await call(app, "GET", "/domains/exists?domain=app.example.com");
        assert.deepEqual(ex.json, { success: true, exists: true });
        const st = await call(app, "GET", "/domains/status?domain=APP.example.com");
        assert.equal(st.status, 200);
        assert.equal(st.json.exists, true);
        assert.equal(st.json.domain, "app.example.com");
        assert.equal(st.json.memo, "first");
        assert.equal(st.json.connected, false);
        assert.equal(st.json.sessions, 0);
        assert.ok(!Number.isNaN(Date.parse(st.json.created_at)));
        assert.ok(!Number.isNaN(Date.parse(st.json.updated_at)));
        assert.equal(st.json.key_rotated_at, null);
        assert.ok(!JSON.stringify(st.json).includes(r.json.client_api_key));
      });

      await step("register accepts a JSON body sent as form-urlencoded (curl -d)", async () => {
        const r = await call(app, "POST", "/domains/register", {
          rawBody: JSON.stringify({ domain: "curl.example.com" }),
          headers: { "content-type": "application/x-www-form-urlencoded" },
        });
        assert.equal(r.status, 200);
      });

      await step("register: IDN is stored as punycode", async () => {
        const r = await call(app, "POST", "/domains/register", {
          body: { domain: "bücher.example" },
        });
        assert.equal(r.json.domain, "xn--bcher-kva.example");
      });

      await step("register: duplicate → 409", async () => {
        await register("dup.example.com");
        assertError(
          await call(app, "POST", "/domains/register", { body: { domain: "DUP.example.com" } }),
          409,
          /already registered/,
        );
      });

      await step("register: concurrent requests for one domain → one 200 and one 409", async () => {
        const results = await Promise.all(
          [1, 2].map(() =>
            call(app, "POST", "/domains/register", { body: { domain: "race.example.com" } })
          ),
        );
        assert.deepEqual(results.map((r) => r.status).sort(), [200, 409]);
      });

      await step(
        "register: bad input → 400 (invalid, missing, wrong type, JSON, memo)",
        async () => {
          const cases: [CallOptions, RegExp][] = [
            [{ body: { domain: "not a domain" } }, /domain/],
            [{ body: { domain: "localhost" } }, /two labels/],
            [{ body: { domain: "a_b.example.com" } }, /not allowed/],
            [{ body: { memo: "x" } }, /missing field "domain"/],
            [{ body: { domain: 42 } }, /must be a string/],
            [{ body: { domain: "ok.example.com", memo: 5 } }, /"memo" must be a string/],
            [{ body: { domain: "ok.example.com", memo: "m".repeat(1001) } }, /memo/],
            [
              { rawBody: "{not json", headers: { "content-type": "application/json" } },
              /malformed/,
            ],
            [{ rawBody: "" }, /empty/],
            [{ body: ["domain"] }, /JSON object/],
            [{ body: null }, /JSON object/],
          ];
          for (const [o, pattern] of cases) {
            assertError(await call(app, "POST", "/domains/register", o), 400, pattern);
          }
          assert.equal(await fx.store.exists("ok.example.com"), false);
        },
      );

      await step("body over the size limit → 413 (with or without Content-Length)", async () => {
        const big = { domain: "big.example.com", memo: "x".repeat(20_000) };
        assertError(
          await call(app, "POST", "/domains/register", { body: big }),
          413,
          /larger than 16384 bytes/,
        );
        const small = fx.app({}, { maxBodyBytes: 64 });
        const stream = new ReadableStream<Uint8Array>({
          start(ctl) {
            ctl.enqueue(new TextEncoder().encode(JSON.stringify(big)));
            ctl.close();
          },
        });
        const res = await small.request(`http://${SERVER_DOMAIN}/api/v1/admin/domains/register`, {
          method: "POST",
          headers: { host: SERVER_DOMAIN, authorization: `Bearer ${ADMIN_KEY}` },
          body: stream,
        }, { remoteAddr: { hostname: "127.0.0.1" } });
        assert.equal(res.status, 413);
        assert.equal((await res.json()).success, false);
      });

      await step("unregister: wrong key 403, missing key 400, unknown 404, then 200", async () => {
        const key = await register("unreg.example.com");
        const { session, closed } = fakeSession("s1");
        fx.registry.add("unreg.example.com", session);
        assert.deepEqual(await fx.psk.lookupPsk("unreg.example.com"), derivePsk(key));
        assertError(
          await call(app, "POST", "/domains/unregister", {
            body: { domain: "unreg.example.com", client_api_key: "f".repeat(64) },
          }),
          403,
          /does not match/,
        );
        assertError(
          await call(app, "POST", "/domains/unregister", { body: { domain: "unreg.example.com" } }),
          400,
          /client_api_key/,
        );
        assertError(
          await call(app, "POST", "/domains/unregister", {
            body: { domain: "other.example.com", client_api_key: key },
          }),
          404,
          /not registered/,
        );
        assert.deepEqual(closed, [], "failed attempts close nothing");
        const ok = await call(app, "POST", "/domains/unregister", {
          body: { domain: "unreg.example.com", client_api_key: key },
        });
        assert.equal(ok.status, 200);
        assert.equal(ok.json.success, true);
        assert.equal(ok.json.closed_sessions, 1);
        assert.deepEqual(closed, ["domain unregistered"]);
        assert.equal(fx.registry.isConnected("unreg.example.com"), false);
        assert.equal(await fx.psk.lookupPsk("unreg.example.com"), undefined);
      });

      await step(
        "exists/status: missing or invalid domain → 400; unknown → false / 404",
        async () => {
          assertError(await call(app, "GET", "/domains/exists"), 400, /missing field "domain"/);
          assertError(await call(app, "GET", "/domains/exists?domain=-bad-"), 400);
          assert.deepEqual((await call(app, "GET", "/domains/exists?domain=no.example.com")).json, {
            success: true,
            exists: false,
          });
          assertError(await call(app, "GET", "/domains/status"), 400);
          const st = await call(app, "GET", "/domains/status?domain=no.example.com");
          assertError(st, 404, /not registered/);
          assert.equal(st.json.exists, false);
        },
      );

      await step("status reports a connected client", async () => {
        await register("live.example.com");
        const remove = fx.registry.add("live.example.com", fakeSession("s1").session);
        const st = await call(app, "GET", "/domains/status?domain=live.example.com");
        assert.equal(st.json.connected, true);
        assert.equal(st.json.sessions, 1);
        remove();
        const after = await call(app, "GET", "/domains/status?domain=live.example.com");
        assert.equal(after.json.connected, false);
      });

      await step("list is paginated with a cursor; bad limit → 400", async () => {
        for (const d of ["c.example.com", "a.example.com", "b.example.com"]) await register(d);
        fx.registry.add("b.example.com", fakeSession("s1").session);
        const p1 = await call(app, "GET", "/domains?limit=2");
        assert.equal(p1.status, 200);
        assert.deepEqual(p1.json.domains.map((d: { domain: string }) => d.domain), [
          "a.example.com",
          "b.example.com",
        ]);
        assert.equal(p1.json.domains[1].connected, true);
        assert.equal(p1.json.next_cursor, "b.example.com");
        const p2 = await call(app, "GET", `/domains?limit=2&cursor=${p1.json.next_cursor}`);
        assert.deepEqual(p2.json.domains.map((d: { domain: string }) => d.domain), [
          "c.example.com",
        ]);
        assert.equal(p2.json.next_cursor, null);
        const all = await call(app, "GET", "/domains");
        assert.equal(all.json.domains.length, 3);
        for (const bad of ["0", "501", "abc", "-1", "1.5"]) {
          assertError(await call(app, "GET", `/domains?limit=${bad}`), 400, /limit/);
        }
        fx.registry.closeDomain("b.example.com", "test over");
      });

      await step("rotate: new key, old PSK gone, live tunnel closed; unknown → 404", async () => {
        const oldKey = await register("rot.example.com");
        assert.deepEqual(await fx.psk.lookupPsk("rot.example.com"), derivePsk(oldKey));
        const { session, closed } = fakeSession("s1");
        fx.registry.add("rot.example.com", session);
        const r = await call(app, "POST", "/domains/rotate", {
          body: { domain: "rot.example.com" },
        });
        assert.equal(r.status, 200);
        assert.equal(r.headers.get("cache-control"), "no-store");
        const newKey = r.json.client_api_key as string;
        assert.match(newKey, /^[0-9a-f]{64}$/);
        assert.notEqual(newKey, oldKey);
        assert.equal(r.json.closed_sessions, 1);
        assert.deepEqual(closed, ["client API key rotated"]);
        assert.ok(!Number.isNaN(Date.parse(r.json.key_rotated_at)));
        assert.deepEqual(await fx.psk.lookupPsk("rot.example.com"), derivePsk(newKey));
        assertError(
          await call(app, "POST", "/domains/unregister", {
            body: { domain: "rot.example.com", client_api_key: oldKey },
          }),
          403,
        );
        assertError(
          await call(app, "POST", "/domains/rotate", { body: { domain: "none.example.com" } }),
          404,
        );
        assertError(await call(app, "POST", "/domains/rotate", { body: {} }), 400);
      });

      await step("delete by admin: 200 and tunnel closed, then 404", async () => {
        const key = await register("del.example.com");
        assert.ok(await fx.psk.lookupPsk("del.example.com"));
        const { session, closed } = fakeSession("s1");
        fx.registry.add("del.example.com", session);
        const r = await call(app, "POST", "/domains/delete", {
          body: { domain: "del.example.com" },
        });
        assert.deepEqual(r.json, { success: true, closed_sessions: 1 });
        assert.deepEqual(closed, ["domain deleted by admin"]);
        assert.equal(await fx.psk.lookupPsk("del.example.com"), undefined);
        assert.equal(await fx.store.exists("del.example.com"), false);
        assertError(
          await call(app, "POST", "/domains/delete", { body: { domain: "del.example.com" } }),
          404,
        );
        assert.ok(!JSON.stringify(fx.logger.entries).includes(key));
      });

      await step("sessions: all, by domain, invalid domain → 400", async () => {
        fx.registry.add("x.example.com", fakeSession("s1", "198.51.100.1:1000").session);
        fx.registry.add("y.example.com", fakeSession("s2", "198.51.100.2:2000").session);
        const all = await call(app, "GET", "/sessions");
        assert.equal(all.status, 200);
        assert.equal(all.json.sessions.length, 2);
        const one = await call(app, "GET", "/sessions?domain=Y.example.com");
        assert.equal(one.json.sessions.length, 1);
        assert.equal(one.json.sessions[0].id, "s2");
        assert.equal(one.json.sessions[0].domain, "y.example.com");
        assert.equal(one.json.sessions[0].remote_addr, "198.51.100.2:2000");
        assert.ok(!Number.isNaN(Date.parse(one.json.sessions[0].connected_at)));
        assertError(await call(app, "GET", "/sessions?domain=bad_domain"), 400);
        fx.registry.closeDomain("x.example.com", "test over");
        fx.registry.closeDomain("y.example.com", "test over");
      });

      await step("auth: missing, malformed or wrong bearer → 401 with a challenge", async () => {
        for (
          const auth of [
            null,
            "",
            "Basic YWRtaW46eA==",
            "Bearer",
            `Bearer ${ADMIN_KEY}x`,
            "Bearer x",
          ]
        ) {
          const r = await call(app, "GET", "/domains/exists?domain=a.example.com", { auth });
          assertError(r, 401);
          assert.match(r.headers.get("www-authenticate") ?? "", /^Bearer/);
        }
        const lower = await call(app, "GET", "/domains/exists?domain=a.example.com", {
          auth: `bearer ${ADMIN_KEY}`,
        });
        assert.equal(lower.status, 200);
      });

      await step("no admin key configured → 503 saying the API is off", async () => {
        const off = fx.app({ adminApiKey: undefined });
        assertError(await call(off, "GET", "/domains"), 503, /HOP_ADMIN_API_KEY is not set/);
      });

      await step("Host must be the server domain (any port) → else 404", async () => {
        assertError(await call(app, "GET", "/domains", { host: "tunnel.example.com" }), 404);
        assert.equal(
          (await call(app, "GET", "/domains", { host: "Admin.Example.com:8443" })).status,
          200,
        );
      });

      await step("plain HTTP only in debug or from loopback → else 403", async () => {
        const remote = { ip: "192.0.2.10" };
        assertError(await call(app, "GET", "/domains", remote), 403, /HTTPS/);
        assertError(await call(app, "GET", "/domains", { ip: null }), 403, /HTTPS/);
        assert.equal(
          (await call(app, "GET", "/domains", { ...remote, scheme: "https" })).status,
          200,
        );
        assert.equal((await call(app, "GET", "/domains", { ip: "::1" })).status, 200);
        assert.equal((await call(app, "GET", "/domains", { ip: "::ffff:127.0.0.1" })).status, 200);
        const debug = fx.app({ debug: true });
        assert.equal((await call(debug, "GET", "/domains", remote)).status, 200);
      });

      await step("HOP_ADMIN_ALLOWED_IPS is checked before the bearer key", async () => {
        const limited = fx.app({ adminAllowedIps: parseCidrList("10.0.0.0/8, 2001:db8::/32") });
        const https = { scheme: "https" as const };
        const denied = await call(limited, "GET", "/domains", {
          ...https,
          ip: "192.0.2.1",
          auth: null,
        });
        assertError(denied, 403, /not allowed/);
        assertError(await call(limited, "GET", "/domains", { ...https, ip: null }), 403);
        assert.equal(
          (await call(limited, "GET", "/domains", { ...https, ip: "10.9.8.7" })).status,
          200,
        );
        assert.equal(
          (await call(limited, "GET", "/domains", { ...https, ip: "2001:db8:1::5" })).status,
          200,
        );
        assertError(
          await call(limited, "GET", "/domains", { ...https, ip: "10.9.8.7", auth: null }),
          401,
        );
      });

      await step("wrong method → 405 with Allow; unknown path → 404", async () => {
        const r = await call(app, "GET", "/domains/register");
        assertError(r, 405);
        assert.equal(r.headers.get("allow"), "POST");
        const r2 = await call(app, "POST", "/domains/exists", { body: {} });
        assertError(r2, 405);
        assert.match(r2.headers.get("allow") ?? "", /GET/);
        assertError(await call(app, "DELETE", "/domains"), 405);
        assertError(await call(app, "PUT", "/sessions"), 405);
        assertError(await call(app, "GET", "/nope"), 404);
        assertError(await call(app, "GET", "/domains/register/extra"), 404);
      });

      await step(
        "every action is audited (who, what, result) and no key is ever logged",
        async () => {
          const key = await register("audit.example.com");
          await call(app, "GET", "/domains", { auth: "Bearer wrong-key-123" });
          await call(app, "POST", "/domains/unregister", {
            body: { domain: "audit.example.com", client_api_key: key },
          });
          const audits = fx.logger.entries.filter((e) => e.fields.event === "admin.audit");
          assert.deepEqual(
            audits.map((e) => [e.fields.action, e.fields.domain, e.fields.status, e.fields.result]),
            [
              ["domains.register", "audit.example.com", 200, "ok"],
              [null, null, 401, "denied"],
              ["domains.unregister", "audit.example.com", 200, "ok"],
            ],
          );
          for (const a of audits) assert.equal(a.fields.ip, "127.0.0.1");
          const text = fx.logger.lines().join("\n") + JSON.stringify(fx.logger.entries);
          assert.ok(!text.includes(key));
          assert.ok(!text.includes(ADMIN_KEY));
          assert.ok(!text.includes("wrong-key-123"));
        },
      );
    } finally {
      await fx.close();
    }
  });
}

Deno.test("createAdminHandler and isAdminRequest route by Host and path", async () => {
  const fx = await openAdminFixture("postgres");
  try {
    const handler = createAdminHandler({
      store: fx.store,
      registry: fx.registry,
      pskLookup: fx.psk,
      config: adminConfig(),
    });
    const req = (url: string, host: string) =>
      new Request(url, { headers: { host, authorization: `Bearer ${ADMIN_KEY}` } });
    const ok = req(`http://${SERVER_DOMAIN}/api/v1/admin/domains`, `${SERVER_DOMAIN}:8080`);
    assert.equal(isAdminRequest(ok, SERVER_DOMAIN), true);
    const res = await handler(ok, { remoteAddr: { hostname: "127.0.0.1" } });
    assert.equal(res.status, 200);
    assert.equal((await res.json()).success, true);
    for (
      const [url, host] of [
        ["http://app.example.com/api/v1/admin/domains", "app.example.com"],
        [`http://${SERVER_DOMAIN}/api/v1/administrator`, SERVER_DOMAIN],
        [`http://${SERVER_DOMAIN}/`, SERVER_DOMAIN],
      ]
    ) {
      assert.equal(isAdminRequest(req(url!, host!), SERVER_DOMAIN), false, url);
    }
  } finally {
    await fx.close();
  }
});

Deno.test("admin API: a database failure is a 500 with no details, logged sanitized", async () => {
  const fx = await openAdminFixture("postgres");
  const app = fx.app();
  try {
    // A query that fails in the database itself (not a lost connection): 500.
    await fx.db.db.execute(sql`ALTER TABLE domains RENAME TO domains_gone`);
    const r = await call(app, "POST", "/domains/register", {
      body: { domain: "down.example.com", memo: "sk_secret_memo_value" },
    });
    assertError(r, 500, /^database error$/);
    const logged = fx.logger.lines().join("\n");
    assert.match(logged, /admin request failed/);
    assert.match(logged, /Cannot register domain: database error/);
    assert.ok(!logged.includes("sk_secret_memo_value"), logged);
    assert.ok(!logged.includes('psk_sealed":"v1.'), logged);
  } finally {
    await fx.close();
  }
});

Deno.test("admin API: a database that is gone is a 503 storage_unavailable, never 'not found'", async () => {
  const fx = await openAdminFixture("postgres");
  const app = fx.app();
  await fx.close(); // every query now fails to reach the database
  const r = await call(app, "POST", "/domains/register", {
    body: { domain: "down.example.com", memo: "sk_secret_memo_value" },
  });
  assertError(r, 503, /^storage_unavailable$/);
  assert.equal((r.json as { reason: string }).reason, "unreachable");
  for (
    const path of ["/domains/status?domain=a.example.com", "/domains/exists?domain=a.example.com"]
  ) {
    const q = await call(app, "GET", path);
    assertError(q, 503, /^storage_unavailable$/);
  }
  const logged = fx.logger.lines().join("\n");
  assert.match(logged, /Cannot register domain: database unavailable/);
  assert.ok(!logged.includes("sk_secret_memo_value"), logged);
});
