/** Counters a DTLS endpoint keeps; the metrics layer (issue 7) exports them. */
export interface DtlsStats {
  datagramsReceived: number;
  datagramsSent: number;
  bytesReceived: number;
  bytesSent: number;
  helloVerifyRequestsSent: number;
  handshakesStarted: number;
  handshakesCompleted: number;
  handshakesFailed: number;
  flightsRetransmitted: number;
  alertsSent: number;
  alertsReceived: number;
  /** Inbound data discarded, by reason. Nothing is discarded silently. */
  dropped: {
    /** Not a DTLS 1.2 record (bad header, truncated, wrong version). */
    malformed: number;
    /** Did not authenticate (tampered, wrong key). */
    badMac: number;
    /** Sequence number already seen or left of the window. */
    replayed: number;
    /** Epoch we have no keys for. */
    wrongEpoch: number;
    /** From an address with no session, and not a ClientHello. */
    noSession: number;
    /** ClientHello with a missing or wrong cookie (answered with HelloVerifyRequest). */
    badCookie: number;
    /** ClientHello refused because the concurrent-handshake cap was reached. */
    handshakeCap: number;
    /** A well-formed record that is not valid in the current state. */
    unexpected: number;
    /** Application data we could not deliver (no handler queue room, or not established). */
    undeliverable: number;
  };
}

export function newStats(): DtlsStats {
  return {
    datagramsReceived: 0,
    datagramsSent: 0,
    bytesReceived: 0,
    bytesSent: 0,
    helloVerifyRequestsSent: 0,
    handshakesStarted: 0,
    handshakesCompleted: 0,
    handshakesFailed: 0,
    flightsRetransmitted: 0,
    alertsSent: 0,
    alertsReceived: 0,
    dropped: {
      malformed: 0,
      badMac: 0,
      replayed: 0,
      wrongEpoch: 0,
      noSession: 0,
      badCookie: 0,
      handshakeCap: 0,
      unexpected: 0,
      undeliverable: 0,
    },
  };
}
