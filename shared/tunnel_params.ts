/**
 * Mux settings of a HopGate tunnel, over the mux defaults (shared/mux/params.ts has
 * every tunable with its unit). The client uses `TUNNEL_MUX_PARAMS`, the server
 * `TUNNEL_SERVER_MUX_PARAMS`: they differ only in who sends keepalives.
 *
 * Keepalives (docs/protocol.md, "Keepalive and dead peers"): an idle tunnel must cost a
 * node almost nothing, since a node holds thousands (docs/operations.md, "Capacity of one
 * node"). Only the client PINGs, and only a tunnel that was silent for 11.25-15 s (15 s
 * less up to 25 % jitter, drawn anew each time, so that tunnels opened together do not
 * PING together): two datagrams per tunnel every ~13 s, one each way, and its NAT binding
 * (often 30 s for UDP) is refreshed well in time. The server never PINGs an idle client:
 * 30 s without a datagram from it means it is gone.
 *
 * The client notices a dead server when a PING (or anything that asks for an ACK) has
 * brought nothing back for 10 s: on an idle tunnel within 25 s of the server's death
 * (the next keepalive, then 10 s), ~17 s on average; on a tunnel carrying requests
 * within 10 s, as before. (The 2 s PING with a 10 s idle timeout this replaces noticed
 * within 10 s, at 15 times the packets.) 10 s, not less: a peer busy with thousands of
 * handshakes (a fleet reconnecting) may answer late, and the old design tolerated
 * 8-10 s of that; PTO probes repeat an unanswered PING meanwhile, so lost datagrams do
 * not end a tunnel. The server also closes a tunnel whose requests go unanswered for
 * 20 s (below).
 *
 * Congestion control is the BBR-style controller (docs/congestion.md): random loss on
 * a WAN path is not read as congestion. On the WAN lab's 100 ms / 3 % loss / 20 Mbit/s
 * path a 20 MiB download took 12.3 s with it and did not finish in 60 s with NewReno.
 *
 * A session's first window is 32 packets (~38 KB; Chromium's QUIC starts at 32), not the
 * mux default of 10 (RFC 9002's): Startup reaches the path ~2 round trips sooner. On the
 * WAN lab's 50 ms / 50 Mbit/s path a fresh session's first 20 MiB took 3.82-3.84 s against
 * 3.91-3.95 s with 10 (later ones 3.67 s). It goes out back to back, and the rate its ACKs
 * come back at starts Startup at half the path's rate (docs/congestion.md, "A session's
 * first window").
 *
 * A stream's first receive window is 2 MiB, not the mux default's 512 KiB: a fresh
 * session's first download reached 512 KiB in flight before the receiver's first window
 * update could arrive, and stood still for ~35 ms on a 50 ms / 50 Mbit/s path.
 */
import type { MuxParams } from "./mux/mod.ts";

/** The client's side of a tunnel (and what in-process tests and benches use on both). */
export const TUNNEL_MUX_PARAMS: Readonly<Partial<MuxParams>> = {
  idleTimeoutMs: 30_000,
  keepAliveIntervalMs: 15_000,
  keepAliveJitterRatio: 0.25,
  unansweredTimeoutMs: 10_000,
  congestionControl: "bbr",
  initialWindowPackets: 32,
  initialStreamWindowBytes: 2 * 1024 * 1024,
};

/**
 * The server's side: no keepalives of its own; the client's hold the tunnel. Its sends
 * go unanswered for up to 20 s before it gives up, not 10: a client whose NAT rebound
 * its port while the tunnel was idle cannot be reached until its next keepalive
 * (at most 15 s) shows the new address (tests/nat_rebinding_test.ts lost a request to
 * the 10 s bound).
 */
export const TUNNEL_SERVER_MUX_PARAMS: Readonly<Partial<MuxParams>> = {
  ...TUNNEL_MUX_PARAMS,
  keepAliveIntervalMs: 0,
  unansweredTimeoutMs: 20_000,
};
