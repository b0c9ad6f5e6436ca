/** The conformance suite over DTLS 1.2 (shared/dtls) on loopback, both cipher suites. */
import { defineConformanceSuite } from "./testing/conformance.ts";
import { createDtlsPair, DTLS_SUITES } from "./testing/dtls_pair.ts";
import { sessionPair } from "./testing/harness.ts";
import { realClock } from "./clock.ts";

for (const suite of DTLS_SUITES) {
  const short = suite.includes("CHACHA") ? "ECDHE_PSK_CHACHA20" : "PSK_AES128_GCM";
  defineConformanceSuite(`dtls ${short}`, async (params) => {
    const d = await createDtlsPair({ suite, maxDatagramSize: 1200 });
    return sessionPair(d.a, d.b, {
      clock: realClock,
      params: params ?? {},
      disposeTransport: d.close,
    });
  }, { bigBytes: 16 * 1024 * 1024, streams: 100, maxStreamBytes: 128 * 1024 });
}
