import assert from "node:assert/strict";
import { FakeClock } from "./testing/fake_clock.ts";
import { createLinkPair, type LinkOptions } from "./testing/lossy_link.ts";
import { randomBytes, readAll, sessionPair, sha256, writeAll } from "./testing/harness.ts";
import type { MuxParams } from "./params.ts";

function memPair(link: Omit<LinkOptions, "clock"> = {}, params: Partial<MuxParams> = {}) {
  const clock = new FakeClock();
  const l = createLinkPair({ clock, delayMs: 5, ...link });
  return { clock, link: l, ...sessionPair(l.a, l.b, { clock, params }) };
}

Deno.test("mux: one small stream round trip", async () => {
  const p = memPair();
  const s = p.client.openStream();
  const data = randomBytes(1, 5000);
  const accepted = p.server.acceptStream();
  const w = writeAll(s, data);
  const ss = await p.wait(accepted, "accept");
  assert.ok(ss);
  const got = await p.wait(readAll(ss.readable), "read");
  await p.wait(w, "write");
  assert.equal(got.bytes, data.length);
  assert.equal(got.sha, sha256(data));
  await p.dispose();
});
