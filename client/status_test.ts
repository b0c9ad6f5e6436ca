// deno-lint-ignore-file no-control-regex -- the status line is ANSI escapes by design
import assert from "node:assert/strict";
import { createStatusReporter } from "./status.ts";

function reporter(terminal: boolean, debug = false) {
  const out: string[] = [];
  let t = Date.parse("2026-01-02T03:04:05.000Z");
  const r = createStatusReporter({
    terminal,
    write: (s) => out.push(s),
    domain: "app.example.com",
    target: "http://127.0.0.1:3000/",
    debug,
    redrawMs: 60_000,
    now: () => new Date(t),
  });
  return { r, out, advance: (ms: number) => t += ms };
}

Deno.test("status: on a terminal, one line rewritten in place with RTT and counts", () => {
  const { r, out } = reporter(true);
  r.onEvent({
    type: "connecting",
    attempt: 1,
    server: "hop.example.com:443",
    node: "203.0.113.10:443",
    transport: "dtls",
  });
  r.onEvent({
    type: "connected",
    server: "hop.example.com:443",
    node: "203.0.113.10:443",
    domain: "app.example.com",
    sessionId: "s1",
    serverVersion: "hopgate-server/0.1.0",
    transport: "dtls",
    tunnels: [{ node: "203.0.113.10:443", server: "hop.example.com:443", transport: "dtls" }],
    wanted: 1,
  });
  r.onEvent({
    type: "stats",
    rttMs: 12.4,
    tunnels: 1,
    inFlight: 2,
    served: 7,
    failed: 1,
    local: { open: 1, idle: 0, opened: 1 },
  });
  r.onEvent({
    type: "disconnected",
    server: "hop.example.com:443",
    node: "203.0.113.10:443",
    tunnels: [],
    wanted: 1,
  });
  r.onEvent({
    type: "failure",
    kind: "session_lost",
    message: "Connection lost",
    retryInMs: 1500,
    server: "hop.example.com:443",
    node: "203.0.113.10:443",
    tunnels: [],
    nodes: 1,
  });
  r.close();
  const text = out.join("");
  // Every redraw starts by clearing the line; permanent lines end with a newline.
  assert.ok(out.every((s) => s.startsWith("\r\x1b[2K") || !s.includes("●")));
  assert.match(text, /\r\x1b\[2K… connecting to hop\.example\.com:443 over dtls \(attempt 1\)/);
  assert.match(
    text,
    /connected to hop\.example\.com:443 over dtls \(hopgate-server\/0\.1\.0, session s1\)/,
  );
  assert.match(
    text,
    /● connected to hop\.example\.com:443 over dtls · app\.example\.com → http:\/\/127\.0\.0\.1:3000\/ · RTT – · 0 in flight/,
  );
  assert.match(
    text,
    /\r\x1b\[2K● connected to .* · RTT 12 ms · 2 in flight · 7 served \(1 failed\)/,
  );
  assert.match(text, /Connection lost; retrying in 2 s\n/);
  assert.match(
    text,
    /○ disconnected \(session_lost\) · retrying in 2 s · 2 in flight · 7 served \(1 failed\)/,
  );
  assert.ok(text.endsWith("\n"), "close leaves the cursor on a fresh line");
});

Deno.test("status: not a terminal → plain timestamped lines, no escapes, requests only in debug", () => {
  for (const debug of [false, true]) {
    const { r, out } = reporter(false, debug);
    r.onEvent({ type: "connecting", attempt: 1, server: "h:1", node: "h:1", transport: "dtls" });
    r.onEvent({
      type: "connected",
      server: "h:1",
      node: "h:1",
      domain: "d",
      sessionId: "s1",
      serverVersion: "v",
      transport: "dtls",
      tunnels: [{ node: "h:1", server: "h:1", transport: "dtls" }],
      wanted: 1,
    });
    r.onEvent({
      type: "stats",
      rttMs: 3,
      tunnels: 1,
      inFlight: 1,
      served: 0,
      failed: 0,
      local: { open: 0, idle: 0, opened: 0 },
    });
    r.onEvent({
      type: "request",
      outcome: { kind: "response", method: "GET", url: "/x", status: 200 },
      durationMs: 4.2,
    });
    r.onEvent({
      type: "failure",
      kind: "bad_api_key",
      message: "Bad API key: no",
      retryInMs: 20_000,
      server: "h:1",
      node: "h:1",
      tunnels: [],
      nodes: 1,
    });
    r.onEvent({ type: "stopped" });
    r.close();
    assert.ok(out.every((l) => l.endsWith("\n") && !l.includes("\x1b")), JSON.stringify(out));
    assert.ok(out.every((l) => l.startsWith("2026-01-02T03:04:05.000Z ")));
    const text = out.join("");
    assert.match(text, /connected to h:1/);
    assert.match(text, /Bad API key: no; retrying in 20 s/);
    assert.equal(/GET \/x → 200 \(4 ms\)/.test(text), debug);
    assert.equal(/connecting to h:1/.test(text), debug);
  }
});

Deno.test("status: two tunnels; one lost keeps the line connected and names the one serving", () => {
  const { r, out } = reporter(true);
  const a = { node: "10.0.0.1:443", server: "10.0.0.1:443", transport: "dtls" };
  const b = { node: "10.0.0.2:443", server: "10.0.0.2:443", transport: "dtls" };
  const connected = (t: typeof a, tunnels: (typeof a)[]) =>
    r.onEvent({
      type: "connected",
      server: t.server,
      node: t.node,
      domain: "app.example.com",
      sessionId: "s1",
      serverVersion: "v",
      transport: "dtls",
      tunnels,
      wanted: 2,
    });
  connected(a, [a]);
  connected(b, [a, b]);
  r.onEvent({ type: "disconnected", server: b.server, node: b.node, tunnels: [a], wanted: 2 });
  r.onEvent({
    type: "failure",
    kind: "session_lost",
    message: "Connection to 10.0.0.2:443 lost: closed",
    retryInMs: 400,
    server: b.server,
    node: b.node,
    tunnels: [a],
    nodes: 2,
  });
  r.close();
  const text = out.join("");
  assert.match(
    text,
    /connected to 10\.0\.0\.1:443 over dtls \(v, session s1\): .* · 1\/2 tunnels up\n/,
  );
  assert.match(text, /connected to 10\.0\.0\.2:443 .* · 2\/2 tunnels up\n/);
  assert.match(
    text,
    /● connected to 10\.0\.0\.1:443 over dtls, 10\.0\.0\.2:443 over dtls · 2\/2 tunnels · app/,
  );
  assert.match(
    text,
    /Connection to 10\.0\.0\.2:443 lost: closed; retrying 10\.0\.0\.2:443 again in 400 ms; still connected to 10\.0\.0\.1:443\n/,
  );
  // After the loss the line still says connected, through the one left.
  const last = out.filter((s) => s.startsWith("\r\x1b[2K●")).at(-1)!;
  assert.match(last, /● connected to 10\.0\.0\.1:443 over dtls · 1\/2 tunnels · /);
  assert.ok(!text.includes("○ disconnected"));
});
