/**
 * One node's capacity for idle tunnels (docs/operations.md, "Capacity of one node"):
 * a real server process on PostgreSQL, N tunnels opened with the client's own code
 * (`runClient` over our DTLS, one UDP socket each, spread over many loopback source
 * addresses as real clients are: the server budgets ClientHellos per address) from
 * `--holders` client processes (one process could not hold 10,000), at `--open-rate`
 * new tunnels a second. Then, over an idle window, the server's CPU (utime + stime
 * from /proc/<pid>/stat, in % of one core), its datagram rate
 * (`hopgate_tunnel_packets_total`) and its memory (VmRSS, VmHWM from
 * /proc/<pid>/status, and RSS per tunnel over the server before any tunnel). Then the
 * server is killed (SIGKILL) and started again on the same ports and database, and the
 * bench times how long until all N are back. Prints figures; nothing passes or fails.
 *
 *   deno run -A bench/idle_tunnels.ts --tunnels 1000,10000 --base /tmp/cap-base
 *
 * `--base DIR` is another checkout (`git worktree add /tmp/cap-base <commit>`): this
 * file is copied into it and run there first, so the baseline is measured in the same
 * run, on the same machine, by the same bench. Without it, only this tree is measured.
 * Each measurement runs in a process of its own (`--json` prints its figures as JSON);
 * the holders are this file with `--hold`.
 * Other flags: `--idle-seconds 30`, `--settle-seconds 30` (wait before the idle window),
 * `--per-address 8` (tunnels per source address), `--holders 4`, `--open-rate 200`,
 * `--client-nice 19` (the holders yield the CPU to the server, which on a machine of its
 * own would not share it with 10,000 clients), `--keepalive-ms` (the clients' keepalive
 * interval; default theirs), `--server-flags '--v8-flags=--perf-basic-prof'` (extra deno
 * flags for the server, to profile it), `--restart-timeout 180` (seconds to wait for all
 * tunnels back), `--restart-signal SIGTERM` (a graceful stop: the server closes every
 * tunnel at once; default SIGKILL, a crash), `--no-restart` (after the idle window the
 * clients stop, then the server gracefully: with `--server-flags '--cpu-prof
 * --cpu-prof-dir=DIR'` that profiles opening the tunnels).
 * `--holder-flags '--cpu-prof --cpu-prof-dir=DIR'` (extra deno flags for the holders),
 * `--server-max-datagram 1215` (the server's HOP_TUNNEL_MAX_DATAGRAM_BYTES, as for clients
 * across the internet; 0: its loopback default, 16 KiB).
 * It also prints the CPU each tunnel cost while opening, on the server and the clients, and
 * what the restarted server's DTLS counters say of the crowd (stateless resets, hellos
 * dropped, handshakes evicted) with the machine's `Udp: RcvbufErrors` over the restart.
 */
import { runClient } from "../client/connector.ts";
import { dtlsDialer } from "../client/dialer.ts";
import { bindUdp } from "../shared/dtls/udp.ts";
import { curl, ROOT, startServerProc } from "../tests/helpers/procs.ts";
import { metric } from "../tests/helpers/attack.ts";

