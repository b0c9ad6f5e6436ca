import assert from "node:assert/strict";
import { derivePsk } from "../shared/credentials.ts";
import { pskIdentity } from "../shared/dtls/psk.ts";
import { DomainStore } from "../db/mod.ts";
import { openTestDatabase, testSecretBox } from "../db/testing.ts";
import { MemoryLogger } from "./log.ts";
import { createPskLookup, PskLookupLimitedError, type PskSource } from "./psk_store.ts";

/** What a DTLS server takes as its PSK callback (shared/dtls's PskLookup). */
type DtlsPskCallback = (identity: string) => Promise<Uint8Array | undefined>;

/** A PskSource over a map that counts queries and can be made to fail or stall. */
class CountingSource implements PskSource {
  readonly keys = new Map<string, Uint8Array>();
  calls = 0;
  fail = false;
  gate: Promise<void> | undefined;
  async getPsk(domain: string): Promise<Uint8Array | undefined> {
    this.calls++;
    if (this.gate) await this.gate;
    if (this.fail) throw new Error("db down: password=hunter2");
    return this.keys.get(domain);
  }
}

Deno.test("lookupPsk over a real store: registered key found, rotated and unregistered keys gone", async () => {
  const db = await openTestDatabase("postgres");
  try {
    const store = new DomainStore(db.db, testSecretBox());
    const psk = createPskLookup(store, { cacheTtlMs: 60_000 });
    // Handed to the DTLS server unbound, as `lookupPsk: psk.lookupPsk`.
    const lookup: DtlsPskCallback = psk.lookupPsk;
    const { apiKey } = await store.register("tunnel.example.com");
    const identity = pskIdentity("tunnel.example.com");
    assert.deepEqual(await lookup(identity), derivePsk(apiKey));

    const rotated = await store.rotate("tunnel.example.com");
    assert.deepEqual(await lookup(identity), derivePsk(apiKey), "cached until invalidated");
    psk.invalidate("tunnel.example.com");
    const now = await lookup(identity);
    assert.deepEqual(now, derivePsk(rotated.apiKey));
    assert.notDeepEqual(now, derivePsk(apiKey));

    await store.unregister("tunnel.example.com", rotated.apiKey);
    psk.invalidate("tunnel.example.com");
    assert.equal(await lookup(identity), undefined);
    assert.equal(await lookup("unknown.example.com"), undefined);
  } finally {
    await db.close();
  }
});

Deno.test("lookupPsk caches found and not-found answers for the TTL", async () => {
  let clock = 0;
  const source = new CountingSource();
  source.keys.set("a.example.com", new Uint8Array([1, 2, 3]));
  const psk = createPskLookup(source, { cacheTtlMs: 1000, now: () => clock });
  assert.deepEqual(await psk.lookupPsk("a.example.com"), new Uint8Array([1, 2, 3]));
  assert.deepEqual(await psk.lookupPsk("A.Example.COM"), new Uint8Array([1, 2, 3]));
  assert.equal(await psk.lookupPsk("b.example.com"), undefined);
  assert.equal(await psk.lookupPsk("b.example.com"), undefined);
  assert.equal(source.calls, 2);
  clock = 1001;
  await psk.lookupPsk("a.example.com");
  assert.equal(source.calls, 3, "expired entries are fetched again");
  const copy = await psk.lookupPsk("a.example.com");
  copy!.fill(0);
  assert.deepEqual(await psk.lookupPsk("a.example.com"), new Uint8Array([1, 2, 3]), "copies out");
});

