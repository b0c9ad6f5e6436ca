/**
 * Differential test of the front's request parser against llhttp (the parser
 * behind Node's `node:http`), over the valid requests, the smuggling corpus, and
 * seeded random mutations of valid requests.
 *
 * The rule: every request OUR parser reads, llhttp (strict, Node's default) must
 * read too, with the same method, target, version, header list (names lowercased,
 * values OWS-trimmed: node trims them too), body bytes, trailers and keep-alive
 * decision (node's `res.shouldKeepAlive`), and for pipelined requests the same
 * sequence. Refusing what llhttp reads is allowed
 * (counted and printed). We read a case up to where a server stops: the end of
 * the bytes, a refusal, an unfinished request, or the end of a request after
 * which the connection is not reused (`Connection: close`, HTTP/1.0 without
 * keep-alive, an upgrade, CONNECT). llhttp gets exactly the bytes of the
 * requests we read (the whole case too, to record what it makes of it).
 *
 * One difference is by design and not excused but checked another way: any
 * token is a method to us, while llhttp knows a fixed list (http.METHODS). A case
 * whose method llhttp does not know is sent again with each unknown method made
 * `GET` (the same framing for a request), and must then agree, method aside.
 *
 * One `node` process serves the whole run: a node:http server on 127.0.0.1 that
 * writes `ID <n>\n` on each new connection, records each request it reads on it
 * (method, url, httpVersion, rawHeaders, body, rawTrailers) or the error that
 * ended it, and prints that as a JSON line when the connection closes. Each case
 * goes over a fresh TCP connection: its bytes, then a half-close; the server
 * answers, then closes. A failure prints the case's bytes, JSON-escaped, and its
 * seed, so it reproduces.
 */
import assert from "node:assert/strict";
import { prng } from "../../shared/testing/prng.ts";
import type { HeaderList } from "../../shared/protocol/mod.ts";
import { MAX_LEADING_EMPTY_LINES, RequestError, RequestParser } from "./request_parser.ts";

/** A failing mutant names its seed; REQUEST_DIFF_SEED / REQUEST_DIFF_MUTANTS rerun or widen the search. */
const SEED = Number(envOr("REQUEST_DIFF_SEED", "0x5eed0002"));
const MUTANTS = Number(envOr("REQUEST_DIFF_MUTANTS", "800"));
const CASE_TIMEOUT_MS = 5_000;

function envOr(name: string, fallback: string): string {
  try {
    return Deno.env.get(name) ?? fallback;
  } catch { // no --allow-env
    return fallback;
  }
}

const bytes = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));
const latin1 = (b: Uint8Array) => {
  let s = "";
  for (let i = 0; i < b.length; i += 4096) s += String.fromCharCode(...b.subarray(i, i + 4096));
  return s;
};

interface Case {
  name: string;
  raw: string; // Latin-1: one code unit per byte
  /** Hand-written cases state what our parser must do; mutants do not. */
  expect?: "accept" | "reject";
}

// --- the corpus --------------------------------------------------------------

const H = "Host: example.com\r\n";
const TE = "Transfer-Encoding: chunked\r\n";
const get = (fields = "", target = "/") => `GET ${target} HTTP/1.1\r\n${H}${fields}\r\n`;
const post = (fields: string, body: string) => `POST /p HTTP/1.1\r\n${H}${fields}\r\n${body}`;

