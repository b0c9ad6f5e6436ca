/**
 * `.env` files, read by both the server and the client: values there never
 * override the real environment (the caller applies them only where a variable
 * is unset).
 */

/**
 * Parses `KEY=value` lines: `#` comments, optional `export `, values optionally in
 * single quotes (literal) or double quotes (`\n`, `\"`, `\\` escapes); an unquoted
 * value ends at ` #`.
 */
export function parseDotEnv(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*)$/.exec(line);
    if (!m) continue;
    const key = m[1]!;
    let value = m[2]!;
    if (value.startsWith('"')) {
      const end = findClosingQuote(value);
      value = value.slice(1, end).replace(/\\(.)/g, (_, c: string) => c === "n" ? "\n" : c);
    } else if (value.startsWith("'")) {
      const end = value.indexOf("'", 1);
      value = value.slice(1, end < 0 ? undefined : end);
    } else {
      value = value.replace(/\s+#.*$/, "").trim();
    }
    out[key] = value;
  }
  return out;
}

function findClosingQuote(s: string): number {
  for (let i = 1; i < s.length; i++) {
    if (s[i] === "\\") i++;
    else if (s[i] === '"') return i;
  }
  return s.length;
}

/** `.env` in the working directory; empty if there is none or it may not be read. */
export async function readDotEnv(path = ".env"): Promise<Record<string, string>> {
  try {
    return parseDotEnv(await Deno.readTextFile(path));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotCapable) return {};
    throw e;
  }
}
