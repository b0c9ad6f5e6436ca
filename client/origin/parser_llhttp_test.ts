/**
 * Differential test of the origin-hop response parser against llhttp (the parser
 * behind Node's `node:http`), over a corpus of hand-written responses and seeded
 * random mutations of valid ones.
 *
 * The rule: whenever OUR parser accepts a response, llhttp (strict, Node's
 * default) must accept it too, with the same status, reason, header list and body
 * bytes. Refusing what llhttp accepts is allowed (counted and printed). Where this
 * parser is lenient on purpose, and llhttp is not, the case is not excused but
 * sent to llhttp again with only that feature of its head(s) made canonical, and
 * must then agree (headers compared without Content-Length, whose number must
 * match unless Transfer-Encoding overrides it):
 *
 * - head lines ending in a bare LF (RFC 9112 §2.2): the LF becomes CRLF;
 * - repeated Content-Length values that agree (RFC 9110 §8.6), or an HTAB in a
 *   Content-Length's OWS (llhttp takes spaces there, not tabs): each head's
 *   Content-Length lines become one plain `Content-Length: N` line;
 * - Transfer-Encoding with Content-Length (RFC 9112 §6.1, read as chunked, never
 *   reused): the Content-Length lines are removed, as §6.3 tells an
 *   intermediary to do before forwarding.
 *
 * One `node` process serves the whole corpus: a TCP server on 127.0.0.1 writes
 * each case's bytes on a fresh connection and then closes it, and `http.request`
 * (agent: false) reads them. A failure prints the case's bytes, JSON-escaped, and
 * its seed, so it reproduces.
 */
import assert from "node:assert/strict";
import { prng } from "../../shared/testing/prng.ts";
import type { HeaderList } from "../../shared/protocol/mod.ts";
import { ResponseError, ResponseParser } from "./parser.ts";

/** A failing mutant names its seed; PARSER_DIFF_SEED / PARSER_DIFF_MUTANTS rerun or widen the search. */
const SEED = Number(envOr("PARSER_DIFF_SEED", "0x5eed0001"));
const MUTANTS = Number(envOr("PARSER_DIFF_MUTANTS", "320"));
const NODE_TIMEOUT_MS = 15_000;

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
const b64 = (s: string) => btoa(s); // s is Latin-1 text: one byte per code unit

interface Case {
  name: string;
  method: "GET" | "HEAD";
  raw: string; // Latin-1: one code unit per byte
  /** Hand-written cases state what our parser must do; mutants do not. */
  expect?: "accept" | "reject";
}

// --- the corpus --------------------------------------------------------------

const CHUNKED = "Transfer-Encoding: chunked\r\n";
const ok = (fields: string, body = "", status = "200 OK") =>
  `HTTP/1.1 ${status}\r\n${fields}\r\n${body}`;

