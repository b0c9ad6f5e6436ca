/**
 * Tools for the front's attack tests (tests/front_attack_test.ts): a raw HTTP/1.1
 * exchange over TCP (exact bytes out, exact bytes back), a Prometheus scrape,
 * /proc figures of a process, and a python3 attacker process that holds or
 * dribbles thousands of TCP connections from chosen loopback source addresses
 * (its own fd limit raised with `resource.setrlimit`).
 */

const enc = new TextEncoder();

export interface RawResponse {
  /** Status of the first response, or 0 when none came. */
  status: number;
  /** The first response's head (status line and fields), "" when none. */
  head: string;
  /** Everything read after the first head (body, and anything after it). */
  body: Uint8Array;
  /** The server closed the connection (EOF or reset) within the time allowed. */
  closed: boolean;
  /** Whether the connection ended with a reset rather than a FIN. */
  reset: boolean;
  /** From connect to the end of reading, ms. */
  ms: number;
}

/**
 * Connects to 127.0.0.1:`port`, writes `request` (in the given pieces, with a
 * pause between them), then reads until the server closes or `timeoutMs` passes
 * (or, with `untilHead`, until a complete response head and its
 * Content-Length body are in).
 */
export async function rawExchange(
  port: number,
  request: string | Uint8Array | (string | Uint8Array)[],
  opts: { timeoutMs?: number; pieceGapMs?: number; untilComplete?: boolean } = {},
): Promise<RawResponse> {
  const t0 = performance.now();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const pieces = (Array.isArray(request) ? request : [request]).map((p) =>
    typeof p === "string" ? latin1(p) : p
  );
  const chunks: Uint8Array[] = [];
  let closed = false;
  let reset = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<"timeout">((r) =>
    timer = setTimeout(() => r("timeout"), opts.timeoutMs ?? 5000)
  );
  try {
    for (let i = 0; i < pieces.length; i++) {
      if (i > 0 && opts.pieceGapMs) await new Promise((r) => setTimeout(r, opts.pieceGapMs));
      try {
        await conn.write(pieces[i]!);
      } catch {
        break; // the server closed already: read what it said
      }
    }
    const buf = new Uint8Array(64 * 1024);
    for (;;) {
      if (opts.untilComplete && complete(chunks)) break;
      const r = await Promise.race([conn.read(buf).catch(() => "reset" as const), timedOut]);
      if (r === "timeout") break;
      if (r === "reset") {
        closed = reset = true;
        break;
      }
      if (r === null) {
        closed = true;
        break;
      }
      chunks.push(buf.slice(0, r));
    }
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed */ }
  }
  const all = concat(chunks);
  const text = latin1Of(all);
  const end = text.indexOf("\r\n\r\n");
  const head = end >= 0 ? text.slice(0, end) : "";
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(head);
  return {
    status: m ? Number(m[1]) : 0,
    head,
    body: end >= 0 ? all.subarray(end + 4) : new Uint8Array(0),
    closed,
    reset,
    ms: performance.now() - t0,
  };
}

/** A complete response with a Content-Length body is in. */
function complete(chunks: Uint8Array[]): boolean {
  const text = latin1Of(concat(chunks));
  const end = text.indexOf("\r\n\r\n");
  if (end < 0) return false;
  const m = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, end));
  return m !== null && text.length - end - 4 >= Number(m[1]);
}

export function latin1(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i) & 0xff;
  return out;
}

export function latin1Of(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 8192) {
    s += String.fromCharCode(...b.subarray(i, Math.min(b.length, i + 8192)));
  }
  return s;
}

