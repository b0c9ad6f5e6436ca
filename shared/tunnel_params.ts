/**
 * Mux settings both ends of a HopGate tunnel use, over the mux defaults
 * (shared/mux/params.ts has every tunable with its unit).
 *
 * A tunnel must notice a vanished peer quickly: requests in flight on it get a 503
 * and the client reconnects only once the session is declared dead. A PING every
 * 2 s costs one small datagram; 10 s of silence means the peer is gone.
 *
 * Congestion control is the BBR-style controller (docs/congestion.md): random loss on
 * a WAN path is not read as congestion. On the WAN lab's 100 ms / 3 % loss / 20 Mbit/s
 * path a 20 MiB download took 12.3 s with it and did not finish in 60 s with NewReno.
 */
import type { MuxParams } from "./mux/mod.ts";

export const TUNNEL_MUX_PARAMS: Readonly<Partial<MuxParams>> = {
  idleTimeoutMs: 10_000,
  keepAliveIntervalMs: 2_000,
  congestionControl: "bbr",
};
