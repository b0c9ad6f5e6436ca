/**
 * Handshake message codecs (RFC 6347 4.2-4.3, RFC 5246 7.4, RFC 4279, RFC 5489).
 * Pure: no I/O. Every decoder returns `{ error }` instead of throwing.
 *
 *  Handshake header (12 bytes)
 *  +--------+-----------------+--------------+-----------------+-----------------+
 *  | type 1 |    length 3     | msg_seq 2    | frag_offset 3   | frag_length 3   |
 *  +--------+-----------------+--------------+-----------------+-----------------+
 */
import { Reader, Writer } from "./bytes.ts";
import { DTLS_1_0, ExtensionType, HANDSHAKE_HEADER_SIZE } from "./constants.ts";

export type Decoded<T> = { value: T; error?: undefined } | { value?: undefined; error: string };

export interface HandshakeFragment {
  type: number;
  length: number;
  messageSeq: number;
  fragmentOffset: number;
  fragmentLength: number;
  body: Uint8Array;
}

/** Splits a handshake record's plaintext into fragments. */
export function decodeFragments(data: Uint8Array): Decoded<HandshakeFragment[]> {
  const out: HandshakeFragment[] = [];
  const r = new Reader(data, "handshake fragment");
  while (r.remaining > 0) {
    const type = r.u8("msg_type");
    const length = r.u24("length");
    const messageSeq = r.u16("message_seq");
    const fragmentOffset = r.u24("fragment_offset");
    const fragmentLength = r.u24("fragment_length");
    const body = r.bytesN(fragmentLength, "fragment");
    if (r.error) return { error: r.error };
    if (fragmentOffset + fragmentLength > length) {
      return {
        error: `Cannot decode handshake fragment: ${fragmentOffset}+${fragmentLength} > ${length}`,
      };
    }
    out.push({ type, length, messageSeq, fragmentOffset, fragmentLength, body });
  }
  return { value: out };
}

/** A whole message with its header, as it is hashed into the transcript. */
export function encodeHandshake(type: number, messageSeq: number, body: Uint8Array): Uint8Array {
  return new Writer(HANDSHAKE_HEADER_SIZE + body.length)
    .u8(type).u24(body.length).u16(messageSeq).u24(0).u24(body.length).bytes(body).finish();
}

/** One fragment of a whole message (as built by encodeHandshake). */
export function fragmentOf(message: Uint8Array, offset: number, length: number): Uint8Array {
  const body = message.subarray(
    HANDSHAKE_HEADER_SIZE + offset,
    HANDSHAKE_HEADER_SIZE + offset + length,
  );
  const out = new Uint8Array(HANDSHAKE_HEADER_SIZE + body.length);
  out.set(message.subarray(0, 6));
  out[6] = offset >>> 16;
  out[7] = (offset >>> 8) & 0xff;
  out[8] = offset & 0xff;
  out[9] = body.length >>> 16;
  out[10] = (body.length >>> 8) & 0xff;
  out[11] = body.length & 0xff;
  out.set(body, HANDSHAKE_HEADER_SIZE);
  return out;
}

export interface Extension {
  type: number;
  data: Uint8Array;
}

function decodeExtensions(r: Reader): Extension[] {
  const exts: Extension[] = [];
  if (r.remaining === 0) return exts; // extensions are optional
  const block = new Reader(r.vec(2, "extensions"), r.what + " extensions");
  while (block.remaining > 0 && !block.error) {
    exts.push({ type: block.u16("extension_type"), data: block.vec(2, "extension_data") });
  }
  if (block.error) r.error ??= block.error;
  return exts;
}

function encodeExtensions(w: Writer, exts: Extension[]): void {
  if (exts.length === 0) return;
  const inner = new Writer();
  for (const e of exts) inner.u16(e.type).vec(2, e.data);
  w.vec(2, inner.finish());
}

export function hasExtension(exts: Extension[], type: number): boolean {
  return exts.some((e) => e.type === type);
}

/** RFC 6347 4.2.1 / RFC 5246 7.4.1.2 */
export interface ClientHello {
  version: number;
  random: Uint8Array;
  sessionId: Uint8Array;
  cookie: Uint8Array;
  cipherSuites: number[];
  compressionMethods: Uint8Array;
  extensions: Extension[];
}

