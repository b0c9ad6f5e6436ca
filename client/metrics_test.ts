/** The client's metrics follow the tunnels up, per node, from the connector's events. */
import { equal } from "node:assert/strict";
import { ClientMetrics } from "./metrics.ts";

/** One sample's value in the exposition text (undefined: no such series). */
function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

Deno.test("metrics: tunnels by node and transport, wanted, connected while any is up", async () => {
  const m = new ClientMetrics();
  const a = { node: "10.0.0.1:443", server: "10.0.0.1:443", transport: "dtls" };
  const b = { node: "10.0.0.2:443", server: "10.0.0.2:443", transport: "tcp (websocket)" };
  const base = { domain: "d", sessionId: "s", serverVersion: "v", wanted: 2 };
  m.onEvent({ type: "nodes", nodes: [a.node, b.node], problems: [], dropped: 3 });
  m.onEvent({ type: "connected", ...base, ...a, tunnels: [a] });
  m.onEvent({ type: "connected", ...base, ...b, tunnels: [a, b] });
  let text = await m.render();
  equal(sample(text, 'hopgate_client_tunnels{node="10.0.0.1:443",transport="dtls"}'), 1);
  equal(sample(text, 'hopgate_client_tunnels{node="10.0.0.2:443",transport="tcp (websocket)"}'), 1);
  equal(sample(text, "hopgate_client_tunnels_wanted"), 2);
  equal(sample(text, "hopgate_client_nodes"), 2);
  equal(sample(text, "hopgate_client_nodes_dropped"), 3);
  equal(sample(text, "hopgate_client_connected"), 1);
  equal(sample(text, 'hopgate_client_transport{transport="dtls"}'), 1);

  m.onEvent({ type: "disconnected", server: a.server, node: a.node, tunnels: [b], wanted: 2 });
  m.onEvent({
    type: "failure",
    kind: "session_lost",
    message: "lost",
    retryInMs: 300,
    server: a.server,
    node: a.node,
    tunnels: [b],
    nodes: 2,
  });
  text = await m.render();
  equal(sample(text, 'hopgate_client_tunnels{node="10.0.0.1:443",transport="dtls"}'), undefined);
  equal(sample(text, 'hopgate_client_tunnels{node="10.0.0.2:443",transport="tcp (websocket)"}'), 1);
  equal(sample(text, "hopgate_client_connected"), 1, "still connected through the other");
  equal(sample(text, 'hopgate_client_failures_total{kind="session_lost"}'), 1);

  m.onEvent({ type: "stopped" });
  text = await m.render();
  equal(sample(text, "hopgate_client_connected"), 0);
  equal(
    sample(text, 'hopgate_client_tunnels{node="10.0.0.2:443",transport="tcp (websocket)"}'),
    undefined,
  );
});
