/**
 * Mux benchmark: goodput of 1 and 10 concurrent streams over the in-memory link,
 * plain UDP and DTLS (both suites) at 1200-byte and 16 KiB datagrams, at 0 % and
 * 1 % loss, and p50/p99 of a 1-byte request/response on an open session.
 *
 * Run: deno run --allow-net=127.0.0.1 --allow-read --allow-env bench/mux_bench.ts [--quick]
 * (--unstable-net comes from deno.json). `main()` is also called by bench/main.ts.
 * Pick rows (for profiling): --transport=udp,memory --mds=1200 --streams=1 --loss=0
 * --no-latency; --mb=N sets MiB per run; --repeat=N runs each row N times (the first run of a
 * row pays for JIT warm-up); --params='{"pmtudBaseBytes":1200}' overrides mux params on both ends.
 * Both ends run on this process's one JS thread, so a row's figure is the sum of sender's and
 * receiver's cost. "cpu ms/MB" is the whole process's CPU (user + system, every thread) per 10^6
 * bytes delivered: steadier than MB/s when other work shares the machine.
 */
import process from "node:process";
import { realClock } from "../shared/mux/clock.ts";
import type { DatagramConn } from "../shared/datagram.ts";
import type { MuxParams } from "../shared/mux/params.ts";
import { MuxSession } from "../shared/mux/session.ts";
import type { MuxStream } from "../shared/mux/stream.ts";
import { createLinkPair } from "../shared/mux/testing/lossy_link.ts";
import { createUdpPair } from "../shared/mux/testing/udp_pair.ts";
import { createDtlsPair, DTLS_SUITES } from "../shared/mux/testing/dtls_pair.ts";
import { prng } from "../shared/mux/testing/fake_clock.ts";

interface Transport {
  name: string;
  make(
    mds: number,
    loss: number,
  ): Promise<{ a: DatagramConn; b: DatagramConn; close(): Promise<void> }>;
}

/** Wraps a conn, dropping a seeded fraction of sent datagrams. */
function lossy(c: DatagramConn, loss: number, seed: number): DatagramConn {
  if (loss === 0) return c;
  const r = prng(seed);
  return {
    get maxDatagramSize() {
      return c.maxDatagramSize;
    },
    get closed() {
      return c.closed;
    },
    get sendCopies() {
      return c.sendCopies === true;
    },
    send: (d) => {
      if (r() >= loss) c.send(d);
    },
    attach: (h) => c.attach(h),
    close: (reason) => c.close(reason),
  };
}

const transports: Transport[] = [
  {
    name: "memory",
    make: (mds, loss) => {
      const l = createLinkPair({ clock: realClock, immediate: true, mtu: mds, loss, seed: 3 });
      return Promise.resolve({ a: l.a, b: l.b, close: () => Promise.resolve() });
    },
  },
  {
    name: "udp",
    make: (mds, loss) => {
      const u = createUdpPair({ maxDatagramSize: mds, loss, seed: 3 });
      return Promise.resolve({ a: u.a, b: u.b, close: u.close });
    },
  },
  ...DTLS_SUITES.map((suite): Transport => ({
    name: suite.includes("CHACHA") ? "dtls-chacha20" : "dtls-aes128gcm",
    make: async (mds, loss) => {
      const d = await createDtlsPair({ suite, maxDatagramSize: mds });
      return { a: lossy(d.a, loss, 3), b: lossy(d.b, loss, 4), close: d.close };
    },
  })),
];

let params: Partial<MuxParams> = {};

async function pair(t: Transport, mds: number, loss: number) {
  const conns = await t.make(mds, loss);
  const client = new MuxSession(conns.a, { role: "client", params });
  const server = new MuxSession(conns.b, { role: "server", params });
  return {
    client,
    server,
    async close() {
      client.abort(0, "bench done");
      server.abort(0, "bench done");
      await conns.close();
    },
  };
}

async function sink(s: MuxStream): Promise<number> {
  let n = 0;
  for await (const c of s.readable) n += c.length;
  return n;
}

