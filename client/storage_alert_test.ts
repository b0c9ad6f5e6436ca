/**
 * A server whose PSK lookup fails (its database is down) answers the handshake
 * with an `internal_error` alert; the client, with either DTLS engine, reports
 * "server storage unavailable" and retries with the ordinary short backoff, not
 * the long one of an unregistered domain.
 */
import assert from "node:assert/strict";
import { Backoff, classifyFailure, type ClientEvent, runClient } from "./connector.ts";
import { AlertDescription, DtlsError, DtlsServer } from "../shared/dtls/mod.ts";

Deno.test("connector: a server whose key lookup fails is 'storage unavailable', short backoff, either engine", async () => {
  let lookups = 0;
  const dtls = DtlsServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    lookupPsk: () => {
      lookups++;
      return Promise.reject(new Error("database unavailable"));
    },
    onConnection: (conn) => conn.close(),
  });
  try {
    for (const engine of ["hopgate", "node-dtls-client"] as const) {
      const ac = new AbortController();
      let resolveFailure!: (e: Extract<ClientEvent, { type: "failure" }>) => void;
      const failure = new Promise<Extract<ClientEvent, { type: "failure" }>>((r) =>
        resolveFailure = r
      );
      const done = runClient({
        server: { hostname: "127.0.0.1", port: dtls.addr.port },
        domain: "app.example.com",
        apiKey: "k-0123456789abcdef",
        target: new URL("http://127.0.0.1:9"),
        engine,
        handshakeTimeoutMs: 5000,
        onEvent: (e) => e.type === "failure" && resolveFailure(e),
      }, ac.signal);
      try {
        const f = await failure;
        assert.equal(f.kind, "storage_unavailable", `${engine}: ${f.message}`);
        assert.match(
          f.message,
          /^Server storage unavailable: the server at 127\.0\.0\.1:\d+ cannot look up app\.example\.com/,
        );
        assert.ok(f.retryInMs <= 500, `${engine}: first retry in ${f.retryInMs} ms`);
      } finally {
        ac.abort();
        await done;
      }
    }
    assert.ok(lookups >= 2);
  } finally {
    await dtls.close();
  }
});

Deno.test("connector: internal_error is classified by its alert code and backs off like a transient failure", () => {
  const f = classifyFailure(
    new DtlsError("ALERT_RECEIVED", "x", AlertDescription.InternalError),
    "hop.example.net:4433",
    "app.example.com",
  );
  assert.equal(f.kind, "storage_unavailable");
  const b = new Backoff({}, () => 0.999999);
  const delays = [1, 2, 3].map(() => b.next("storage_unavailable"));
  assert.deepEqual(delays, [500, 1000, 2000]);
  assert.equal(new Backoff({}, () => 0.999999).next("unknown_domain"), 30_000);
});