/** Valid requests our parser must read to their end; mutants are made from these. */
const VALID: Case[] = [
  ["get", get()],
  ["get fields", get("Accept: */*\r\nUser-Agent: t/1.0\r\nX-Empty:\r\n", "/a/b?c=d&e=%20f")],
  ["get ows", get("X-A:  a \t\r\nX-B:\tb\tc\t\r\nx-c:c\r\n")],
  ["get repeats", get("Set-Cookie: a=1\r\nset-cookie: b=2\r\nSet-Cookie: a=1\r\n")],
  ["get latin1", get("X-Name: caf\xe9 \x80\xff\r\nX-Utf8: \xc3\xa9\r\n")],
  ["get fragment", get("", "/a#frag")],
  ["get odd target chars", get("", "/a|b{c}~d[e]'f\"g<h>i^j`k\\l!$&()*+,;=:@")],
  ["post cl", post("Content-Type: text/plain\r\nContent-Length: 11\r\n", "hello world")],
  ["post cl 0", post("Content-Length: 0\r\n", "")],
  ["post cl 007", post("Content-Length: 007\r\n", "hello!!")],
  ["post cl ows", post("Content-Length:  5  \r\n", "hello")],
  ["post cl crlf body", post("Content-Length: 8\r\n", "\r\n\r\n\n\n\r\r")],
  ["post cl binary", post("Content-Length: 8\r\n", "\x00\x01\xff\x80\r\n0\n")],
  ["post cl request body", post("Content-Length: 27\r\n", "GET / HTTP/1.1\r\nHost: x\r\n\r\n")],
  ["chunked", post(TE, "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")],
  ["chunked ext", post(TE, '5;name=value\r\nhello\r\n1;a;b="q \\" s"\r\n!\r\n0;end\r\n\r\n')],
  [
    "chunked upper",
    post("Transfer-Encoding: Chunked\r\n", "1B\r\n" + "x".repeat(27) + "\r\n00\r\n\r\n"),
  ],
  ["chunked ows", post("Transfer-Encoding:  chunked  \r\n", "2\r\nok\r\n0\r\n\r\n")],
  ["chunked trailers", post(TE, "3\r\nabc\r\n0\r\nX-Checksum: abc\r\nX-Other:  2 \r\n\r\n")],
  ["chunked empty", post(TE, "0\r\n\r\n")],
  ["chunked crlf data", post(TE, "5\r\n0\r\n\r\n\r\n0\r\n\r\n")],
  ["chunked zeros", post(TE, "0000000000000003\r\nabc\r\n0\r\n\r\n")],
  ["http/1.0", "GET /old HTTP/1.0\r\n\r\n"],
  ["http/1.0 host cl", "POST /old HTTP/1.0\r\nHost: example.com\r\nContent-Length: 2\r\n\r\nok"],
  [
    "http/1.0 keep-alive",
    "GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
  ],
  ["connection close", get("Connection: close\r\n")],
  ["connection list", get("Connection: ,X-Hop ,\r\nConnection: keep-alive\r\nX-Hop: 1\r\n")],
  ["absolute", "GET hTTp://Example.com:8080/p?q=1 HTTP/1.1\r\nHost: example.COM:8080\r\n\r\n"],
  ["absolute no path", "GET https://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n"],
  ["absolute ipv6", "GET http://[::1]:8080/x HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"],
  ["options *", "OPTIONS * HTTP/1.1\r\n" + H + "\r\n"],
  ["connect", "CONNECT example.com:443 HTTP/1.1\r\n" + H + "\r\n"],
  ["leading crlf", "\r\n".repeat(MAX_LEADING_EMPTY_LINES) + get()],
  ["expect", post("Expect: 100-continue\r\nContent-Length: 2\r\n", "ok")],
  [
    "upgrade",
    get("Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n", "/ws"),
  ],
  ["host forms", "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"],
  ["host subdelims", "GET / HTTP/1.1\r\nHost: a-b.c_d~e!$&'()*+,;=%41\r\n\r\n"],
  ["methods", "DELETE /x HTTP/1.1\r\n" + H + "\r\nPATCH /y HTTP/1.1\r\n" + H + "\r\n"],
  [
    "pipelined",
    get("", "/1") + post("Content-Length: 5\r\n", "first") + "\r\n" +
    post(TE, "3;x=y\r\nthi\r\n2\r\nrd\r\n0\r\nT: 1\r\n\r\n") + get("Connection: close\r\n", "/4"),
  ],
  [
    "pipelined keep-alive",
    post("Content-Length: 3\r\n", "abc") + post(TE, "1\r\nd\r\n0\r\n\r\n") + get("", "/3"),
  ],
].map(([name, raw]) => ({ name: name!, raw: raw!, expect: "accept" as const }));

