import { deepEqual, equal, ok } from "node:assert/strict";
import {
  decodeClientHello,
  decodeClientKeyExchange,
  decodeEcdhePskServerKeyExchange,
  decodeFragments,
  decodeServerHello,
  EC_POINT_FORMATS,
  encodeClientHello,
  encodeClientKeyExchange,
  encodeEcdhePskServerKeyExchange,
  encodeHandshake,
  encodeServerHello,
  EXTENDED_MASTER_SECRET,
  fragmentOf,
  supportedGroupsExtension,
} from "./messages.ts";

const ch = {
  version: 0xfefd,
  random: new Uint8Array(32).fill(1),
  sessionId: new Uint8Array(0),
  cookie: new Uint8Array(20).fill(2),
  cipherSuites: [0xccac, 0x00a8],
  compressionMethods: new Uint8Array([0]),
  extensions: [supportedGroupsExtension([29, 23]), EC_POINT_FORMATS, EXTENDED_MASTER_SECRET],
};

Deno.test("ClientHello, ServerHello, ServerKeyExchange, ClientKeyExchange round-trip", () => {
  deepEqual(decodeClientHello(encodeClientHello(ch)).value, ch);
  const sh = {
    version: 0xfefd,
    random: new Uint8Array(32).fill(3),
    sessionId: new Uint8Array(0),
    cipherSuite: 0xccac,
    compressionMethod: 0,
    extensions: [EXTENDED_MASTER_SECRET],
  };
  deepEqual(decodeServerHello(encodeServerHello(sh)).value, sh);
  const ske = { hint: new Uint8Array(0), group: 29, publicKey: new Uint8Array(32).fill(4) };
  deepEqual(decodeEcdhePskServerKeyExchange(encodeEcdhePskServerKeyExchange(ske)).value, ske);
  const cke = {
    identity: new TextEncoder().encode("app.example.test"),
    publicKey: new Uint8Array(32).fill(5),
  };
  deepEqual(decodeClientKeyExchange(encodeClientKeyExchange(cke), true).value, cke);
});

Deno.test("every truncation of a message is an error, never a throw or a bogus value", () => {
  const full = encodeClientHello(ch);
  for (let n = 0; n < full.length; n++) {
    const r = decodeClientHello(full.subarray(0, n));
    // A ClientHello may end right after compression methods (extensions are optional).
    if (r.error === undefined) {
      equal(r.value.extensions.length, 0, `prefix ${n} decoded with extensions`);
    }
  }
  const cke = encodeClientKeyExchange({
    identity: new Uint8Array(5).fill(97),
    publicKey: new Uint8Array(32),
  });
  for (let n = 0; n < cke.length; n++) {
    ok(decodeClientKeyExchange(cke.subarray(0, n), true).error, `prefix ${n}`);
  }
});

Deno.test("fragments of a message reassemble to the message; bad fragment bounds are errors", () => {
  const msg = encodeHandshake(1, 3, new Uint8Array(100).map((_, i) => i));
  const parts = [fragmentOf(msg, 0, 40), fragmentOf(msg, 40, 40), fragmentOf(msg, 80, 20)];
  const body = new Uint8Array(100);
  for (const p of parts) {
    const f = decodeFragments(p).value![0]!;
    equal(f.length, 100);
    equal(f.messageSeq, 3);
    body.set(f.body, f.fragmentOffset);
  }
  deepEqual(body, msg.subarray(12));
  const bad = fragmentOf(msg, 80, 20);
  bad[8] = 90; // offset 90 + 20 > 100
  ok(decodeFragments(bad).error);
});
