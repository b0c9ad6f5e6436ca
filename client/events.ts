/**
 * What the connector reports (`ClientOptions.onEvent`): the status line, the log
 * and the metrics are built from these events alone.
 */
import type { ForwardOutcome } from "./forwarder.ts";

/** Why an attempt failed or a session ended. */
export type FailureKind =
  | "unreachable" // no DTLS answer in time
  | "resolve_failed" // the server's host name did not resolve
  | "bad_api_key" // alert decrypt_error: the key is not this domain's
  | "unknown_domain" // alert unknown_psk_identity: domain not registered
  | "storage_unavailable" // alert internal_error: the server could not look the key up
  | "handshake_failed" // any other DTLS failure
  | "version_mismatch"
  | "domain_mismatch"
  | "server_busy"
  | "bad_hello"
  | "protocol_error"
  | "session_lost"; // the session ended after it was up

/** A tunnel that is up, as events list them. */
export interface TunnelInfo {
  /** The node's `ip:port` (`ServerNode.key`). */
  readonly node: string;
  /** The node for people (`ServerNode.label`). */
  readonly server: string;
  readonly transport: string;
}

/** Everything the connector reports, in the order it happens. */
export type ClientEvent =
  | { type: "connecting"; attempt: number; server: string; node: string; transport: string }
  | {
    type: "connected";
    server: string;
    node: string;
    domain: string;
    sessionId: string;
    serverVersion: string;
    /** Which transport carries the tunnel (a re-probe that moved it sends another). */
    transport: string;
    /** Every tunnel up now, this one included. */
    tunnels: TunnelInfo[];
    /** Tunnels the client aims for: `redundancy`, or fewer when fewer nodes are known. */
    wanted: number;
  }
  /** A tunnel that was up ended (lost, or drained on stop). */
  | { type: "disconnected"; server: string; node: string; tunnels: TunnelInfo[]; wanted: number }
  /** The nodes the server entries resolve to, when that changes. */
  | { type: "nodes"; nodes: string[]; problems: string[]; dropped: number }
  /** A re-probe of the preferred transport failed; the tunnel stays where it is. */
  | { type: "probe"; transport: string; ok: false; message: string }
  | {
    type: "stats";
    /** The lowest smoothed RTT of the tunnels up (undefined: none measured). */
    rttMs: number | undefined;
    /** Tunnels up. */
    tunnels: number;
    inFlight: number;
    served: number;
    failed: number;
    /** Connections to the local service: open now, idle of those, opened so far. */
    local: { open: number; idle: number; opened: number };
  }
  | { type: "request"; outcome: ForwardOutcome; durationMs: number }
  | {
    type: "failure";
    kind: FailureKind;
    message: string;
    /** When this node (or, without a node, the resolution) is tried again. */
    retryInMs: number;
    /** The node that failed (absent: no entry resolved to any node). */
    server?: string;
    node?: string;
    /** The tunnels still up, serving meanwhile. */
    tunnels: TunnelInfo[];
    /** Nodes known: with more than one, another may be tried sooner. */
    nodes: number;
  }
  | { type: "stopped" };
