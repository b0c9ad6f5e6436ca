/**
 * Is the host's UDP receive buffer big enough for a fast tunnel? Deno cannot set
 * `SO_RCVBUF` on the sockets it opens, so every tunnel socket gets the kernel's default
 * (Linux: `net.core.rmem_default`, 212,992 bytes on most hosts). At tens of Mbit/s a
 * process busy for a few milliseconds finds that buffer full, and the kernel drops the
 * datagrams that did not fit (`RcvbufErrors` in /proc/net/snmp): the tunnel resends them
 * and reads them as a lossy path. On the WAN lab's 100 Mbit/s path 1 MiB removed those
 * drops (docs/operations.md, "UDP receive buffer").
 *
 * Deno reads nothing under /proc without `--allow-all`, so the default is not read but
 * measured: a fresh socket on 127.0.0.1 is sent batches of tunnel-sized datagrams (100,
 * then 200, then 400, 1215 bytes each), read back after each batch. 212,992 bytes held 92
 * of them here, 1 MiB 455: a batch of 400 that does not arrive whole means less than ~1
 * MiB. The one batch that overflows adds its excess to the host's `RcvbufErrors` once
 * (8 datagrams with the usual default).
 */

import { PATH_SAFE_DATAGRAM_SIZE_IPV4 } from "./dtls/path.ts";

/** The datagram size of a tunnel off loopback (a 1280-byte MTU over IPv4). */
export const PROBE_DATAGRAM_BYTES = PATH_SAFE_DATAGRAM_SIZE_IPV4;
/** The batches sent; the last one is the bar (~1 MiB of receive buffer). */
export const PROBE_BATCHES: readonly number[] = [100, 200, 400];
/** What the warning and docs/operations.md recommend. */
export const RMEM_DEFAULT_RECOMMENDED = 4 * 1024 * 1024;
/** Each batch (all queued before its first read) is read until the socket is this long silent. */
const QUIET_MS = 50;
/** The whole probe ends by then, whatever else sends to its socket. */
const PROBE_DEADLINE_MS = 2000;

/** How many datagrams of the largest batch sent a fresh socket held. */
export interface ReceiveQueueProbe {
  /** The batch that overflowed, or the last one if none did. */
  sent: number;
  /** How many of it were read back. */
  held: number;
}

/** Options of `probeReceiveQueue` (tests). */
export interface ProbeOptions {
  batches?: readonly number[];
  /** Default 2000 ms. */
  deadlineMs?: number;
  /** Called with the probe socket's address once it is open. */
  onOpen?: (addr: Deno.NetAddr) => void;
}

/**
 * Sends the batches to a socket of its own on 127.0.0.1 and stops at the first that does
 * not all arrive. Only datagrams from itself count, and it ends within `deadlineMs` even
 * if another process keeps sending to it (then null). Null if no socket could be opened.
 */
export async function probeReceiveQueue(o: ProbeOptions = {}): Promise<ReceiveQueueProbe | null> {
  let sock: Deno.DatagramConn;
  try {
    sock = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  } catch {
    return null;
  }
  const to = sock.addr as Deno.NetAddr;
  o.onOpen?.(to);
  const deadline = performance.now() + (o.deadlineMs ?? PROBE_DEADLINE_MS);
  const datagram = new Uint8Array(PROBE_DATAGRAM_BYTES);
  const buf = new Uint8Array(65536);
  let pending: Promise<boolean | null> | null = null;
  /** True for one of our own datagrams, false for another's; rejects once closed. */
  const next = () =>
    sock.receive(buf).then(([, from]) => (from as Deno.NetAddr).port === to.port, () => null);
  try {
    let result: ReceiveQueueProbe = { sent: 0, held: 0 };
    for (const n of o.batches ?? PROBE_BATCHES) {
      for (let i = 0; i < n; i++) await sock.send(datagram, to);
      let held = 0;
      while (held < n) {
        if (performance.now() > deadline) return null;
        pending ??= next();
        let timer: ReturnType<typeof setTimeout> | undefined;
        const quiet = new Promise<"quiet">((r) => timer = setTimeout(() => r("quiet"), QUIET_MS));
        const got = await Promise.race([pending, quiet]);
        clearTimeout(timer);
        if (got === "quiet" || got === null) break;
        pending = null;
        if (got) held++;
      }
      result = { sent: n, held };
      if (held < n) break;
    }
    return result;
  } catch {
    return null;
  } finally {
    sock.close();
    await pending;
  }
}

/**
 * The warning for a receive buffer under ~1 MiB (a probe batch that did not arrive
 * whole), or null: also when the probe could not run.
 */
export async function receiveBufferWarning(): Promise<string | null> {
  const p = await probeReceiveQueue();
  if (p === null || p.held >= p.sent) return null;
  return `a new UDP socket here holds only ${p.held} datagrams of ${PROBE_DATAGRAM_BYTES} bytes ` +
    `(${p.sent} sent at once): at tens of Mbit/s the kernel drops tunnel datagrams that this ` +
    `process reads late (RcvbufErrors in /proc/net/snmp) and the tunnel slows down to resend ` +
    `them; on Linux raise the default receive buffer with ` +
    `\`sysctl -w net.core.rmem_default=${RMEM_DEFAULT_RECOMMENDED}\` ` +
    `(docs/operations.md, "UDP receive buffer")`;
}
