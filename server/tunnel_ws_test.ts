/**
 * The tunnel's WebSocket way in, server side: our WebSocket server side (on the
 * server's own HTTP/1.1 front) against clients we did not write (Deno's
 * WebSocket, npm ws); then `WsTunnelEndpoint` itself on a real front: a peer
 * that stops reading costs a bounded queue, the rest is dropped and counted.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import { createHash } from "node:crypto";
import WebSocketNode from "ws";
import {
  acceptKeyFor,
  checkUpgradeRequest,
  checkUpgradeResponse,
  clientUpgradeRequest,
  connStream,
  newClientKey,
  readResponseHead,
  TUNNEL_WS_PATH,
  TUNNEL_WS_PROTOCOL,
  type WsCloseInfo,
  WsConn,
} from "../shared/ws/mod.ts";
import { FrontServer } from "./front/http1.ts";
import { WsTunnelEndpoint } from "./tunnel_ws.ts";

const MAX = 64 * 1024;

function sha(b: Uint8Array) {
  return Promise.resolve(createHash("sha256").update(b).digest("hex"));
}

/** Our server side on the server's front: echoes every binary message. */
function startEchoFront() {
  const closes: WsCloseInfo[] = [];
  const front = new FrontServer({
    scheme: "http",
    handler: async (req, res) => {
      const c = checkUpgradeRequest(req.method, req.upgrade, req.headers, req.hasBody);
      if ("status" in c) {
        res.head(c.status, c.headers, -1);
        return await res.end();
      }
      res.head(101, [["upgrade", "websocket"], ["sec-websocket-accept", acceptKeyFor(c.key)]], -1);
      const raw = await res.upgrade();
      const ws: WsConn = new WsConn({
        read: (p) => raw.read(p),
        write: (p) => raw.write(p),
        close: () => raw.close(),
      }, {
        role: "server",
        initial: raw.head,
        maxMessage: MAX,
        onMessage: (d) => ws.sendBinary(d.slice()),
      });
      closes.push(await ws.done);
    },
  });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = front.serve(listener);
  return {
    port: (listener.addr as Deno.NetAddr).port,
    closes,
    async close() {
      front.abortAll();
      await front.shutdown();
      await serving;
    },
  };
}

Deno.test("Deno's WebSocket client against our server side: echo, then text is refused (1003)", async () => {
  const srv = startEchoFront();
  try {
    const ws = new WebSocket(`ws://127.0.0.1:${srv.port}/t`);
    ws.binaryType = "arraybuffer";
    const got: Uint8Array[] = [];
    const sizes = [0, 1, 125, 126, 1400, 16 * 1024 + 40, 65535, MAX];
    const sent = sizes.map((n) => crypto.getRandomValues(new Uint8Array(Math.min(n, 65536))));
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => sent.forEach((b) => ws.send(b));
      ws.onerror = () => reject(new Error("websocket error"));
      ws.onmessage = (e) => {
        got.push(new Uint8Array(e.data as ArrayBuffer));
        if (got.length === sent.length) resolve();
      };
    });
    for (let i = 0; i < sent.length; i++) equal(await sha(got[i]!), await sha(sent[i]!));
    const closed = new Promise<CloseEvent>((r) => ws.onclose = r);
    ws.send("text is not for the tunnel");
    const ev = await closed;
    equal(ev.code, 1003);
  } finally {
    await srv.close();
  }
});

