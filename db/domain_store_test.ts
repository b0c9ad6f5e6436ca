import assert from "node:assert/strict";
import { sql } from "drizzle-orm";
import { derivePsk } from "../shared/credentials.ts";
import { DomainStore, hashApiKey } from "./domain_store.ts";
import {
  ApiKeyMismatchError,
  DomainExistsError,
  DomainNotFoundError,
  InvalidDomainError,
} from "./errors.ts";
import { domains } from "./schema.ts";
import { openTestDatabase, TEST_BACKENDS, testSecretBox } from "./testing.ts";

for (const backend of TEST_BACKENDS) {
  Deno.test(`DomainStore on ${backend}`, async (t) => {
    const handle = await openTestDatabase(backend);
    const store = new DomainStore(handle.db, testSecretBox());
    const step = (name: string, fn: () => Promise<void>) =>
      t.step(name, async () => {
        await handle.reset();
        await fn();
      });
    try {
      await step("register stores the domain normalized and issues a 64-hex key", async () => {
        const { domain, apiKey } = await store.register("  App.Example.COM. ", "my memo");
        assert.match(apiKey, /^[0-9a-f]{64}$/);
        assert.equal(domain.domain, "app.example.com");
        assert.equal(domain.memo, "my memo");
        assert.equal(domain.keyRotatedAt, null);
        assert.ok(domain.createdAt instanceof Date);
        assert.equal(await store.exists("app.example.com"), true);
        assert.equal(await store.exists("other.example.com"), false);
      });

      await step("IDN is stored as punycode", async () => {
        const { domain } = await store.register("Bücher.example");
        assert.equal(domain.domain, "xn--bcher-kva.example");
        assert.equal((await store.get("bücher.example"))?.domain, "xn--bcher-kva.example");
      });

      await step("no raw secret is stored: only the key hash and a sealed PSK", async () => {
        const { apiKey } = await store.register("secret.example.com");
        const [row] = await handle.db.select().from(domains);
        assert.ok(row);
        const psk = Buffer.from(derivePsk(apiKey));
        const dump = JSON.stringify(row);
        assert.ok(!dump.includes(apiKey));
        assert.ok(!dump.includes(psk.toString("hex")));
        assert.ok(!dump.includes(psk.toString("base64")));
        assert.ok(!dump.includes(psk.toString("base64url")));
        assert.equal(row.apiKeySha256, hashApiKey(apiKey));
        assert.match(row.pskSealed, /^v1\./);
      });

      await step("getPsk returns derivePsk(apiKey); unknown domain gives undefined", async () => {
        const { apiKey } = await store.register("psk.example.com");
        assert.deepEqual(await store.getPsk("psk.example.com"), derivePsk(apiKey));
        assert.equal(await store.getPsk("nope.example.com"), undefined);
      });

      await step("duplicate registration throws DomainExistsError", async () => {
        await store.register("dup.example.com");
        await assert.rejects(store.register("DUP.example.com"), DomainExistsError);
      });

      await step("concurrent registrations of one domain: exactly one wins", async () => {
        const results = await Promise.allSettled(
          Array.from({ length: 8 }, () => store.register("race.example.com")),
        );
        const won = results.filter((r) => r.status === "fulfilled");
        const lost = results.filter((r) => r.status === "rejected");
        assert.equal(won.length, 1);
        assert.equal(lost.length, 7);
        for (const r of lost) assert.ok(r.reason instanceof DomainExistsError);
      });

      await step("invalid domains are refused before any query", async () => {
        for (
          const bad of ["", "localhost", "a..b.com", "-a.com", "a_b.com", "1.2.3.4", "*.x.com"]
        ) {
          await assert.rejects(store.register(bad), InvalidDomainError, bad);
        }
      });

      await step("unregister needs the current key", async () => {
        const { apiKey } = await store.register("unreg.example.com");
        await assert.rejects(store.unregister("unreg.example.com", "wrong"), ApiKeyMismatchError);
        await assert.rejects(
          store.unregister("unreg.example.com", apiKey.replace(/.$/, "x")),
          ApiKeyMismatchError,
        );
        await store.unregister("unreg.example.com", apiKey);
        assert.equal(await store.exists("unreg.example.com"), false);
        await assert.rejects(store.unregister("unreg.example.com", apiKey), DomainNotFoundError);
      });

      await step("rotate issues a new key; the old one no longer unregisters", async () => {
        const first = await store.register("rot.example.com");
        const second = await store.rotate("rot.example.com");
        assert.notEqual(second.apiKey, first.apiKey);
        assert.ok(second.domain.keyRotatedAt instanceof Date);
        assert.deepEqual(await store.getPsk("rot.example.com"), derivePsk(second.apiKey));
        await assert.rejects(
          store.unregister("rot.example.com", first.apiKey),
          ApiKeyMismatchError,
        );
        await store.unregister("rot.example.com", second.apiKey);
        await assert.rejects(store.rotate("rot.example.com"), DomainNotFoundError);
      });

      await step("delete by admin authority", async () => {
        await store.register("del.example.com");
        await store.delete("del.example.com");
        assert.equal(await store.exists("del.example.com"), false);
        await assert.rejects(store.delete("del.example.com"), DomainNotFoundError);
      });

      await step("setMemo updates memo and updated_at", async () => {
        const { domain } = await store.register("memo.example.com", "old");
        const updated = await store.setMemo("memo.example.com", "new");
        assert.equal(updated.memo, "new");
        assert.ok(updated.updatedAt.getTime() >= domain.updatedAt.getTime());
        await assert.rejects(store.setMemo("none.example.com", "x"), DomainNotFoundError);
      });

      await step("list pages through domains in name order", async () => {
        const names = ["c.example.com", "a.example.com", "e.example.com", "b.example.com"];
        for (const n of names) await store.register(n);
        const first = await store.list({ limit: 3 });
        assert.deepEqual(first.domains.map((d) => d.domain), [
          "a.example.com",
          "b.example.com",
          "c.example.com",
        ]);
        assert.equal(first.nextCursor, "c.example.com");
        const second = await store.list({ limit: 3, after: first.nextCursor });
        assert.deepEqual(second.domains.map((d) => d.domain), ["e.example.com"]);
        assert.equal(second.nextCursor, undefined);
        await assert.rejects(store.list({ limit: 0 }), RangeError);
      });

      await step("the schema refuses uppercase domains even past the store", async () => {
        await assert.rejects(
          handle.db.execute(
            sql`insert into domains (domain, api_key_sha256, psk_sealed) values ('UP.example.com', 'x', 'y')`,
          ),
        );
      });
    } finally {
      await handle.close();
    }
  });
}
