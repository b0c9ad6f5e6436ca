/**
 * A DTLS 1.2 DatagramConn pair on 127.0.0.1 (test and bench fixture): a
 * DtlsServer with one PSK identity and a dtlsConnect client (shared/dtls).
 */
import { derivePsk, dtlsConnect, DtlsServer, type SuiteName } from "../../dtls/mod.ts";
import type { DatagramConn } from "../../datagram.ts";

export interface DtlsPair {
  a: DatagramConn;
  b: DatagramConn;
  close(): Promise<void>;
}

export const DTLS_SUITES: readonly SuiteName[] = [
  "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256",
  "TLS_PSK_WITH_AES_128_GCM_SHA256",
] as SuiteName[];

export async function createDtlsPair(
  o: { suite: SuiteName; maxDatagramSize?: number },
): Promise<DtlsPair> {
  const identity = "mux.example.test";
  const psk = derivePsk("mux-test-api-key");
  const mds = o.maxDatagramSize ?? 1200;
  let accept!: (c: DatagramConn) => void;
  const accepted = new Promise<DatagramConn>((r) => (accept = r));
  const server = DtlsServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    lookupPsk: (id) => Promise.resolve(id === identity ? psk : undefined),
    onConnection: (c) => accept(c),
    maxDatagramSize: mds,
  });
  const a = await dtlsConnect({
    hostname: "127.0.0.1",
    port: server.addr.port,
    identity,
    psk,
    suites: [o.suite],
    maxDatagramSize: mds,
  });
  const b = await accepted;
  return {
    a,
    b,
    async close() {
      a.close();
      b.close();
      await server.close();
    },
  };
}