Deno.test("lookupPsk: concurrent lookups share one query; invalidate beats a query in flight", async () => {
  const source = new CountingSource();
  source.keys.set("a.example.com", new Uint8Array([1]));
  let open!: () => void;
  source.gate = new Promise((r) => open = r);
  const psk = createPskLookup(source, { cacheTtlMs: 60_000 });
  const pending = [psk.lookupPsk("a.example.com"), psk.lookupPsk("a.example.com")];
  await Promise.resolve();
  // The key changes while the query is in flight; the stale answer must not be cached.
  psk.invalidate("a.example.com");
  source.keys.set("a.example.com", new Uint8Array([2]));
  open();
  source.gate = undefined;
  await Promise.all(pending);
  assert.equal(source.calls, 1);
  assert.deepEqual(await psk.lookupPsk("a.example.com"), new Uint8Array([2]));
  assert.equal(source.calls, 2);
});

Deno.test("lookupPsk: invalid identities never reach the store; failures reject, are logged, not cached", async () => {
  const source = new CountingSource();
  const logger = new MemoryLogger();
  const psk = createPskLookup(source, { logger });
  for (const bad of ["", "a..b", "x".repeat(300), "1.2.3.4", "bad_name.com"]) {
    assert.equal(await psk.lookupPsk(bad), undefined);
  }
  assert.equal(source.calls, 0);
  source.fail = true;
  // A store failure is not "not found": the DTLS server turns the rejection into internal_error.
  await assert.rejects(psk.lookupPsk("a.example.com"), /db down/);
  source.fail = false;
  source.keys.set("a.example.com", new Uint8Array([9]));
  assert.deepEqual(await psk.lookupPsk("a.example.com"), new Uint8Array([9]));
  assert.equal(logger.entries.length, 1);
  assert.equal(logger.entries[0]?.msg, "PSK lookup failed");
});

Deno.test("lookupPsk: cacheTtlMs 0 disables the cache; maxEntries bounds it", async () => {
  const source = new CountingSource();
  const uncached = createPskLookup(source, { cacheTtlMs: 0 });
  await uncached.lookupPsk("a.example.com");
  await uncached.lookupPsk("a.example.com");
  assert.equal(source.calls, 2);
  source.calls = 0;
  const small = createPskLookup(source, { maxEntries: 2 });
  for (const d of ["a.example.com", "b.example.com", "c.example.com", "a.example.com"]) {
    await small.lookupPsk(d);
  }
  assert.equal(source.calls, 4, "a.example.com was evicted as the oldest");
});

Deno.test("lookupPsk: while the store fails, a PSK read within outageTtlMs is used; others reject", async () => {
  let clock = 0;
  const source = new CountingSource();
  source.keys.set("up.example.com", new Uint8Array([7]));
  const logger = new MemoryLogger();
  let hits = 0;
  const psk = createPskLookup(source, {
    cacheTtlMs: 1000,
    outageTtlMs: 60_000,
    now: () => clock,
    logger,
    onOutageHit: () => hits++,
  });
  assert.deepEqual(await psk.lookupPsk("up.example.com"), new Uint8Array([7]));
  assert.equal(await psk.lookupPsk("gone.example.com"), undefined);
  source.fail = true;
  clock = 5000; // both fresh entries expired
  assert.deepEqual(await psk.lookupPsk("up.example.com"), new Uint8Array([7]));
  assert.deepEqual(await psk.lookupPsk("up.example.com"), new Uint8Array([7]));
  assert.equal(hits, 2);
  assert.equal(source.calls, 4, "the store is still asked first");
  // A cached "not found" is not kept for outages, nor is an identity never looked up.
  await assert.rejects(psk.lookupPsk("gone.example.com"), /db down/);
  await assert.rejects(psk.lookupPsk("new.example.com"), /db down/);
  // One warning per domain and outage, whatever the number of handshakes.
  assert.equal(logger.entries.filter((e) => e.level === "warn").length, 1);
  // Past outageTtlMs since it was last read: no longer used.
  clock = 61_000;
  await assert.rejects(psk.lookupPsk("up.example.com"), /db down/);
  // Invalidation (unregister, rotation, an unanswered key write) drops it at once.
  source.fail = false;
  clock = 70_000;
  await psk.lookupPsk("up.example.com");
  psk.invalidate("up.example.com");
  source.fail = true;
  clock = 80_000;
  await assert.rejects(psk.lookupPsk("up.example.com"), /db down/);
  // outageTtlMs 0: nothing is kept for outages.
  source.fail = false;
  const strict = createPskLookup(source, { cacheTtlMs: 1000, outageTtlMs: 0, now: () => clock });
  await strict.lookupPsk("up.example.com");
  source.fail = true;
  clock = 90_000;
  await assert.rejects(strict.lookupPsk("up.example.com"), /db down/);
});

