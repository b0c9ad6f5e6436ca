/**
 * Server entries to nodes: names through an injected resolver (the seam a real
 * DNS answer with several records goes through), the caps, a name that fails,
 * and one real resolution of `localhost`.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import {
  isIpLiteral,
  MAX_ADDRESSES_PER_NAME,
  MAX_NODES,
  resolveDnsAll,
  resolveNodes,
  type Resolver,
} from "./nodes.ts";

const signal = new AbortController().signal;

/** A resolver answering from a table; names not in it have no record. */
function table(records: Record<string, string[]>, asked: string[] = []): Resolver {
  return (name) => {
    asked.push(name);
    return Promise.resolve(records[name] ?? []);
  };
}

Deno.test("nodes: a name with several records is several nodes; literals are not resolved", async () => {
  const asked: string[] = [];
  const r = await resolveNodes([
    { hostname: "hop.example.com", port: 443 },
    { hostname: "10.0.0.9", port: 4433 },
    { hostname: "2001:db8::9", port: 443 },
  ], {
    resolve: table({ "hop.example.com": ["203.0.113.10", "203.0.113.11", "2001:db8::10"] }, asked),
    signal,
  });
  deepEqual(asked, ["hop.example.com"]);
  // In turn from each entry: every entry's first address, then the name's others.
  deepEqual(r.nodes.map((n) => n.key), [
    "203.0.113.10:443",
    "10.0.0.9:4433",
    "[2001:db8::9]:443",
    "203.0.113.11:443",
    "[2001:db8::10]:443",
  ]);
  deepEqual(r.nodes.map((n) => n.label), [
    "hop.example.com:443 (203.0.113.10)",
    "10.0.0.9:4433",
    "[2001:db8::9]:443",
    "hop.example.com:443 (203.0.113.11)",
    "hop.example.com:443 (2001:db8::10)",
  ]);
  deepEqual(r.nodes.map((n) => n.index), [0, 1, 2, 0, 0]);
  deepEqual(r.problems, []);
  equal(r.dropped, 0);
});

Deno.test("nodes: two dual-stack servers: both servers come before either's second address", async () => {
  const r = await resolveNodes([
    { hostname: "hop1.example.com", port: 443 },
    { hostname: "hop2.example.com", port: 443 },
  ], {
    resolve: table({
      "hop1.example.com": ["203.0.113.1", "2001:db8::1"],
      "hop2.example.com": ["203.0.113.2", "2001:db8::2"],
    }),
    signal,
  });
  deepEqual(r.nodes.map((n) => n.key), [
    "203.0.113.1:443",
    "203.0.113.2:443",
    "[2001:db8::1]:443",
    "[2001:db8::2]:443",
  ]);
});

Deno.test("nodes: the same address from two entries is one node", async () => {
  const r = await resolveNodes([
    { hostname: "a.example.com", port: 443 },
    { hostname: "b.example.com", port: 443 },
    { hostname: "203.0.113.10", port: 443 },
  ], {
    resolve: table({
      "a.example.com": ["203.0.113.10"],
      "b.example.com": ["203.0.113.10", "203.0.113.12"],
    }),
    signal,
  });
  deepEqual(r.nodes.map((n) => n.key), ["203.0.113.10:443", "203.0.113.12:443"]);
});

