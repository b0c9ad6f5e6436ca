/** The relay's error vocabulary and where a relay goes (shared by the client and its pool). */

/** Why a relay failed (the `reason` label of `hopgate_cluster_relay_errors_total`). */
export type RelayErrorReason =
  | "connect_failed"
  | "connect_timeout"
  | "max_relays"
  | "wrong_node"
  | "bad_greeting"
  | "refused_auth_failed"
  | "refused_no_tunnel"
  | "refused_busy"
  | "refused_bad_greeting"
  | "connection_lost";

/** The relay to another node failed; `message` is fit for the caller's error page. */
export class RelayError extends Error {
  override name = "RelayError";
  constructor(readonly reason: RelayErrorReason, message: string) {
    super(message);
  }
}

/** Where a relay goes and who sends it. */
export interface RelayTarget {
  nodeId: string;
  /** `host:port` of its relay listener. */
  relayAddr: string;
}
