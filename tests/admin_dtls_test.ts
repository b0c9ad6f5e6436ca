/**
 * The admin plane and the tunnel's DTLS handshake against one running server:
 * a registered key completes a handshake; after rotation only the new key does;
 * after unregister none does, and live sessions are closed at once.
 */
import { equal, ok, rejects } from "node:assert/strict";
import { AlertDescription, derivePsk, dtlsConnect, DtlsError } from "../shared/dtls/mod.ts";
import { startTestServer } from "./helpers/server.ts";

const DOMAIN = "app.example.test";

async function handshake(port: number, apiKey: string) {
  return await dtlsConnect({
    hostname: "127.0.0.1",
    port,
    identity: DOMAIN,
    psk: derivePsk(apiKey),
    handshakeTimeoutMs: 5000,
  });
}

const refusedWith = (alert: number) => (e: unknown) => {
  ok(e instanceof DtlsError, String(e));
  equal(e.alert, alert);
  return true;
};

Deno.test("registered key handshakes; rotated and unregistered keys no longer do", async () => {
  await using t = await startTestServer();
  await rejects(
    handshake(t.dtlsPort, "not-registered-yet"),
    refusedWith(AlertDescription.UnknownPskIdentity),
  );

  const key1 = await t.register(DOMAIN);
  const c1 = await handshake(t.dtlsPort, key1);
  equal(c1.identity, DOMAIN);
  c1.close();

  const rotated = await t.admin("domains/rotate", { domain: DOMAIN });
  equal(rotated.status, 200);
  const key2 = rotated.json.client_api_key as string;
  ok(key2 && key2 !== key1);
  await rejects(handshake(t.dtlsPort, key1), refusedWith(AlertDescription.DecryptError));
  const c2 = await handshake(t.dtlsPort, key2);
  c2.close();

  const gone = await t.admin("domains/unregister", { domain: DOMAIN, client_api_key: key2 });
  equal(gone.status, 200);
  await rejects(handshake(t.dtlsPort, key2), refusedWith(AlertDescription.UnknownPskIdentity));
  equal(t.server.hub.dtlsStats.handshakesCompleted, 2);
});
