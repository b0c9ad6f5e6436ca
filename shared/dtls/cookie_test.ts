import { equal, notDeepEqual } from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { CookieJar } from "./cookie.ts";
import type { ClientHello } from "./messages.ts";

const hello = (over: Partial<ClientHello> = {}): ClientHello => ({
  version: 0xfefd,
  random: new Uint8Array(randomBytes(32)),
  sessionId: new Uint8Array(0),
  cookie: new Uint8Array(0),
  cipherSuites: [0xccac, 0x00a8],
  compressionMethods: new Uint8Array([0]),
  extensions: [],
  ...over,
});

Deno.test("cookie: verifies for the same peer and hello, not for another peer or any changed field", () => {
  let t = 0;
  const jar = new CookieJar(60_000, () => t);
  const peer = "192.0.2.1:5000";
  const ch = hello();
  const cookie = jar.make(peer, ch);
  equal(cookie.length, 20);
  equal(jar.verify(peer, { ...ch, cookie }), true);
  equal(jar.verify("192.0.2.1:5001", { ...ch, cookie }), false, "another port");
  equal(jar.verify("192.0.2.2:5000", { ...ch, cookie }), false, "another address");
  const changed: Partial<ClientHello>[] = [
    { version: 0xfeff },
    { random: new Uint8Array(randomBytes(32)) },
    { sessionId: new Uint8Array([1]) },
    { cipherSuites: [0xccac] },
    { cipherSuites: [0x00a8, 0xccac] },
    { compressionMethods: new Uint8Array([0, 1]) },
  ];
  for (const c of changed) {
    equal(jar.verify(peer, { ...ch, ...c, cookie }), false, JSON.stringify(Object.keys(c)));
  }
  equal(jar.verify(peer, { ...ch, cookie: cookie.subarray(0, 19) }), false, "short cookie");
  const flipped = cookie.slice();
  flipped[19]! ^= 1;
  equal(jar.verify(peer, { ...ch, cookie: flipped }), false, "one bit changed");
  // Another jar (another secret) makes another cookie for the same hello.
  notDeepEqual(new CookieJar(60_000, () => t).make(peer, ch), cookie);
  t += 1;
  equal(jar.verify(peer, { ...ch, cookie }), true);
});

Deno.test("cookie: one made before a secret rotation still verifies, one made two rotations ago does not", () => {
  let t = 0;
  const jar = new CookieJar(1000, () => t);
  const peer = "[2001:db8::1]:443";
  const ch = hello();
  const cookie = jar.make(peer, ch);
  t = 1000; // rotated once
  equal(jar.verify(peer, { ...ch, cookie }), true);
  const fresh = jar.make(peer, ch);
  notDeepEqual(fresh, cookie);
  t = 2000; // rotated twice
  equal(jar.verify(peer, { ...ch, cookie }), false);
  equal(jar.verify(peer, { ...ch, cookie: fresh }), true);
});