Deno.test("npm ws against our server side: ping/pong, a fragmented message, too big (1009)", async () => {
  const srv = startEchoFront();
  try {
    const ws = new WebSocketNode(`ws://127.0.0.1:${srv.port}/t`);
    await new Promise((r, j) => {
      ws.once("open", r);
      ws.once("error", j);
    });
    const pong = new Promise<Buffer>((r) => ws.once("pong", r));
    ws.ping(Buffer.from("hi"));
    equal((await pong).toString(), "hi");
    const echoed = new Promise<Buffer>((r) => ws.once("message", (d: Buffer) => r(d)));
    ws.send(Buffer.from([1, 2, 3]), { binary: true, fin: false });
    ws.send(Buffer.from([4, 5]), { binary: true, fin: true });
    deepEqual([...await echoed], [1, 2, 3, 4, 5]);
    const closed = new Promise<number>((r) => ws.once("close", (code: number) => r(code)));
    ws.send(Buffer.alloc(MAX + 1), { binary: true });
    equal(await closed, 1009);
    equal(srv.closes.at(-1)?.code, 1009);
  } finally {
    await srv.close();
  }
});

Deno.test("a tunnel WebSocket whose peer stops reading: bounded queue, drops counted, memory flat", async () => {
  const endpoint = new WsTunnelEndpoint({ maxQueueBytes: 128 * 1024 });
  let from: Deno.NetAddr | undefined;
  let gotFirst!: () => void;
  const first = new Promise<void>((r) => gotFirst = r);
  // The endpoint as a DtlsServer sees it: one packet socket.
  const socket = endpoint.socket("0.0.0.0", 0, (_d, f) => {
    from = { ...f };
    gotFirst();
  });
  const front = new FrontServer({
    scheme: "http",
    handler: (req, res) => endpoint.upgrade(req, res, req.peer.hostname),
  });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = front.serve(listener);
  const tcp = await Deno.connect({
    hostname: "127.0.0.1",
    port: (listener.addr as Deno.NetAddr).port,
  });
  try {
    const key = newClientKey();
    await connStream(tcp).write(clientUpgradeRequest({
      host: "gateway.test",
      path: TUNNEL_WS_PATH,
      key,
      protocol: TUNNEL_WS_PROTOCOL,
    }));
    const head = await readResponseHead((p) => tcp.read(p));
    checkUpgradeResponse(head, key, TUNNEL_WS_PROTOCOL);
    // One datagram in, so we learn the peer's synthetic address; then this client
    // never reads again.
    await connStream(tcp).write(
      new Uint8Array([0x82, 0x83, 1, 2, 3, 4, 0 ^ 1, 1 ^ 2, 2 ^ 3]),
    );
    await first;
    equal(from!.hostname, "127.0.0.1");
    equal(endpoint.size, 1);

    const datagram = new Uint8Array(16 * 1024).fill(0x5a);
    const total = 12_800; // 200 MiB
    // This isolate's own memory, not the process's RSS: `deno test --parallel` runs other
    // test files in the same process, whose memory moves RSS (+93 MiB seen here).
    const own = () => {
      const m = Deno.memoryUsage();
      return m.heapUsed + m.external;
    };
    const before = own();
    let peak = 0;
    for (let i = 0; i < total; i++) {
      socket.send(datagram, from!);
      if (i % 64 === 63) {
        await new Promise((r) => setTimeout(r, 0));
        peak = Math.max(peak, endpoint.queuedBytes);
      }
    }
    await new Promise((r) => setTimeout(r, 200));
    const grown = own() - before;
    const s = endpoint.stats;
    equal(s.datagramsOut + s.dropped.queueFull, total);
    ok(s.dropped.queueFull > total / 2, `dropped ${s.dropped.queueFull} of ${total}`);
    ok(peak <= 128 * 1024, `queue peaked at ${peak} bytes`);
    ok(grown < 64 * 1024 * 1024, `heap grew ${(grown / 1048576).toFixed(1)} MiB for 200 MiB sent`);
    console.log(
      `stalled peer: ${s.datagramsOut} datagrams taken (socket buffers), ${s.dropped.queueFull} ` +
        `dropped, queue peak ${peak} B, heap and external +${(grown / 1048576).toFixed(1)} MiB`,
    );
  } finally {
    socket.close();
    await socket.done;
    tcp.close();
    front.abortAll();
    await front.shutdown();
    await serving;
  }
});
