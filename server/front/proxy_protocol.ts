/**
 * The PROXY protocol header, versions 1 (text) and 2 (binary), as specified in
 * haproxy's doc/proxy-protocol.txt. A load balancer in TCP mode (HAProxy
 * `send-proxy` / `send-proxy-v2`, AWS NLB, nginx stream `proxy_protocol on`)
 * sends it first on each connection it relays: the caller's address, which the
 * TCP peer (the balancer itself) cannot tell us. docs/edge.md has the operator's
 * side; the front and the TLS acceptor read it only from `HOP_TRUSTED_PROXIES`.
 *
 * A strict, bounded, incremental parser, no I/O: feed it a connection's first
 * bytes in whatever pieces they come; once the header is complete it answers
 * the source address (or `local`: keep the TCP peer) and how many bytes of the
 * last piece were header (the rest belong to the protocol after it). Anything
 * that is not exactly a header throws `ProxyHeaderError`, as early as the bytes
 * show it (the spec asks to abort "as soon as possible").
 *
 * Version 1: `PROXY TCP4|TCP6 <src> <dst> <srcport> <dstport>\r\n`, or
 * `PROXY UNKNOWN[ <anything>]\r\n` (local). At most 107 bytes with the CRLF;
 * exactly one space between fields; a lone CR or LF is refused. IPv4 is four
 * decimal numbers 0–255 without leading zeros; ports 0–65535 without leading
 * zeros. IPv6: the spec writes "sets of 4 hexadecimal digits", but senders use
 * inet_ntop (HAProxy's `::1`, `::ffff:10.0.0.1` for a mapped address), so 1–4
 * digits a group, one `::`, and a trailing dotted IPv4 are accepted; the total
 * must be exactly 128 bits.
 *
 * Version 2: the 12-byte signature, version 2 (anything else refused),
 * command LOCAL (local, the block is skipped) or PROXY (other commands refused),
 * family 0–3 and transport 0–2 (other values refused), then `len` bytes, at most
 * `PROXY_V2_MAX_LENGTH` here (the spec allows 65535; nothing real sends more
 * than a few hundred). PROXY over TCP (AF_INET / AF_INET6 with STREAM) gives
 * the address; the block must hold the addresses (12 / 36 bytes) and what
 * follows must be whole TLVs to the last byte; a CRC32C TLV, if sent, is
 * checked (the spec's MUST for receivers that support it). Other valid
 * combinations (AF_UNSPEC, AF_UNIX, UDP, an unspecified transport) fall back to
 * local, as the spec allows ("falls back to the UNSPEC mode"); their bytes are
 * skipped.
 */

/** The longest version 1 line, CRLF included. */
export const PROXY_V1_MAX_BYTES = 107;
/** The largest version 2 `len` (bytes after the 16-byte fixed part) accepted. */
export const PROXY_V2_MAX_LENGTH = 4096;

/** What the header says. */
export type ProxyHeader =
  | {
    version: 1 | 2;
    /** The connection was relayed: the caller's address and the one it reached. */
    command: "proxy";
    source: Deno.NetAddr;
    destination: Deno.NetAddr;
  }
  | {
    version: 1 | 2;
    /** The balancer's own connection (a health check), or addresses not given: keep the TCP peer. */
    command: "local";
  };

export interface ProxyHeaderResult {
  header: ProxyHeader;
  /** Bytes of the last `feed`'s chunk that were header; the rest follow the header. */
  consumed: number;
  /** The whole header's length. */
  length: number;
}

/** Not a valid PROXY protocol header: the connection must be dropped. */
export class ProxyHeaderError extends Error {
  override name = "ProxyHeaderError";
}

const CR = 0x0d;
const LF = 0x0a;
const SPACE = 0x20;
const V1_PREFIX = [0x50, 0x52, 0x4f, 0x58, 0x59, SPACE]; // "PROXY "
const V1_PROTOCOLS = ["TCP4 ", "TCP6 ", "UNKNOWN"];
const V2_SIGNATURE = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];
const PP2_TYPE_CRC32C = 0x03;

/** Reads one header from bytes fed in any number of pieces. One parser per connection. */
export class ProxyHeaderParser {
  #version: 0 | 1 | 2 = 0;
  #buf: Uint8Array = new Uint8Array(16);
  #len = 0;
  /** Version 1: the protocol token was recognized (TCP4, TCP6 or UNKNOWN). */
  #v1Protocol = "";
  #v1Token = "";
  #state: "reading" | "done" | "failed" = "reading";

