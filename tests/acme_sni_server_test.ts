/**
 * SniHttpsServer on its own: certificate per SNI, failure for unknown names,
 * and listener generations (Deno caches each name's answer per listener, errors
 * included, so new certificates need a refresh).
 */
import assert from "node:assert/strict";
import { createSelfSignedCertificate } from "../server/certs/self_signed.ts";
import { normalizeServerName, SniHttpsServer } from "../server/tls_server.ts";
import { probeTls } from "./helpers/tls_probe.ts";
import { connect } from "node:tls";

Deno.test("SniHttpsServer: per-name certificates, refresh picks up new ones", async () => {
  const a = await createSelfSignedCertificate(["a.test"]);
  const b = await createSelfSignedCertificate(["b.test"]);
  const table = new Map([["a.test", a]]);
  const asked: string[] = [];
  const server = new SniHttpsServer({
    hostname: "127.0.0.1",
    port: 0,
    lookup: (n) => {
      asked.push(n);
      return Promise.resolve(table.get(n));
    },
    handler: (req) => new Response(`hello ${req.headers.get("host")}`),
  });
  try {
    const port = server.addr.port;
    const pa = await probeTls(port, "A.Test", a.cert);
    assert.equal(pa.ok, true, pa.error);
    assert.equal(pa.subject, "a.test");
    assert.equal((await probeTls(port, "b.test", b.cert)).ok, false);

    // b's certificate appears: the failure is cached until the next generation
    table.set("b.test", b);
    assert.equal((await probeTls(port, "b.test", b.cert)).ok, false);
    server.refresh();
    assert.equal(server.addr.port, port);
    assert.equal(server.generations, 2);
    const pb = await probeTls(port, "b.test", b.cert);
    assert.equal(pb.ok, true, pb.error);
    assert.equal(pb.subject, "b.test");
    assert.equal((await probeTls(port, "a.test", a.cert)).ok, true);
    assert.ok(asked.includes("a.test") && !asked.includes("A.Test"));
  } finally {
    await server.close();
  }
});

Deno.test("SniHttpsServer: distinct unknown names roll the generation (bounded cache)", async () => {
  const a = await createSelfSignedCertificate(["a.test"]);
  const server = new SniHttpsServer({
    hostname: "127.0.0.1",
    port: 0,
    lookup: (n) => Promise.resolve(n === "a.test" ? a : undefined),
    handler: () => new Response("ok"),
    maxNamesPerGeneration: 5,
  });
  try {
    for (let i = 0; i < 5; i++) {
      assert.equal((await probeTls(server.addr.port, `junk${i}.test`, a.cert)).ok, false);
    }
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(server.generations, 2);
    assert.equal((await probeTls(server.addr.port, "a.test", a.cert)).ok, true);
  } finally {
    await server.close();
  }
});

Deno.test("SniHttpsServer: a request in flight survives a refresh", async () => {
  const a = await createSelfSignedCertificate(["a.test"]);
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  const server = new SniHttpsServer({
    hostname: "127.0.0.1",
    port: 0,
    lookup: () => Promise.resolve(a),
    handler: async () => {
      await gate;
      return new Response("late but whole");
    },
  });
  try {
    const body = new Promise<string>((resolve, reject) => {
      const s = connect({
        host: "127.0.0.1",
        port: server.addr.port,
        servername: "a.test",
        ca: a.cert,
        ALPNProtocols: ["http/1.1"],
      }, () => s.write("GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"));
      let text = "";
      s.setEncoding("utf8");
      s.on("data", (d) => text += d);
      s.on("end", () => resolve(text));
      s.on("error", reject);
    });
    await new Promise((r) => setTimeout(r, 100));
    server.refresh();
    release();
    assert.match(await body, /late but whole/);
  } finally {
    await server.close();
  }
});

Deno.test("normalizeServerName: lowercase, no trailing dot", () => {
  assert.equal(normalizeServerName("App.Example.COM."), "app.example.com");
  assert.equal(normalizeServerName(""), "");
});