Deno.test("lookupPsk: unknown identities cannot push the PSKs kept for an outage out of the cache", async () => {
  let clock = 0;
  const source = new CountingSource();
  source.keys.set("up.example.com", new Uint8Array([7]));
  const psk = createPskLookup(source, {
    cacheTtlMs: 1000,
    outageTtlMs: 60_000,
    maxEntries: 2,
    now: () => clock,
  });
  assert.deepEqual(await psk.lookupPsk("up.example.com"), new Uint8Array([7]));
  // Far more unknown identities than maxEntries (anyone past the cookie can send them).
  for (let i = 0; i < 50; i++) assert.equal(await psk.lookupPsk(`junk${i}.example.com`), undefined);
  // Their "not registered" answers are bounded too: the oldest is asked again.
  source.calls = 0;
  await psk.lookupPsk("junk0.example.com");
  assert.equal(source.calls, 1, "junk0 was evicted from the bounded not-registered answers");
  // The database goes away: the domain read before still gets its PSK.
  source.fail = true;
  clock = 5000;
  assert.deepEqual(await psk.lookupPsk("up.example.com"), new Uint8Array([7]));
});

Deno.test("lookupPsk: store queries are bounded per source address; cached answers and other addresses are not", async () => {
  let clock = 0;
  const source = new CountingSource();
  source.keys.set("known.example.com", new Uint8Array([7]));
  const results: string[] = [];
  const psk = createPskLookup(source, {
    now: () => clock,
    queriesPerAddress: { burst: 5, perSecond: 1 },
    onLookup: (r) => results.push(r),
  });
  const attacker = { hostname: "198.51.100.7" };
  // The known domain, once: a query, then cached.
  assert.deepEqual(await psk.lookupPsk("known.example.com", attacker), new Uint8Array([7]));
  // Four more made-up identities use the rest of the burst...
  for (let i = 0; i < 4; i++) {
    assert.equal(await psk.lookupPsk(`nobody-${i}.example.com`, attacker), undefined);
  }
  assert.equal(source.calls, 5);
  // ...and the next is refused without a query, with an error the handshake maps to internal_error.
  await assert.rejects(psk.lookupPsk("nobody-5.example.com", attacker), PskLookupLimitedError);
  assert.equal(source.calls, 5);
  // Cached answers still work from that address: the known domain reconnects.
  assert.deepEqual(await psk.lookupPsk("known.example.com", attacker), new Uint8Array([7]));
  assert.equal(await psk.lookupPsk("nobody-0.example.com", attacker), undefined);
  // The same /64 is the same address; another address has its own budget.
  await assert.rejects(psk.lookupPsk("x.example.com", { hostname: "198.51.100.7" }));
  assert.equal(await psk.lookupPsk("nobody-9.example.com", { hostname: "203.0.113.1" }), undefined);
  const v6 = { hostname: "2001:db8:1:2::1" };
  for (let i = 0; i < 5; i++) await psk.lookupPsk(`v6-${i}.example.com`, v6);
  await assert.rejects(psk.lookupPsk("v6-5.example.com", { hostname: "2001:db8:1:2::ffff" }));
  // A second later, one more query.
  clock += 1000;
  assert.equal(await psk.lookupPsk("nobody-6.example.com", attacker), undefined);
  await assert.rejects(psk.lookupPsk("nobody-7.example.com", attacker));
  assert.equal(results.filter((r) => r === "rate_limited").length, 4);
  assert.equal(results.filter((r) => r === "cached").length, 2);
  assert.equal(results.filter((r) => r === "found").length, 1);
});