/** Requests our parser must refuse (see request_parser_test.ts for why each, and the status). */
const REFUSED: Case[] = [
  ["CL.TE", post("Content-Length: 6\r\n" + TE, "0\r\n\r\nX")],
  ["TE.CL", post(TE + "Content-Length: 3\r\n", "8\r\nSMUGGLED\r\n0\r\n\r\n")],
  ["TE xchunked", post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n")],
  ["TE leading space", post(" Transfer-Encoding: chunked\r\n", "0\r\n\r\n")],
  ["TE space before colon", post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n")],
  ["TE chunked, identity", post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n")],
  ["TE identity, chunked", post("Transfer-Encoding: identity, chunked\r\n", "0\r\n\r\n")],
  ["TE chunked,", post("Transfer-Encoding: chunked,\r\n", "0\r\n\r\n")],
  ["TE VT", post("Transfer-Encoding:\x0bchunked\r\n", "0\r\n\r\n")],
  ["TE tab before", post("Transfer-Encoding:\tchunked\r\n", "0\r\n\r\n")],
  ["TE tab after", post("Transfer-Encoding: chunked\t\r\n", "0\r\n\r\n")],
  ["TE twice", post(TE + TE, "0\r\n\r\n")],
  ["TE chunked then identity", post(TE + "Transfer-Encoding: identity\r\n", "0\r\n\r\n")],
  ["TE in HTTP/1.0", "POST / HTTP/1.0\r\n" + TE + "\r\n0\r\n\r\n"],
  ["CL twice same", post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello")],
  ["CL twice different", post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!")],
  ["CL 5, 5", post("Content-Length: 5, 5\r\n", "hello")],
  ["CL +5", post("Content-Length: +5\r\n", "hello")],
  ["CL 5 5", post("Content-Length: 5 5\r\n", "hello")],
  ["CL 0x5", post("Content-Length: 0x5\r\n", "hello")],
  ["CL tab before", post("Content-Length:\t5\r\n", "hello")],
  ["CL tab after", post("Content-Length: 5\t\r\n", "hello")],
  ["CL 16 digits", post("Content-Length: 1000000000000000\r\n", "")],
  ["chunk 17 digits", post(TE, "FFFFFFFFFFFFFFFFF\r\nx\r\n0\r\n\r\n")],
  ["chunk 0x10", post(TE, "0x10\r\n0123456789abcdef\r\n0\r\n\r\n")],
  ["chunk -1", post(TE, "-1\r\nx\r\n0\r\n\r\n")],
  ["chunk space", post(TE, "5 \r\nhello\r\n0\r\n\r\n")],
  ["chunk bare LF", post(TE, "5\nhello\r\n0\r\n\r\n")],
  ["chunk data too long", post(TE, "3\r\nhello\r\n0\r\n\r\n")],
  ["trailer CL", post(TE, "0\r\nContent-Length: 5\r\n\r\n")],
  ["NUL in value", get("X-A: a\x00b\r\n")],
  ["NUL in name", get("X\x00A: 1\r\n")],
  ["bare CR in value", get("X-A: a\rb\r\n")],
  ["obs-fold", get("X-A: a\r\n b\r\n")],
  ["space before colon", get("X-A : 1\r\n")],
  ["bare LF", "GET / HTTP/1.1\nHost: a\n\n"],
  ["bare LF end", "GET / HTTP/1.1\r\nHost: a\r\n\n"],
  ["absolute vs Host", "GET http://a/ HTTP/1.1\r\nHost: b\r\n\r\n"],
  ["Host missing", "GET / HTTP/1.1\r\n\r\n"],
  ["Host twice", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"],
  ["Host a b", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n"],
  ["Host x:abc", "GET / HTTP/1.1\r\nHost: x:abc\r\n\r\n"],
  ["Host empty", "GET / HTTP/1.1\r\nHost:\r\n\r\n"],
  ["HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n"],
  ["HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n"],
  ["HTTP/1.10", "GET / HTTP/1.10\r\nHost: a\r\n\r\n"],
  ["bad method", "GE(T / HTTP/1.1\r\nHost: a\r\n\r\n"],
  ["GET *", "GET * HTTP/1.1\r\nHost: a\r\n\r\n"],
  ["CONNECT /", "CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n"],
  ["too many empty lines", "\r\n".repeat(MAX_LEADING_EMPTY_LINES + 1) + get()],
  ["Expect other", get("Expect: 200-ok\r\n")],
  ["Latin-1 in target", "GET /caf\xe9 HTTP/1.1\r\nHost: a\r\n\r\n"],
].map(([name, raw]) => ({ name: name!, raw: raw!, expect: "reject" as const }));

// --- mutants -------------------------------------------------------------------

type Rand = () => number;
const int = (r: Rand, n: number) => Math.floor(r() * n);
const pick = <T>(r: Rand, a: readonly T[]): T => a[int(r, a.length)]!;

/** Lines of `s`, each with its LF (the last may have none). */
const linesOf = (s: string) => s.split(/(?<=\n)/);

const ALPHABET = [
  "\r",
  "\n",
  "\r\n",
  " ",
  "\t",
  "\x00",
  "\x0b",
  "\x7f",
  "\xff",
  ":",
  ",",
  ";",
  "=",
  '"',
  "/",
  "-",
  "0",
  "1",
  "5",
  "9",
  "a",
  "f",
  "F",
  "x",
  "chunked",
  "Content-Length",
  "Transfer-Encoding",
  "Content-Length: 1\r\n",
  "Transfer-Encoding: chunked\r\n",
];

const MUTATIONS: { name: string; apply(s: string, r: Rand): string }[] = [
  {
    name: "insert",
    apply: (s, r) => {
      const i = int(r, s.length + 1);
      return s.slice(0, i) + pick(r, ALPHABET) + s.slice(i);
    },
  },
  {
    name: "replace",
    apply: (s, r) => {
      const i = int(r, s.length);
      return s.slice(0, i) + pick(r, ALPHABET) + s.slice(i + 1);
    },
  },
  {
    name: "delete",
    apply: (s, r) => {
      const i = int(r, s.length);
      return s.slice(0, i) + s.slice(i + 1 + (r() < 0.2 ? int(r, 4) : 0));
    },
  },
  {
    name: "dup-line",
    apply: (s, r) => {
      const l = linesOf(s);
      const i = int(r, l.length);
      l.splice(i, 0, l[i]!);
      return l.join("");
    },
  },
  {
    name: "drop-line",
    apply: (s, r) => {
      const l = linesOf(s);
      l.splice(int(r, l.length), 1);
      return l.join("");
    },
  },
  {
    name: "swap-lines",
    apply: (s, r) => {
      const l = linesOf(s);
      const i = int(r, l.length);
      const j = int(r, l.length);
      [l[i], l[j]] = [l[j]!, l[i]!];
      return l.join("");
    },
  },
  { name: "truncate", apply: (s, r) => s.slice(0, 1 + int(r, Math.max(1, s.length - 1))) },
  {
    name: "content-length",
    apply: (s, r) => {
      const body = s.length - (s.indexOf("\r\n\r\n") + 4);
      const v = pick(r, [
        "0",
        "1",
        "5",
        "+5",
        "-1",
        "5 5",
        "0x10",
        "5, 5",
        "05",
        " 5",
        "5\t",
        "",
        ",5",
        "1e1",
        "99999999999999999",
        String(Math.max(0, body)),
        String(Math.max(0, body)),
        String(body + 1),
        String(Math.max(0, body - 1)),
      ]);
      return setField(s, r, pick(r, ["Content-Length", "content-length", "Content-Length "]), v);
    },
  },
  {
    name: "transfer-encoding",
    apply: (s, r) => {
      const v = pick(r, [
        "chunked",
        "chunked",
        "Chunked",
        "\tchunked",
        "chunked ",
        "gzip, chunked",
        "chunked, gzip",
        "identity",
        "chunked,",
        ", chunked",
        "chunked;x=1",
        "",
        "chunked, chunked",
        "xchunked",
        "chunk",
        '"chunked"',
      ]);
      return setField(
        s,
        r,
        pick(r, [
          "Transfer-Encoding",
          "transfer-encoding",
          "Transfer-Encoding ",
          " Transfer-Encoding",
        ]),
        v,
      );
    },
  },
  {
    name: "host",
    apply: (s, r) =>
      setField(
        s,
        r,
        "Host",
        pick(r, [
          "example.com",
          "EXAMPLE.com",
          "example.com:80",
          "a b",
          "x:abc",
          "",
          "[::1]",
          "1.2.3.4:8",
          "a@b",
          "a:",
        ]),
      ),
  },
  {
    name: "connection",
    apply: (s, r) =>
      setField(
        s,
        r,
        "Connection",
        pick(r, ["close", "keep-alive", "Close", "keep-alive, close", "upgrade", ", ,", "a b"]),
      ),
  },
  {
    name: "expect",
    apply: (s, r) => setField(s, r, "Expect", pick(r, ["100-continue", "100-Continue", "x"])),
  },
  {
    name: "version",
    apply: (s, r) =>
      s.replace(
        /HTTP\/1\.[01]\r?\n/,
        (m) =>
          pick(r, [
            "HTTP/1.0",
            "HTTP/1.1",
            "HTTP/1.2",
            "HTTP/2.0",
            "HTTP/1.10",
            "http/1.1",
            "HTTP/1",
          ]) +
          m.slice(8),
      ),
  },
  {
    name: "method",
    apply: (s, r) =>
      s.replace(
        /^(\r\n)*[A-Z]+/,
        (m) =>
          m.replace(
            /[A-Z]+$/,
            pick(r, ["GET", "POST", "PUT", "HEAD", "OPTIONS", "CONNECT", "get", "FOO", "M-SEARCH"]),
          ),
      ),
  },
  {
    name: "target",
    apply: (s, r) =>
      s.replace(
        / [^ \r\n]+ HTTP\//,
        " " +
          pick(r, [
            "/",
            "*",
            "/a?b#c",
            "http://example.com/x",
            "HTTPS://Example.com",
            "example.com:443",
            "//x",
            "x",
            "/a b",
            "http://u@example.com/",
          ]) + " HTTP/",
      ),
  },
  {
    name: "chunk-size",
    apply: (s, r) => {
      const l = linesOf(s);
      const idx = l.map((x, i) => /^[0-9a-fA-F]+\r?\n$/.test(x) ? i : -1).filter((i) => i >= 0);
      if (idx.length === 0) return s;
      const i = pick(r, idx);
      const [, hex, eol] = /^([0-9a-fA-F]+)(\r?\n)$/.exec(l[i]!)!;
      const n = parseInt(hex!, 16);
      const v = pick(r, [
        (n + 1).toString(16),
        Math.max(0, n - 1).toString(16),
        hex!.toUpperCase(),
        "00" + hex,
        hex + " ",
        " " + hex,
        hex + ";x",
        hex + ";x=1",
        hex + ';x="y"',
        hex + " ;x",
        hex + ";",
        "zz",
        "-" + hex,
        "0x" + hex,
        hex + "\t",
        "ffffffffffffffff",
        "1" + "0".repeat(16),
      ]);
      l[i] = v + eol;
      return l.join("");
    },
  },
  {
    name: "crlf-to-lf",
    apply: (s, r) => {
      const at = allIndexes(s, "\r\n");
      if (at.length === 0) return s;
      const i = pick(r, at);
      return s.slice(0, i) + s.slice(i + 1);
    },
  },
  {
    name: "obs-fold",
    apply: (s, r) => {
      const l = linesOf(s);
      const i = 1 + int(r, Math.max(1, l.length - 1));
      l.splice(i, 0, pick(r, [" folded\r\n", "\tfolded\r\n", " \r\n"]));
      return l.join("");
    },
  },
  {
    name: "append",
    apply: (s, r) =>
      s +
      pick(r, [
        "GET /next HTTP/1.1\r\nHost: example.com\r\n\r\n",
        "POST /next HTTP/1.1\r\nHost: example.com\r\nContent-Length: 1\r\n\r\nz",
        "garbage",
        "\r\n",
        "0\r\n\r\n",
        "x",
      ]),
  },
];

function allIndexes(s: string, sub: string): number[] {
  const out: number[] = [];
  for (let i = s.indexOf(sub); i >= 0; i = s.indexOf(sub, i + 1)) out.push(i);
  return out;
}

/** Replaces the value of a random existing `name` field, or adds the field after the request line. */
function setField(s: string, r: Rand, name: string, value: string): string {
  const l = linesOf(s);
  const key = name.trim().toLowerCase();
  const at = l.map((x, i) => x.toLowerCase().startsWith(key + ":") ? i : -1).filter((i) => i >= 0);
  const first = l.findIndex((x) => x !== "\r\n");
  if (at.length > 0 && r() < 0.6) {
    const i = pick(r, at);
    l[i] = `${name}: ${value}${l[i]!.endsWith("\r\n") ? "\r\n" : "\n"}`;
  } else {
    const i = first + 1 + int(r, Math.max(1, Math.min(3, l.length - first - 1)));
    l.splice(i, 0, `${name}: ${value}\r\n`);
  }
  return l.join("");
}

function corpus(): Case[] {
  const r = prng(SEED);
  const out: Case[] = [...VALID, ...REFUSED];
  for (let k = 0; k < MUTANTS; k++) {
    const base = pick(r, VALID);
    let raw = base.raw;
    const names: string[] = [];
    // Half the mutants get one mutation (more of them stay readable), the rest 2 or 3.
    for (let m = r() < 0.5 ? 1 : 2 + int(r, 2); m > 0; m--) {
      const mut = pick(r, MUTATIONS);
      raw = mut.apply(raw, r);
      names.push(mut.name);
    }
    out.push({ name: `mutant ${k} (seed ${SEED}): ${base.name} + ${names.join(", ")}`, raw });
  }
  return out;
}

// --- our parser ----------------------------------------------------------------

/** One request as both sides report it. */
interface Read {
  /** Where the request starts in the case (not compared: for making methods known). */
  start: number;
  method: string;
  target: string;
  version: string;
  headers: HeaderList;
  body: string; // Latin-1
  trailers: HeaderList;
  /** May the connection carry another request (llhttp: node's res.shouldKeepAlive; null for CONNECT). */
  keepAlive: boolean | null;
}

interface Ours {
  /** The requests read, up to where a server would stop reading the connection. */
  requests: Read[];
  /** Bytes of the case those requests take. */
  used: number;
  /**
   * Why reading stopped: all bytes read (maybe with empty lines after the last
   * request); refused; the bytes ended mid-request; a request after which the
   * connection is not reused.
   */
  stop: "end" | "refused" | "partial" | "last";
  error?: string;
}

/** Runs `raw` through a RequestParser fed `pieceSize` bytes at a time (0: whole), as a server would. */
function ours(raw: Uint8Array, pieceSize = 0): Ours {
  const requests: Read[] = [];
  let current: Read | null = null;
  let used = 0; // bytes of complete requests
  let at = 0; // bytes consumed
  let last = false;
  let ended = false;
  const p = new RequestParser({
    head: (h) => {
      current = {
        start: used,
        method: h.method,
        target: h.target,
        version: `1.${h.minor}`,
        headers: h.headers,
        body: "",
        trailers: [],
        keepAlive: h.keepAlive,
      };
      last = !h.keepAlive || h.upgrade !== null || h.method === "CONNECT";
    },
    body: (v) => current!.body += latin1(v),
    trailers: (t) => current!.trailers.push(...t),
    end: () => {
      requests.push(current!);
      current = null;
      ended = true;
    },
  });

  const step = pieceSize > 0 ? pieceSize : Math.max(1, raw.length);
  try {
    for (let i = 0; i < raw.length; i += step) {
      let piece = raw.subarray(i, i + step);
      while (piece.length > 0) {
        const n = p.feed(piece);
        at += n;
        piece = piece.subarray(n);
        if (ended) {
          ended = false;
          used = at;
          if (last) return { requests, used, stop: "last" };
          p.next();
        }
      }
    }
  } catch (e) {
    if (!(e instanceof RequestError)) throw e;
    return { requests, used, stop: "refused", error: `${e.status} ${e.message}` };
  }
  const rest = latin1(raw.subarray(used));
  return { requests, used, stop: /^(\r\n)*\r?$/.test(rest) ? "end" : "partial" };
}

// --- llhttp, through node:http -------------------------------------------------

/** The node side: no template strings in it, so it can sit in one. */
const NODE_SCRIPT = String.raw`
"use strict";
const http = require("node:http");
const CONN = Symbol("conn");
let nextId = 0;
// Heads as large as ours (node's default is 16 KiB); strict parsing (the default).
const server = http.createServer({ maxHeaderSize: 1 << 20, insecureHTTPParser: false });
// A client's FIN ends the connection once the answers are out, without aborting
// a request still being read (the default, false, aborts it).
server.httpAllowHalfOpen = true;
server.on("connection", (sock) => {
  const conn = { id: nextId++, requests: [], error: null };
  sock[CONN] = conn;
  sock.on("error", () => {});
  sock.on("close", () => process.stdout.write(JSON.stringify(conn) + "\n"));
  sock.write("ID " + conn.id + "\n");
});
const record = (req) => {
  const rec = {
    method: req.method, target: req.url, version: req.httpVersion,
    rawHeaders: req.rawHeaders, body: null, rawTrailers: [], keepAlive: null,
  };
  req.socket[CONN].requests.push(rec);
  return rec;
};
server.on("request", (req, res) => {
  const rec = record(req);
  rec.keepAlive = res.shouldKeepAlive;
  const chunks = [];
  req.on("data", (d) => chunks.push(d));
  req.on("end", () => {
    rec.body = Buffer.concat(chunks).toString("latin1");
    rec.rawTrailers = req.rawTrailers;
    res.end("ok");
  });
});
server.on("connect", (req, sock) => {
  record(req).body = "";
  sock.destroy();
});
server.on("checkExpectation", (req, res) => {
  req.socket[CONN].error = "expectation " + req.headers.expect;
  res.writeHead(417, { connection: "close" });
  res.end();
});
server.on("clientError", (err, sock) => {
  const conn = sock[CONN];
  if (conn && conn.error === null) conn.error = (err.code || "error") + ": " + (err.reason || err.message);
  sock.destroy();
});
server.listen(0, "127.0.0.1", () => {
  const hello = {
    port: server.address().port, node: process.version, llhttp: process.versions.llhttp,
    methods: http.METHODS, deno: typeof Deno !== "undefined",
  };
  process.stdout.write("HELLO " + JSON.stringify(hello) + "\n");
});
process.stdin.on("data", () => {});
process.stdin.on("end", () => process.exit(0));
`;

/** The node server's first line. */
interface Hello {
  port: number;
  node: string;
  llhttp?: string;
  methods: string[];
  /** Deno's node compatibility answered, not node. */
  deno: boolean;
}

interface Theirs {
  id: number;
  requests: {
    method: string;
    target: string;
    version: string;
    rawHeaders: string[];
    body: string | null;
    rawTrailers: string[];
    keepAlive: boolean | null;
  }[];
  error: string | null;
}

/** llhttp's reading of `raw`: the requests node reported, or why it stopped. */
interface LlhttpRead {
  requests: Read[];
  /** Every request it saw was read to its end and nothing went wrong. */
  clean: boolean;
  error: string | null;
}

const pairs = (flat: string[]): HeaderList => {
  const out: HeaderList = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i]!.toLowerCase(), flat[i + 1]!]);
  return out;
};

class Llhttp {
  readonly #child: Deno.ChildProcess;
  readonly #records = new Map<number, Theirs>();
  readonly #waiting = new Map<number, (t: Theirs) => void>();
  readonly #stderr: Promise<string>;
  #port = 0;
  #lines: Promise<void> | null = null;

  constructor() {
    this.#child = new Deno.Command(NODE ?? "node", {
      args: ["-e", NODE_SCRIPT],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#stderr = new Response(this.#child.stderr).text();
  }

  /** Waits for the server's port (and versions, methods), then keeps collecting its connection records. */
  async start(): Promise<Hello> {
    const reader = this.#child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    let gotHello: ((h: Hello) => void) | null = null;
    const hello = new Promise<Hello>((ok) => gotHello = ok);
    this.#lines = (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buf += value;
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line.startsWith("HELLO ")) {
            const h = JSON.parse(line.slice(6)) as Hello;
            this.#port = h.port;
            gotHello!(h);
            continue;
          }
          const t = JSON.parse(line) as Theirs;
          const w = this.#waiting.get(t.id);
          if (w !== undefined) {
            this.#waiting.delete(t.id);
            w(t);
          } else this.#records.set(t.id, t);
        }
      }
    })();
    const status = this.#child.status.then(async (s) => {
      throw new Error(`node exited (${s.code}) before listening:\n${await this.#stderr}`);
    });
    return await Promise.race([hello, status]);
  }

  #record(id: number): Promise<Theirs> {
    const t = this.#records.get(id);
    if (t !== undefined) {
      this.#records.delete(id);
      return Promise.resolve(t);
    }
    return new Promise((ok) => this.#waiting.set(id, ok));
  }

  /** Sends `raw` on a fresh connection, half-closes, reads to the end; returns what node read. */
  async read(raw: Uint8Array): Promise<LlhttpRead> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: this.#port });
    const timer = setTimeout(() => {
      try {
        conn.close();
      } catch { /* closed */ }
    }, CASE_TIMEOUT_MS);
    let id = -1;
    try {
      // "ID <n>\n" first: which connection record is this one's.
      const buf = new Uint8Array(64 * 1024);
      let head = "";
      while (!head.includes("\n")) {
        const n = await conn.read(buf);
        if (n === null) throw new Error("node closed before sending the connection id");
        head += latin1(buf.subarray(0, n));
      }
      id = Number(/^ID (\d+)\n/.exec(head)![1]);
      try {
        await writeAll(conn, raw);
        await conn.closeWrite();
      } catch { /* node may refuse and close before reading it all */ }
      try {
        while (await conn.read(buf) !== null) { /* the answers: not what is compared */ }
      } catch { /* reset */ }
    } finally {
      clearTimeout(timer);
      try {
        conn.close();
      } catch { /* closed */ }
    }
    const t = await Promise.race([
      this.#record(id),
      new Promise<never>((_, fail) =>
        setTimeout(
          () => fail(new Error(`no record from node for connection ${id}`)),
          CASE_TIMEOUT_MS,
        )
      ),
    ]);
    return {
      requests: t.requests.map((q) => ({
        start: -1,
        method: q.method,
        target: q.target,
        version: q.version,
        headers: pairs(q.rawHeaders),
        body: q.body ?? "",
        trailers: pairs(q.rawTrailers),
        keepAlive: q.keepAlive,
      })),
      clean: t.error === null && t.requests.every((q) => q.body !== null),
      error: t.error ??
        (t.requests.some((q) => q.body === null) ? "a request not read to its end" : null),
    };
  }

  /** Stops node (by its PID) and waits for it. */
  async stop(): Promise<void> {
    try {
      await this.#child.stdin.close();
    } catch { /* closed */ }
    const exited = await Promise.race([
      this.#child.status.then(() => true),
      new Promise<false>((ok) => setTimeout(() => ok(false), 2000)),
    ]);
    if (!exited) {
      try {
        Deno.kill(this.#child.pid, "SIGKILL");
      } catch { /* gone */ }
      await this.#child.status;
    }
    await this.#lines?.catch(() => {});
    await this.#stderr.catch(() => "");
  }

  /** Kills node at once (by its PID): for failures. */
  kill(): void {
    try {
      Deno.kill(this.#child.pid, "SIGKILL");
    } catch { /* gone */ }
  }
}

async function writeAll(conn: Deno.Conn, b: Uint8Array): Promise<void> {
  while (b.length > 0) b = b.subarray(await conn.write(b));
}

/** Runs `f` over `items` with at most `n` at a time. */
async function pool<T, R>(items: T[], n: number, f: (t: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await f(items[i]!);
    }
  }));
  return out;
}

