/**
 * Test harness for DTLS peers nobody here wrote: `openssl s_client` / `s_server` (OpenSSL 3.0)
 * and `gnutls-cli --udp` (GnuTLS 3.7), run as child processes on 127.0.0.1 with the commands
 * below (checked by hand against these versions first). Every process runs under coreutils `timeout` as a backstop, and `kill()`
 * must be called in a `finally`; it waits for the process and its output pipes, so Deno's
 * sanitizers stay quiet.
 */

/** OpenSSL cipher names for our two suites. */
export const OPENSSL_CIPHER = {
  TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256: "ECDHE-PSK-CHACHA20-POLY1305",
  TLS_PSK_WITH_AES_128_GCM_SHA256: "PSK-AES128-GCM-SHA256",
} as const;

export type SuiteName = keyof typeof OPENSSL_CIPHER;
export const SUITES = Object.keys(OPENSSL_CIPHER) as SuiteName[];

/** GnuTLS priority strings that allow exactly one of our suites over DTLS 1.2. */
export const GNUTLS_PRIORITY: Record<SuiteName, string> = {
  TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256:
    "NORMAL:-KX-ALL:+ECDHE-PSK:-CIPHER-ALL:+CHACHA20-POLY1305:-VERS-ALL:+VERS-DTLS1.2",
  TLS_PSK_WITH_AES_128_GCM_SHA256:
    "NORMAL:-KX-ALL:+PSK:-CIPHER-ALL:+AES-128-GCM:-VERS-ALL:+VERS-DTLS1.2",
};

/** What GnuTLS prints in its session description for each suite. */
export const GNUTLS_DESCRIPTION: Record<SuiteName, RegExp> = {
  TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256:
    /- Description: \(DTLS1\.2[^)]*\)-\(ECDHE-[A-Z0-9]+\)-\(CHACHA20-POLY1305\)/,
  TLS_PSK_WITH_AES_128_GCM_SHA256: /- Description: \(DTLS1\.2[^)]*\)-\(PSK\)-\(AES-128-GCM\)/,
};

export function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A UDP port that was free a moment ago on 127.0.0.1 (bind port 0, read it, close). */
export function freeUdpPort(): number {
  const s = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const port = (s.addr as Deno.NetAddr).port;
  s.close();
  return port;
}

