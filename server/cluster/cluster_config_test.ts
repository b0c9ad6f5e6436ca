import assert from "node:assert/strict";
import { ConfigError, loadServerConfig } from "../config.ts";
import { decodeClusterMessage } from "../../db/mod.ts";
import { proofMatches, relayProof } from "./relay_wire.ts";

const PG = { HOP_SERVER_DOMAIN: "gw.example.com", HOP_DB_DSN: "postgres://u@db/hop" };

function problemsOf(env: Record<string, string>): string[] {
  try {
    loadServerConfig(env);
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    return err.problems;
  }
  assert.fail("expected a ConfigError");
}

Deno.test("cluster config: off unless HOP_CLUSTER_LISTEN is set", () => {
  assert.equal(loadServerConfig(PG).cluster, undefined);
});

Deno.test("cluster config: LISTEN alone advertises itself; a wildcard needs ADVERTISE", () => {
  const c = loadServerConfig({ ...PG, HOP_CLUSTER_LISTEN: "10.0.0.5:7443" });
  assert.deepEqual(c.cluster, {
    listen: { hostname: "10.0.0.5", port: 7443 },
    advertise: "10.0.0.5:7443",
    maxRelays: 1024,
  });
  const w = loadServerConfig({
    ...PG,
    HOP_CLUSTER_LISTEN: ":7443",
    HOP_CLUSTER_ADVERTISE: "10.0.0.5:7443",
    HOP_CLUSTER_MAX_RELAYS: "64",
  });
  assert.equal(w.cluster?.advertise, "10.0.0.5:7443");
  assert.equal(w.cluster?.maxRelays, 64);
  const p = problemsOf({ ...PG, HOP_CLUSTER_LISTEN: ":7443" });
  assert.ok(p.some((m) => m.startsWith("HOP_CLUSTER_ADVERTISE: required")), p.join("\n"));
});

Deno.test("cluster config: PGlite with cluster settings is a clear start-up error", () => {
  const p = problemsOf({
    HOP_SERVER_DOMAIN: "gw.example.com",
    HOP_CLUSTER_LISTEN: "10.0.0.5:7443",
  });
  assert.ok(p.some((m) => /PGlite.*single-node/.test(m)), p.join("\n"));
});

Deno.test("cluster config: bad values name their variable", () => {
  const p = problemsOf({
    ...PG,
    HOP_CLUSTER_LISTEN: "nope",
    HOP_CLUSTER_ADVERTISE: "0.0.0.0:1",
    HOP_CLUSTER_MAX_RELAYS: "0",
  });
  for (const name of ["HOP_CLUSTER_LISTEN", "HOP_CLUSTER_ADVERTISE", "HOP_CLUSTER_MAX_RELAYS"]) {
    assert.ok(p.some((m) => m.startsWith(`${name}:`)), `${name} in ${p.join("\n")}`);
  }
  const alone = problemsOf({ ...PG, HOP_CLUSTER_ADVERTISE: "10.0.0.5:7443" });
  assert.ok(alone.some((m) => m.includes("needs HOP_CLUSTER_LISTEN")), alone.join("\n"));
});

Deno.test("cluster messages: known payloads decode, anything else is ignored", () => {
  assert.deepEqual(decodeClusterMessage("n"), { kind: "nodes" });
  assert.deepEqual(decodeClusterMessage("p:abc"), { kind: "placements", nodeId: "abc" });
  assert.deepEqual(decodeClusterMessage("e:app.example.com"), {
    kind: "evict",
    domain: "app.example.com",
  });
  for (const junk of ["", "p:", "e:", "x:1", "e:" + "a".repeat(300)]) {
    assert.equal(decodeClusterMessage(junk), undefined, junk);
  }
});

Deno.test("relay proof: bound to the key, the challenge and both nodes", () => {
  const key = new Uint8Array(32).fill(7);
  const p = relayProof(key, "c".repeat(32), "recv", "send");
  assert.match(p, /^[0-9a-f]{64}$/);
  assert.ok(proofMatches(p, relayProof(key, "c".repeat(32), "recv", "send")));
  const others = [
    relayProof(new Uint8Array(32).fill(8), "c".repeat(32), "recv", "send"),
    relayProof(key, "d".repeat(32), "recv", "send"),
    relayProof(key, "c".repeat(32), "other", "send"),
    relayProof(key, "c".repeat(32), "recv", "other"),
  ];
  for (const o of others) assert.ok(!proofMatches(p, o));
  assert.ok(!proofMatches(p, p.slice(1)));
});