/** Goodput in MB/s (10^6 bytes) of `streams` streams moving `total` bytes client → server. */
async function goodput(t: Transport, mds: number, loss: number, streams: number, total: number) {
  const p = await pair(t, mds, loss);
  try {
    const per = Math.floor(total / streams);
    const chunk = new Uint8Array(64 * 1024).fill(7);
    const received: Promise<number>[] = [];
    const accepting = (async () => {
      for (let i = 0; i < streams; i++) {
        const s = await p.server.acceptStream();
        if (s === null) return;
        received.push(sink(s));
      }
    })();
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    const writers: Promise<void>[] = [];
    for (let i = 0; i < streams; i++) {
      const s = p.client.openStream();
      writers.push((async () => {
        const w = s.writable.getWriter();
        for (let sent = 0; sent < per; sent += chunk.length) {
          await w.write(chunk.subarray(0, Math.min(chunk.length, per - sent)));
        }
        await w.close();
      })());
    }
    await Promise.all(writers);
    await accepting;
    const got = (await Promise.all(received)).reduce((a, b) => a + b, 0);
    const secs = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(c0);
    if (got !== per * streams) throw new Error(`got ${got} of ${per * streams} bytes`);
    const st = p.client.stats;
    return {
      mbps: got / secs / 1e6,
      /** Process CPU (user + system) in ms per 10^6 bytes delivered. */
      cpuMsPerMb: (cpu.user + cpu.system) / 1000 / (got / 1e6),
      lost: st.packetsLost,
      spurious: st.spuriousLosses,
      sent: st.packetsSent,
      pps: st.packetsSent / secs,
      /** Packets the receiver sent back (ACKs, window updates) per data packet. */
      back: p.server.stats.packetsSent / st.packetsSent,
    };
  } finally {
    await p.close();
  }
}

async function latency(t: Transport, n: number) {
  const p = await pair(t, 1200, 0);
  try {
    const serving = (async () => {
      for (;;) {
        const s = await p.server.acceptStream();
        if (s === null) return;
        s.readable.pipeTo(s.writable).catch(() => {});
      }
    })();
    const one = new Uint8Array([42]);
    const times: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      const s = p.client.openStream();
      const w = s.writable.getWriter();
      void w.write(one);
      void w.close();
      await sink(s);
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    await p.close();
    await serving;
    const q = (f: number) => times[Math.min(times.length - 1, Math.floor(f * times.length))]!;
    return { p50: q(0.5), p99: q(0.99) };
  } finally {
    await p.close();
  }
}

/** Values of `--name=a,b` (undefined if absent: no filter). */
function listArg(args: string[], name: string): string[] | undefined {
  const a = args.find((x) => x.startsWith(`--${name}=`));
  return a === undefined ? undefined : a.slice(name.length + 3).split(",");
}

export async function main(args: string[] = []): Promise<void> {
  const quick = args.includes("--quick");
  const pa = args.find((x) => x.startsWith("--params="));
  params = pa === undefined ? {} : JSON.parse(pa.slice("--params=".length));
  const only = (name: string, v: string | number) => {
    const l = listArg(args, name);
    return l === undefined || l.includes(String(v));
  };
  const mb = 1024 * 1024;
  const mbArg = listArg(args, "mb");
  const repeat = Number(listArg(args, "repeat")?.[0] ?? 1);
  const total = mbArg !== undefined ? Number(mbArg[0]) * mb : quick ? 8 * mb : 32 * mb;
  console.log(`mux goodput (MB/s = 10^6 B/s), ${total / mb} MiB per run`);
  console.log(
    "transport        datagram  streams  loss   MB/s  cpu ms/MB   pkts/s   lost  back/pkt  spurious",
  );
  for (const t of transports) {
    if (!only("transport", t.name)) continue;
    for (const mds of [1200, 16384]) {
      if (!only("mds", mds)) continue;
      for (const streams of [1, 10]) {
        if (!only("streams", streams)) continue;
        for (const loss of [0, 0.01]) {
          if (loss > 0 && streams > 1) continue;
          if (!only("loss", loss * 100)) continue;
          try {
            for (let i = 0; i < repeat; i++) {
              const r = await goodput(t, mds, loss, streams, total);
              console.log(
                `${t.name.padEnd(16)} ${String(mds).padStart(8)} ${String(streams).padStart(8)} ${
                  (loss * 100).toFixed(0).padStart(4)
                }% ${r.mbps.toFixed(1).padStart(6)} ${r.cpuMsPerMb.toFixed(1).padStart(10)} ${
                  r.pps.toFixed(0).padStart(8)
                } ${String(r.lost).padStart(6)} ${r.back.toFixed(2).padStart(9)} ${
                  String(r.spurious).padStart(9)
                }`,
              );
            }
          } catch (e) {
            console.log(
              `${t.name.padEnd(16)} ${String(mds).padStart(8)} ${streams} ${loss}: failed: ${e}`,
            );
          }
        }
      }
    }
  }
  if (args.includes("--no-latency")) return;
  console.log(
    "\n1-byte request/response on an open session (new stream each), 1200-byte datagrams",
  );
  console.log("transport        p50 ms   p99 ms");
  for (const t of transports) {
    if (!only("transport", t.name)) continue;
    const r = await latency(t, quick ? 300 : 2000);
    console.log(
      `${t.name.padEnd(16)} ${r.p50.toFixed(3).padStart(7)} ${r.p99.toFixed(3).padStart(8)}`,
    );
  }
}

if (import.meta.main) await main(Deno.args);