// --- comparing -------------------------------------------------------------------

const KNOWN_METHODS = new Set([
  // node's http.METHODS (llhttp 9), checked against the running node below.
  ..."ACL BIND CHECKOUT CONNECT COPY DELETE GET HEAD LINK LOCK M-SEARCH MERGE MKACTIVITY MKCALENDAR MKCOL MOVE NOTIFY OPTIONS PATCH POST PROPFIND PROPPATCH PURGE PUT QUERY REBIND REPORT SEARCH SOURCE SUBSCRIBE TRACE UNBIND UNLINK UNLOCK UNSUBSCRIBE"
    .split(" "),
]);

/** `raw`'s requests (as we read them) with every method llhttp does not know made GET. */
function knownMethods(raw: string, requests: Read[]): string | null {
  if (requests.every((q) => KNOWN_METHODS.has(q.method))) return null;
  let out = raw;
  for (const q of [...requests].reverse()) {
    if (KNOWN_METHODS.has(q.method)) continue;
    // Only empty lines come between a request's start and its method.
    const at = out.indexOf(q.method + " ", q.start);
    out = out.slice(0, at) + "GET" + out.slice(at + q.method.length);
  }
  return out;
}

/** Where llhttp's reading differs from ours (both lists of requests), or null. */
function differs(o: Read[], t: LlhttpRead, ignoreMethod = false): string | null {
  if (!t.clean) return `llhttp did not read it cleanly (${t.error})`;
  if (t.requests.length !== o.length) {
    return `llhttp read ${t.requests.length} request(s), we read ${o.length}`;
  }
  for (let i = 0; i < o.length; i++) {
    const a = { ...o[i]!, method: ignoreMethod ? "" : o[i]!.method };
    const b = { ...t.requests[i]!, method: ignoreMethod ? "" : t.requests[i]!.method };
    for (
      const k of [
        "method",
        "target",
        "version",
        "headers",
        "body",
        "trailers",
        "keepAlive",
      ] as const
    ) {
      if (k === "keepAlive" && (a[k] === null || b[k] === null)) continue;
      if (JSON.stringify(a[k]) !== JSON.stringify(b[k])) {
        return `request ${i + 1}: ${k} ${JSON.stringify(b[k])} vs our ${JSON.stringify(a[k])}`;
      }
    }
  }
  return null;
}