/** Valid responses our parser must accept; mutants are made from these. */
const VALID: Case[] = [
  ["cl", ok("Content-Type: text/plain\r\nContent-Length: 11\r\n", "hello world")],
  ["cl empty reason", "HTTP/1.1 404 \r\nContent-Length: 2\r\n\r\nno"],
  ["cl no reason", "HTTP/1.1 500\r\nContent-Length: 1\r\n\r\nx"],
  ["cl status 599", "HTTP/1.1 599 Odd\r\nContent-Length: 1\r\n\r\nx"],
  ["cl 0", ok("Content-Length: 0\r\n")],
  ["cl 005", ok("Content-Length: 005\r\n", "hello")],
  ["cl ows", ok("Content-Length:5 \t\r\n", "hello")],
  ["cl crlf body", ok("Content-Length: 8\r\n", "\r\n\r\n\n\n\r\r")],
  ["cl binary body", ok("Content-Length: 8\r\n", "\x00\x01\xff\x80\r\n0\n")],
  [
    "fields",
    ok(
      "X-A: 1\r\nset-cookie:  a=1 \t\r\nSet-Cookie:b=2\r\nX-Empty:\r\nX-Tab: a\tb\r\nContent-Length: 2\r\n",
      "ok",
    ),
  ],
  [
    "latin1",
    "HTTP/1.1 200 \xc7a va\r\nX-Name: caf\xe9 \x80\xff\r\nContent-Length: 3\r\n\r\n\xe9\xe9\xe9",
  ],
  ["chunked", ok(CHUNKED, "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")],
  ["chunked ext", ok(CHUNKED, '5;name=value\r\nhello\r\n1;a;b="q \\" s"\r\n!\r\n0;end\r\n\r\n')],
  [
    "chunked upper hex",
    ok("Transfer-Encoding: Chunked\r\n", "1B\r\n" + "x".repeat(27) + "\r\n00\r\n\r\n"),
  ],
  ["chunked trailers", ok(CHUNKED, "3\r\nabc\r\n0\r\nX-Checksum: abc\r\nX-Other:  2 \r\n\r\n")],
  ["chunked empty", ok(CHUNKED, "0\r\n\r\n")],
  ["chunked crlf data", ok(CHUNKED, "5\r\n0\r\n\r\n\r\n0\r\n\r\n")],
  ["head cl", ok("Content-Length: 10\r\n"), "HEAD"],
  ["head chunked", ok(CHUNKED), "HEAD"],
  ["204", "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"],
  ["304 cl", 'HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: "x"\r\n\r\n'],
  [
    "interim",
    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n" +
    ok("Content-Length: 2\r\n", "ok"),
  ],
  ["interim 102", "HTTP/1.1 102 Processing\r\n\r\n" + ok(CHUNKED, "2\r\nok\r\n0\r\n\r\n")],
  ["until close", ok("Content-Type: text/plain\r\n", "until the end\r\n")],
  ["until close empty", ok("")],
  ["http/1.0 until close", "HTTP/1.0 200 OK\r\n\r\nold style"],
  ["http/1.0 cl", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"],
  ["connection close", ok("Connection: close\r\nContent-Length: 2\r\n", "ok")],
  ["connection keep-alive", ok("Connection: keep-alive\r\nContent-Length: 2\r\n", "ok")],
  ["te+cl", ok(CHUNKED + "Content-Length: 99\r\n", "2\r\nok\r\n0\r\n\r\n")],
  ["cl+te", ok("Content-Length: 1\r\n" + CHUNKED, "2\r\nok\r\n0\r\n\r\n")],
  ["cl 5, 5", ok("Content-Length: 5, 5\r\n", "hello")],
  ["cl 5 twice", ok("Content-Length: 5\r\nX: y\r\nContent-Length: 5\r\n", "hello")],
  ["bare lf head", "HTTP/1.1 201 Created\nX-A: 1\r\nContent-Length: 4\n\nbody"],
  ["bare lf blank line", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\nabc"],
  ["bare lf chunked head", "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n3\r\nabc\r\n0\r\n\r\n"],
  ["extra after cl", ok("Content-Length: 2\r\n", "okEXTRA")],
  ["extra after chunked", ok(CHUNKED, "2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n")],
  ["extra after head", ok("Content-Length: 4\r\n", "body"), "HEAD"],
].map(([name, raw, method]) => ({
  name: name!,
  raw: raw!,
  method: (method ?? "GET") as "GET" | "HEAD",
  expect: "accept" as const,
}));

/** Responses our parser must refuse (see parser_test.ts for why each). */
const REFUSED: Case[] = [
  ["obs-fold", ok("X-A: a\r\n b\r\nContent-Length: 0\r\n")],
  ["space before colon", ok("Content-Length : 0\r\n")],
  ["bad token", ok("X(A): 1\r\nContent-Length: 0\r\n")],
  ["ctl in value", ok("X-A: a\x01b\r\nContent-Length: 0\r\n")],
  ["nul in value", ok("X-A: a\x00b\r\nContent-Length: 0\r\n")],
  ["del in value", ok("X-A: a\x7f\r\nContent-Length: 0\r\n")],
  ["bare cr", ok("X-A: a\rb\r\nContent-Length: 0\r\n")],
  ["http/2.0", "HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"],
  ["2-digit status", "HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n"],
  ["leading blank line", "\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"],
  ["101", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"],
  [
    "interim closing",
    "HTTP/1.1 100 Continue\r\nConnection: close\r\n\r\n" + ok("Content-Length: 2\r\n", "ok"),
  ],
  ["http/1.0 interim", "HTTP/1.0 100 Continue\r\n\r\n" + ok("Content-Length: 2\r\n", "ok")],
  ["te gzip, chunked", ok("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n")],
  ["te chunked, gzip", ok("Transfer-Encoding: chunked, gzip\r\n", "0\r\n\r\n")],
  ["te identity", ok("Transfer-Encoding: identity\r\nContent-Length: 0\r\n")],
  ["te twice", ok(CHUNKED + CHUNKED, "0\r\n\r\n")],
  ["cl +5", ok("Content-Length: +5\r\n", "hello")],
  ["cl 5 5", ok("Content-Length: 5 5\r\n", "hello")],
  ["cl 0x10", ok("Content-Length: 0x10\r\n", "0123456789abcdef")],
  ["cl 5 and 6", ok("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!")],
  ["cl 5, 6", ok("Content-Length: 5, 6\r\n", "hello!")],
  ["chunk zz", ok(CHUNKED, "zz\r\nhello\r\n0\r\n\r\n")],
  ["chunk empty size", ok(CHUNKED, "\r\nhello\r\n0\r\n\r\n")],
  ["chunk -1", ok(CHUNKED, "-1\r\nhello\r\n0\r\n\r\n")],
  ["chunk 14 digits", ok(CHUNKED, "00000000000005\r\nhello\r\n0\r\n\r\n")],
  ["chunk space after size", ok(CHUNKED, "5 \r\nhello\r\n0\r\n\r\n")],
  ["chunk space before ext", ok(CHUNKED, "5 ;a=b\r\nhello\r\n0\r\n\r\n")],
  ["chunk ext not token", ok(CHUNKED, "5;a b\r\nhello\r\n0\r\n\r\n")],
  ["chunk ext empty", ok(CHUNKED, "5;\r\nhello\r\n0\r\n\r\n")],
  ["chunk size bare lf", ok(CHUNKED, "5\nhello\r\n0\r\n\r\n")],
  ["chunk data bare lf", ok(CHUNKED, "5\r\nhello\n0\r\n\r\n")],
  ["chunked end bare lf", ok(CHUNKED, "5\r\nhello\r\n0\r\n\n")],
  ["trailer bare lf", ok(CHUNKED, "0\r\nX-T: 1\n\r\n")],
  ["chunk data too long", ok(CHUNKED, "3\r\nhello\r\n0\r\n\r\n")],
  ["eof mid head", "HTTP/1.1 200 OK\r\nContent-Len"],
  ["eof mid body", ok("Content-Length: 10\r\n", "hello")],
  ["eof mid chunk", ok(CHUNKED, "a\r\nhello")],
].map(([name, raw]) => ({ name: name!, raw: raw!, method: "GET", expect: "reject" as const }));

type Rand = () => number;
const int = (r: Rand, n: number) => Math.floor(r() * n);
const pick = <T>(r: Rand, a: readonly T[]): T => a[int(r, a.length)]!;

/** Lines of `s`, each with its LF (the last may have none). */
const linesOf = (s: string) => s.split(/(?<=\n)/);

const MUTATIONS: { name: string; apply(s: string, r: Rand): string }[] = [
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
    name: "insert",
    apply: (s, r) => {
      const i = int(r, s.length + 1);
      const c = pick(r, [
        " ",
        "\t",
        "\r",
        "\n",
        "\x00",
        "\r\n",
        "\x0b",
        "\x7f",
        "\xff",
        ";",
        ",",
        ":",
        "0",
        "a",
        '"',
      ]);
      return s.slice(0, i) + c + s.slice(i);
    },
  },
  {
    name: "delete",
    apply: (s, r) => {
      const i = int(r, s.length);
      return s.slice(0, i) + s.slice(i + 1);
    },
  },
  { name: "truncate", apply: (s, r) => s.slice(0, 1 + int(r, Math.max(1, s.length - 1))) },
  {
    name: "content-length",
    apply: (s, r) => {
      const body = s.length - (s.search(/\r?\n\r?\n/) + 4);
      const v = pick(r, [
        "0",
        "1",
        "5",
        "+5",
        "5 5",
        "0x10",
        "5, 5",
        "5, 6",
        "05",
        " 5",
        "5 ",
        "",
        ",5",
        "99999999999999999",
        String(Math.max(0, body)),
        String(body + 1),
        String(Math.max(0, body - 1)),
      ]);
      return setField(s, r, "Content-Length", v);
    },
  },
  {
    name: "transfer-encoding",
    apply: (s, r) => {
      const v = pick(r, [
        "chunked",
        "Chunked",
        " chunked",
        "chunked ",
        "gzip, chunked",
        "chunked, gzip",
        "identity",
        "chunked,",
        "chunked;x=1",
        "",
        "chunked, chunked",
        "xchunked",
        "chunk",
      ]);
      return setField(
        s,
        r,
        pick(r, ["Transfer-Encoding", "transfer-encoding", "Transfer-Encoding "]),
        v,
      );
    },
  },
  {
    name: "connection",
    apply: (s, r) =>
      setField(
        s,
        r,
        "Connection",
        pick(r, ["close", "keep-alive", "Close", "keep-alive, close", "upgrade"]),
      ),
  },
  {
    name: "version",
    apply: (s, r) =>
      s.replace(
        /^HTTP\/1\.[01]/,
        pick(r, ["HTTP/1.0", "HTTP/1.1", "HTTP/1.2", "HTTP/2.0", "HTTP/1.10", "http/1.1"]),
      ),
  },
  {
    name: "status",
    apply: (s, r) =>
      s.replace(
        /^(HTTP\/\d\.\d) \d+/,
        "$1 " +
          pick(r, [
            "100",
            "101",
            "103",
            "200",
            "204",
            "205",
            "304",
            "404",
            "999",
            "20",
            "0200",
            "2x0",
          ]),
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
    name: "lf-to-crlf",
    apply: (s, r) => {
      const at = allIndexes(s, "\n").filter((i) => s[i - 1] !== "\r");
      if (at.length === 0) return s;
      const i = pick(r, at);
      return s.slice(0, i) + "\r" + s.slice(i);
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
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
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

/** Replaces the value of a random existing `name` field, or adds the field after the status line. */
function setField(s: string, r: Rand, name: string, value: string): string {
  const l = linesOf(s);
  const key = name.trim().toLowerCase();
  const at = l.map((x, i) => x.toLowerCase().startsWith(key + ":") ? i : -1).filter((i) => i >= 0);
  const eol = l[0]?.endsWith("\r\n") ? "\r\n" : "\n";
  if (at.length > 0 && r() < 0.6) {
    const i = pick(r, at);
    l[i] = `${name}: ${value}${l[i]!.endsWith("\r\n") ? "\r\n" : "\n"}`;
  } else {
    l.splice(1 + int(r, Math.max(1, Math.min(3, l.length - 1))), 0, `${name}: ${value}${eol}`);
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
    for (let m = 1 + int(r, 3); m > 0; m--) {
      const mut = pick(r, MUTATIONS);
      raw = mut.apply(raw, r);
      names.push(mut.name);
    }
    out.push({
      name: `mutant ${k} (seed ${SEED}): ${base.name} + ${names.join(", ")}`,
      method: base.method,
      raw,
    });
  }
  return out;
}

// --- our parser ----------------------------------------------------------------

interface Ours {
  accepted: boolean;
  error?: string;
  status?: number;
  reason?: string;
  headers?: HeaderList;
  body?: string;
  /** Bytes of the case that belong to the response. */
  used?: number;
  /** Where the final head ends (found by feeding byte by byte). */
  headEnd?: number;
}

/** Runs `raw` through a ResponseParser fed `pieceSize` bytes at a time (0: whole), then eof(). */
function ours(c: Case, pieceSize = 0): Ours {
  let head: { status: number; reason: string; headers: HeaderList } | undefined;
  let body = "";
  let headEnd = -1;
  let at = 0;
  const p = new ResponseParser({
    head: (h) => {
      head = h;
      headEnd = at;
    },
    body: (v) => body += latin1(v),
    end: () => {},
  });
  const raw = bytes(c.raw);
  let used = 0;
  try {
    p.start(c.method);
    const step = pieceSize > 0 ? pieceSize : Math.max(1, raw.length);
    for (let i = 0; i < raw.length && !p.complete; i += step) {
      const piece = raw.slice(i, i + step);
      at = i + piece.length; // the head ends within this piece (exact when bytewise)
      const n = p.feed(piece);
      used += n;
      if (n < piece.length) assert.ok(p.complete, "feed left bytes of an incomplete response");
    }
    if (!p.complete) p.eof();
    assert.ok(p.complete);
  } catch (e) {
    if (!(e instanceof ResponseError)) throw e;
    return { accepted: false, error: e.message };
  }
  return { accepted: true, ...head!, body, used, headEnd };
}

// --- llhttp, through node:http -------------------------------------------------

/** The node side: no template strings in it, so it can sit in one. */
const NODE_SCRIPT = String.raw`
"use strict";
const http = require("node:http");
const net = require("node:net");
let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (d) => { input += d; });
process.stdin.on("end", () => main().catch((e) => { console.error(e); process.exit(2); }));

async function main() {
  const jobs = JSON.parse(Buffer.from(input, "base64").toString("utf8"));
  // Each connection asks for GET/HEAD /<job>; the server answers with that job's raw bytes, then closes.
  const server = net.createServer((sock) => {
    let buf = Buffer.alloc(0);
    sock.on("error", () => {});
    sock.on("data", (d) => {
      if (buf === null) return;
      buf = Buffer.concat([buf, d]);
      const text = buf.toString("latin1");
      if (text.indexOf("\r\n\r\n") < 0) return;
      buf = null;
      const m = /^(GET|HEAD) \/(\d+) /.exec(text);
      const job = m ? jobs[Number(m[2])] : undefined;
      if (!job) { sock.destroy(); return; }
      sock.end(Buffer.from(job.raw, "base64"));
    });
  });
  await new Promise((ok, fail) => { server.once("error", fail); server.listen(0, "127.0.0.1", ok); });
  const port = server.address().port;
  const results = new Array(jobs.length);
  const run = (i) => new Promise((resolve) => {
    const r = { status: 0, reason: "", headers: [], body: "", complete: false, error: null };
    const chunks = [];
    let res = null;
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      r.complete = res !== null && res.complete === true;
      r.body = Buffer.concat(chunks).toString("base64");
      results[i] = r;
      resolve();
    };
    const timer = setTimeout(() => { r.error = r.error || "timeout"; req.destroy(); finish(); }, 5000);
    const req = http.request({
      host: "127.0.0.1", port, path: "/" + i, method: jobs[i].method, agent: false,
    });
    req.on("error", (e) => { r.error = r.error || e.code || String(e.message); });
    req.on("close", () => setImmediate(finish));
    req.on("response", (m) => {
      res = m;
      r.status = m.statusCode;
      r.reason = m.statusMessage;
      for (let k = 0; k < m.rawHeaders.length; k += 2) {
        r.headers.push([m.rawHeaders[k].toLowerCase(), m.rawHeaders[k + 1]]);
      }
      m.on("data", (d) => chunks.push(Buffer.from(d)));
      m.on("aborted", () => { r.error = r.error || "aborted"; });
      m.on("error", (e) => { r.error = r.error || e.code || String(e.message); });
      m.on("end", () => setImmediate(finish));
    });
    req.end();
  });
  let next = 0;
  await Promise.all(Array.from({ length: 16 }, async () => { while (next < jobs.length) await run(next++); }));
  server.close();
  const out = JSON.stringify({ llhttp: process.versions.llhttp, node: process.version, results });
  process.stdout.write(out, () => process.exit(0));
}
`;

interface Job {
  method: string;
  raw: string; // base64
}

interface Theirs {
  status: number;
  reason: string;
  headers: HeaderList;
  body: string; // Latin-1 text after decoding
  complete: boolean;
  error: string | null;
}

async function llhttp(jobs: Job[]): Promise<{ version: string; results: Theirs[] }> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("node", {
      args: ["-e", NODE_SCRIPT],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(
        "`node` (Node.js 18+) is not on PATH: this test compares the parser with llhttp through " +
          "node:http. Install Node.js (CI: .ci/run installs Deno through npm, so node is there).",
      );
    }
    throw e;
  }
  const output = child.output(); // collects stdout/stderr until exit
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, NODE_TIMEOUT_MS);
  try {
    const w = child.stdin.getWriter();
    try {
      await w.write(new TextEncoder().encode(btoa(JSON.stringify(jobs))));
    } finally {
      await w.close().catch(() => {});
    }
    const out = await output;
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, `node exited with ${out.code} (signal ${out.signal}):\n${stderr}`);
    const parsed = JSON.parse(new TextDecoder().decode(out.stdout)) as {
      llhttp: string;
      node: string;
      results: (Omit<Theirs, "body"> & { body: string })[];
    };
    assert.equal(parsed.results.length, jobs.length);
    return {
      version: `node ${parsed.node}, llhttp ${parsed.llhttp}`,
      results: parsed.results.map((r) => ({ ...r, body: atob(r.body) })),
    };
  } finally {
    clearTimeout(timer);
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    await output.catch(() => {});
  }
}

// --- comparing -------------------------------------------------------------------

const isCl = ([n]: [string, string]) => n === "content-length";

/** Content-Length values of a head, split at commas. */
const clValues = (h: HeaderList) =>
  h.filter(isCl).flatMap(([, v]) => v.split(",").map((x) => x.trim()));

interface Canonical {
  raw: string;
  /** What had to change for llhttp (strict) to read it. */
  bareLf: boolean;
  clRepeats: boolean;
  clOws: boolean;
  teWithCl: boolean;
}

/**
 * The case with its head(s) made canonical where this parser is lenient on
 * purpose: CRLF line ends; each head's Content-Length lines folded into one plain
 * line (the replacement RFC 9110 §8.6 allows), or dropped when the head has
 * Transfer-Encoding. Only for cases our parser accepted, so every head line is a
 * valid field; `headEnd` is where the final head ends.
 */
function canonical(raw: string, headEnd: number): Canonical {
  const out: Canonical = {
    raw: "",
    bareLf: false,
    clRepeats: false,
    clOws: false,
    teWithCl: false,
  };
  const blocks: string[][] = [[]];
  for (const line of linesOf(raw.slice(0, headEnd))) {
    out.bareLf ||= !line.endsWith("\r\n");
    const text = line.replace(/\r?\n$/, "");
    blocks.at(-1)!.push(text);
    if (text === "") blocks.push([]); // a head (maybe interim) ended
  }
  for (const block of blocks) {
    const te = block.some((l) => /^transfer-encoding:/i.test(l));
    let seen = false;
    for (const line of block) {
      const m = /^content-length:(.*)$/i.exec(line);
      if (m === null) {
        out.raw += line + "\r\n";
        continue;
      }
      const v = m[1]!;
      out.teWithCl ||= te;
      out.clRepeats ||= seen || v.includes(",");
      out.clOws ||= v.includes("\t");
      if (!te && !seen) out.raw += `Content-Length: ${v.split(",")[0]!.trim()}\r\n`;
      seen = true;
    }
  }
  out.raw += raw.slice(headEnd);
  return out;
}

/**
 * Where `o` (accepted by us) and `t` differ, or null. With `canonical`, headers are
 * compared without Content-Length, whose number must match unless the response
 * is chunked (Transfer-Encoding overrides it, and the canonical form dropped it).
 */
function differs(o: Ours, t: Theirs, canonical = false): string | null {
  if (!t.complete) return `llhttp did not complete it (${t.error ?? "no error"})`;
  if (t.status !== o.status) return `status ${t.status} vs our ${o.status}`;
  if (t.reason !== o.reason) {
    return `reason ${JSON.stringify(t.reason)} vs our ${JSON.stringify(o.reason)}`;
  }
  const a = canonical ? o.headers!.filter((h) => !isCl(h)) : o.headers!;
  const b = canonical ? t.headers.filter((h) => !isCl(h)) : t.headers;
  if (JSON.stringify(a) !== JSON.stringify(b)) {
    return `headers ${JSON.stringify(b)} vs our ${JSON.stringify(a)}`;
  }
  const chunked = o.headers!.some(([n]) => n === "transfer-encoding");
  const [tc, oc] = [clValues(t.headers)[0], clValues(o.headers!)[0]];
  if (
    canonical && !chunked && (tc === undefined ? oc !== undefined : oc === undefined || +tc !== +oc)
  ) {
    return `content-length ${clValues(t.headers)} vs our ${clValues(o.headers!)}`;
  }
  if (t.body !== o.body) return `body ${JSON.stringify(t.body)} vs our ${JSON.stringify(o.body)}`;
  return null;
}

Deno.test("origin parser vs llhttp: whatever we accept, llhttp reads the same", async () => {
  const started = performance.now();
  const cases = corpus();
  assert.ok(cases.length >= 200, `corpus of ${cases.length}`);

  // Our side first (it decides which references llhttp is also asked about).
  const failures: string[] = [];
  const show = (c: Case) => `${c.name} [${c.method}] ${JSON.stringify(c.raw)}`;
  const mine = cases.map((c) => {
    const whole = ours(c);
    // The same case bytewise and in pieces of 7 must read the same (split invariance).
    for (const size of [1, 7]) {
      const o = ours(c, size);
      const { headEnd: _a, ...x } = o;
      const { headEnd: _b, ...y } = whole;
      if (JSON.stringify(x) !== JSON.stringify(y)) {
        failures.push(
          `fed in pieces of ${size} it reads differently: ${show(c)}\n  ${JSON.stringify(x)}\n  ${
            JSON.stringify(y)
          }`,
        );
      }
    }
    if (c.expect === "accept" && !whole.accepted) {
      failures.push(`we refuse a valid case (${whole.error}): ${show(c)}`);
    }
    if (c.expect === "reject" && whole.accepted) {
      failures.push(`we accept a case to refuse: ${show(c)}`);
    }
    if (whole.accepted) whole.headEnd = ours(c, 1).headEnd!;
    return whole;
  });

  // llhttp: every case as is, and what we accept also with its head(s) made canonical.
  const jobs: Job[] = [];
  const job = (c: Case, raw: string) => jobs.push({ method: c.method, raw: b64(raw) }) - 1;
  const plan = cases.map((c, i) => {
    const o = mine[i]!;
    const strict = job(c, c.raw);
    if (!o.accepted) return { strict };
    const canon = canonical(c.raw, o.headEnd!);
    return { strict, canon, canonJob: canon.raw === c.raw ? strict : job(c, canon.raw) };
  });
  const { version, results } = await llhttp(jobs);

  const count = {
    agree: 0,
    canonical: 0,
    weRefuseLlhttpReads: 0,
    bothRefuse: 0,
  };
  const leniency = { bareLf: 0, clRepeats: 0, clOws: 0, teWithCl: 0 };
  const weRefuse: string[] = [];
  for (let i = 0; i < cases.length; i++) {
    const c = cases[i]!;
    const o = mine[i]!;
    const p = plan[i]!;
    const strict = results[p.strict]!;
    if (!o.accepted) {
      if (strict.complete) {
        count.weRefuseLlhttpReads++;
        weRefuse.push(`${c.name}: we say "${o.error}"; ${JSON.stringify(c.raw)}`);
      } else count.bothRefuse++;
      continue;
    }
    const direct = differs(o, strict);
    if (direct === null) {
      count.agree++;
      continue;
    }
    const canon = p.canon!;
    const viaCanon = canon.raw === c.raw ? direct : differs(o, results[p.canonJob!]!, true);
    if (viaCanon === null) {
      count.canonical++;
      for (const k of ["bareLf", "clRepeats", "clOws", "teWithCl"] as const) {
        if (canon[k]) leniency[k]++;
      }
      continue;
    }
    failures.push(
      `we accept, llhttp disagrees: ${direct}; made canonical: ${viaCanon}\n  case ${show(c)}` +
        `\n  canonical ${JSON.stringify(canon.raw)}` +
        `\n  we read ${JSON.stringify({ ...o, headEnd: undefined })}`,
    );
  }
  const secs = ((performance.now() - started) / 1000).toFixed(1);
  console.log(
    `${cases.length} cases (${jobs.length} llhttp runs, ${version}, ${secs} s): ` +
      `both accept and agree ${count.agree}; agree once the head is made canonical ` +
      `${count.canonical} (with bare LF ${leniency.bareLf}, agreeing Content-Length repeats ` +
      `${leniency.clRepeats}, HTAB in Content-Length ${leniency.clOws}, TE with CL ` +
      `${leniency.teWithCl}); we refuse what llhttp reads ${count.weRefuseLlhttpReads}; ` +
      `both refuse ${count.bothRefuse}; disagreements ${failures.length}`,
  );
  if (weRefuse.length > 0) {
    console.log(`we refuse, llhttp reads (allowed):\n  ${weRefuse.join("\n  ")}`);
  }
  assert.deepEqual(failures, [], `${failures.length} failures:\n${failures.join("\n")}`);
  // Not vacuous: plenty of cases got through both parsers.
  assert.ok(count.agree >= 100, `only ${count.agree} cases read the same by both`);
});
