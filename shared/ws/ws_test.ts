/**
 * The WebSocket codec: frames and their limits, then interop with a peer we did
 * not write: our client side against Deno.upgradeWebSocket. Our server side
 * against Deno's and npm ws's clients is in server/tunnel_ws_test.ts (it runs on
 * the server's front, which shared/ may not import).
 */
import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  acceptKeyFor,
  applyMask,
  checkUpgradeRequest,
  checkUpgradeResponse,
  clientUpgradeRequest,
  CloseCode,
  connStream,
  encodeFrame,
  newClientKey,
  Opcode,
  parseFrameHeader,
  readResponseHead,
  WsConn,
  WsProtocolError,
} from "./mod.ts";

const MAX = 64 * 1024;

function parse(frame: Uint8Array, expectMasked: boolean, max = MAX) {
  return parseFrameHeader(frame, 0, frame.length, expectMasked, max);
}

function protocolError(fn: () => unknown, code: number) {
  throws(fn, (e) => e instanceof WsProtocolError && e.code === code);
}

Deno.test("RFC 6455 example: the Sec-WebSocket-Accept of the sample key", () => {
  equal(acceptKeyFor("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
});

Deno.test("frames round-trip at every length encoding, masked and not", () => {
  for (const n of [0, 1, 125, 126, 1000, 65535, 65536, 70000]) {
    const payload = crypto.getRandomValues(new Uint8Array(Math.min(n, 65536)));
    const data = n > 65536 ? new Uint8Array(n).fill(7) : payload;
    for (const masked of [false, true]) {
      const f = encodeFrame(Opcode.Binary, data, masked);
      const h = parse(f, masked, 1 << 20)!;
      equal(h.payloadLength, n);
      equal(h.opcode, Opcode.Binary);
      ok(h.fin);
      equal(h.headerLength, 2 + (n < 126 ? 0 : n < 65536 ? 2 : 8) + (masked ? 4 : 0));
      const body = f.slice(h.headerLength);
      if (h.mask) applyMask(body, h.mask);
      deepEqual(body, data);
    }
  }
});

Deno.test("applyMask matches the byte-by-byte definition at every alignment and phase", () => {
  const mask = new Uint8Array([0x12, 0x34, 0x56, 0x78]);
  const base = crypto.getRandomValues(new Uint8Array(300));
  for (let off = 0; off < 4; off++) {
    for (let phase = 0; phase < 4; phase++) {
      const view = base.slice().subarray(off, 200 + off);
      const want = view.map((b, i) => b ^ mask[(phase + i) & 3]!);
      applyMask(view, mask, phase);
      deepEqual(view, want);
    }
  }
});

Deno.test("incomplete headers ask for more bytes", () => {
  const f = encodeFrame(Opcode.Binary, new Uint8Array(300), true);
  for (let i = 0; i < 8; i++) equal(parse(f.subarray(0, i), true), undefined);
  ok(parse(f.subarray(0, 8), true));
});

Deno.test("strict limits: text, wrong masking, control frame rules, size, reserved bits", () => {
  protocolError(() => parse(encodeFrame(Opcode.Text, new Uint8Array(3), true), true), 1003);
  protocolError(() => parse(encodeFrame(Opcode.Binary, new Uint8Array(3), false), true), 1002);
  protocolError(() => parse(encodeFrame(Opcode.Binary, new Uint8Array(3), true), false), 1002);
  protocolError(() => parse(encodeFrame(Opcode.Binary, new Uint8Array(MAX + 1), true), true), 1009);
  const ping = encodeFrame(Opcode.Ping, new Uint8Array(3), true);
  ping[0] = Opcode.Ping; // FIN cleared: a fragmented control frame
  protocolError(() => parse(ping, true), 1002);
  const long = new Uint8Array([0x89, 0x80 | 126, 0, 126, 1, 2, 3, 4]); // ping of 126
  protocolError(() => parse(long, true), 1002);
  const rsv = encodeFrame(Opcode.Binary, new Uint8Array(1), true);
  rsv[0] = rsv[0]! | 0x40;
  protocolError(() => parse(rsv, true), 1002);
  protocolError(() => parse(new Uint8Array([0x83, 0x80, 0, 0, 0, 0]), true), 1002); // opcode 3
  // 16-bit length for a payload under 126: not minimal.
  protocolError(() => parse(new Uint8Array([0x82, 0x80 | 126, 0, 5, 0, 0, 0, 0]), true), 1002);
});

Deno.test("upgrade request checks", () => {
  const key = newClientKey();
  const h = (extra: [string, string][] = []): [string, string][] => [
    ["sec-websocket-key", key],
    ["sec-websocket-version", "13"],
    ...extra,
  ];
  deepEqual(
    checkUpgradeRequest("GET", "websocket", h([["sec-websocket-protocol", "a, b"]]), false),
    {
      key,
      protocols: ["a", "b"],
    },
  );
  equal((checkUpgradeRequest("POST", "websocket", h(), false) as { status: number }).status, 405);
  equal((checkUpgradeRequest("GET", "h2c", h(), false) as { status: number }).status, 426);
  equal((checkUpgradeRequest("GET", "websocket", h(), true) as { status: number }).status, 400);
  equal(
    (checkUpgradeRequest("GET", "websocket", [["sec-websocket-key", key]], false) as {
      status: number;
    }).status,
    426,
  );
  equal(
    (checkUpgradeRequest("GET", "websocket", [["sec-websocket-key", "short"], [
      "sec-websocket-version",
      "13",
    ]], false) as { status: number }).status,
    400,
  );
});

function sha(b: Uint8Array) {
  return Promise.resolve(createHash("sha256").update(b).digest("hex"));
}

Deno.test("our client side against Deno.upgradeWebSocket: echo, close handshake; text refused", async () => {
  const ac = new AbortController();
  let serverClose: Promise<CloseEvent> | undefined;
  let sendText = false;
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    (req) => {
      const { socket, response } = Deno.upgradeWebSocket(req, { protocol: "p1" });
      socket.binaryType = "arraybuffer";
      serverClose = new Promise((r) => socket.onclose = r);
      socket.onmessage = (e) => {
        if (sendText) socket.send("text");
        else socket.send(e.data);
      };
      return response;
    },
  );
  try {
    const open = async () => {
      const tcp = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
      const key = newClientKey();
      await connStream(tcp).write(
        clientUpgradeRequest({
          host: `127.0.0.1:${server.addr.port}`,
          path: "/",
          key,
          protocol: "p1",
        }),
      );
      const head = await readResponseHead((p) => tcp.read(p));
      checkUpgradeResponse(head, key, "p1");
      const got: Uint8Array[] = [];
      let wake = () => {};
      const ws = new WsConn(connStream(tcp), {
        role: "client",
        initial: head.rest,
        onMessage: (d) => {
          got.push(d.slice());
          wake();
        },
      });
      const next = async () => {
        while (got.length === 0) await new Promise<void>((r) => wake = r);
        return got.shift()!;
      };
      return { ws, next };
    };
    const a = await open();
    for (const n of [0, 5, 200, 20_000, 65_000]) {
      const b = crypto.getRandomValues(new Uint8Array(n));
      ok(a.ws.sendBinary(b));
      equal(await sha(await a.next()), await sha(b));
    }
    a.ws.close(CloseCode.Normal, "bye");
    const info = await a.ws.done;
    equal(info.code, 1000);
    equal(info.remote, false);
    equal((await serverClose!).code, 1000);

    sendText = true;
    const b = await open();
    b.ws.sendBinary(new Uint8Array([1]));
    equal((await b.ws.done).code, 1003);
    equal((await serverClose!).code, 1003);
  } finally {
    ac.abort();
    await server.finished;
  }
});

Deno.test("a full send queue drops binary messages and counts them", async () => {
  // A peer that never reads: our sends pile up until the cap.
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = l.accept();
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port: (l.addr as Deno.NetAddr).port });
  const peer = await accepted;
  const ws = new WsConn(connStream(tcp), {
    role: "client",
    maxQueueBytes: 64 * 1024,
    onMessage() {},
  });
  const m = new Uint8Array(16 * 1024);
  let sent = 0;
  for (let i = 0; i < 10_000; i++) if (ws.sendBinary(m)) sent++;
  ok(ws.stats.dropped > 0, "some were dropped");
  equal(sent + ws.stats.dropped, 10_000);
  ok(ws.queuedBytes <= 64 * 1024);
  ws.abort();
  peer.close();
  l.close();
  await ws.done;
});