export function decodeClientHello(body: Uint8Array): Decoded<ClientHello> {
  const r = new Reader(body, "ClientHello");
  const version = r.u16("client_version");
  const random = r.bytesN(32, "random");
  const sessionId = r.vec(1, "session_id", 0, 32);
  const cookie = r.vec(1, "cookie", 0, 255);
  const suitesRaw = r.vec(2, "cipher_suites", 2, 65534);
  const compressionMethods = r.vec(1, "compression_methods", 1, 255);
  const extensions = decodeExtensions(r);
  r.end();
  if (r.error) return { error: r.error };
  if (suitesRaw.length % 2) return { error: "Cannot decode ClientHello: odd cipher_suites length" };
  const cipherSuites: number[] = [];
  for (let i = 0; i < suitesRaw.length; i += 2) {
    cipherSuites.push((suitesRaw[i]! << 8) | suitesRaw[i + 1]!);
  }
  return {
    value: { version, random, sessionId, cookie, cipherSuites, compressionMethods, extensions },
  };
}

export function encodeClientHello(m: ClientHello): Uint8Array {
  const w = new Writer().u16(m.version).bytes(m.random).vec(1, m.sessionId).vec(1, m.cookie);
  w.u16(m.cipherSuites.length * 2);
  for (const s of m.cipherSuites) w.u16(s);
  w.vec(1, m.compressionMethods);
  encodeExtensions(w, m.extensions);
  return w.finish();
}

/** RFC 6347 4.2.1 */
export interface HelloVerifyRequest {
  version: number;
  cookie: Uint8Array;
}

export function decodeHelloVerifyRequest(body: Uint8Array): Decoded<HelloVerifyRequest> {
  const r = new Reader(body, "HelloVerifyRequest");
  const version = r.u16("server_version");
  const cookie = r.vec(1, "cookie", 0, 255);
  r.end();
  return r.error ? { error: r.error } : { value: { version, cookie } };
}

export function encodeHelloVerifyRequest(cookie: Uint8Array): Uint8Array {
  // RFC 6347 4.2.1: servers SHOULD use DTLS 1.0 here regardless of the version negotiated.
  return new Writer().u16(DTLS_1_0).vec(1, cookie).finish();
}

/** RFC 5246 7.4.1.3 */
export interface ServerHello {
  version: number;
  random: Uint8Array;
  sessionId: Uint8Array;
  cipherSuite: number;
  compressionMethod: number;
  extensions: Extension[];
}

export function decodeServerHello(body: Uint8Array): Decoded<ServerHello> {
  const r = new Reader(body, "ServerHello");
  const version = r.u16("server_version");
  const random = r.bytesN(32, "random");
  const sessionId = r.vec(1, "session_id", 0, 32);
  const cipherSuite = r.u16("cipher_suite");
  const compressionMethod = r.u8("compression_method");
  const extensions = decodeExtensions(r);
  r.end();
  if (r.error) return { error: r.error };
  return { value: { version, random, sessionId, cipherSuite, compressionMethod, extensions } };
}

export function encodeServerHello(m: ServerHello): Uint8Array {
  const w = new Writer().u16(m.version).bytes(m.random).vec(1, m.sessionId)
    .u16(m.cipherSuite).u8(m.compressionMethod);
  encodeExtensions(w, m.extensions);
  return w.finish();
}

/**
 * ServerKeyExchange for ECDHE_PSK (RFC 5489 2): psk_identity_hint<0..2^16-1>,
 * then ServerECDHParams (RFC 8422 5.4): curve_type(3 = named_curve), named_curve(2),
 * point<1..2^8-1>. No signature.
 */
export interface EcdhePskServerParams {
  hint: Uint8Array;
  group: number;
  publicKey: Uint8Array;
}

export function decodeEcdhePskServerKeyExchange(body: Uint8Array): Decoded<EcdhePskServerParams> {
  const r = new Reader(body, "ServerKeyExchange");
  const hint = r.vec(2, "psk_identity_hint");
  const curveType = r.u8("curve_type");
  const group = r.u16("named_curve");
  const publicKey = r.vec(1, "point", 1, 255);
  r.end();
  if (r.error) return { error: r.error };
  if (curveType !== 3) {
    return { error: `Cannot decode ServerKeyExchange: curve_type ${curveType} is not named_curve` };
  }
  return { value: { hint, group, publicKey } };
}

