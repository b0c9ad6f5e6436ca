/**
 * TLS accept cost: HopGate's `TlsAcceptor` (Deno.listen + our ClientHello read +
 * node:tls on the same socket) beside `Deno.listenTls` with the per-SNI resolver
 * (the previous HTTPS listener), in one run on one machine.
 *
 * The server side of both runs in this process behind the same echo-style
 * protocol; the client is a separate Deno process (Deno.connectTls with the SNI
 * "a.test", chosen out of three certificates), so the CPU time printed is the
 * server's alone:
 *   hs    connect, handshake, 1 byte each way, close (full handshakes, no resumption)
 *   down  the server writes 64 MiB per connection, 4 connections at a time
 *   up    the client writes 64 MiB per connection, 4 connections at a time
 *
 *   deno run -A bench/tls_accept_bench.ts [--seconds 4] [--rounds 3] [--hs-conns 16]
 *     [--modes hs,down,up]
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { createSelfSignedCertificate } from "../server/certs/self_signed.ts";
import type { CertifiedKey } from "../server/front/tls.ts";
import { TlsAcceptor } from "../server/front/tls.ts";

interface Conn {
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  close(): void;
}

type Mode = "hs" | "down" | "up";
const MIB64 = 64 * 1024 * 1024;

/** 'h' → 1 byte back; 'd' u32 → that many bytes back; 'u' u32 → read them, 1 byte back. */
async function serve(c: Conn): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  try {
    let have = 0;
    const fill = async (n: number) => {
      while (have < n) {
        const k = await c.read(buf.subarray(have));
        if (k === null) return false;
        have += k;
      }
      return true;
    };
    if (!await fill(1)) return;
    if (buf[0] === 0x68) {
      await c.write(new Uint8Array([1]));
      return;
    }
    if (!await fill(5)) return;
    const n = new DataView(buf.buffer).getUint32(1);
    if (buf[0] === 0x64) {
      const out = new Uint8Array(64 * 1024).fill(7);
      for (let left = n; left > 0;) {
        left -= await c.write(out.subarray(0, Math.min(left, out.length)));
      }
    } else {
      for (let got = have - 5; got < n;) {
        const k = await c.read(buf);
        if (k === null) return;
        got += k;
      }
      await c.write(new Uint8Array([1]));
    }
  } catch {
    /* client gone */
  } finally {
    try {
      c.close();
    } catch { /* closed */ }
  }
}

interface Target {
  name: string;
  start(certs: Map<string, CertifiedKey>): { port: number; stop(): void };
}

const targets: Target[] = [
  {
    name: "TlsAcceptor",
    start(certs) {
      const a = new TlsAcceptor({
        hostname: "127.0.0.1",
        port: 0,
        lookup: (n) => Promise.resolve(certs.get(n)),
      });
      (async () => {
        for (;;) serve(await a.accept());
      })().catch(() => {});
      return { port: a.addr.port, stop: () => a.close() };
    },
  },
  {
    name: "Deno.listenTls+resolver",
    start(certs) {
      const l = Deno.listenTls(
        {
          hostname: "127.0.0.1",
          port: 0,
          alpnProtocols: ["http/1.1"],
          [Symbol.for("unstableSniResolver")]: (n: string) => {
            const c = certs.get(n);
            return c ? Promise.resolve(c) : Promise.reject(new Error("no certificate"));
          },
        } as unknown as Deno.ListenTlsOptions & Deno.TlsCertifiedKeyPem,
      );
      (async () => {
        for (;;) {
          const c = await l.accept();
          c.handshake().then(() => serve(c), () => c.close());
        }
      })().catch(() => {});
      return { port: (l.addr as Deno.NetAddr).port, stop: () => l.close() };
    },
  },
];

interface Result {
  ok: number;
  fail: number;
  secs: number;
  bytes: number;
}

/** The client side (in its own process). */
async function client(port: number, mode: Mode, conns: number, secs: number, ca: string) {
  const end = performance.now() + secs * 1000;
  const r: Result = { ok: 0, fail: 0, secs: 0, bytes: 0 };
  const one = async () => {
    const c = await Deno.connectTls({
      hostname: "127.0.0.1",
      port,
      caCerts: [ca],
      alpnProtocols: ["http/1.1"],
      [Symbol.for("unstableServerName")]: "a.test",
    } as Deno.ConnectTlsOptions);
    try {
      const buf = new Uint8Array(64 * 1024);
      if (mode === "hs") {
        await c.write(new Uint8Array([0x68]));
        if (await c.read(buf) !== 1) throw new Error("no answer");
        return;
      }
      const cmd = new Uint8Array(5);
      cmd[0] = mode === "down" ? 0x64 : 0x75;
      new DataView(cmd.buffer).setUint32(1, MIB64);
      await c.write(cmd);
      if (mode === "down") {
        for (let got = 0; got < MIB64;) {
          const k = await c.read(buf);
          if (k === null) throw new Error("short");
          got += k;
        }
      } else {
        const out = new Uint8Array(64 * 1024).fill(3);
        for (let left = MIB64; left > 0;) {
          left -= await c.write(out.subarray(0, Math.min(left, out.length)));
        }
        if (await c.read(buf) !== 1) throw new Error("no ack");
      }
      r.bytes += MIB64;
    } finally {
      c.close();
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: conns }, async () => {
    while (performance.now() < end) {
      try {
        await one();
        r.ok++;
      } catch {
        r.fail++;
      }
    }
  }));
  r.secs = (performance.now() - t0) / 1000;
  console.log(JSON.stringify(r));
}