export function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `cond` every 10 ms until true; throws `what()` after `ms`. */
export async function waitUntil(
  cond: () => boolean,
  ms: number,
  what: () => string,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what()}`);
    await delay(10);
  }
}

const enc = new TextEncoder();

/** A child process with piped stdin and captured stdout/stderr. */
export class Peer {
  readonly name: string;
  stdout = "";
  stderr = "";
  /** Set once the process exited. */
  status: Deno.CommandStatus | undefined;
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #pumps: Promise<void>[];
  readonly #exited: Promise<Deno.CommandStatus>;
  #stdinOpen = true;
  #listeners: (() => void)[] = [];

  /**
   * Runs `cmd args` under `timeout --kill-after=2 <backstopS>` and `stdbuf -o0 -e0` (unbuffered
   * stdio, so output is seen as it happens and survives a crash).
   */
  constructor(name: string, cmd: string, args: string[], backstopS = 45) {
    this.name = name;
    this.#child = new Deno.Command("timeout", {
      args: ["--kill-after=2", String(backstopS), "stdbuf", "-o0", "-e0", cmd, ...args],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#pumps = [
      this.#pump(this.#child.stdout, (t) => this.stdout += t),
      this.#pump(this.#child.stderr, (t) => this.stderr += t),
    ];
    this.#exited = this.#child.status.then((s) => {
      this.status = s;
      this.#notify();
      return s;
    });
  }

  async #pump(stream: ReadableStream<Uint8Array>, add: (t: string) => void): Promise<void> {
    const dec = new TextDecoder();
    for await (const chunk of stream) {
      add(dec.decode(chunk, { stream: true }));
      this.#notify();
    }
  }

  #notify(): void {
    for (const l of this.#listeners.splice(0)) l();
  }

  /** Everything it printed, for assertion messages. */
  output(): string {
    const st = this.status ? ` (exit code ${this.status.code}, signal ${this.status.signal})` : "";
    return `--- ${this.name} stdout${st} ---\n${this.stdout}\n--- ${this.name} stderr ---\n${this.stderr}`;
  }

  /** Writes to its stdin. */
  async write(text: string): Promise<void> {
    if (!this.#stdinOpen) throw new Error(`${this.name}: stdin already closed`);
    await this.#writer.write(enc.encode(text));
  }

  async closeStdin(): Promise<void> {
    if (!this.#stdinOpen) return;
    this.#stdinOpen = false;
    try {
      await this.#writer.close();
    } catch {
      // the process is gone: the pipe is broken
    }
  }

  /**
   * Waits until stdout (or stdout+stderr with `both`) matches `pattern`; throws with the whole
   * output if it does not within `ms` or the process exits first.
   */
  async waitFor(pattern: RegExp | string, ms: number, both = false): Promise<RegExpMatchArray> {
    const re = typeof pattern === "string" ? new RegExp(escape(pattern)) : pattern;
    const deadline = Date.now() + ms;
    for (;;) {
      const m = (both ? this.stdout + "\n" + this.stderr : this.stdout).match(re);
      if (m) return m;
      if (this.status) {
        throw new Error(`${this.name} exited before printing ${re}\n${this.output()}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.name}: no ${re} within ${ms} ms\n${this.output()}`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        timer = setTimeout(resolve, left);
        this.#listeners.push(resolve);
      });
      clearTimeout(timer);
    }
  }

  /** Waits for the process to exit by itself, at most `ms`; returns its status or undefined. */
  async waitExit(ms: number): Promise<Deno.CommandStatus | undefined> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const r = await Promise.race([
      this.#exited,
      new Promise<undefined>((resolve) => timer = setTimeout(() => resolve(undefined), ms)),
    ]);
    clearTimeout(timer);
    return r;
  }

  /** Ends the process (SIGTERM, then SIGKILL) and waits for it and its pipes. Idempotent. */
  async kill(): Promise<void> {
    await this.closeStdin();
    if (!this.status) {
      try {
        this.#child.kill("SIGTERM");
      } catch { /* already gone */ }
      if (!await this.waitExit(2000)) {
        try {
          this.#child.kill("SIGKILL");
        } catch { /* already gone */ }
      }
    }
    await this.#exited;
    await Promise.all(this.#pumps);
  }
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

export interface PskPeerOptions {
  port: number;
  psk: Uint8Array;
  suite: SuiteName;
  /** Accept both of our suites (s_server) instead of only `suite`. */
  cipherList?: string;
}

/**
 * `openssl s_server -dtls1_2 -nocert -psk HEX`: prints what it receives on stdout, sends its
 * stdin lines. Resolves once it printed `ACCEPT` (it is listening).
 */
export async function startOpenSslServer(opts: PskPeerOptions): Promise<Peer> {
  const p = new Peer("openssl s_server", "openssl", [
    "s_server",
    "-dtls1_2",
    "-accept",
    `127.0.0.1:${opts.port}`,
    "-nocert",
    "-psk",
    hex(opts.psk),
    "-cipher",
    opts.cipherList ?? OPENSSL_CIPHER[opts.suite],
  ]);
  try {
    await p.waitFor("ACCEPT", 5000);
  } catch (e) {
    await p.kill();
    throw e;
  }
  return p;
}

/**
 * `openssl s_client -dtls1_2 -psk HEX -psk_identity ID -cipher C`: its stdin lines are sent as
 * records; what it receives is printed on stdout. Does not wait for the handshake.
 */
export function startOpenSslClient(opts: PskPeerOptions & { identity: string }): Peer {
  return new Peer("openssl s_client", "openssl", [
    "s_client",
    "-dtls1_2",
    "-connect",
    `127.0.0.1:${opts.port}`,
    "-psk",
    hex(opts.psk),
    "-psk_identity",
    opts.identity,
    "-cipher",
    opts.cipherList ?? OPENSSL_CIPHER[opts.suite],
  ]);
}

/** s_client's line for a completed handshake, e.g. `New, TLSv1.2, Cipher is PSK-AES128-GCM-SHA256`. */
export function openSslCipherLine(suite: SuiteName): RegExp {
  return new RegExp(`New, TLSv1\\.2, Cipher is ${escape(OPENSSL_CIPHER[suite])}`);
}

/**
 * `gnutls-cli --udp --pskusername ID --pskkey HEX --priority P 127.0.0.1`: sends its stdin
 * lines, prints what it receives.
 */
export function startGnutlsClient(opts: PskPeerOptions & { identity: string }): Peer {
  return new Peer("gnutls-cli", "gnutls-cli", [
    "--udp",
    "--pskusername",
    opts.identity,
    "--pskkey",
    hex(opts.psk),
    "--port",
    String(opts.port),
    "--priority",
    GNUTLS_PRIORITY[opts.suite],
    "127.0.0.1",
  ]);
}

/** True if the command exists on this machine. */
export function haveCommand(cmd: string): boolean {
  try {
    const r = new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "null" })
      .outputSync();
    return r.success;
  } catch {
    return false;
  }
}