/**
 * The first real `node` on PATH (looked up, not run: the test runs one node only),
 * or null. Deno 2 puts a `node` of its own (a link to deno, in a `node_compat_bin`
 * directory) on the PATH of what it spawns when there is no node: that one is
 * Deno's node:http, not llhttp, and does not count.
 */
const NODE: string | null = (() => {
  let deno = "";
  try {
    deno = Deno.realPathSync(Deno.execPath());
  } catch { /* no --allow-read: compare nothing */ }
  let path = "";
  try {
    path = Deno.env.get("PATH") ?? "";
  } catch { // no --allow-env: let the test try `node` and say what is wrong
    return "node";
  }
  for (const dir of path.split(":")) {
    if (dir.endsWith("node_compat_bin")) continue;
    try {
      const real = Deno.realPathSync(`${dir || "."}/node`);
      const st = Deno.statSync(real);
      if (st.isFile && ((st.mode ?? 0o111) & 0o111) !== 0 && real !== deno) {
        return `${dir || "."}/node`;
      }
    } catch { /* not here */ }
  }
  return null;
})();
if (NODE === null) {
  console.warn(
    "request_parser_llhttp_test: SKIPPED: no `node` (Node.js 18+) on PATH; this test " +
      "compares the request parser with llhttp through node:http. CI installs node.",
  );
}