interface Measure {
  perSec: number;
  mbPerSec: number;
  /** Server CPU: µs per handshake (hs) or per MiB (down, up). */
  cpu: number;
  fail: number;
}

async function measure(
  port: number,
  mode: Mode,
  conns: number,
  secs: number,
  ca: string,
): Promise<Measure> {
  const before = process.cpuUsage();
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--no-check",
      new URL(import.meta.url).pathname,
      "--client",
      JSON.stringify({ port, mode, conns, secs, ca }),
    ],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const used = process.cpuUsage(before);
  const r = JSON.parse(new TextDecoder().decode(out.stdout)) as Result;
  const cpuUs = used.user + used.system;
  const mib = r.bytes / (1024 * 1024);
  return {
    perSec: r.ok / r.secs,
    mbPerSec: mib / r.secs,
    cpu: mode === "hs" ? cpuUs / Math.max(1, r.ok) : cpuUs / Math.max(1, mib),
    fail: r.fail,
  };
}

export async function main(args: string[] = Deno.args): Promise<void> {
  if (args[0] === "--client") {
    const o = JSON.parse(args[1]!);
    await client(o.port, o.mode, o.conns, o.secs, o.ca);
    return;
  }
  const { values } = parseArgs({
    args,
    options: {
      seconds: { type: "string", default: "4" },
      rounds: { type: "string", default: "3" },
      "hs-conns": { type: "string", default: "16" },
      modes: { type: "string", default: "hs,down,up" },
    },
  });
  const secs = Number(values.seconds);
  const certs = new Map<string, CertifiedKey>();
  for (const n of ["a.test", "b.test", "c.test"]) {
    certs.set(n, await createSelfSignedCertificate([n]));
  }
  const ca = certs.get("a.test")!.cert;
  const wanted = new Set(values.modes.split(","));
  const modes = ([["hs", Number(values["hs-conns"])], ["down", 4], ["up", 4]] as [Mode, number][])
    .filter(([m]) => wanted.has(m));
  const results = new Map<string, Measure[]>();
  for (let round = 0; round < Number(values.rounds); round++) {
    for (const [mode, conns] of modes) {
      for (const t of targets) {
        const s = t.start(certs);
        const m = await measure(s.port, mode, conns, secs, ca);
        s.stop();
        const key = `${mode}\t${t.name}`;
        results.set(key, [...results.get(key) ?? [], m]);
        console.error(
          `round ${round + 1} ${mode.padEnd(4)} ${t.name.padEnd(24)} ` +
            (mode === "hs"
              ? `${m.perSec.toFixed(0)} handshakes/s, ${m.cpu.toFixed(0)} µs CPU each`
              : `${m.mbPerSec.toFixed(0)} MiB/s, ${m.cpu.toFixed(0)} µs CPU per MiB`) +
            (m.fail ? `, ${m.fail} failed` : ""),
        );
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }
  const median = (xs: number[]) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  console.log(
    "\nmode  target                    rate            server CPU        vs Deno.listenTls (rate, CPU)",
  );
  for (const [mode] of modes) {
    const get = (name: string) => {
      const ms = results.get(`${mode}\t${name}`)!;
      return {
        rate: median(ms.map((m) => mode === "hs" ? m.perSec : m.mbPerSec)),
        cpu: median(ms.map((m) => m.cpu)),
      };
    };
    const base = get("Deno.listenTls+resolver");
    for (const t of targets) {
      const v = get(t.name);
      const unit = mode === "hs" ? "hs/s " : "MiB/s";
      const cpuUnit = mode === "hs" ? "µs/hs " : "µs/MiB";
      console.log(
        `${mode.padEnd(5)} ${t.name.padEnd(25)} ${v.rate.toFixed(0).padStart(6)} ${unit}   ` +
          `${v.cpu.toFixed(0).padStart(6)} ${cpuUnit}   ` +
          `${(v.rate / base.rate).toFixed(2)}x, ${(v.cpu / base.cpu).toFixed(2)}x`,
      );
    }
  }
  console.log(
    "\n(the client runs on the same cores: handshakes/s is mostly the client's limit;" +
      " the server CPU columns are the comparison)",
  );
}

if (import.meta.main) await main();