Deno.test("nodes: a name without records is a problem naming it; it keeps its previous nodes", async () => {
  const entries = [{ hostname: "a.example.com", port: 443 }, {
    hostname: "b.example.com",
    port: 1,
  }];
  const first = await resolveNodes(entries, {
    resolve: table({ "a.example.com": ["203.0.113.1"] }),
    signal,
  });
  deepEqual(first.nodes.map((n) => n.key), ["203.0.113.1:443"]);
  deepEqual(first.problems, ["b.example.com resolves to no address (no A or AAAA record)"]);

  // a.example.com fails now (its resolver throws): the nodes it had stay, the problem is named.
  const failing: Resolver = (name) =>
    name === "a.example.com"
      ? Promise.reject(new Error("temporary failure"))
      : Promise.resolve(["198.51.100.7"]);
  const second = await resolveNodes(entries, { resolve: failing, signal, previous: first });
  deepEqual(second.nodes.map((n) => n.key), ["203.0.113.1:443", "198.51.100.7:1"]);
  deepEqual(second.problems, ["Cannot resolve a.example.com: temporary failure"]);

  // Without a previous answer nothing is left, unless the name may be dialled as is.
  const none = await resolveNodes(entries.slice(0, 1), { resolve: failing, signal });
  deepEqual(none.nodes, []);
  const byName = await resolveNodes(entries.slice(0, 1), {
    resolve: failing,
    signal,
    keepUnresolved: true,
  });
  deepEqual(byName.nodes.map((n) => [n.key, n.label]), [[
    "a.example.com:443",
    "a.example.com:443",
  ]]);
});

Deno.test("nodes: a resolver that hangs gives up at the deadline, naming the name", async () => {
  const hang: Resolver = (_name, s) =>
    new Promise((_, reject) => s.addEventListener("abort", () => reject(s.reason)));
  const r = await resolveNodes([{ hostname: "slow.example.com", port: 1 }], {
    resolve: hang,
    signal,
    timeoutMs: 50,
  });
  deepEqual(r.problems, ["slow.example.com did not resolve within 50 ms"]);
});

Deno.test("nodes: what DNS returns is bounded and the rest counted; answers that are not addresses are ignored", async () => {
  const many = Array.from({ length: 40 }, (_, i) => `10.1.0.${i + 1}`);
  const one = await resolveNodes([{ hostname: "big.example.com", port: 1 }], {
    resolve: table({ "big.example.com": many }),
    signal,
  });
  equal(one.nodes.length, MAX_ADDRESSES_PER_NAME);
  equal(one.dropped, 40 - MAX_ADDRESSES_PER_NAME);
  const entries = [1, 2, 3].map((i) => ({ hostname: `n${i}.example.com`, port: 1 }));
  const records = Object.fromEntries(
    entries.map((e, i) => [e.hostname, many.map((_, j) => `10.${i + 2}.0.${j + 1}`)]),
  );
  const all = await resolveNodes(entries, { resolve: table(records), signal });
  equal(all.nodes.length, MAX_NODES);
  equal(all.dropped, 3 * (40 - MAX_ADDRESSES_PER_NAME) + (3 * MAX_ADDRESSES_PER_NAME - MAX_NODES));
  const junk = await resolveNodes([{ hostname: "j.example.com", port: 1 }], {
    resolve: table({ "j.example.com": ["not an address", "10.0.0.1"] }),
    signal,
  });
  deepEqual(junk.nodes.map((n) => n.key), ["10.0.0.1:1"]);
});

Deno.test("nodes: IP literals", () => {
  for (const s of ["127.0.0.1", "::1", "2001:db8::1", "10.0.0.255"]) ok(isIpLiteral(s), s);
  for (const s of ["localhost", "hop.example.com", "1.2.3", "a1.2.3.4"]) ok(!isIpLiteral(s), s);
});

Deno.test("nodes: a real resolution (Deno.resolveDns, A and AAAA): localhost, and a name that does not exist", async () => {
  const found = await resolveDnsAll("localhost", signal);
  ok(found.includes("127.0.0.1"), `localhost resolves to ${found.join(", ")}`);
  const r = await resolveNodes([{ hostname: "localhost", port: 4433 }], {
    resolve: resolveDnsAll,
    signal,
  });
  ok(r.nodes.some((n) => n.key === "127.0.0.1:4433" && n.label === "localhost:4433 (127.0.0.1)"));
  const missing = await resolveNodes([{ hostname: "no-such-host.invalid", port: 1 }], {
    resolve: resolveDnsAll,
    signal,
  });
  deepEqual(missing.nodes, []);
  match(missing.problems[0]!, /no-such-host\.invalid/);
});
