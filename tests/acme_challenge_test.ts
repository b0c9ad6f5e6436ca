/**
 * The HTTP-01 responder's database bound: tokens of other nodes' orders are looked
 * up in the real certificate store (PGlite), at most 20 a second however many
 * made-up tokens arrive; malformed tokens never reach the database.
 */
import assert from "node:assert/strict";
import { openTestDatabase, testSecretBox } from "../db/testing.ts";
import { AcmeIssuer } from "../server/certs/acme_issuer.ts";
import { CertificateStore } from "../db/mod.ts";

Deno.test("ACME challenge lookups: a flood of made-up tokens costs at most 20 queries a second", async () => {
  const db = await openTestDatabase("pglite");
  try {
    const store = new CertificateStore(db.db, testSecretBox());
    let queries = 0;
    const get = store.getChallenge.bind(store);
    store.getChallenge = (token, now) => {
      queries++;
      return get(token, now);
    };
    let now = 1_000_000;
    let shed = 0;
    const issuer = new AcmeIssuer({
      certs: store,
      directoryUrl: "https://127.0.0.1:9/dir",
      now: () => now,
      onLookupShed: () => shed++,
    });
    const real = "R".repeat(43);
    await store.putChallenge(real, "app.example.com", `${real}.thumb`, new Date(now + 60_000));
    assert.equal(await issuer.challenge("short"), undefined, "not a token");
    assert.equal(await issuer.challenge("x".repeat(43) + "/"), undefined);
    assert.equal(queries, 0);
    for (let i = 0; i < 100; i++) {
      assert.equal(await issuer.challenge(`made-up-token-${i}`.padEnd(43, "z")), undefined);
    }
    assert.equal(queries, 20, "the bucket holds 20");
    assert.equal(issuer.lookupsShed, 80);
    assert.equal(shed, 80, "each one reported (hopgate_acme_challenge_lookups_shed_total)");
    // A second later there is room again, and a real token is found.
    now += 1000;
    assert.equal(await issuer.challenge(real), `${real}.thumb`);
    assert.equal(queries, 21);
  } finally {
    await db.close();
  }
});