Deno.test({
  name: "request parser vs llhttp: every request we read, llhttp reads the same",
  ignore: NODE === null,
  fn: async () => {
    const started = performance.now();
    const cases = corpus();
    assert.ok(cases.length >= 300, `corpus of ${cases.length}`);
    const failures: string[] = [];
    const show = (c: Case) => `${c.name} ${JSON.stringify(c.raw)}`;

    // Our side first: it decides which bytes llhttp is asked about.
    const mine = cases.map((c) => {
      const b = bytes(c.raw);
      const whole = ours(b);
      // The same case bytewise and in pieces of 7 must read the same (split invariance).
      for (const size of [1, 7]) {
        const o = ours(b, size);
        if (JSON.stringify(o) !== JSON.stringify(whole)) {
          failures.push(
            `fed in pieces of ${size} it reads differently: ${show(c)}\n  ${JSON.stringify(o)}\n  ${
              JSON.stringify(whole)
            }`,
          );
        }
      }
      const accepted = whole.stop === "end" || whole.stop === "last";
      if (c.expect === "accept" && !accepted) {
        failures.push(`we refuse a valid case (${whole.stop}, ${whole.error}): ${show(c)}`);
      }
      if (c.expect === "reject" && whole.stop !== "refused") {
        failures.push(`we accept a case to refuse: ${show(c)}`);
      }
      return whole;
    });

    const llhttp = new Llhttp();
    try {
      const hello = await llhttp.start();
      assert.ok(
        !hello.deno && hello.llhttp !== undefined,
        `${NODE} is not Node.js with llhttp (Deno's node compatibility?)`,
      );
      const version = `node ${hello.node}, llhttp ${hello.llhttp}`;
      assert.deepEqual(
        [...hello.methods].sort(),
        [...KNOWN_METHODS].sort(),
        "node's http.METHODS changed: update KNOWN_METHODS",
      );

      // Jobs: the bytes of the requests we read (if any), the whole case (if different),
      // and the case with unknown methods made GET (if any).
      type Job = { raw: string };
      const jobs: Job[] = [];
      const job = (raw: string) => jobs.push({ raw }) - 1;
      const plan = cases.map((c, i) => {
        const o = mine[i]!;
        const read = o.requests.length > 0 ? c.raw.slice(0, o.used) : null;
        const readJob = read !== null ? job(read) : -1;
        const wholeJob = read === c.raw ? readJob : job(c.raw);
        const known = read !== null ? knownMethods(read, o.requests) : null;
        const knownJob = known !== null ? job(known) : -1;
        return { readJob, wholeJob, knownJob };
      });
      const results = await pool(jobs, 8, (j) => llhttp.read(bytes(j.raw)));

      const count = {
        agree: 0,
        agreeMethodAside: 0,
        weRefuseLlhttpReads: 0,
        bothRefuse: 0,
        requestsCompared: 0,
      };
      const weRefuse: string[] = [];
      for (let i = 0; i < cases.length; i++) {
        const c = cases[i]!;
        const o = mine[i]!;
        const p = plan[i]!;
        const whole = results[p.wholeJob]!;
        if (o.stop === "refused" || o.stop === "partial") {
          // Whatever we read before is compared below; the case as a whole is not ours to read.
          // (llhttp drops a request cut short in its request line silently: not "reading" it.)
          if (whole.clean && whole.requests.length > o.requests.length) {
            count.weRefuseLlhttpReads++;
            weRefuse.push(
              `${c.name}: we say "${o.error ?? "incomplete"}"; ${JSON.stringify(c.raw)}`,
            );
          } else count.bothRefuse++;
        }
        if (p.readJob < 0) continue;
        count.requestsCompared += o.requests.length;
        const direct = differs(o.requests, results[p.readJob]!);
        if (direct === null) {
          count.agree++;
          continue;
        }
        const viaKnown = p.knownJob >= 0 ? differs(o.requests, results[p.knownJob]!, true) : direct;
        if (viaKnown === null) {
          count.agreeMethodAside++;
          continue;
        }
        failures.push(
          `we read, llhttp disagrees: ${direct}` +
            (p.knownJob >= 0 ? `; with known methods: ${viaKnown}` : "") +
            `\n  case ${show(c)}\n  bytes sent ${JSON.stringify(c.raw.slice(0, o.used))}` +
            `\n  we read ${JSON.stringify(o.requests)}` +
            `\n  llhttp read ${JSON.stringify(results[p.readJob]!)}`,
        );
      }
      const secs = ((performance.now() - started) / 1000).toFixed(1);
      console.log(
        `${cases.length} cases (${jobs.length} connections to ${version}, ${secs} s): ` +
          `we read and llhttp agrees ${count.agree} (${count.requestsCompared} requests); agrees ` +
          `once unknown methods are made GET ${count.agreeMethodAside}; we refuse what llhttp ` +
          `reads ${count.weRefuseLlhttpReads}; both refuse ${count.bothRefuse}; disagreements ` +
          `${failures.length}`,
      );
      if (weRefuse.length > 0) {
        console.log(`we refuse, llhttp reads (allowed):\n  ${weRefuse.join("\n  ")}`);
      }
      assert.deepEqual(failures, [], `${failures.length} failures:\n${failures.join("\n")}`);
      // Not vacuous: plenty of cases got through both parsers.
      assert.ok(count.agree >= 250, `only ${count.agree} cases read the same by both`);
    } catch (e) {
      llhttp.kill();
      throw e;
    } finally {
      await llhttp.stop();
    }
  },
});