export function concat(chunks: Uint8Array[]): Uint8Array {
  const n = chunks.reduce((a, c) => a + c.length, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

/** The text of `http://127.0.0.1:port/metrics`. */
export async function scrape(port: number, timeoutMs = 10_000): Promise<string> {
  const r = await fetch(`http://127.0.0.1:${port}/metrics`, {
    signal: AbortSignal.timeout(timeoutMs),
  });
  if (r.status !== 200) throw new Error(`metrics: ${r.status}`);
  return await r.text();
}

/** Sum of a metric's samples whose labels include `labels` (0 when none). */
export function metric(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have: Record<string, string> = {};
    for (const p of (m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) have[p[1]!] = p[2]!;
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(m[3]);
  }
  return sum;
}

/**
 * Open file descriptors and resident memory (KiB) of a process, from /proc
 * (through `sh`: Deno's permissions do not let a test read /proc/<pid> itself).
 * `alive` is false once the process is gone or a zombie.
 */
export async function procStats(
  pid: number,
): Promise<{ fds: number; rssKiB: number; alive: boolean }> {
  const out = await new Deno.Command("sh", {
    args: ["-c", `ls /proc/${pid}/fd | wc -l; cat /proc/${pid}/status`],
    stdout: "piped",
    stderr: "null",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const fds = Number(text.split("\n")[0]!.trim());
  const rss = /VmRSS:\s+(\d+) kB/.exec(text);
  const state = /State:\s+(\S)/.exec(text);
  return {
    fds,
    rssKiB: rss ? Number(rss[1]) : 0,
    alive: state !== null && state[1] !== "Z",
  };
}

/** The p-th percentile (0–100) of `values` (nearest rank). */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `f` every `everyMs` until it returns true or `ms` passes; returns whether it did. */
export async function waitUntil(
  f: () => boolean | Promise<boolean>,
  ms: number,
  everyMs = 100,
): Promise<boolean> {
  const end = Date.now() + ms;
  for (;;) {
    if (await f()) return true;
    if (Date.now() >= end) return false;
    await sleep(everyMs);
  }
}

// ---------------------------------------------------------------------------
// The python3 attacker.

/**
 * Modes (one JSON line of config as argv[1]; JSON lines out):
 * - "slowloris": opens `count` connections in batches from `sources`, sends one
 *   byte of `payload` per `dripMs` on each, records when the server closes each
 *   (lifetime from the connect call); prints {"event":"opened",…} once all are
 *   open and {"event":"done",…} when all are closed or `maxSeconds` passed.
 * - "hold": opens `count` silent connections, prints {"event":"opened",…} after
 *   `settleMs`, then answers stdin lines "status" ({"event":"status",…}) and
 *   "close" (closes all, prints {"event":"closed",…}, exits).
 */
const PY = String.raw`
import errno, json, resource, selectors, socket, sys, time

cfg = json.loads(sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
need = cfg["count"] + 256
if soft < need:
    resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY else min(need, hard), hard))
soft2, _ = resource.getrlimit(resource.RLIMIT_NOFILE)

def out(o):
    sys.stdout.write(json.dumps(o) + "\n")
    sys.stdout.flush()

sel = selectors.DefaultSelector()
conns = []
t0 = time.monotonic()
now = time.monotonic

class C:
    __slots__ = ("s", "src", "opened", "connected", "closed", "sent", "nxt", "err", "rx")

def close_at(c, t, err=None):
    if c.closed is not None:
        return
    c.closed = t
    c.err = err
    try:
        sel.unregister(c.s)
    except Exception:
        pass
    try:
        c.s.close()
    except Exception:
        pass

def open_one(src):
    c = C()
    c.src = src; c.connected = None; c.closed = None; c.sent = 0; c.err = None; c.rx = 0
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.bind((src, 0))
    c.s = s
    c.opened = now()
    c.nxt = c.opened
    e = s.connect_ex((cfg["host"], cfg["port"]))
    if e not in (0, errno.EINPROGRESS):
        c.closed = now(); c.err = "connect:" + errno.errorcode.get(e, str(e))
        s.close()
    else:
        sel.register(s, selectors.EVENT_WRITE, c)
    conns.append(c)

def pump(timeout):
    for key, ev in sel.select(timeout):
        c = key.data
        if c is None:
            continue
        t = now()
        if c.connected is None and ev & selectors.EVENT_WRITE:
            e = c.s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if e != 0:
                close_at(c, t, "connect:" + errno.errorcode.get(e, str(e)))
                continue
            c.connected = t
            sel.modify(c.s, selectors.EVENT_READ, c)
            continue
        if ev & selectors.EVENT_READ:
            try:
                d = c.s.recv(65536)
            except OSError as e:
                close_at(c, t, errno.errorcode.get(e.errno, str(e.errno)))
                continue
            if not d:
                close_at(c, t, "eof")
            else:
                c.rx += len(d)

def drip(payload, every):
    t = now()
    for c in conns:
        if c.closed is None and c.connected is not None and c.nxt <= t:
            try:
                c.s.send(payload[c.sent % len(payload):c.sent % len(payload) + 1])
                c.sent += 1
            except BlockingIOError:
                pass
            except OSError as e:
                close_at(c, t, errno.errorcode.get(e.errno, str(e.errno)))
            c.nxt = t + every

def summary():
    live = [c for c in conns if c.closed is None]
    closed = [c for c in conns if c.closed is not None and c.connected is not None]
    life = sorted((c.closed - c.opened) * 1000 for c in closed)
    pick = lambda p: round(life[min(len(life) - 1, max(0, int(p * len(life) + 0.999) - 1))]) if life else None
    errs = {}
    for c in conns:
        if c.err is not None:
            errs[c.err] = errs.get(c.err, 0) + 1
    return {
        "opened": len(conns),
        "connected": sum(1 for c in conns if c.connected is not None),
        "pending": sum(1 for c in conns if c.connected is None and c.closed is None),
        "closedByPeer": len(closed),
        "open": len(live),
        "lifeMs": {"min": round(life[0]) if life else None, "p50": pick(0.5), "p99": pick(0.99), "max": round(life[-1]) if life else None},
        "bytesSent": sum(c.sent for c in conns),
        "bytesReceived": sum(c.rx for c in conns),
        "ends": errs,
        "nofile": soft2,
        "elapsedMs": round((now() - t0) * 1000),
    }

srcs = cfg["sources"]
batch = cfg.get("batch", 100)
gap = cfg.get("batchGapMs", 20) / 1000
i = 0
while i < cfg["count"]:
    for _ in range(min(batch, cfg["count"] - i)):
        open_one(srcs[i % len(srcs)])
        i += 1
    end = now() + gap
    while now() < end:
        pump(max(0, end - now()))
        if cfg["mode"] == "slowloris":
            drip(cfg["payload"].encode("latin-1"), cfg["dripMs"] / 1000)

if cfg["mode"] == "slowloris":
    settle = now() + cfg.get("settleMs", 500) / 1000
    while now() < settle:
        pump(0.05)
        drip(cfg["payload"].encode("latin-1"), cfg["dripMs"] / 1000)
    out(dict(summary(), event="opened"))
    deadline = t0 + cfg["maxSeconds"]
    while now() < deadline and any(c.closed is None for c in conns):
        pump(0.05)
        drip(cfg["payload"].encode("latin-1"), cfg["dripMs"] / 1000)
    out(dict(summary(), event="done"))
    for c in conns:
        close_at(c, now())
    sys.exit(0)

# hold
settle = now() + cfg.get("settleMs", 1000) / 1000
while now() < settle:
    pump(0.05)
out(dict(summary(), event="opened"))
sel.register(sys.stdin, selectors.EVENT_READ, None)
while True:
    ready = False
    for key, ev in sel.select(0.05):
        if key.data is None:
            ready = True
        else:
            c = key.data
            t = now()
            if c.connected is None and ev & selectors.EVENT_WRITE:
                e = c.s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if e != 0:
                    close_at(c, t, "connect:" + errno.errorcode.get(e, str(e)))
                else:
                    c.connected = t
                    sel.modify(c.s, selectors.EVENT_READ, c)
            elif ev & selectors.EVENT_READ:
                try:
                    d = c.s.recv(65536)
                except OSError as e:
                    close_at(c, t, errno.errorcode.get(e.errno, str(e.errno)))
                    continue
                if not d:
                    close_at(c, t, "eof")
                else:
                    c.rx += len(d)
    if ready:
        line = sys.stdin.readline().strip()
        if line == "status" or line == "":
            out(dict(summary(), event="status"))
            if line == "":
                break
        elif line == "close":
            s = summary()
            for c in conns:
                close_at(c, now())
            out(dict(s, event="closed"))
            break
`;

export interface AttackSummary {
  event: string;
  opened: number;
  connected: number;
  pending: number;
  closedByPeer: number;
  open: number;
  lifeMs: { min: number | null; p50: number | null; p99: number | null; max: number | null };
  bytesSent: number;
  bytesReceived: number;
  ends: Record<string, number>;
  nofile: number;
  elapsedMs: number;
}

export interface AttackConfig {
  mode: "slowloris" | "hold";
  host?: string;
  port: number;
  count: number;
  sources: string[];
  batch?: number;
  batchGapMs?: number;
  settleMs?: number;
  /** slowloris */
  payload?: string;
  dripMs?: number;
  maxSeconds?: number;
}

/** A running python3 attacker. */
export class Attacker {
  readonly child: Deno.ChildProcess;
  readonly #lines: AttackSummary[] = [];
  #waiters: (() => void)[] = [];
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #reading: Promise<void>;
  stderr = "";

  constructor(cfg: AttackConfig) {
    this.child = new Deno.Command("python3", {
      args: ["-c", PY, JSON.stringify({ host: "127.0.0.1", ...cfg })],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#writer = this.child.stdin.getWriter();
    const readOut = async () => {
      let buf = "";
      for await (const chunk of this.child.stdout.pipeThrough(new TextDecoderStream())) {
        buf += chunk;
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (line.trim()) this.#lines.push(JSON.parse(line));
          for (const w of this.#waiters.splice(0)) w();
        }
      }
      for (const w of this.#waiters.splice(0)) w();
    };
    const readErr = async () => {
      for await (const chunk of this.child.stderr.pipeThrough(new TextDecoderStream())) {
        this.stderr += chunk;
      }
    };
    this.#reading = Promise.all([readOut(), readErr()]).then(() => {});
  }

  /** The next line with this event (waits up to `ms`). */
  async next(event: string, ms = 60_000): Promise<AttackSummary> {
    const end = Date.now() + ms;
    for (;;) {
      const i = this.#lines.findIndex((l) => l.event === event);
      if (i >= 0) return this.#lines.splice(i, 1)[0]!;
      if (Date.now() > end) throw new Error(`attacker: no "${event}" in ${ms} ms; ${this.stderr}`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        new Promise<void>((r) => this.#waiters.push(r)),
        new Promise<void>((r) => timer = setTimeout(r, Math.max(1, end - Date.now()))),
      ]);
      clearTimeout(timer);
      if (this.stderr.includes("Traceback")) throw new Error(`attacker failed: ${this.stderr}`);
    }
  }

  async command(cmd: "status" | "close"): Promise<AttackSummary> {
    await this.#writer.write(enc.encode(cmd + "\n"));
    return await this.next(cmd === "close" ? "closed" : "status");
  }

  /** Ends the attacker (by its PID) and waits for it. */
  async stop(): Promise<void> {
    try {
      await this.#writer.close();
    } catch { /* closed */ }
    try {
      this.child.kill("SIGKILL");
    } catch { /* gone */ }
    await this.child.status;
    await this.#reading.catch(() => {});
  }
}
