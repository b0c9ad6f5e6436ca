/**
 * Names, in one place for the server, the client and the database: how HopGate
 * reads and writes domain names, `Host` header values, TLS server names (SNI) and
 * `host:port` text. Each reader has its own rule because each input has its own
 * grammar; all of them agree on the canonical form of a name, which is what
 * tunnels, certificates, PSK identities and the database are keyed by:
 *
 *   lowercase ASCII, internationalized labels in punycode, no trailing dot
 *
 * | input                           | read by            | when it is not acceptable        |
 * |---------------------------------|--------------------|----------------------------------|
 * | a domain to register, configure | `normalizeDomain`  | throws `InvalidDomainError`      |
 * | a domain as a key or identity   | `canonicalDomain`  | lowercased as is (matches none)  |
 * | a `Host` header value           | `hostHeaderName`   | "" (routes nowhere)              |
 * | SNI `host_name` bytes           | `sniHostName`      | undefined (a bad ClientHello)    |
 * | `host:port`, `[v6]:port`        | `parseHostPort`    | which part is wrong              |
 *
 * and `formatHostPort` writes an address back (IPv6 in brackets).
 */
import { isIPv6 } from "node:net";
import { domainToASCII } from "node:url";

// ---------------------------------------------------------------------------
// Domain names

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const NOT_IN_A_DOMAIN = /[\s/:@?#[\]\\*_%]/;
const ALL_DIGITS = /^[0-9]+$/;
const MAX_INPUT_CHARS = 1024;

/** Why a string is not an acceptable domain. */
export class InvalidDomainError extends Error {
  /** The error's name, for logs. */
  override name = "InvalidDomainError";
}

/**
 * Returns the canonical form of `input` (trimmed, lowercase, punycode) or throws
 * `InvalidDomainError` naming the rule it breaks. Requires at least two labels
 * (a name ACME can issue for), each 1–63 of `a-z 0-9 -` not starting or ending with
 * `-`, at most 253 characters in all, and a top-level label that is not all digits
 * (so IPv4 addresses are refused). One trailing dot is accepted and removed.
 * Internationalized names are mapped by UTS #46 (`node:url`'s `domainToASCII`).
 * `allowSingleLabel` accepts names like `localhost` (for the server's own name in debug).
 */
export function normalizeDomain(
  input: string,
  options: { allowSingleLabel?: boolean } = {},
): string {
  let name = input.trim();
  if (name === "") throw new InvalidDomainError("domain is empty");
  if (name.length > MAX_INPUT_CHARS) throw new InvalidDomainError("domain is too long");
  if (name.endsWith(".")) name = name.slice(0, -1);
  if (NOT_IN_A_DOMAIN.test(name)) {
    throw new InvalidDomainError(`domain "${clip(input)}" contains a character not allowed`);
  }
  const ascii = domainToASCII(name);
  if (ascii === "") throw new InvalidDomainError(`domain "${clip(input)}" is not a valid hostname`);
  if (ascii.length > 253) throw new InvalidDomainError("domain is longer than 253 characters");
  const labels = ascii.split(".");
  if (labels.length < 2 && !options.allowSingleLabel) {
    throw new InvalidDomainError(`domain "${clip(input)}" needs at least two labels`);
  }
  for (const label of labels) {
    if (!LABEL.test(label)) {
      throw new InvalidDomainError(`domain "${clip(input)}" has an invalid label "${clip(label)}"`);
    }
  }
  if (ALL_DIGITS.test(labels[labels.length - 1]!)) {
    throw new InvalidDomainError(`domain "${clip(input)}" looks like an IP address`);
  }
  return ascii;
}

/** `normalizeDomain` that returns undefined instead of throwing. */
export function tryNormalizeDomain(input: string): string | undefined {
  try {
    return normalizeDomain(input);
  } catch {
    return undefined;
  }
}

/**
 * The canonical form of a domain used as a key or an identity: `normalizeDomain`'s
 * result when `input` is a domain, otherwise `input` trimmed and lowercased, which
 * no registered domain equals (so a lookup with it finds nothing).
 */
export function canonicalDomain(input: string): string {
  return tryNormalizeDomain(input) ?? input.trim().toLowerCase();
}

function clip(s: string): string {
  return s.length > 80 ? s.slice(0, 77) + "..." : s;
}

// ---------------------------------------------------------------------------
// Host header values

// Character codes.
const HTAB = 0x09;
const SP = 0x20;
const DASH = 0x2d;
const DOT = 0x2e;
const D0 = 0x30;
const D9 = 0x39;
const COLON = 0x3a;
const UA = 0x41;
const UZ = 0x5a;
const LBRACKET = 0x5b;
const UNDERSCORE = 0x5f;
const LA = 0x61;
const LZ = 0x7a;

/**
 * The name a `Host` header value (`uri-host [":" port]`) asks for: lowercase,
 * without the port and without one trailing dot; an IPv6 literal keeps its
 * brackets (`[::1]`). "" when the value is missing or malformed: a reg-name may
 * hold only `a-z A-Z 0-9 . -`, a port only digits. The front's request parser has
 * checked the full grammar already; this runs per request, so it is one pass over
 * the characters with no regular expression and at most one new string.
 */
export function hostHeaderName(value: string | null | undefined): string {
  if (!value) return "";
  let start = 0;
  let end = value.length;
  while (start < end && isOws(value.charCodeAt(start))) start++;
  while (end > start && isOws(value.charCodeAt(end - 1))) end--;
  if (start === end) return "";
  if (value.charCodeAt(start) === LBRACKET) {
    const close = value.indexOf("]", start);
    if (close < 0 || close >= end) return "";
    if (close + 1 < end && !isPortTail(value, close + 1, end)) return "";
    return value.slice(start, close + 1).toLowerCase();
  }
  let nameEnd = end;
  let upper = false;
  for (let i = start; i < end; i++) {
    const c = value.charCodeAt(i);
    if ((c >= LA && c <= LZ) || (c >= D0 && c <= D9) || c === DOT || c === DASH) {
      continue;
    }
    if (c >= UA && c <= UZ) {
      upper = true;
      continue;
    }
    if (c === COLON && isPortTail(value, i, end)) {
      nameEnd = i;
      break;
    }
    return "";
  }
  if (nameEnd > start && value.charCodeAt(nameEnd - 1) === DOT) nameEnd--;
  if (nameEnd === start) return "";
  const name = start === 0 && nameEnd === value.length ? value : value.slice(start, nameEnd);
  return upper ? name.toLowerCase() : name;
}

function isOws(c: number): boolean {
  return c === SP || c === HTAB;
}

/** `value[from..end)` is `:` and then only digits (none is allowed: `host:`). */
function isPortTail(value: string, from: number, end: number): boolean {
  if (value.charCodeAt(from) !== COLON) return false;
  for (let i = from + 1; i < end; i++) {
    const c = value.charCodeAt(i);
    if (c < D0 || c > D9) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// TLS server names (SNI)

/**
 * The `host_name` of a TLS server_name extension (RFC 6066 3) as rustls accepts
 * it: ASCII letters, digits, '-', '_' and dots, no empty label, labels of at most
 * 63 and ≤ 253 characters in all (without one trailing dot, which is dropped).
 * Lowercased. Undefined when it breaks a rule (the ClientHello is bad); "" for an
 * IP literal, which clients should not send and which counts as no name.
 */
export function sniHostName(raw: Uint8Array): string | undefined {
  let n = raw.length;
  if (n > 0 && raw[n - 1] === DOT) n--; // trailing dot
  if (n === 0 || n > 253) return undefined;
  let s = "";
  let label = 0;
  let digitsAndDots = true;
  for (let i = 0; i < n; i++) {
    let c = raw[i]!;
    if (c === DOT) {
      if (label === 0) return undefined;
      label = 0;
    } else {
      if (c >= UA && c <= UZ) c += 0x20;
      const ok = (c >= LA && c <= LZ) || (c >= D0 && c <= D9) || c === DASH ||
        c === UNDERSCORE;
      if (!ok || ++label > 63) return undefined;
      if (!(c >= D0 && c <= D9)) digitsAndDots = false;
    }
    s += String.fromCharCode(c);
  }
  if (label === 0) return undefined;
  return digitsAndDots ? "" : s;
}

// ---------------------------------------------------------------------------
// host:port

export interface HostPort {
  hostname: string;
  port: number;
}

export interface HostPortOptions {
  /** The host for `:port` (e.g. "0.0.0.0" for a listener); unset: a host is required. */
  emptyHost?: string;
  /** Smallest port accepted. Default 1 (0 means "any free port" to a listener). */
  minPort?: number;
}

/** What is wrong with a `host:port` text. */
export type HostPortProblem = { problem: "form" } | { problem: "port"; port: number };

/** `host:port` or `[v6]:port`, host optional with `emptyHost`; the port is 1–5 digits. */
const HOST_PORT = /^(?:\[([0-9A-Fa-f:.]+)\]|([^\s:/[\]]*)):(\d{1,5})$/;

/**
 * Parses `host:port`, `[ipv6]:port` or (with `emptyHost`) `:port`, trimmed. A
 * host is anything without whitespace, `:`, `/` or brackets (a name or an IPv4
 * address; it is resolved later); a bracketed host must be an IPv6 address, and
 * is returned without its brackets.
 */
export function parseHostPort(
  input: string,
  options: HostPortOptions = {},
): HostPort | HostPortProblem {
  const m = HOST_PORT.exec(input.trim());
  if (!m) return { problem: "form" };
  let hostname = m[1] ?? m[2]!;
  if (m[1] !== undefined && !isIPv6(hostname)) return { problem: "form" };
  if (hostname === "") {
    if (options.emptyHost === undefined) return { problem: "form" };
    hostname = options.emptyHost;
  }
  const port = Number(m[3]);
  if (port < (options.minPort ?? 1) || port > 65535) return { problem: "port", port };
  return { hostname, port };
}

/** `host:port`, with an IPv6 address in brackets (`[::1]:443`). */
export function formatHostPort(a: HostPort): string {
  return a.hostname.includes(":") ? `[${a.hostname}]:${a.port}` : `${a.hostname}:${a.port}`;
}

// ---------------------------------------------------------------------------
// Name resolution failures

/** getaddrinfo's codes for "this name does not resolve (now)", as node reports them. */
const RESOLVE_ERROR_CODES: ReadonlySet<string> = new Set([
  "ENOTFOUND",
  "EAI_AGAIN",
  "EAI_NONAME",
  "EAI_NODATA",
  "EAI_FAIL",
]);

/** Whether `e` (a node `dns`/`dgram` error) says a host name did not resolve, by its code. */
export function isResolveError(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === "string" && RESOLVE_ERROR_CODES.has(code);
}
