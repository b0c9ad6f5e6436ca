/** Counters a DTLS endpoint keeps; the server's metrics (`server/metrics.ts`) export them. */
export interface DtlsStats {
  /** UDP datagrams received. */
  datagramsReceived: number;
  /** UDP datagrams sent. */
  datagramsSent: number;
  /** UDP payload bytes received. */
  bytesReceived: number;
  /** UDP payload bytes sent. */
  bytesSent: number;
  /** Stateless cookie challenges sent (server). */
  helloVerifyRequestsSent: number;
  /** Handshakes begun (server: after a valid cookie). */
  handshakesStarted: number;
  /** Handshakes that established a connection. */
  handshakesCompleted: number;
  /** Handshakes that ended in an alert or a timeout. */
  handshakesFailed: number;
  /** Handshake flights sent again (their timer fired, or the peer resent its own). */
  flightsRetransmitted: number;
  /**
   * Handshake flights not sent again because the handshake had already sent its
   * peer `handshakeAmplificationLimit` times what it received (server).
   */
  handshakeRetransmitsWithheld: number;
  /**
   * Half-open handshakes ended to make room for a newer one (server), by the cap
   * that was full: the source address's (`maxHandshakesPerAddress`) or the
   * server's (`maxHandshakes`). Also counted in `handshakesFailed`.
   */
  handshakesEvicted: { addressCap: number; globalCap: number };
  /**
   * Address changes of peers with a connection ID (RFC 9146, RFC 9853): the newest
   * authentic record came from another address (`changes`); path_challenges sent to
   * a new address; addresses that answered (`validated`) or did not after every try
   * (`validationsFailed`); datagrams not sent to an address that had not answered
   * yet because they would have exceeded `PATH_AMPLIFICATION_LIMIT` times what it
   * sent (`sendsWithheld`).
   */
  path: {
    changes: number;
    challengesSent: number;
    validated: number;
    validationsFailed: number;
    sendsWithheld: number;
  };
  /**
   * Stateless resets (stateless_reset.ts): sent for records naming an unknown
   * connection ID (server), not sent because the reset budget was spent (`limited`)
   * or that CID was answered within the last 500 ms (`repeated`), received with this
   * connection's token (client; the connection closed), and received with another
   * token (`wrongToken`, ignored).
   */
  statelessResets: {
    sent: number;
    limited: number;
    repeated: number;
    received: number;
    wrongToken: number;
  };
  /** Alerts sent. */
  alertsSent: number;
  /** Alerts received. */
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
    /** A record with a connection ID that names no session. */
    unknownCid: number;
    /** ClientHello with a missing or wrong cookie (answered with HelloVerifyRequest). */
    badCookie: number;
    /**
     * ClientHello over its source address's budget, or one a HelloVerifyRequest would
     * have answered past the server's budget for those (server).
     */
    helloRateLimited: number;
    /**
     * A ClientHello with a valid cookie, dropped because every half-open handshake
     * slot was taken and none could be given up (server, `maxHandshakes`).
     */
    handshakesBusy: number;
    /** A well-formed record that is not valid in the current state. */
    unexpected: number;
    /** Application data we could not deliver (no handler queue room, or not established). */
    undeliverable: number;
  };
}

/** A fresh set of counters, all zero. */
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
    handshakeRetransmitsWithheld: 0,
    handshakesEvicted: { addressCap: 0, globalCap: 0 },
    path: { changes: 0, challengesSent: 0, validated: 0, validationsFailed: 0, sendsWithheld: 0 },
    statelessResets: { sent: 0, limited: 0, repeated: 0, received: 0, wrongToken: 0 },
    alertsSent: 0,
    alertsReceived: 0,
    dropped: {
      malformed: 0,
      badMac: 0,
      replayed: 0,
      wrongEpoch: 0,
      noSession: 0,
      unknownCid: 0,
      badCookie: 0,
      helloRateLimited: 0,
      handshakesBusy: 0,
      unexpected: 0,
      undeliverable: 0,
    },
  };
}
