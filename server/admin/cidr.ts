/**
 * IP address ranges for `HOP_ADMIN_ALLOWED_IPS`: IPv4 and IPv6 CIDRs (`10.0.0.0/8`,
 * `2001:db8::/32`) or single addresses (taken as /32 or /128). IPv4-mapped IPv6
 * addresses (`::ffff:10.1.2.3`) match IPv4 ranges.
 */
import { isIPv4, isIPv6 } from "node:net";

/** An IPv4 or IPv6 address range. */
export interface Cidr {
  /** IP version. */
  readonly family: 4 | 6;
  /** Network address as a 32- or 128-bit integer. */
  readonly network: bigint;
  /** Prefix length in bits. */
  readonly prefix: number;
  /** The canonical text, e.g. `10.0.0.0/8`. */
  readonly text: string;
  /** The text, so a configuration holding ranges can be printed as JSON. */
  toJSON(): string;
}

/** Parses one CIDR or address; throws `Error` naming the problem. */
export function parseCidr(input: string): Cidr {
  const text = input.trim();
  const slash = text.indexOf("/");
  const addrText = slash < 0 ? text : text.slice(0, slash);
  const parsed = parseIp(addrText);
  if (!parsed) throw new Error(`"${text}" is not an IP address or CIDR`);
  const bits = parsed.family === 4 ? 32 : 128;
  let prefix = bits;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > bits) {
      throw new Error(`"${text}" has an invalid prefix length (0-${bits})`);
    }
    prefix = Number(p);
  }
  const network = parsed.value & mask(bits, prefix);
  const canonical = `${addrText}/${prefix}`;
  return { family: parsed.family, network, prefix, text: canonical, toJSON: () => canonical };
}

/** Parses a comma-separated list of CIDRs; empty input gives an empty list. */
export function parseCidrList(input: string): Cidr[] {
  return input.split(",").map((s) => s.trim()).filter((s) => s !== "").map(parseCidr);
}

/** Whether `address` lies in any of `ranges`. Unparseable addresses match nothing. */
export function ipInRanges(address: string, ranges: readonly Cidr[]): boolean {
  const ip = parseIp(address);
  if (!ip) return false;
  return ranges.some((r) => {
    if (r.family !== ip.family) return false;
    const bits = r.family === 4 ? 32 : 128;
    return (ip.value & mask(bits, r.prefix)) === r.network;
  });
}

/** Whether `address` is a loopback address (127.0.0.0/8, ::1, ::ffff:127.x.y.z). */
export function isLoopback(address: string): boolean {
  return ipInRanges(address, LOOPBACK);
}

const LOOPBACK = [parseCidr("127.0.0.0/8"), parseCidr("::1/128")];

/** An IPv4 or IPv6 address as an integer; IPv4-mapped IPv6 becomes IPv4. */
export function parseIp(input: string): { family: 4 | 6; value: bigint } | undefined {
  let text = input.trim();
  if (text.startsWith("[") && text.endsWith("]")) text = text.slice(1, -1);
  const zone = text.indexOf("%");
  if (zone >= 0) text = text.slice(0, zone);
  if (isIPv4(text)) return { family: 4, value: ipv4ToBigInt(text) };
  if (!isIPv6(text)) return undefined;
  const value = ipv6ToBigInt(text);
  if (value >> 32n === 0xffffn) return { family: 4, value: value & 0xffff_ffffn };
  return { family: 6, value };
}

function ipv4ToBigInt(text: string): bigint {
  return text.split(".").reduce((acc, part) => (acc << 8n) | BigInt(Number(part)), 0n);
}

function ipv6ToBigInt(text: string): bigint {
  let head = text;
  let tail4: bigint | undefined;
  const lastColon = text.lastIndexOf(":");
  const last = text.slice(lastColon + 1);
  if (last.includes(".")) {
    tail4 = ipv4ToBigInt(last);
    head = text.slice(0, lastColon + 1) + "0:0"; // placeholder groups for the IPv4 tail
  }
  const [left = "", right] = head.split("::");
  const leftGroups = left === "" ? [] : left.split(":");
  const rightGroups = right === undefined || right === "" ? [] : right.split(":");
  const missing = 8 - leftGroups.length - rightGroups.length;
  const groups = [
    ...leftGroups,
    ...Array<string>(right === undefined ? 0 : missing).fill("0"),
    ...rightGroups,
  ];
  let value = groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
  if (tail4 !== undefined) value = (value & ~0xffff_ffffn) | tail4;
  return value;
}

function mask(bits: number, prefix: number): bigint {
  const all = (1n << BigInt(bits)) - 1n;
  return prefix === 0 ? 0n : (all >> BigInt(bits - prefix)) << BigInt(bits - prefix);
}
