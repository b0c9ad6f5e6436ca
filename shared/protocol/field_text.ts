/**
 * Text rules both HTTP/1.1 ends share: tokens, field-value bytes, OWS trimming
 * and bytes-as-Latin-1 (the server's request parser, server/front/request_parser.ts,
 * and the client's response parser, client/origin/parser.ts).
 */

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** An HTTP token (RFC 9110 5.6.2): a method or a field name. */
export function isToken(s: string): boolean {
  return TOKEN.test(s);
}

// Control characters other than HTAB, and DEL, are not allowed in a field value.
// deno-lint-ignore no-control-regex
const BAD_VALUE = /[\x00-\x08\x0a-\x1f\x7f]/;

/** True if `s` holds a byte a field value may not (a control other than HTAB, or DEL). */
export function hasBadValueChar(s: string): boolean {
  return BAD_VALUE.test(s);
}

/**
 * `s` from `start` without leading and trailing SP/HTAB. A loop: the regex
 * `/^[ \t]+|[ \t]+$/g` retries its second branch at every offset and took 3.7 s
 * on a value of 60,000 spaces then one letter.
 */
export function trimOws(s: string, start = 0): string {
  let a = start;
  let b = s.length;
  while (a < b && (s.charCodeAt(a) === 32 || s.charCodeAt(a) === 9)) a++;
  while (b > a && (s.charCodeAt(b - 1) === 32 || s.charCodeAt(b - 1) === 9)) b--;
  return s.slice(a, b);
}

/** The kept chunks and then `last`, as Latin-1 text (each byte one UTF-16 code unit). */
export function latin1(kept: Uint8Array[], last: Uint8Array): string {
  let s = "";
  for (const b of kept) s += latin1Of(b);
  return s + latin1Of(last);
}

const ASCII = new TextDecoder("utf-8", { ignoreBOM: true });

/** Bytes as Latin-1 text. */
export function latin1Of(b: Uint8Array): string {
  // ASCII is the common case, and for it UTF-8 decoding is the same and native.
  // Any byte above 0x7f either joins others into fewer characters or decodes to
  // U+FFFD, so one character per byte and no U+FFFD means it was all ASCII.
  const utf8 = ASCII.decode(b);
  if (utf8.length === b.length && !utf8.includes("\uFFFD")) return utf8;
  let s = "";
  for (let i = 0; i < b.length; i += 4096) {
    s += String.fromCharCode(...b.subarray(i, Math.min(b.length, i + 4096)));
  }
  return s;
}