  /** Bytes taken so far. */
  get received(): number {
    return this.#len;
  }

  /**
   * Takes the next bytes. Undefined: the header is not complete yet (feed more).
   * Throws `ProxyHeaderError` once the bytes cannot start a valid header.
   */
  feed(chunk: Uint8Array): ProxyHeaderResult | undefined {
    if (this.#state !== "reading") {
      throw new ProxyHeaderError(
        this.#state === "done" ? "the header was already read" : "the header was refused",
      );
    }
    try {
      if (chunk.length === 0) return undefined;
      if (this.#version === 0) {
        const b = chunk[0]!;
        if (b === V1_PREFIX[0]) {
          this.#version = 1;
          this.#buf = new Uint8Array(PROXY_V1_MAX_BYTES);
        } else if (b === V2_SIGNATURE[0]) {
          this.#version = 2;
        } else {
          throw new ProxyHeaderError(
            `not a PROXY protocol header: it starts with byte 0x${
              hex(b)
            }, not "PROXY " or the v2 signature`,
          );
        }
      }
      const r = this.#version === 1 ? this.#feedV1(chunk) : this.#feedV2(chunk);
      if (r) this.#state = "done";
      return r;
    } catch (e) {
      this.#state = "failed";
      throw e;
    }
  }

  #feedV1(chunk: Uint8Array): ProxyHeaderResult | undefined {
    const buf = this.#buf;
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i]!;
      const at = this.#len;
      if (at > 0 && buf[at - 1] === CR && b !== LF) {
        throw new ProxyHeaderError("v1: CR not followed by LF");
      }
      if (at < V1_PREFIX.length) {
        if (b !== V1_PREFIX[at]) {
          throw new ProxyHeaderError('v1: the line must start with "PROXY "');
        }
      } else if (this.#v1Protocol === "") {
        this.#checkV1Protocol(b);
      } else if (this.#v1Protocol !== "UNKNOWN" && !V1_ADDRESS_BYTE[b]) {
        throw new ProxyHeaderError(`v1: unexpected byte 0x${hex(b)} at offset ${at}`);
      }
      buf[at] = b;
      this.#len = at + 1;
      if (b === LF) {
        if (at === 0 || buf[at - 1] !== CR) throw new ProxyHeaderError("v1: LF without CR");
        return {
          header: parseV1Line(latin1(buf.subarray(0, at - 1))),
          consumed: i + 1,
          length: at + 1,
        };
      }
      if (this.#len >= PROXY_V1_MAX_BYTES) {
        throw new ProxyHeaderError(`v1: no CRLF within ${PROXY_V1_MAX_BYTES} bytes`);
      }
    }
    return undefined;
  }

  /** The protocol token, byte by byte: refuses as soon as no known one can match. */
  #checkV1Protocol(b: number): void {
    const t = this.#v1Token += String.fromCharCode(b);
    if (t === "TCP4 " || t === "TCP6 ") this.#v1Protocol = t.trimEnd();
    else if (t.length === 8 && t.startsWith("UNKNOWN")) {
      // "UNKNOWN" is followed by the CRLF, or by a space and anything up to it.
      if (b !== SPACE && b !== CR) {
        throw new ProxyHeaderError('v1: expected a space or CRLF after "UNKNOWN"');
      }
      this.#v1Protocol = "UNKNOWN";
    } else if (!V1_PROTOCOLS.some((p) => p.startsWith(t))) {
      throw new ProxyHeaderError('v1: the protocol must be "TCP4", "TCP6" or "UNKNOWN"');
    }
  }

  #feedV2(chunk: Uint8Array): ProxyHeaderResult | undefined {
    let i = 0;
    while (this.#len < 16 && i < chunk.length) {
      const b = chunk[i++]!;
      const at = this.#len;
      if (at < 12) {
        if (b !== V2_SIGNATURE[at]) throw new ProxyHeaderError("v2: bad signature");
      } else if (at === 12) {
        if (b >> 4 !== 2) throw new ProxyHeaderError(`v2: version ${b >> 4}, expected 2`);
        if ((b & 0xf) > 1) {
          throw new ProxyHeaderError(`v2: command ${b & 0xf}, expected LOCAL (0) or PROXY (1)`);
        }
      } else if (at === 13) {
        if (b >> 4 > 3) throw new ProxyHeaderError(`v2: address family ${b >> 4} is not 0-3`);
        if ((b & 0xf) > 2) throw new ProxyHeaderError(`v2: transport ${b & 0xf} is not 0-2`);
      }
      this.#buf[at] = b;
      this.#len = at + 1;
      if (this.#len === 16) {
        const n = (this.#buf[14]! << 8) | this.#buf[15]!;
        if (n > PROXY_V2_MAX_LENGTH) {
          throw new ProxyHeaderError(
            `v2: length ${n} is over the ${PROXY_V2_MAX_LENGTH} bytes accepted`,
          );
        }
        const whole = new Uint8Array(16 + n);
        whole.set(this.#buf);
        this.#buf = whole;
      }
    }
    if (this.#len < 16) return undefined;
    const total = this.#buf.length;
    const take = Math.min(total - this.#len, chunk.length - i);
    this.#buf.set(chunk.subarray(i, i + take), this.#len);
    this.#len += take;
    i += take;
    if (this.#len < total) return undefined;
    return { header: parseV2(this.#buf), consumed: i, length: total };
  }
}

// Bytes a TCP4/TCP6 line may hold after its protocol: digits, hex, ':', '.', space, CRLF.
const V1_ADDRESS_BYTE: boolean[] = [];
for (const c of "0123456789abcdefABCDEF:. \r\n") V1_ADDRESS_BYTE[c.charCodeAt(0)] = true;

/** A whole version 1 line, without its CRLF. */
function parseV1Line(line: string): ProxyHeader {
  const f = line.split(" ");
  if (f[1] === "UNKNOWN") return { version: 1, command: "local" };
  if (f.length !== 6) {
    throw new ProxyHeaderError(
      "v1: expected PROXY <TCP4|TCP6> <source> <destination> <source port> <destination port>, " +
        "one space apart",
    );
  }
  const v6 = f[1] === "TCP6";
  const src = v6 ? parseIPv6(f[2]!) : parseIPv4(f[2]!);
  const dst = v6 ? parseIPv6(f[3]!) : parseIPv4(f[3]!);
  if (!src) throw new ProxyHeaderError(`v1: bad ${f[1]} source address "${f[2]}"`);
  if (!dst) throw new ProxyHeaderError(`v1: bad ${f[1]} destination address "${f[3]}"`);
  const sport = parsePort(f[4]!);
  const dport = parsePort(f[5]!);
  if (sport < 0) throw new ProxyHeaderError(`v1: bad source port "${f[4]}"`);
  if (dport < 0) throw new ProxyHeaderError(`v1: bad destination port "${f[5]}"`);
  return {
    version: 1,
    command: "proxy",
    source: netAddr(src, sport),
    destination: netAddr(dst, dport),
  };
}

/** A whole version 2 header (fixed part and `len` bytes). */
function parseV2(h: Uint8Array): ProxyHeader {
  if ((h[12]! & 0xf) === 0) return { version: 2, command: "local" };
  const fam = h[13]!;
  // PROXY: only TCP over IPv4 / IPv6 carries an address we use; other valid
  // combinations fall back to the real endpoints, their block skipped.
  const addrLen = fam === 0x11 ? 12 : fam === 0x21 ? 36 : -1;
  if (addrLen < 0) return { version: 2, command: "local" };
  const total = h.length;
  if (total - 16 < addrLen) {
    throw new ProxyHeaderError(
      `v2: length ${total - 16} is shorter than the ${addrLen} address bytes of family 0x${
        hex(fam)
      }`,
    );
  }
  checkTlvs(h, 16 + addrLen);
  const size = addrLen === 12 ? 4 : 16;
  const src = h.slice(16, 16 + size);
  const dst = h.slice(16 + size, 16 + 2 * size);
  const ports = 16 + 2 * size;
  return {
    version: 2,
    command: "proxy",
    source: netAddr(src, (h[ports]! << 8) | h[ports + 1]!),
    destination: netAddr(dst, (h[ports + 2]! << 8) | h[ports + 3]!),
  };
}

/** TLVs from `off` must end exactly at the header's end; a CRC32C TLV must match. */
function checkTlvs(h: Uint8Array, off: number): void {
  let crcAt = -1;
  while (off < h.length) {
    if (off + 3 > h.length) {
      throw new ProxyHeaderError(`v2: ${h.length - off} stray bytes after the last TLV`);
    }
    const type = h[off]!;
    const len = (h[off + 1]! << 8) | h[off + 2]!;
    if (off + 3 + len > h.length) {
      throw new ProxyHeaderError(`v2: TLV 0x${hex(type)} of ${len} bytes overruns the header`);
    }
    if (type === PP2_TYPE_CRC32C) {
      if (len !== 4) throw new ProxyHeaderError(`v2: CRC32C TLV of ${len} bytes, expected 4`);
      if (crcAt >= 0) throw new ProxyHeaderError("v2: more than one CRC32C TLV");
      crcAt = off + 3;
    }
    off += 3 + len;
  }
  if (crcAt >= 0) {
    const sent = ((h[crcAt]! << 24) | (h[crcAt + 1]! << 16) | (h[crcAt + 2]! << 8) |
      h[crcAt + 3]!) >>> 0;
    const zeroed = h.slice();
    zeroed.fill(0, crcAt, crcAt + 4);
    if (crc32c(zeroed) !== sent) throw new ProxyHeaderError("v2: CRC32C mismatch");
  }
}

let crcTable: Uint32Array | undefined;

/** CRC32c (Castagnoli, RFC 4960 appendix B). */
export function crc32c(data: Uint8Array): number {
  const t = crcTable ??= (() => {
    const table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
    return table;
  })();
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = t[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** Four decimal numbers 0–255, no leading zeros. */
function parseIPv4(s: string): Uint8Array | undefined {
  const parts = s.split(".");
  if (parts.length !== 4) return undefined;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!;
    if (!/^(?:0|[1-9]\d{0,2})$/.test(p) || Number(p) > 255) return undefined;
    out[i] = Number(p);
  }
  return out;
}

/** 1–4 hex digits a group, at most one `::`, an optional dotted IPv4 tail; 128 bits exactly. */
function parseIPv6(s: string): Uint8Array | undefined {
  if (s.length < 2 || s.length > 45) return undefined;
  const groups = (part: string, tail: boolean): number[] | undefined => {
    if (part === "") return [];
    const out: number[] = [];
    const gs = part.split(":");
    for (let k = 0; k < gs.length; k++) {
      const g = gs[k]!;
      if (tail && k === gs.length - 1 && g.includes(".")) {
        const v4 = parseIPv4(g);
        if (!v4) return undefined;
        out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(g)) out.push(parseInt(g, 16));
      else return undefined;
    }
    return out;
  };
  let words: number[];
  const gap = s.indexOf("::");
  if (gap < 0) {
    const all = groups(s, true);
    if (!all || all.length !== 8) return undefined;
    words = all;
  } else {
    if (s.indexOf("::", gap + 1) >= 0) return undefined;
    const head = groups(s.slice(0, gap), false);
    const tail = groups(s.slice(gap + 2), true);
    if (!head || !tail || head.length + tail.length > 7) return undefined;
    words = [...head, ...new Array(8 - head.length - tail.length).fill(0), ...tail];
  }
  const out = new Uint8Array(16);
  words.forEach((w, i) => {
    out[2 * i] = w >> 8;
    out[2 * i + 1] = w & 0xff;
  });
  return out;
}

/** A decimal port 0–65535, no leading zeros; -1 when not one. */
function parsePort(s: string): number {
  if (!/^(?:0|[1-9]\d{0,4})$/.test(s)) return -1;
  const n = Number(s);
  return n <= 65535 ? n : -1;
}

function netAddr(ip: Uint8Array, port: number): Deno.NetAddr {
  return { transport: "tcp", hostname: formatIp(ip), port };
}

/** Dotted IPv4, or IPv6 as RFC 5952 writes it (as Deno prints a peer): `::ffff:a.b.c.d` when mapped. */
export function formatIp(ip: Uint8Array): string {
  if (ip.length === 4) return ip.join(".");
  const w: number[] = [];
  for (let i = 0; i < 16; i += 2) w.push((ip[i]! << 8) | ip[i + 1]!);
  if (w.slice(0, 5).every((x) => x === 0) && w[5] === 0xffff) {
    return `::ffff:${ip.subarray(12).join(".")}`;
  }
  // The longest run of two or more zero words becomes "::" (the first of equals).
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const text = (a: number[]) => a.map((x) => x.toString(16)).join(":");
  if (best < 0) return text(w);
  return `${text(w.slice(0, best))}::${text(w.slice(best + bestLen))}`;
}

function latin1(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]!);
  return s;
}

function hex(b: number): string {
  return b.toString(16).padStart(2, "0");
}