export function encodeEcdhePskServerKeyExchange(p: EcdhePskServerParams): Uint8Array {
  return new Writer().vec(2, p.hint).u8(3).u16(p.group).vec(1, p.publicKey).finish();
}

/** A plain-PSK ServerKeyExchange carries only a hint (RFC 4279 2). */
export function decodePskServerKeyExchange(body: Uint8Array): Decoded<Uint8Array> {
  const r = new Reader(body, "ServerKeyExchange");
  const hint = r.vec(2, "psk_identity_hint");
  r.end();
  return r.error ? { error: r.error } : { value: hint };
}

/** ClientKeyExchange: psk_identity<0..2^16-1> [ || point<1..2^8-1> for ECDHE_PSK ]. */
export interface PskClientKeyExchange {
  identity: Uint8Array;
  publicKey?: Uint8Array;
}

export function decodeClientKeyExchange(
  body: Uint8Array,
  ecdhe: boolean,
): Decoded<PskClientKeyExchange> {
  const r = new Reader(body, "ClientKeyExchange");
  const identity = r.vec(2, "psk_identity", 1, 128);
  const publicKey = ecdhe ? r.vec(1, "point", 1, 255) : undefined;
  r.end();
  if (r.error) return { error: r.error };
  return { value: publicKey ? { identity, publicKey } : { identity } };
}

export function encodeClientKeyExchange(m: PskClientKeyExchange): Uint8Array {
  const w = new Writer().vec(2, m.identity);
  if (m.publicKey) w.vec(1, m.publicKey);
  return w.finish();
}

/** Groups offered in a supported_groups extension. */
export function decodeSupportedGroups(data: Uint8Array): number[] {
  const r = new Reader(data, "supported_groups");
  const list = r.vec(2, "named_group_list");
  const out: number[] = [];
  for (let i = 0; i + 1 < list.length; i += 2) out.push((list[i]! << 8) | list[i + 1]!);
  return r.error ? [] : out;
}

export function supportedGroupsExtension(groups: number[]): Extension {
  const w = new Writer().u16(groups.length * 2);
  for (const g of groups) w.u16(g);
  return { type: ExtensionType.SupportedGroups, data: w.finish() };
}

/** ec_point_formats: uncompressed only. */
export const EC_POINT_FORMATS: Extension = {
  type: ExtensionType.EcPointFormats,
  data: new Uint8Array([1, 0]),
};
export const EXTENDED_MASTER_SECRET: Extension = {
  type: ExtensionType.ExtendedMasterSecret,
  data: new Uint8Array(0),
};
/** Empty renegotiation_info (RFC 5746 3.4/3.6): we never renegotiate. */
export const RENEGOTIATION_INFO: Extension = {
  type: ExtensionType.RenegotiationInfo,
  data: new Uint8Array([0]),
};

/** connection_id (RFC 9146 3): `opaque cid<0..2^8-1>`, the CID its sender wants to receive. */
export function connectionIdExtension(cid: Uint8Array): Extension {
  return { type: ExtensionType.ConnectionId, data: new Writer().vec(1, cid).finish() };
}

/**
 * The CID in a connection_id extension of `exts`: undefined if there is none, an
 * error if it does not decode (the caller answers decode_error).
 */
export function decodeConnectionId(exts: Extension[]): Decoded<Uint8Array> | undefined {
  const e = exts.find((x) => x.type === ExtensionType.ConnectionId);
  if (!e) return undefined;
  const r = new Reader(e.data, "connection_id extension");
  const cid = r.vec(1, "cid");
  r.end();
  return r.error !== undefined ? { error: r.error } : { value: cid };
}

/** rrc (RFC 9853 4): empty; both hellos carry it when both ends speak the return routability check. */
export const RETURN_ROUTABILITY_CHECK: Extension = {
  type: ExtensionType.ReturnRoutabilityCheck,
  data: new Uint8Array(0),
};
