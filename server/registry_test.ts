import assert from "node:assert/strict";
import { TunnelRegistry, type TunnelSession } from "./registry.ts";

function session(id: string, at: number, log: string[] = []): TunnelSession {
  return {
    id,
    remoteAddr: `192.0.2.1:${at}`,
    connectedAt: new Date(at),
    close: (reason) => log.push(`${id}:${reason}`),
  };
}

Deno.test("TunnelRegistry: add, list, remove", () => {
  const reg = new TunnelRegistry();
  assert.equal(reg.isConnected("a.example.com"), false);
  const removeA1 = reg.add("a.example.com", session("a1", 2000));
  reg.add("a.example.com", session("a2", 3000));
  reg.add("b.example.com", session("b1", 1000));
  assert.equal(reg.size, 3);
  assert.equal(reg.isConnected("a.example.com"), true);
  assert.deepEqual(reg.sessions().map((s) => s.id), ["b1", "a1", "a2"], "oldest first");
  assert.deepEqual(reg.sessions("a.example.com").map((s) => [s.domain, s.id]), [
    ["a.example.com", "a1"],
    ["a.example.com", "a2"],
  ]);
  assert.deepEqual(reg.sessions("none.example.com"), []);
  assert.throws(() => reg.add("a.example.com", session("a2", 1)), /already registered/);
  removeA1();
  removeA1();
  assert.deepEqual(reg.sessions("a.example.com").map((s) => s.id), ["a2"]);
});

Deno.test("TunnelRegistry.closeDomain closes and removes every session of the domain", () => {
  const reg = new TunnelRegistry();
  const log: string[] = [];
  const removeA1 = reg.add("a.example.com", session("a1", 1, log));
  reg.add("a.example.com", {
    ...session("a2", 2, log),
    close: () => {
      throw new Error("boom");
    },
  });
  reg.add("a.example.com", session("a3", 3, log));
  reg.add("b.example.com", session("b1", 4, log));
  assert.equal(reg.closeDomain("a.example.com", "rotated"), 3);
  assert.deepEqual(log, ["a1:rotated", "a3:rotated"]);
  assert.equal(reg.isConnected("a.example.com"), false);
  assert.equal(reg.isConnected("b.example.com"), true);
  assert.equal(reg.closeDomain("a.example.com", "again"), 0);
  // A late remove() from a closed session does not disturb a new session.
  const remove = reg.add("a.example.com", session("a1", 5, log));
  removeA1();
  assert.equal(reg.isConnected("a.example.com"), true);
  remove();
  assert.equal(reg.isConnected("a.example.com"), false);
});