const arg = (name: string, fallback: string) => {
  const i = Deno.args.indexOf(name);
  return i >= 0 && Deno.args[i + 1] !== undefined ? Deno.args[i + 1]! : fallback;
};
const IDLE_SECONDS = Number(arg("--idle-seconds", "30"));
/** The server keeps at most 16 handshakes in progress per address: stay under it. */
const PER_ADDRESS = Number(arg("--per-address", "8"));
const RESTART_TIMEOUT_S = Number(arg("--restart-timeout", "180"));
/** Before the idle window: the garbage of opening the tunnels is collected meanwhile. */
const SETTLE_SECONDS = Number(arg("--settle-seconds", "30"));
/** SIGKILL: a crash (clients notice by their keepalives); SIGTERM: it closes every tunnel. */
const RESTART_SIGNAL = arg("--restart-signal", "SIGKILL") as "SIGKILL" | "SIGTERM";
/** Tunnels per registered domain (the server's per-domain cap is raised above it). */
const PER_DOMAIN = 50;
/** Client processes holding the tunnels (one process could not hold 10,000). */
const HOLDERS = Number(arg("--holders", "4"));
/** The holders' niceness (0: compete with the server for the CPU as equals). */
const CLIENT_NICE = Number(arg("--client-nice", "19"));
/** New tunnels per second while the bench fills the node (clients arriving over a while). */
const OPEN_RATE = Number(arg("--open-rate", "200"));
/** The clients' keepalive interval (default: the client's own). */
const KEEPALIVE_MS = Number(arg("--keepalive-ms", "0"));
/** Extra deno flags for the holder processes (e.g. `--cpu-prof --cpu-prof-dir=DIR`). */
const HOLDER_FLAGS = arg("--holder-flags", "");
/** The server's datagram ceiling (HOP_TUNNEL_MAX_DATAGRAM_BYTES); 0: its loopback default. */
const SERVER_MAX_DATAGRAM = Number(arg("--server-max-datagram", "1215"));
/** Skip the restart: stop the clients, then the server gracefully (SIGTERM), e.g. to profile it. */
const NO_RESTART = Deno.args.includes("--no-restart");
/** Extra deno flags for the server process, e.g. `--server-flags --cpu-prof`. */
const SERVER_FLAGS = arg("--server-flags", "").split(" ").filter((f) => f !== "");

/** What one measurement reports. */
interface Figures {
  tunnels: number;
  openSeconds: number;
  idleSeconds: number;
  cpuPercent: number;
  packetsPerSecond: number;
  rssBeforeMiB: number;
  rssMiB: number;
  hwmMiB: number;
  rssPerTunnelKiB: number;
  upAtEndOfIdle: number;
  serverRestartSeconds: number;
  allDownSeconds: number | null;
  allBackSeconds: number | null;
  backAtTimeout: number;
  failuresByKind: Record<string, number>;
  restartCpuPercent: number;
  /** CPU per tunnel while opening them (utime + stime over the tunnels opened). */
  openServerMsPerTunnel: number;
  openClientMsPerTunnel: number;
  /** CPU of the server and of all holders from the kill until all were back (or timeout). */
  restartServerCpuSeconds: number;
  restartClientCpuSeconds: number;
  /**
   * What the restarted server counted by the end of the restart window (how the crowd
   * was let in) and the machine's `Udp: RcvbufErrors` over that window.
   */
  restartCounters: Record<string, number>;
}

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

/** utime + stime of `pid`, in clock ticks. */
function cpuTicks(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // The command name may hold spaces: the fields are counted after its closing ")".
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(f[11]) + Number(f[12]); // fields 14 and 15 of proc(5)
}

/** VmRSS and VmHWM of `pid`, in MiB. */
function memory(pid: number): { rss: number; hwm: number } {
  const s = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kib = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(s)?.[1] ?? NaN);
  return { rss: kib("VmRSS") / 1024, hwm: kib("VmHWM") / 1024 };
}

/** The server's /metrics text (it answers on the server domain). */
async function metricsText(httpPort: number): Promise<string> {
  const r = await curl(["-s", "-H", "Host: gateway.test", `http://127.0.0.1:${httpPort}/metrics`]);
  return r.body;
}

/** hopgate_tunnel_packets_total, both directions. */
async function packetsTotal(httpPort: number): Promise<number> {
  return metric(await metricsText(httpPort), "hopgate_tunnel_packets_total");
}

/** The server's DTLS admission counters, by "metric{labels}", those not zero. */
async function admissionCounters(httpPort: number): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  const re =
    /^hopgate_dtls_(stateless_resets_total|handshakes_evicted_total|dropped_records_total|handshakes_total)(\{[^}]*\})? (\S+)$/gm;
  for (const m of (await metricsText(httpPort)).matchAll(re)) {
    const v = Number(m[3]);
    if (v !== 0) out[`${m[1]}${m[2] ?? ""}`] = v;
  }
  return out;
}

