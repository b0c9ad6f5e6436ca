/**
 * Mux settings both ends of a HopGate tunnel use, over the mux defaults
 * (shared/mux/params.ts has every tunable with its unit).
 *
 * A tunnel must notice a vanished peer quickly: requests in flight on it get a 503
 * and the client reconnects only once the session is declared dead. A PING every
 * 2 s costs one small datagram; 10 s of silence means the peer is gone.
 */
import type { MuxParams } from "./mux/mod.ts";

export const TUNNEL_MUX_PARAMS: Readonly<Partial<MuxParams>> = {
  idleTimeoutMs: 10_000,
  keepAliveIntervalMs: 2_000,
};
