/**
 * The server nodes a client may hold tunnels to (docs/client-failover.md).
 *
 * `--server-addr` lists entries (`host:port`); an entry whose host is a name
 * stands for every address the name has (A and AAAA records), each a node of
 * its own. `resolveNodes` turns the entries into nodes, through an injected
 * `Resolver` (default `Deno.resolveDns`); the connector calls it again before it
 * dials, so a node added to or removed from DNS is seen on the next reconnect.
 *
 * What DNS returns is bounded: at most `MAX_ADDRESSES_PER_NAME` addresses per
 * name and `MAX_NODES` nodes in all; the rest are counted (`dropped`) and left out.
 */
import { formatHostPort, type HostPort } from "../shared/names.ts";

/** Addresses used per name; more are dropped (and counted). */
export const MAX_ADDRESSES_PER_NAME = 16;
/** Nodes used in all; more are dropped (and counted). */
export const MAX_NODES = 32;
/** A resolution that takes longer than this fails. */
const RESOLVE_TIMEOUT_MS = 5_000;

/** One server the client can dial: a resolved address, and the entry it came from. */
export interface ServerNode {
  /** `ip:port` (or `name:port` when dialled by name): what metrics and events call it. */
  readonly key: string;
  /** The address to dial (an IP address unless `byName`). */
  readonly address: HostPort;
  /** The `--server-addr` entry as given (a name or an address). */
  readonly entry: HostPort;
  /** The entry's position in `--server-addr` (pairs it with its TCP path). */
  readonly index: number;
  /** For people: `ip:port`, or `name:port (ip)` for an entry given by name. */
  readonly label: string;
}

/**
 * Resolves a host name to its addresses (IPv4 and IPv6, in the order to try).
 * Rejects, or resolves with none, when the name has no address.
 */
export type Resolver = (name: string, signal: AbortSignal) => Promise<string[]>;

/** Whether `host` is an IP address literal (never resolved). */
export function isIpLiteral(host: string): boolean {
  return host.includes(":") || /^\d{1,3}(?:\.\d{1,3}){3}$/.test(host);
}

/**
 * The default resolver: `Deno.resolveDns` for A and AAAA at once (each reads
 * /etc/hosts and the system's name servers), IPv4 first. A family with no
 * record is no error; both empty resolves with none.
 */
export async function resolveDnsAll(name: string, signal: AbortSignal): Promise<string[]> {
  const one = async (type: "A" | "AAAA"): Promise<string[] | Error> => {
    try {
      return await Deno.resolveDns(name, type, { signal });
    } catch (e) {
      return e instanceof Error ? e : new Error(String(e));
    }
  };
  const [v4, v6] = await Promise.all([one("A"), one("AAAA")]);
  const found = [...(Array.isArray(v4) ? v4 : []), ...(Array.isArray(v6) ? v6 : [])];
  if (found.length > 0) return found;
  // Neither family: say why, unless both merely have no records.
  const errors = [v4, v6].filter((r): r is Error => r instanceof Error);
  const real = errors.find((e) => !(e instanceof Deno.errors.NotFound));
  if (real) throw real;
  return [];
}

/** The nodes of a resolution, and what went wrong with some entries. */
export interface Resolution {
  readonly nodes: ServerNode[];
  /** One line per entry that gave no address this time (it keeps its previous nodes). */
  readonly problems: string[];
  /** Addresses left out over `MAX_ADDRESSES_PER_NAME` / `MAX_NODES`. */
  readonly dropped: number;
}

export interface ResolveOptions {
  resolve: Resolver;
  signal: AbortSignal;
  /** The previous resolution: an entry that fails now keeps the nodes it had. */
  previous?: Resolution;
  /**
   * Dial a name that does not resolve by its name (one node): the TCP path
   * through an HTTP proxy, where the proxy resolves names the client cannot.
   */
  keepUnresolved?: boolean;
  /** Per-name deadline. Default `RESOLVE_TIMEOUT_MS`. */
  timeoutMs?: number;
}

/**
 * Every entry's nodes, taken in turn from each entry (the first address of each,
 * then the second of each…), so the first nodes tried are on different entries:
 * two servers each with an A and an AAAA record give both servers before either
 * server's second address. Within a name, IPv4 addresses come first. An address
 * that appears twice is one node.
 */
export async function resolveNodes(
  entries: readonly HostPort[],
  o: ResolveOptions,
): Promise<Resolution> {
  const results = await Promise.all(entries.map((entry) => resolveEntry(entry, o)));
  const problems: string[] = [];
  let dropped = 0;
  const perEntry = results.map((r, index): HostPort[] => {
    const entry = entries[index]!;
    if (typeof r === "string") {
      problems.push(r);
      const before = o.previous?.nodes.filter((n) => n.index === index);
      if (before?.length) return before.map((n) => n.address);
      return o.keepUnresolved ? [entry] : [];
    }
    if (r.length > MAX_ADDRESSES_PER_NAME) dropped += r.length - MAX_ADDRESSES_PER_NAME;
    return r.slice(0, MAX_ADDRESSES_PER_NAME).map((ip) => ({ hostname: ip, port: entry.port }));
  });
  const nodes: ServerNode[] = [];
  const seen = new Set<string>();
  const rounds = Math.max(0, ...perEntry.map((a) => a.length));
  for (let round = 0; round < rounds; round++) {
    for (const [index, addresses] of perEntry.entries()) {
      const address = addresses[round];
      if (!address) continue;
      const key = formatHostPort(address);
      if (seen.has(key)) continue;
      if (nodes.length >= MAX_NODES) {
        dropped++;
        continue;
      }
      seen.add(key);
      const entry = entries[index]!;
      const named = !isIpLiteral(entry.hostname) && address.hostname !== entry.hostname;
      nodes.push({
        key,
        address,
        entry,
        index,
        label: named ? `${formatHostPort(entry)} (${address.hostname})` : key,
      });
    }
  }
  return { nodes, problems, dropped };
}

/** An entry's addresses, or a problem naming it. */
async function resolveEntry(entry: HostPort, o: ResolveOptions): Promise<string[] | string> {
  if (isIpLiteral(entry.hostname)) return [entry.hostname];
  const name = entry.hostname;
  const timeoutMs = o.timeoutMs ?? RESOLVE_TIMEOUT_MS;
  const signal = AbortSignal.any([o.signal, AbortSignal.timeout(timeoutMs)]);
  try {
    const found = await o.resolve(name, signal);
    const usable = found.filter(isIpLiteral);
    if (usable.length === 0) return `${name} resolves to no address (no A or AAAA record)`;
    return usable;
  } catch (e) {
    if (signal.aborted && !o.signal.aborted) {
      return `${name} did not resolve within ${timeoutMs} ms`;
    }
    return `Cannot resolve ${name}: ${e instanceof Error ? e.message : String(e)}`;
  }
}
