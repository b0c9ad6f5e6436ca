/**
 * The embedded database template's archive format: a plain (ustar) tar of
 * regular files and directories. `packTar` writes one from a directory;
 * `extractTar` reads one from a stream, one 64 KiB piece at a time (the archive
 * is never whole in memory). Only regular files and directories with relative
 * names are accepted (a leading "/" is dropped), each header's checksum right;
 * anything else (a link, "..", a truncated archive) is an error, before or
 * instead of writing it.
 *
 * One 512-byte header per entry, then its data padded to 512 bytes; two zero
 * blocks end the archive:
 *
 * ```
 *  offset  size  field
 *       0   100  name (NUL-terminated)
 *     100     8  mode (octal)
 *     124    12  size (octal)
 *     136    12  modification time (octal seconds; written as 0)
 *     148     8  checksum (octal): sum of the header's bytes, this field as spaces
 *     156     1  type: "0" or NUL = file, "5" = directory
 *     257     8  magic "ustar" NUL "00"
 * ```
 */
import { join } from "node:path";

const BLOCK = 512;
const PIECE = 64 * 1024;

/** Reads exact byte counts from a stream of chunks. */
class ByteReader {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  #buf: Uint8Array = new Uint8Array(0);
  #at = 0;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.getReader();
  }

  /** Up to `n` bytes (fewer only at the end of the stream). */
  async read(n: number): Promise<Uint8Array> {
    if (this.#buf.length - this.#at >= n) {
      const out = this.#buf.subarray(this.#at, this.#at + n);
      this.#at += n;
      return out;
    }
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      if (this.#at === this.#buf.length) {
        const { value, done } = await this.#reader.read();
        if (done) return out.subarray(0, filled);
        this.#buf = value;
        this.#at = 0;
        continue;
      }
      const take = Math.min(n - filled, this.#buf.length - this.#at);
      out.set(this.#buf.subarray(this.#at, this.#at + take), filled);
      this.#at += take;
      filled += take;
    }
    return out;
  }

  async cancel(): Promise<void> {
    await this.#reader.cancel().catch(() => {});
  }
}

const text = (b: Uint8Array) =>
  new TextDecoder().decode(b.subarray(0, b.indexOf(0) >= 0 ? b.indexOf(0) : b.length));
/** A numeric header field: octal digits only (a size like "12x" is an error, not 10). */
function octal(b: Uint8Array): number {
  const t = text(b).trim() || "0";
  if (!/^[0-7]{1,12}$/.test(t)) throw new Error(`bad octal header field "${t}"`);
  return Number.parseInt(t, 8);
}

/**
 * A tar archive of everything under `dir` (names relative to it, sorted, each
 * directory before what it holds; modes 0700/0600, times 0, so the same tree
 * gives the same bytes). Refuses anything but regular files and directories.
 */
export async function packTar(dir: string): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  const walk = async (rel: string) => {
    const names: string[] = [];
    for await (const e of Deno.readDir(join(dir, rel))) names.push(e.name);
    for (const name of names.sort()) {
      const path = rel ? `${rel}/${name}` : name;
      const info = await Deno.lstat(join(dir, path));
      if (info.isDirectory) {
        out.push(header(path, 0, "5"));
        await walk(path);
      } else if (info.isFile) {
        const data = await Deno.readFile(join(dir, path));
        out.push(header(path, data.length, "0"), data);
        if (data.length % BLOCK) out.push(new Uint8Array(BLOCK - (data.length % BLOCK)));
      } else {
        throw new Error(`${path}: neither a file nor a directory`);
      }
    }
  };
  await walk("");
  out.push(new Uint8Array(2 * BLOCK));
  return out;
}

function header(name: string, size: number, type: "0" | "5"): Uint8Array {
  const h = new Uint8Array(BLOCK);
  const put = (at: number, s: string) => h.set(new TextEncoder().encode(s), at);
  if (new TextEncoder().encode(name).length >= 100) throw new Error(`${name}: name too long`);
  put(0, name);
  put(100, type === "5" ? "0000700\0" : "0000600\0");
  put(108, "0000000\0"); // uid
  put(116, "0000000\0"); // gid
  put(124, size.toString(8).padStart(11, "0") + "\0");
  put(136, "00000000000\0");
  put(156, type);
  put(257, "ustar\0" + "00");
  put(148, checksum(h).toString(8).padStart(6, "0") + "\0 ");
  return h;
}

/** A header's name, checked: relative, no "." or ".." segment, no NUL inside. */
function entryName(raw: string): string {
  const name = raw.replace(/^\/+/, "").replace(/\/+$/, "");
  const parts = name.split("/");
  if (name === "" || parts.some((p) => p === "" || p === "." || p === "..")) {
    throw new Error(`unsafe entry name "${raw}"`);
  }
  return name;
}

/**
 * Writes every entry of the tar archive in `stream` under `dest` (which must
 * exist): directories mode 0700, files 0600. Throws on a malformed archive;
 * what was written before stays (the caller extracts into a scratch directory).
 */
export async function extractTar(stream: ReadableStream<Uint8Array>, dest: string): Promise<void> {
  const input = new ByteReader(stream);
  try {
    for (let entry = 0;; entry++) {
      const header = await input.read(BLOCK);
      if (header.length < BLOCK) throw new Error(`archive ends inside entry ${entry}'s header`);
      if (header.every((b) => b === 0)) return; // end-of-archive block
      const sum = checksum(header);
      const stored = octal(header.subarray(148, 156));
      if (sum !== stored) throw new Error(`entry ${entry}: header checksum ${stored} != ${sum}`);
      const name = entryName(text(header.subarray(0, 100)));
      const size = octal(header.subarray(124, 136));
      const type = String.fromCharCode(header[156]!);
      const path = join(dest, name);
      if (type === "5") {
        await Deno.mkdir(path, { recursive: true, mode: 0o700 });
        continue;
      }
      if (type !== "0" && type !== "\0") throw new Error(`${name}: entry type "${type}" refused`);
      const file = await Deno.open(path, { write: true, createNew: true, mode: 0o600 });
      try {
        for (let left = size; left > 0;) {
          const piece = await input.read(Math.min(PIECE, left));
          if (piece.length === 0) throw new Error(`archive ends inside ${name}`);
          for (let off = 0; off < piece.length;) off += await file.write(piece.subarray(off));
          left -= piece.length;
        }
      } finally {
        file.close();
      }
      const pad = (BLOCK - (size % BLOCK)) % BLOCK;
      if ((await input.read(pad)).length < pad) throw new Error(`archive ends after ${name}`);
    }
  } finally {
    await input.cancel();
  }
}

/** A header's checksum: the sum of its bytes, the checksum field (148..155) counted as spaces. */
function checksum(h: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : h[i]!;
  return sum;
}
