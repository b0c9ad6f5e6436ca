/**
 * Prometheus metrics for the server (`npm:prom-client`, its own `Registry`).
 *
 * Most values are read at scrape time from counters the server already keeps
 * (DTLS stats, mux session stats, the registry): nothing on the hot path but the
 * per-request counter and histogram. prom-client's default process metrics are
 * not registered: they read /proc and report 0 without `-A`; process memory comes
 * from `Deno.memoryUsage()` instead.
 *
 * Cardinality: no per-domain labels unless the operator opts in
 * (`HOP_METRICS_DOMAIN_LABELS=true`); methods outside the standard set are "OTHER".
 *
 * | metric                                        | type      | labels                 |
 * |-----------------------------------------------|-----------|------------------------|
 * | hopgate_build_info                            | gauge     | version                |
 * | hopgate_process_memory_bytes                  | gauge     | kind                   |
 * | hopgate_process_start_time_seconds            | gauge     |                        |
 * | hopgate_tunnel_sessions                       | gauge     | (domain)               |
 * | hopgate_tunnel_streams_open                   | gauge     |                        |
 * | hopgate_tunnel_bytes_total                    | counter   | direction              |
 * | hopgate_tunnel_packets_lost_total             | counter   |                        |
 * | hopgate_tunnel_frames_retransmitted_total     | counter   |                        |
 * | hopgate_tunnel_bytes_retransmitted_total      | counter   |                        |
 * | hopgate_tunnel_srtt_seconds                   | histogram | (domain)               |
 * | hopgate_dtls_handshakes_total                 | counter   | result                 |
 * | hopgate_dtls_dropped_records_total            | counter   | reason                 |
 * | hopgate_dtls_handshakes_evicted_total         | counter   | reason                 |
 * | hopgate_dtls_handshake_retransmits_withheld_total | counter |                      |
 * | hopgate_dtls_path_events_total                | counter   | event                  |
 * | hopgate_dtls_stateless_resets_total           | counter   | result                 |
 * | hopgate_tunnel_sessions_refused_total         | counter   | reason                 |
 * | hopgate_tunnel_warm_ups_total                 | counter   | end                    |
 * | hopgate_tunnel_warm_up_bytes_total            | counter   |                        |
 * | hopgate_tunnel_ws_connections                 | gauge     |                        |
 * | hopgate_tunnel_ws_queued_bytes                | gauge     |                        |
 * | hopgate_tunnel_ws_upgrades_total              | counter   | result                 |
 * | hopgate_tunnel_ws_datagrams_total             | counter   | direction              |
 * | hopgate_tunnel_ws_datagrams_dropped_total     | counter   | reason                 |
 * | hopgate_tunnel_ws_closed_total                | counter   | reason                 |
 * | hopgate_http_requests_total                   | counter   | code_class, method, (domain) |
 * | hopgate_http_request_duration_seconds         | histogram | code_class, method     |
 * | hopgate_http_requests_in_flight               | gauge     |                        |
 * | hopgate_http_response_bytes_total             | counter   |                        |
 * | hopgate_http_connections                      | gauge     | listener               |
 * | hopgate_http_connections_cut_total            | counter   | listener, reason       |
 * | hopgate_http_accept_errors_total              | counter   | listener               |
 * | hopgate_tls_handshake_failures_total          | counter   | reason                 |
 * | hopgate_acme_challenge_lookups_shed_total     | counter   |                        |
 * | hopgate_admin_requests_total                  | counter   | route, status          |
 * | hopgate_acme_orders_total                     | counter   | kind, result           |
 * | hopgate_certificate_expiry_seconds            | gauge     | (domain)               |
 * | hopgate_certificates                          | gauge     |                        |
 * | hopgate_database_up                           | gauge     |                        |
 * | hopgate_database_failures_total               | counter   | operation, reason      |
 * | hopgate_dtls_psk_outage_cache_hits_total      | counter   |                        |
 * | hopgate_dtls_psk_lookups_total                | counter   | result                 |
 *
 * `hopgate_tunnel_srtt_seconds` gets one observation per live session per scrape
 * (the smoothed RTT at that moment): its quantiles describe the sessions' RTT
 * over the range queried. Without domain labels the certificate gauge has one
 * series: seconds until the soonest expiry over all certificates, +Inf when
 * there is none (so `< 7 * 86400` alerts never fire on an empty server).
 */
