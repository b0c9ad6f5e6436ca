/**
 * What the user sees. On a terminal: one status line rewritten in place
 * (connected to, domain, RTT, requests in flight / served), with failures and
 * other events printed above it. Otherwise: plain timestamped log lines.
 *
 * With several tunnels (docs/client-failover.md) the line names every node with
 * a tunnel up and says how many of the tunnels aimed for are up ("1/2 tunnels");
 * a lost tunnel while another serves keeps the line "connected".
 */
import type { ClientEvent, TunnelInfo } from "./connector.ts";

export interface StatusOptions {
  /** True to draw a live status line (Deno.stdout.isTerminal()). */
  terminal: boolean;
  write: (text: string) => void;
  domain: string;
  target: string;
  /** Log every request (and, on a terminal, keep them above the status line). */
  debug?: boolean;
  /** Redraw period for the status line. Default 1000 ms. */
  redrawMs?: number;
  now?: () => Date;
}

export interface StatusReporter {
  /** Feed every ClientEvent here. */
  readonly onEvent: (e: ClientEvent) => void;
  /** Prints a line (above the status line on a terminal). */
  log(line: string): void;
  /** Stops redrawing and leaves the cursor on a fresh line. */
  close(): void;
}

const CLEAR_LINE = "\r\x1b[2K";

export function createStatusReporter(o: StatusOptions): StatusReporter {
  const now = o.now ?? (() => new Date());
  let state:
    | { kind: "connecting"; attempt: number; server: string; transport: string }
    | { kind: "connected"; since: number }
    | { kind: "waiting"; until: number; why: string }
    | { kind: "stopped" } = { kind: "connecting", attempt: 0, server: "", transport: "" };
  let rttMs: number | undefined;
  let tunnels: TunnelInfo[] = [];
  let wanted = 1;
  let inFlight = 0;
  let served = 0;
  let failed = 0;
  let drawn = false;

  const stamp = () => now().toISOString();
  const render = (): string => {
    const counts = `${inFlight} in flight · ${served} served${failed ? ` (${failed} failed)` : ""}`;
    switch (state.kind) {
      case "connecting":
        return `… connecting to ${state.server} over ${state.transport} (attempt ${state.attempt}) · ${o.domain}`;
      case "connected": {
        const rtt = rttMs === undefined ? "RTT –" : `RTT ${rttMs.toFixed(rttMs < 10 ? 1 : 0)} ms`;
        const to = tunnels.map((t) => `${t.server} over ${t.transport}`).join(", ");
        const count = wanted > 1 || tunnels.length > 1
          ? ` · ${tunnels.length}/${wanted} tunnels`
          : "";
        return `● connected to ${to}${count} · ${o.domain} → ${o.target} · ${rtt} · ${counts}`;
      }
      case "waiting": {
        const s = Math.max(0, Math.ceil((state.until - now().getTime()) / 1000));
        return `○ disconnected (${state.why}) · retrying in ${s} s · ${counts}`;
      }
      case "stopped":
        return `■ stopped · ${counts}`;
    }
  };
  const draw = () => {
    if (!o.terminal) return;
    o.write(CLEAR_LINE + render());
    drawn = true;
  };
  const log = (line: string) => {
    if (o.terminal) {
      o.write(`${drawn ? CLEAR_LINE : ""}${line}\n`);
      drawn = false;
      draw();
    } else o.write(`${stamp()} ${line}\n`);
  };
  const timer = o.terminal ? setInterval(draw, o.redrawMs ?? 1000) : undefined;

  const onEvent = (e: ClientEvent) => {
    switch (e.type) {
      case "connecting":
        // While another tunnel serves, the line stays "connected".
        if (tunnels.length === 0) {
          state = {
            kind: "connecting",
            attempt: e.attempt,
            server: e.server,
            transport: e.transport,
          };
        }
        if (o.debug && !o.terminal) {
          log(`connecting to ${e.server} over ${e.transport} (attempt ${e.attempt})`);
        }
        draw();
        break;
      case "connected": {
        if (state.kind !== "connected") {
          state = { kind: "connected", since: now().getTime() };
          rttMs = undefined;
        }
        tunnels = e.tunnels;
        wanted = e.wanted;
        const count = e.wanted > 1 || e.tunnels.length > 1
          ? ` · ${e.tunnels.length}/${e.wanted} tunnels up`
          : "";
        log(
          `connected to ${e.server} over ${e.transport} (${e.serverVersion}, session ${e.sessionId}): ` +
            `${e.domain} → ${o.target}${count}`,
        );
        break;
      }
      case "disconnected":
        // The failure event that follows says why; this only updates the line.
        tunnels = e.tunnels;
        wanted = e.wanted;
        draw();
        break;
      case "nodes":
        if (e.nodes.length > 1 || e.problems.length > 0 || e.dropped > 0 || o.debug) {
          log(
            `server nodes: ${e.nodes.join(", ") || "none"}` +
              (e.dropped > 0 ? ` (${e.dropped} more addresses left out)` : "") +
              e.problems.map((p) => `; ${p}`).join(""),
          );
        }
        break;
      case "probe":
        // The tunnel stays where it is; only worth a line when debugging.
        if (o.debug) log(`${e.transport} still unusable: ${e.message}`);
        break;
      case "stats":
        rttMs = e.rttMs;
        inFlight = e.inFlight;
        served = e.served;
        failed = e.failed;
        draw();
        break;
      case "request":
        inFlight = Math.max(0, inFlight - 1);
        if (o.debug) log(describeOutcome(e.outcome, e.durationMs));
        break;
      case "failure": {
        const retry = e.retryInMs >= 1000
          ? `${Math.round(e.retryInMs / 1000)} s`
          : `${e.retryInMs} ms`;
        // With other nodes, another may be tried sooner: the wait is this node's.
        const which = e.nodes > 1 && e.server ? `${e.server} again` : "";
        tunnels = e.tunnels;
        const serving = tunnels.length > 0
          ? `; still connected to ${tunnels.map((t) => t.server).join(", ")}`
          : "";
        log(`${e.message}; retrying ${which ? `${which} ` : ""}in ${retry}${serving}`);
        if (tunnels.length === 0) {
          state = { kind: "waiting", until: now().getTime() + e.retryInMs, why: e.kind };
        }
        draw();
        break;
      }
      case "stopped":
        state = { kind: "stopped" };
        tunnels = [];
        log(`stopped after ${served} requests`);
        break;
    }
  };

  return {
    onEvent,
    log,
    close() {
      if (timer !== undefined) clearInterval(timer);
      if (o.terminal && drawn) o.write("\n");
      drawn = false;
    },
  };
}

function describeOutcome(
  o: Extract<ClientEvent, { type: "request" }>["outcome"],
  ms: number,
): string {
  const t = `${Math.round(ms)} ms`;
  switch (o.kind) {
    case "response":
      return `${o.method} ${o.url} → ${o.status} (${t})`;
    case "websocket":
      return `WebSocket ${o.url} closed after ${t}`;
    case "error":
      return `${o.method} ${o.url} → ${o.code}: ${o.message} (${t})`;
    case "aborted":
      return `${o.method} ${o.url} aborted: ${o.reason} (${t})`;
  }
}