/** The machine's `Udp: RcvbufErrors` (/proc/net/snmp): datagrams dropped at a full socket. */
function rcvbufErrors(): number {
  const lines = Deno.readTextFileSync("/proc/net/snmp").split("\n").filter((l) =>
    l.startsWith("Udp:")
  );
  const names = lines[0]!.split(/\s+/), values = lines[1]!.split(/\s+/);
  return Number(values[names.indexOf("RcvbufErrors")]);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The n-th source address: `perAddress` tunnels each, all in 127.0.0.0/8. */
function sourceAddress(i: number): string {
  const a = Math.floor(i / PER_ADDRESS);
  return `127.20.${Math.floor(a / 200)}.${(a % 200) + 1}`;
}

/** One tunnel a holder opens. */
interface Slot {
  i: number;
  domain: string;
  apiKey: string;
  from: string;
}

/** What a holder reports on each line of its standard output. */
interface HolderReport {
  up: number;
  /** Tunnels that went down since the last "mark" line on standard input. */
  wentDown: number;
  failures: Record<string, number>;
  reasons: Record<string, number>;
}

/**
 * A holder process (`--hold`): reads `{port, slots}` as its first line of standard
 * input, opens one tunnel per slot with the client's own code, and prints a
 * HolderReport line every 250 ms. "mark" on standard input starts counting tunnels
 * that go down and clears the failure counts; "open N" opens the next N slots.
 */
async function hold(): Promise<void> {
  const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  const nextLine = async (): Promise<string | null> => {
    while (!buf.includes("\n")) {
      const r = await lines.read();
      if (r.done) return null;
      buf += r.value;
    }
    const k = buf.indexOf("\n");
    const line = buf.slice(0, k);
    buf = buf.slice(k + 1);
    return line;
  };
  const first = await nextLine();
  if (first === null) return;
  const { port, slots } = JSON.parse(first) as { port: number; slots: Slot[] };
  const target = { hostname: "127.0.0.1", port };
  const up = new Set<number>();
  const wentDown = new Set<number>();
  let marked = false;
  const failures: Record<string, number> = {};
  const reasons: Record<string, number> = {};
  // One controller per tunnel, as each real client process has its own: thousands of
  // listeners on one shared signal made every add/removeEventListener a scan of them all
  // (7 % of a holder's CPU while opening), a cost no real client pays.
  const controllers: AbortController[] = [];
  let opened = 0;
  const open = async (count: number) => {
    const gapMs = 1000 / (OPEN_RATE / HOLDERS);
    for (const slot of slots.slice(opened, opened + count)) {
      opened++;
      await sleep(gapMs);
      const { i, domain, apiKey, from } = slot;
      const ac = new AbortController();
      controllers.push(ac);
      runClient({
        server: target,
        domain,
        apiKey,
        target: new URL("http://127.0.0.1:9"),
        dialer: dtlsDialer({
          server: target,
          domain,
          apiKey,
          socket: (_host, p, handler) => bindUdp(from, p, handler),
          // What a client across the internet uses (a 1280-byte MTU), not loopback's
          // 16 KiB: the sessions' buffers are sized by it, on both ends.
          maxDatagramSize: 1215,
        }),
        statsIntervalMs: 1_000_000_000,
        drainTimeoutMs: 1000,
        ...(KEEPALIVE_MS ? { muxParams: { keepAliveIntervalMs: KEEPALIVE_MS } } : {}),
        onEvent: (e) => {
          if (e.type === "connected") up.add(i);
          else if (e.type === "disconnected") {
            up.delete(i);
            if (marked) wentDown.add(i);
          } else if (e.type === "failure") {
            failures[e.kind] = (failures[e.kind] ?? 0) + 1;
            // Why, with addresses and numbers masked: a handful of distinct lines.
            const why = e.message.replace(/[\d.:]+/g, "#");
            reasons[why] = (reasons[why] ?? 0) + 1;
          }
        },
      }, ac.signal);
    }
  };
  const enc = new TextEncoder();
  const report = setInterval(() => {
    const r: HolderReport = { up: up.size, wentDown: wentDown.size, failures, reasons };
    Deno.stdout.writeSync(enc.encode(JSON.stringify(r) + "\n"));
  }, 250);
  for (;;) {
    const line = await nextLine();
    if (line === null) break;
    if (line === "mark") {
      marked = true;
      for (const k of Object.keys(failures)) delete failures[k];
    } else if (line.startsWith("open ")) void open(Number(line.slice(5)));
  }
  clearInterval(report);
  for (const ac of controllers) ac.abort();
  Deno.exit(0);
}

/** A holder process seen from the bench: its latest report, and lines to send it. */
class Holder {
  readonly child: Deno.ChildProcess;
  last: HolderReport = { up: 0, wentDown: 0, failures: {}, reasons: {} };
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #done: Promise<void>;

  constructor(port: number, slots: Slot[]) {
    const cmd = `ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; ` +
      // The clients yield the CPU to the server (nice 19): on a machine of its own the
      // server would have its cores to itself, and here the clients share them.
      `exec nice -n ${CLIENT_NICE} "${Deno.execPath()}" run -A ${HOLDER_FLAGS} --config ${ROOT}/deno.json ${ROOT}/bench/idle_tunnels.ts --hold --keepalive-ms ${KEEPALIVE_MS} --holders ${HOLDERS} --open-rate ${OPEN_RATE}`;
    const child = new Deno.Command("bash", {
      args: ["-c", cmd],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.child = child;
    this.#writer = this.child.stdin.getWriter();
    this.send(JSON.stringify({ port, slots }));
    this.#done = (async () => {
      let buf = "";
      for await (const text of child.stdout.pipeThrough(new TextDecoderStream())) {
        buf += text;
        const k = buf.lastIndexOf("\n");
        if (k < 0) continue;
        const lines = buf.slice(0, k).split("\n");
        buf = buf.slice(k + 1);
        try {
          this.last = JSON.parse(lines.at(-1)!) as HolderReport;
        } catch { /* a partial line */ }
      }
    })();
  }

  send(line: string): void {
    this.#writer.write(new TextEncoder().encode(line + "\n")).catch(() => {});
  }

  async stop(): Promise<void> {
    await this.#writer.close().catch(() => {});
    const t = setTimeout(() => {
      try {
        this.child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 30_000);
    await this.child.status;
    clearTimeout(t);
    await this.#done.catch(() => {});
  }
}

async function measure(n: number): Promise<Figures> {
  const domains = Math.ceil(n / PER_DOMAIN);
  const server = await startServerProc({
    HOP_SERVER_MAX_TUNNELS_PER_DOMAIN: String(PER_DOMAIN * 2),
    // Its clients are "across the internet" (1,215-byte datagrams, as theirs): on loopback
    // the server would otherwise probe every new tunnel's path up to 16 KiB.
    ...(SERVER_MAX_DATAGRAM ? { HOP_TUNNEL_MAX_DATAGRAM_BYTES: String(SERVER_MAX_DATAGRAM) } : {}),
  }, { flags: SERVER_FLAGS });
  const pid = () => server.proc.child.pid;
  const holders: Holder[] = [];
  const sum = () => {
    let up = 0, wentDown = 0;
    const failures: Record<string, number> = {};
    const reasons: Record<string, number> = {};
    for (const h of holders) {
      up += h.last.up;
      wentDown += h.last.wentDown;
      for (const [k, v] of Object.entries(h.last.failures)) failures[k] = (failures[k] ?? 0) + v;
      for (const [k, v] of Object.entries(h.last.reasons)) reasons[k] = (reasons[k] ?? 0) + v;
    }
    return { up, wentDown, failures, reasons };
  };
  try {
    const keys: string[] = [];
    for (let d = 0; d < domains; d += 10) {
      const batch = Array.from({ length: Math.min(10, domains - d) }, (_, k) => d + k);
      keys.push(...await Promise.all(batch.map((k) => server.register(`t${k}.idle.test`))));
    }
    await sleep(1000);
    const before = memory(pid());
    // Tunnel i lives in holder i % HOLDERS, so every batch is spread over all of them.
    const perHolder: Slot[][] = Array.from({ length: HOLDERS }, () => []);
    for (let i = 0; i < n; i++) {
      const d = Math.floor(i / PER_DOMAIN);
      perHolder[i % HOLDERS]!.push({
        i,
        domain: `t${d}.idle.test`,
        apiKey: keys[d]!,
        from: sourceAddress(i),
      });
    }
    for (const slots of perHolder) holders.push(new Holder(server.dtlsPort, slots));
    const holderTicks = () => holders.reduce((t, h) => t + cpuTicks(h.child.pid), 0);
    const oc0 = cpuTicks(pid()), oh0 = holderTicks();
    const t0 = performance.now();
    // Each holder opens its share at OPEN_RATE / HOLDERS per second.
    for (let h = 0; h < HOLDERS; h++) holders[h]!.send(`open ${perHolder[h]!.length}`);
    const openBy = performance.now() + (n / OPEN_RATE) * 1000 + 120_000;
    let shown = 0;
    while (sum().up < n && performance.now() < openBy) {
      await sleep(200);
      const s = sum();
      if (s.up >= shown + 2000 || s.up === n) {
        shown = s.up - (s.up % 2000);
        for (const [why, k] of Object.entries(s.reasons)) console.error(`#   ${k} x ${why}`);
        console.error(
          `# ${s.up} up after ${((performance.now() - t0) / 1000).toFixed(1)} s, ` +
            `failures ${JSON.stringify(s.failures)}`,
        );
      }
    }
    if (sum().up < n) {
      throw new Error(
        `only ${sum().up} of ${n} tunnels came up; failures ${JSON.stringify(sum().failures)}`,
      );
    }
    const openSeconds = (performance.now() - t0) / 1000;
    const msPerTunnel = (ticks: number) => ticks / TICKS_PER_SECOND * 1000 / n;
    const openServerMsPerTunnel = msPerTunnel(cpuTicks(pid()) - oc0);
    const openClientMsPerTunnel = msPerTunnel(holderTicks() - oh0);
    console.error(
      `# opening: ${openServerMsPerTunnel.toFixed(2)} ms server CPU and ` +
        `${openClientMsPerTunnel.toFixed(2)} ms client CPU per tunnel`,
    );
    console.error(`# ${n} tunnels up in ${openSeconds.toFixed(1)} s; settling`);
    await sleep(SETTLE_SECONDS * 1000);

    // The idle window.
    const c0 = cpuTicks(pid());
    const p0 = await packetsTotal(server.httpPort);
    const w0 = performance.now();
    await sleep(IDLE_SECONDS * 1000);
    const c1 = cpuTicks(pid());
    const p1 = await packetsTotal(server.httpPort);
    const idleSeconds = (performance.now() - w0) / 1000;
    const mem = memory(pid());
    const upAtEndOfIdle = sum().up;
    if (NO_RESTART) {
      await Promise.all(holders.map((h) => h.stop()));
      await server.proc.stop("SIGTERM");
      throw new Error("--no-restart: stopped after the idle window");
    }
    for (const h of holders) h.send("mark");
    await sleep(500);
    console.error(`# idle window done; stopping the server (${RESTART_SIGNAL})`);

    // Kill the node, start it again, time until every tunnel is back.
    const k0 = performance.now();
    await server.proc.stop(RESTART_SIGNAL);
    await server.restart();
    const serverRestartSeconds = (performance.now() - k0) / 1000;
    const rc0 = cpuTicks(pid()), rh0 = holderTicks(), drops0 = rcvbufErrors();
    let allDown: number | null = null;
    let allBack: number | null = null;
    const end = k0 + RESTART_TIMEOUT_S * 1000;
    // Every tunnel must have gone down (its client noticed) and come back.
    while (performance.now() < end) {
      const s = sum();
      if (allDown === null && s.wentDown === n) allDown = (performance.now() - k0) / 1000;
      if (allDown !== null && s.up === n) {
        allBack = (performance.now() - k0) / 1000;
        break;
      }
      await sleep(100);
      const t = performance.now() - k0;
      if (Math.floor(t / 5000) !== Math.floor((t - 100) / 5000)) {
        console.error(
          `# ${(t / 1000).toFixed(0)} s after the kill: ${s.wentDown} went down, ` +
            `${s.up} up, failures ${JSON.stringify(s.failures)}`,
        );
      }
    }
    // Why the clients' tunnels ended and their attempts failed (since the start).
    for (const [why, k] of Object.entries(sum().reasons)) console.error(`#   ${k} x ${why}`);
    const restartServerCpuSeconds = (cpuTicks(pid()) - rc0) / TICKS_PER_SECOND;
    const restartClientCpuSeconds = (holderTicks() - rh0) / TICKS_PER_SECOND;
    const restartCounters = {
      ...await admissionCounters(server.httpPort),
      "Udp: RcvbufErrors (machine)": rcvbufErrors() - drops0,
    };
    const restartCpuPercent = restartServerCpuSeconds /
      ((performance.now() - k0) / 1000 - serverRestartSeconds) * 100;
    return {
      tunnels: n,
      openSeconds,
      idleSeconds,
      cpuPercent: (c1 - c0) / TICKS_PER_SECOND / idleSeconds * 100,
      packetsPerSecond: (p1 - p0) / idleSeconds,
      rssBeforeMiB: before.rss,
      rssMiB: mem.rss,
      hwmMiB: mem.hwm,
      rssPerTunnelKiB: (mem.rss - before.rss) * 1024 / n,
      upAtEndOfIdle,
      serverRestartSeconds,
      allDownSeconds: allDown,
      allBackSeconds: allBack,
      backAtTimeout: sum().up,
      failuresByKind: { ...sum().failures },
      restartCpuPercent,
      openServerMsPerTunnel,
      openClientMsPerTunnel,
      restartServerCpuSeconds,
      restartClientCpuSeconds,
      restartCounters,
    };
  } catch (e) {
    // What the server said last: why it stopped answering.
    console.error(`# server output, last lines:\n${server.proc.output.slice(-4000)}`);
    throw e;
  } finally {
    await server.proc.stop("SIGKILL");
    await Promise.all(holders.map((h) => h.stop()));
    await server.stop();
  }
}

/** Runs this bench in `root` (a checkout holding bench/idle_tunnels.ts) for `n` tunnels. */
async function child(root: string, n: number): Promise<Figures | string> {
  // -A: Deno reads /proc/<pid>/status only with every permission.
  const flags = "-A";
  // One UDP socket per tunnel: as many descriptors as the hard limit allows.
  const cmd = `ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; ` +
    `exec deno run ${flags} --config ${root}/deno.json ` +
    `${root}/bench/idle_tunnels.ts --json --tunnels ${n} --idle-seconds ${IDLE_SECONDS} ` +
    `--per-address ${PER_ADDRESS} --restart-timeout ${RESTART_TIMEOUT_S} ` +
    `--settle-seconds ${SETTLE_SECONDS} --holders ${HOLDERS} --keepalive-ms ${KEEPALIVE_MS} ` +
    `--open-rate ${OPEN_RATE} --client-nice ${CLIENT_NICE} ` +
    (SERVER_FLAGS.length ? `--server-flags '${SERVER_FLAGS.join(" ")}' ` : "") +
    `--restart-signal ${RESTART_SIGNAL} --server-max-datagram ${SERVER_MAX_DATAGRAM}` +
    (NO_RESTART ? " --no-restart" : "") +
    (HOLDER_FLAGS ? ` --holder-flags '${HOLDER_FLAGS}'` : "");
  const out = await new Deno.Command("bash", {
    args: ["-c", cmd],
    cwd: root,
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  const line = text.split("\n").at(-1) ?? "";
  try {
    return JSON.parse(line) as Figures;
  } catch {
    return `failed (exit ${out.code}): ${text.slice(-300)}`;
  }
}

function row(label: string, f: Figures | string): string {
  if (typeof f === "string") return `${label.padEnd(10)} ${f}`;
  const s = (x: number | null) => x === null ? "not all" : `${x.toFixed(1)} s`;
  return [
    label.padEnd(10),
    `cpu ${f.cpuPercent.toFixed(1)} % of a core`,
    `${f.packetsPerSecond.toFixed(0)} packets/s`,
    `rss ${f.rssMiB.toFixed(0)} MiB (hwm ${f.hwmMiB.toFixed(0)}, ` +
    `${f.rssPerTunnelKiB.toFixed(0)} KiB/tunnel)`,
    `up ${f.upAtEndOfIdle}/${f.tunnels} after ${f.idleSeconds.toFixed(0)} s idle`,
    `restart: server up in ${f.serverRestartSeconds.toFixed(1)} s, all down ${
      s(f.allDownSeconds)
    }, all back ${s(f.allBackSeconds)} (${f.backAtTimeout}/${f.tunnels}), ` +
    `cpu ${f.restartCpuPercent.toFixed(0)} % (${f.restartServerCpuSeconds.toFixed(1)} s; ` +
    `clients ${f.restartClientCpuSeconds.toFixed(1)} s), failures ${
      JSON.stringify(f.failuresByKind)
    }`,
    `restart counters: ${JSON.stringify(f.restartCounters)}`,
    `opened in ${f.openSeconds.toFixed(1)} s: CPU per tunnel ${
      f.openServerMsPerTunnel.toFixed(2)
    } ms server, ${f.openClientMsPerTunnel.toFixed(2)} ms clients`,
  ].join("\n           ");
}

export async function main(): Promise<void> {
  const sizes = arg("--tunnels", "1000").split(",").map(Number);
  if (Deno.args.includes("--hold")) return await hold();
  if (Deno.args.includes("--json")) {
    console.log(JSON.stringify(await measure(sizes[0]!)));
    // Sockets of clients that did not finish stopping would keep the process alive.
    Deno.exit(0);
  }
  const here = ROOT.replace(/\/$/, "");
  const base = Deno.args.includes("--base") ? arg("--base", "") : undefined;
  if (base) await Deno.copyFile(`${here}/bench/idle_tunnels.ts`, `${base}/bench/idle_tunnels.ts`);
  console.log(
    `idle tunnels on one server process (PostgreSQL), ${IDLE_SECONDS} s idle window, ` +
      `${PER_ADDRESS} tunnels per source address; then ${RESTART_SIGNAL} and restart\n`,
  );
  for (const n of sizes) {
    const b = base ? await child(base, n) : undefined;
    const h = await child(here, n);
    console.log(`N = ${n}`);
    if (b !== undefined) console.log(row("baseline", b));
    console.log(row("this tree", h));
    if (b !== undefined && typeof b !== "string" && typeof h !== "string") {
      console.log(
        `ratio this/baseline: cpu ${(h.cpuPercent / b.cpuPercent).toFixed(2)}x, ` +
          `packets ${(h.packetsPerSecond / b.packetsPerSecond).toFixed(2)}x, ` +
          `rss per tunnel ${(h.rssPerTunnelKiB / b.rssPerTunnelKiB).toFixed(2)}x`,
      );
    }
    console.log();
  }
}

if (import.meta.main) await main();