import type { RequestRecord } from "./ingress.ts";
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { processMemoryGauge, REQUEST_DURATION_BUCKETS_SECONDS } from "../shared/process_metrics.ts";
import type { DtlsStats } from "../shared/dtls/mod.ts";
import type { MuxSession, MuxStats } from "../shared/mux/mod.ts";
import type { Secret } from "./config.ts";

export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

const METHODS = new Set(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT"]);

/** The admin routes, as `METHOD /path` under the admin base path; others count as "other". */
const ADMIN_ROUTES = new Set([
  "POST /domains/register",
  "POST /domains/unregister",
  "GET /domains/exists",
  "GET /domains/status",
  "GET /domains",
  "POST /domains/rotate",
  "POST /domains/delete",
  "GET /sessions",
]);

/** What metrics read from the tunnel's WebSocket way in (`WsTunnelEndpoint`). */
export interface TunnelWsSource {
  readonly stats: {
    readonly accepted: number;
    readonly refused: number;
    readonly datagramsIn: number;
    readonly datagramsOut: number;
    readonly dropped: Readonly<Record<string, number>>;
    readonly closed: Readonly<Record<string, number>>;
  };
  readonly size: number;
  readonly queuedBytes: number;
}

/** What metrics read from the tunnel side at scrape time. */
export interface TunnelSource {
  readonly dtlsStats: DtlsStats;
  /** Sessions turned away after their DTLS handshake, by reason (`TunnelHub.sessionsRefused`). */
  readonly sessionsRefused?: Readonly<Record<string, number>>;
  /** The node's tunnel warm-ups (`TunnelHub.warmUps`): by how they ended, and their bytes. */
  readonly warmUps?: {
    readonly counts: Readonly<Record<string, number>>;
    readonly bytesSent: number;
  } | undefined;
  /** Live (greeted) tunnels. */
  live(): Iterable<
    { readonly domain: string; readonly inFlight: number; readonly session: MuxSession }
  >;
}

export interface ServerMetricsOptions {
  /** Per-domain labels (`HOP_METRICS_DOMAIN_LABELS`); default false. */
  domainLabels?: boolean;
  version?: string;
  /** Clock for certificate expiry, in ms since the epoch. */
  now?: () => number;
}

/** The session counters summed over all tunnels, closed sessions included. */
const TOTAL_KEYS = [
  "bytesSent",
  "bytesReceived",
  "packetsSent",
  "packetsReceived",
  "packetsLost",
  "framesRetransmitted",
  "bytesRetransmitted",
  "tailCopyBytes",
  "openWindowsLimited",
] as const;
type Totals = Pick<MuxStats, typeof TOTAL_KEYS[number]>;

function zeroTotals(): Totals {
  return Object.fromEntries(TOTAL_KEYS.map((k) => [k, 0])) as Totals;
}

function addTotals(into: Totals, s: Totals): void {
  for (const k of TOTAL_KEYS) into[k] += s[k];
}

export class ServerMetrics {
  readonly registry = new Registry();
  readonly domainLabels: boolean;
  #tunnels: TunnelSource | undefined;
  #tunnelWs: TunnelWsSource | undefined;
  /** Sessions seen (greeted or not) and not yet closed; their stats count live. */
  readonly #sessions = new Set<MuxSession>();
  /** Totals of sessions that have closed. */
  readonly #closed = zeroTotals();
  readonly #certs = new Map<string, number>();
  #databaseUp: () => boolean = () => true;
  readonly #requests: Counter<string>;
  readonly #duration: Histogram<string>;
  readonly #responseBytes: Counter<string>;
  readonly #requestSeries = new Map<
    string,
    { count: { inc(): void }; duration: { observe(v: number): void } }
  >();
  readonly #admin: Counter<string>;
  readonly #connections: Gauge<string>;
  readonly #cuts: Counter<string>;
  readonly #acceptErrors: Counter<string>;
  readonly #tlsFailures: Counter<string>;
  readonly #challengeShed: Counter<string>;
  readonly #acme: Counter<string>;
  readonly #dbFailures: Counter<string>;
  readonly #pskOutageHits: Counter<string>;
  readonly #pskLookups: Counter<string>;

  constructor(options: ServerMetricsOptions = {}) {
    this.domainLabels = options.domainLabels ?? false;
    const now = options.now ?? Date.now;
    const registers = [this.registry];
    // prom-client calls collect() with the metric as `this`; the server is `self`.
    // deno-lint-ignore no-this-alias
    const self = this;
    const domainLabel = this.domainLabels ? ["domain"] : [];

    new Gauge({
      name: "hopgate_build_info",
      help: "Always 1; the server version as a label.",
      labelNames: ["version"],
      registers,
    }).labels(options.version ?? "unknown").set(1);
    processMemoryGauge("hopgate_process_memory_bytes", registers);
    const started = Date.now() / 1000;
    new Gauge({
      name: "hopgate_process_start_time_seconds",
      help: "Start time of the process since the Unix epoch, in seconds.",
      registers,
    }).set(started);

    new Gauge({
      name: "hopgate_tunnel_sessions",
      help: "Live tunnel sessions (greeted clients).",
      labelNames: domainLabel,
      registers,
      collect() {
        this.reset();
        if (!self.domainLabels) this.set(0);
        for (const t of self.#tunnels?.live() ?? []) {
          if (self.domainLabels) this.labels(t.domain).inc();
          else this.inc();
        }
      },
    });
    new Gauge({
      name: "hopgate_tunnel_streams_open",
      help: "Open mux streams over all live sessions (one per request in flight, plus control).",
      registers,
      collect() {
        let n = 0;
        for (const t of self.#tunnels?.live() ?? []) n += t.session.activeStreams;
        this.set(n);
      },
    });
    new Gauge({
      name: "hopgate_http_requests_in_flight",
      help: "Public requests being forwarded through a tunnel now.",
      registers,
      collect() {
        let n = 0;
        for (const t of self.#tunnels?.live() ?? []) n += t.inFlight;
        this.set(n);
      },
    });
    const totalCounter = (
      name: string,
      help: string,
      value: (t: Totals) => number,
    ) =>
      new Counter({
        name,
        help,
        registers,
        collect() {
          this.reset();
          this.inc(value(self.#totals()));
        },
      });
    /** A counter read at scrape time from a record of counts, one label value per key (snake_case). */
    const byLabel = (
      name: string,
      help: string,
      label: string,
      read: () => Readonly<Record<string, number>> | undefined,
    ) =>
      new Counter({
        name,
        help,
        labelNames: [label],
        registers,
        collect() {
          this.reset();
          for (const [k, n] of Object.entries(read() ?? {})) this.labels(snake(k)).inc(n);
        },
      });
    const byDirection = (name: string, help: string, sent: keyof Totals, received: keyof Totals) =>
      new Counter({
        name,
        help,
        labelNames: ["direction"],
        registers,
        collect() {
          const t = self.#totals();
          this.reset();
          this.labels("sent").inc(t[sent]);
          this.labels("received").inc(t[received]);
        },
      });
    byDirection(
      "hopgate_tunnel_bytes_total",
      "Bytes of mux packets over all tunnels (DTLS payload), by direction.",
      "bytesSent",
      "bytesReceived",
    );
    byDirection(
      "hopgate_tunnel_packets_total",
      "Mux packets (one DTLS record, one datagram each) over all tunnels, by direction.",
      "packetsSent",
      "packetsReceived",
    );
    totalCounter(
      "hopgate_tunnel_packets_lost_total",
      "Mux packets declared lost (RFC 9002 loss detection), all sessions.",
      (t) => t.packetsLost,
    );
    totalCounter(
      "hopgate_tunnel_frames_retransmitted_total",
      "Stream frames sent again after loss or PTO, all sessions.",
      (t) => t.framesRetransmitted,
    );
    totalCounter(
      "hopgate_tunnel_bytes_retransmitted_total",
      "Stream bytes sent again after loss or PTO, all sessions.",
      (t) => t.bytesRetransmitted,
    );
    totalCounter(
      "hopgate_tunnel_tail_copy_bytes_total",
      "Stream bytes queued to go out once more at a stream's end on a path losing packets " +
        "at random (tail copies), all sessions.",
      (t) => t.tailCopyBytes,
    );
    totalCounter(
      "hopgate_tunnel_stream_windows_limited_total",
      "Requests whose response started with a smaller window than the tunnel's because " +
        "responses not yet read held the at-open credit budget (a quarter of the pool).",
      (t) => t.openWindowsLimited,
    );
    new Histogram({
      name: "hopgate_tunnel_srtt_seconds",
      help: "Smoothed RTT of each live session, one observation per session per scrape.",
      labelNames: domainLabel,
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
      collect() {
        for (const t of self.#tunnels?.live() ?? []) {
          const s = t.session.rtt.smoothedMs / 1000;
          if (self.domainLabels) this.labels(t.domain).observe(s);
          else this.observe(s);
        }
      },
    });

    byLabel(
      "hopgate_dtls_handshakes_total",
      "DTLS handshakes by result (started, completed, failed).",
      "result",
      () => {
        const s = self.#tunnels?.dtlsStats;
        return {
          started: s?.handshakesStarted ?? 0,
          completed: s?.handshakesCompleted ?? 0,
          failed: s?.handshakesFailed ?? 0,
        };
      },
    );
    byLabel(
      "hopgate_dtls_dropped_records_total",
      "Inbound DTLS datagrams or records discarded, by reason.",
      "reason",
      () => self.#tunnels?.dtlsStats.dropped,
    );
    byLabel(
      "hopgate_dtls_handshakes_evicted_total",
      "Half-open DTLS handshakes ended to make room for a newer one, by the cap that was " +
        "full (address_cap: the source address's; global_cap: the server's).",
      "reason",
      () => self.#tunnels?.dtlsStats.handshakesEvicted,
    );
    byLabel(
      "hopgate_dtls_path_events_total",
      "Address changes of tunnel clients with a DTLS connection ID: changes (the newest " +
        "record came from another address), challenges_sent, validated, validations_failed, " +
        "sends_withheld (not sent to an address that had not answered yet: over 3x what it sent).",
      "event",
      () => self.#tunnels?.dtlsStats.path,
    );
    byLabel(
      "hopgate_dtls_stateless_resets_total",
      "Stateless resets: sent (a record named a connection ID this process does not know, " +
        "e.g. from before a restart: its client reconnects at once), limited (not sent: the " +
        "reset budget was spent), repeated (not sent: that connection ID was answered in the " +
        "last 500 ms).",
      "result",
      () => {
        const r = self.#tunnels?.dtlsStats.statelessResets;
        return { sent: r?.sent ?? 0, limited: r?.limited ?? 0, repeated: r?.repeated ?? 0 };
      },
    );
    new Counter({
      name: "hopgate_dtls_handshake_retransmits_withheld_total",
      help: "DTLS handshake flights not sent again: the peer had been sent 3x what it sent.",
      registers,
      collect() {
        this.reset();
        this.inc(self.#tunnels?.dtlsStats.handshakeRetransmitsWithheld ?? 0);
      },
    });
    byLabel(
      "hopgate_tunnel_sessions_refused_total",
      "Sessions turned away after their DTLS handshake, by reason (tunnels_per_domain: " +
        "the domain had HOP_SERVER_MAX_TUNNELS_PER_DOMAIN tunnels).",
      "reason",
      () => self.#tunnels?.sessionsRefused as Readonly<Record<string, number>> | undefined,
    );
    byLabel(
      "hopgate_tunnel_warm_ups_total",
      "The server's warm-ups of new tunnels' paths (padding until the path's rate is " +
        "measured), by how they ended: modelled, bytes or time (a bound), closed, not-needed; " +
        "skipped: a client asked while the node's grants were all held (HOP_TUNNEL_WARM_UP " +
        "turns them off).",
      "end",
      () => self.#tunnels?.warmUps?.counts,
    );
    new Counter({
      name: "hopgate_tunnel_warm_up_bytes_total",
      help: "Bytes of the server's warm-up packets sent to clients, all tunnels.",
      registers,
      collect() {
        this.reset();
        this.inc(self.#tunnels?.warmUps?.bytesSent ?? 0);
      },
    });

    new Gauge({
      name: "hopgate_tunnel_ws_connections",
      help: "Open tunnel WebSocket connections (the TCP/TLS path).",
      registers,
      collect() {
        this.set(self.#tunnelWs?.size ?? 0);
      },
    });
    new Gauge({
      name: "hopgate_tunnel_ws_queued_bytes",
      help: "Bytes waiting to be written to tunnel WebSocket connections, all together.",
      registers,
      collect() {
        this.set(self.#tunnelWs?.queuedBytes ?? 0);
      },
    });
    byLabel(
      "hopgate_tunnel_ws_upgrades_total",
      "Requests to the tunnel WebSocket path, by result (accepted, refused).",
      "result",
      () => {
        const s = self.#tunnelWs?.stats;
        return { accepted: s?.accepted ?? 0, refused: s?.refused ?? 0 };
      },
    );
    byLabel(
      "hopgate_tunnel_ws_datagrams_total",
      "DTLS datagrams carried over tunnel WebSockets, by direction (in, out).",
      "direction",
      () => {
        const s = self.#tunnelWs?.stats;
        return { in: s?.datagramsIn ?? 0, out: s?.datagramsOut ?? 0 };
      },
    );
    byLabel(
      "hopgate_tunnel_ws_datagrams_dropped_total",
      "DTLS datagrams not sent over a tunnel WebSocket, by reason (queue_full: the peer " +
        "reads slower than the tunnel sends).",
      "reason",
      () => self.#tunnelWs?.stats.dropped,
    );
    byLabel(
      "hopgate_tunnel_ws_closed_total",
      "Tunnel WebSocket connections closed, by reason (handshake_timeout: no DTLS " +
        "session in time).",
      "reason",
      () => self.#tunnelWs?.stats.closed,
    );

    const requestLabels = ["code_class", "method", ...domainLabel];
    this.#requests = new Counter({
      name: "hopgate_http_requests_total",
      help: "Public HTTP requests answered, by status class and method.",
      labelNames: requestLabels,
      registers,
    });
    this.#duration = new Histogram({
      name: "hopgate_http_request_duration_seconds",
      help: "Time from request to the end of the response body (WebSocket: the session).",
      labelNames: ["code_class", "method"],
      buckets: REQUEST_DURATION_BUCKETS_SECONDS,
      registers,
    });
    this.#responseBytes = new Counter({
      name: "hopgate_http_response_bytes_total",
      help: "Response body bytes relayed from tunnels to callers.",
      registers,
    });
    this.#connections = new Gauge({
      name: "hopgate_http_connections",
      help: "Open connections, by listener (http, https, metrics).",
      labelNames: ["listener"],
      registers,
    });
    this.#cuts = new Counter({
      name: "hopgate_http_connections_cut_total",
      help: "Public connections closed or refused by a limit, by listener and reason " +
        "(header_timeout, idle_timeout, body_timeout, write_timeout, bad_request, " +
        "head_too_large, max_connections, max_connections_per_address, shutdown).",
      labelNames: ["listener", "reason"],
      registers,
    });
    this.#acceptErrors = new Counter({
      name: "hopgate_http_accept_errors_total",
      help: "Failed accepts (out of file descriptors…): the listener backs off and retries.",
      labelNames: ["listener"],
      registers,
    });
    this.#tlsFailures = new Counter({
      name: "hopgate_tls_handshake_failures_total",
      help: "TLS handshakes on the public HTTPS listener that failed, by reason.",
      labelNames: ["reason"],
      registers,
    });
    this.#challengeShed = new Counter({
      name: "hopgate_acme_challenge_lookups_shed_total",
      help: "ACME challenge requests answered 404 without a database lookup " +
        "(more than 20 unknown tokens a second).",
      registers,
    });
    this.#admin = new Counter({
      name: "hopgate_admin_requests_total",
      help: "Admin API calls by route and status.",
      labelNames: ["route", "status"],
      registers,
    });
    this.#acme = new Counter({
      name: "hopgate_acme_orders_total",
      help: "ACME certificate orders by kind (issue, renew) and result (success, failure).",
      labelNames: ["kind", "result"],
      registers,
    });
    this.#dbFailures = new Counter({
      name: "hopgate_database_failures_total",
      help: "Database calls that failed, by operation (read_domain_psk, register_domain, " +
        "check_database…) and reason (timeout: no answer within HOP_DB_TIMEOUT_SECONDS; " +
        "unreachable: no connection; error: the query failed).",
      labelNames: ["operation", "reason"],
      registers,
    });
    this.#pskOutageHits = new Counter({
      name: "hopgate_dtls_psk_outage_cache_hits_total",
      help: "DTLS handshakes that used a PSK read before because the database failed.",
      registers,
    });
    this.#pskLookups = new Counter({
      name: "hopgate_dtls_psk_lookups_total",
      help: "DTLS handshakes' PSK lookups by result: cached, found, not_registered (asked the " +
        "database), outage (a PSK read before), failed, rate_limited (the source address " +
        "asked the database too often), busy (64 database lookups were running), invalid (not " +
        "a domain).",
      labelNames: ["result"],
      registers,
    });
    for (
      const r of [
        "cached",
        "found",
        "not_registered",
        "outage",
        "failed",
        "rate_limited",
        "busy",
        "invalid",
      ]
    ) this.#pskLookups.labels(r).inc(0);
    for (const kind of ["issue", "renew"]) {
      for (const result of ["success", "failure"]) this.#acme.labels(kind, result).inc(0);
    }
    new Gauge({
      name: "hopgate_certificate_expiry_seconds",
      help: this.domainLabels
        ? "Seconds until each certificate expires."
        : "Seconds until the soonest-expiring certificate expires (+Inf: no certificate).",
      labelNames: domainLabel,
      registers,
      collect() {
        this.reset();
        const t = now();
        const left = (notAfter: number) => (notAfter - t) / 1000;
        if (self.domainLabels) {
          for (const [d, na] of self.#certs) this.labels(d).set(left(na));
        } else {
          this.set(self.#certs.size > 0 ? left(Math.min(...self.#certs.values())) : Infinity);
        }
      },
    });
    new Gauge({
      name: "hopgate_certificates",
      help: "Certificates held.",
      registers,
      collect() {
        this.set(self.#certs.size);
      },
    });
    new Gauge({
      name: "hopgate_database_up",
      help: "1 if the last database check succeeded, else 0.",
      registers,
      collect() {
        this.set(self.#databaseUp() ? 1 : 0);
      },
    });
  }

  /** Where scrape-time tunnel values come from (the hub and registry). */
  bindTunnels(source: TunnelSource): void {
    this.#tunnels = source;
  }

  /** Where the `hopgate_tunnel_ws_*` values come from (the WebSocket endpoint). */
  bindTunnelWs(source: TunnelWsSource): void {
    this.#tunnelWs = source;
  }

  /** Where `hopgate_database_up` comes from. */
  bindDatabase(up: () => boolean): void {
    this.#databaseUp = up;
  }

  /**
   * A mux session started (greeted or not): its byte and loss counters count
   * while it lives and are folded into the totals when it closes.
   */
  trackSession(session: MuxSession): void {
    if (this.#sessions.has(session)) return;
    this.#sessions.add(session);
    session.closed.then(() => {
      if (!this.#sessions.delete(session)) return;
      addTotals(this.#closed, session.stats);
    });
  }

  /** One answered public request (called by the ingress). */
  request(r: RequestRecord): void {
    const cls = `${Math.floor(r.status / 100)}xx`;
    const method = METHODS.has(r.method) ? r.method : "OTHER";
    const seconds = r.durationMs / 1000;
    if (this.domainLabels) {
      this.#requests.labels(cls, method, r.domain ?? "").inc();
      this.#duration.labels(cls, method).observe(seconds);
    } else {
      // The labelled children, looked up once per (class, method): prom-client
      // hashes the label values on every labels() call.
      const key = `${cls} ${method}`;
      let series = this.#requestSeries.get(key);
      if (!series) {
        series = {
          count: this.#requests.labels(cls, method),
          duration: this.#duration.labels(cls, method),
        };
        this.#requestSeries.set(key, series);
      }
      series.count.inc();
      series.duration.observe(seconds);
    }
    if (r.bytes > 0) this.#responseBytes.inc(r.bytes);
  }

  /** A public listener's connection events (the HTTP/1.1 front's `FrontEvents`). */
  front(listener: "http" | "https" | "metrics"): {
    cut(reason: string): void;
    acceptError(): void;
    connections(delta: 1 | -1): void;
  } {
    const open = this.#connections.labels(listener);
    open.set(0);
    return {
      cut: (reason) => this.#cuts.labels(listener, reason).inc(),
      acceptError: () => this.#acceptErrors.labels(listener).inc(),
      connections: (delta) => open.inc(delta),
    };
  }

  /** A database call failed; `operation` is one of the stores' fixed operation names. */
  databaseFailure(operation: string, reason: "timeout" | "unreachable" | "error"): void {
    const op = operation.toLowerCase().replace(/[^a-z0-9]+/g, "_").replace(/^_|_$/g, "");
    this.#dbFailures.labels(op, reason).inc();
  }

  /** A handshake's PSK lookup ended (`PskLookupResult`). */
  pskLookup(result: string): void {
    this.#pskLookups.labels(result).inc();
  }

  /** A handshake's PSK came from the outage cache. */
  pskOutageCacheHit(): void {
    this.#pskOutageHits.inc();
  }

  /** An ACME challenge lookup shed by the database bound. */
  challengeLookupShed(): void {
    this.#challengeShed.inc();
  }

  /** A failed TLS handshake on the public listener. */
  tlsFailure(reason: string): void {
    this.#tlsFailures.labels(reason).inc();
  }

  /** One admin API call; `path` relative to the admin base path. */
  adminCall(method: string, path: string, status: number): void {
    const p = path.length > 1 && path.endsWith("/") ? path.slice(0, -1) : path;
    const route = ADMIN_ROUTES.has(`${method} ${p}`) ? `${method} ${p}` : "other";
    this.#admin.labels(route, String(status)).inc();
  }

  /** For the certificate manager: an ACME order finished. */
  acmeResult(kind: "issue" | "renew", result: "success" | "failure"): void {
    this.#acme.labels(kind, result).inc();
  }

  /** For the certificate manager: a certificate's expiry; `undefined` removes it. */
  certificateExpiry(domain: string, notAfter: Date | undefined): void {
    if (notAfter) this.#certs.set(domain, notAfter.getTime());
    else this.#certs.delete(domain);
  }

  /** The exposition text. */
  async render(): Promise<string> {
    this.#rendering++;
    try {
      return await this.registry.metrics();
    } finally {
      if (--this.#rendering === 0) this.#totalsCache = undefined;
    }
  }

  /**
   * The counters over every session. Each counter family reads them, and a node holds
   * thousands of sessions: within one `render` they are summed once.
   */
  #totals(): Totals {
    if (this.#totalsCache) return this.#totalsCache;
    const t = { ...this.#closed };
    for (const session of this.#sessions) addTotals(t, session.stats);
    if (this.#rendering > 0) this.#totalsCache = t;
    return t;
  }
  #totalsCache: Totals | undefined;
  #rendering = 0;
}

function snake(s: string): string {
  return s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/**
 * `GET /metrics` for a metrics source, optionally behind `Authorization: Bearer
 * <token>` (`HOP_METRICS_TOKEN`). Other paths get 404, other methods 405.
 */
export function createMetricsHandler(
  render: () => Promise<string>,
  token?: Secret,
): (req: Request) => Promise<Response> {
  const expected = token ? new TextEncoder().encode(`Bearer ${token.reveal()}`) : undefined;
  return async (req) => {
    const url = new URL(req.url);
    if (url.pathname !== "/metrics") return new Response("Not Found\n", { status: 404 });
    if (req.method !== "GET" && req.method !== "HEAD") {
      return new Response("Method Not Allowed\n", { status: 405, headers: { Allow: "GET, HEAD" } });
    }
    if (expected) {
      const given = new TextEncoder().encode(req.headers.get("authorization") ?? "");
      if (!constantTimeEqual(given, expected)) {
        return new Response("Unauthorized\n", {
          status: 401,
          headers: { "WWW-Authenticate": 'Bearer realm="hopgate-metrics"' },
        });
      }
    }
    return new Response(req.method === "HEAD" ? null : await render(), {
      headers: { "content-type": METRICS_CONTENT_TYPE, "cache-control": "no-store" },
    });
  };
}

function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  let diff = a.length ^ b.length;
  for (let i = 0; i < b.length; i++) diff |= (a[i] ?? 0) ^ b[i]!;
  return diff === 0;
}
