/**
 * Raw DTLS bits for tests, written from RFC 6347 (not with our implementation's code):
 * records, handshake messages, a ClientHello with chosen extensions, and a plain UDP
 * socket with a receive queue.
 */
export function record(type: number, epoch: number, seq: number, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(13 + body.length);
  const v = new DataView(out.buffer);
  out[0] = type;
  v.setUint16(1, 0xfefd);
  v.setUint16(3, epoch);
  v.setUint16(5, Math.floor(seq / 2 ** 32));
  v.setUint32(7, seq >>> 0);
  v.setUint16(11, body.length);
  out.set(body, 13);
  return out;
}

export function handshake(type: number, messageSeq: number, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + body.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, (type << 24) | body.length);
  v.setUint16(4, messageSeq);
  // fragment_offset 0
  out[9] = body.length >>> 16;
  out[10] = (body.length >>> 8) & 0xff;
  out[11] = body.length & 0xff;
  out.set(body, 12);
  return out;
}

/** extended_master_secret, empty: what `clientHello` sends by default. */
export const EXTENDED_MASTER_SECRET = [0x00, 0x17, 0x00, 0x00];

/**
 * A DTLS 1.2 ClientHello record offering PSK-AES128-GCM (no ECDHE, so no groups needed),
 * with `extensions` (type, length and data, already encoded) as its extension block.
 */
export function clientHello(
  random: Uint8Array,
  cookie: Uint8Array,
  messageSeq: number,
  extensions: number[] = EXTENDED_MASTER_SECRET,
): Uint8Array {
  const body = [
    0xfe,
    0xfd,
    ...random,
    0, // session_id
    cookie.length,
    ...cookie,
    0x00,
    0x02,
    0x00,
    0xa8, // TLS_PSK_WITH_AES_128_GCM_SHA256
    0x01,
    0x00, // compression: null
    extensions.length >> 8,
    extensions.length & 0xff,
    ...extensions,
  ];
  return record(22, 0, messageSeq, handshake(1, messageSeq, new Uint8Array(body)));
}

/** The extensions of a ServerHello record (type → data), or undefined if `d` is not one. */
export function serverHelloExtensions(d: Uint8Array): Map<number, Uint8Array> | undefined {
  if (d.length < 13 + 12 + 38 || d[0] !== 22 || d[25 - 12] !== 2) return undefined;
  const v = new DataView(d.buffer, d.byteOffset, d.byteLength);
  let o = 25 + 2 + 32; // handshake header, server_version, random
  o += 1 + d[o]!; // session_id
  o += 3; // cipher_suite, compression_method
  const out = new Map<number, Uint8Array>();
  if (o >= d.length) return out;
  const end = o + 2 + v.getUint16(o);
  for (o += 2; o + 4 <= end;) {
    const type = v.getUint16(o), len = v.getUint16(o + 2);
    out.set(type, d.slice(o + 4, o + 4 + len));
    o += 4 + len;
  }
  return out;
}

/** The cookie of a HelloVerifyRequest record, or undefined if `d` is not one. */
export function helloVerifyCookie(d: Uint8Array): Uint8Array | undefined {
  if (d.length < 13 + 12 + 3 || d[0] !== 22 || d[13] !== 3) return undefined;
  const body = d.subarray(25);
  const len = body[2]!;
  return body.slice(3, 3 + len);
}

/** A plain UDP socket with a receive queue. */
export class Raw {
  readonly sock: Deno.DatagramConn;
  readonly got: Uint8Array[] = [];
  #loop: Promise<void>;
  #closed = false;
  constructor(hostname = "127.0.0.1") {
    const sock = this.sock = Deno.listenDatagram({ transport: "udp", hostname, port: 0 });
    this.#loop = (async () => {
      const buf = new Uint8Array(65536);
      while (!this.#closed) {
        try {
          const [view] = await sock.receive(buf);
          this.got.push(view.slice());
        } catch {
          if (this.#closed) return;
        }
      }
    })();
  }
  async send(d: Uint8Array, port: number): Promise<void> {
    await this.sock.send(d, { transport: "udp", hostname: "127.0.0.1", port });
  }
  async close(): Promise<void> {
    this.#closed = true;
    this.sock.close();
    await this.#loop;
  }
}