Deno.test("lookupPsk: at most maxQueriesInFlight store queries at once, from any number of addresses", async () => {
  const source = new CountingSource();
  source.keys.set("known.example.com", new Uint8Array([7]));
  let release = () => {};
  source.gate = new Promise<void>((r) => release = r);
  const results: string[] = [];
  // maxEntries 4: the per-address buckets forget addresses quickly, as under a flood
  // from more addresses than they track; the global bound does not depend on them.
  const psk = createPskLookup(source, {
    maxQueriesInFlight: 3,
    maxEntries: 4,
    onLookup: (r) => results.push(r),
  });
  const from = (i: number) => ({ hostname: `2001:db8:${i.toString(16)}::1` });
  const pending = [0, 1, 2].map((i) => psk.lookupPsk(`nobody-${i}.example.com`, from(i)));
  // A fourth and a fifth distinct identity, from fresh addresses: refused without a query.
  for (const i of [3, 4]) {
    await assert.rejects(
      psk.lookupPsk(`nobody-${i}.example.com`, from(i)),
      (e: Error) => e instanceof PskLookupLimitedError && /in progress/.test(e.message),
    );
  }
  assert.equal(source.calls, 3);
  // A lookup of an identity already being queried joins that query.
  const joined = psk.lookupPsk("nobody-0.example.com", from(9));
  assert.equal(source.calls, 3);
  // Invalidating does not free the slot: the query still runs in the store.
  psk.invalidate("nobody-1.example.com");
  await assert.rejects(psk.lookupPsk("known.example.com", from(5)), PskLookupLimitedError);
  release();
  for (const p of [...pending, joined]) assert.equal(await p, undefined);
  // Once they are done, queries run again.
  assert.deepEqual(await psk.lookupPsk("known.example.com", from(6)), new Uint8Array([7]));
  assert.equal(source.calls, 4);
  assert.equal(results.filter((r) => r === "busy").length, 3);
  assert.throws(() => createPskLookup(source, { maxQueriesInFlight: 0 }), RangeError);
});

Deno.test("lookupPsk: with every query slot held by a hung database, a domain read before still gets its PSK", async () => {
  let clock = 0;
  const source = new CountingSource();
  source.keys.set("known.example.com", new Uint8Array([7]));
  const results: string[] = [];
  const psk = createPskLookup(source, {
    now: () => clock,
    maxQueriesInFlight: 2,
    onLookup: (r) => results.push(r),
  });
  assert.deepEqual(await psk.lookupPsk("known.example.com"), new Uint8Array([7]));
  clock += 10_000; // past the short cache: the next lookup would ask the store
  // The database hangs; two unknown identities take both slots, and one query fails.
  let release = () => {};
  source.gate = new Promise<void>((r) => release = r);
  const hung = [psk.lookupPsk("a.example.com"), psk.lookupPsk("b.example.com")];
  // Not failing yet (nothing settled): a full house is just busy.
  await assert.rejects(psk.lookupPsk("known.example.com"), PskLookupLimitedError);
  source.fail = true;
  release();
  await Promise.allSettled(hung);
  source.gate = new Promise<void>((r) => release = r);
  const hungAgain = [psk.lookupPsk("c.example.com"), psk.lookupPsk("d.example.com")];
  assert.deepEqual(await psk.lookupPsk("known.example.com"), new Uint8Array([7]));
  // An identity nobody read before is refused, not told "not registered".
  await assert.rejects(psk.lookupPsk("e.example.com"), PskLookupLimitedError);
  release();
  await Promise.allSettled(hungAgain);
  assert.deepEqual(results.filter((r) => r === "busy" || r === "outage"), [
    "busy",
    "outage",
    "busy",
  ]);
});
