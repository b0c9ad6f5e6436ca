/**
 * What a tunnel head costs: encoding and decoding a typical request head (what the server
 * sends for a plain GET) and response head (a small answer), as JSON and in the compact
 * form (shared/protocol/head.ts). Prints µs per head for each way, per round (the first
 * round includes JIT warm-up).
 *
 * A loop over one head is not the busy server: inside it (under `bench/quick.sh`), a
 * JavaScript loop over a head's characters took ~3.5 µs where joining and encoding natively
 * took ~0.5 µs, while here the loop is the faster. Judge a change to the encoding by the
 * server's CPU per request in `ONLY=c50 REPEAT=3 bash bench/quick.sh`, against the previous
 * commit in the same run.
 *
 *   deno run bench/head_bench.ts [--rounds 3] [--n 300000]
 */
import { parseArgs } from "node:util";
import {
  decodeHead,
  encodeHead,
  type RequestHead,
  type ResponseHead,
} from "../shared/protocol/mod.ts";

const { values } = parseArgs({
  options: { rounds: { type: "string", default: "3" }, n: { type: "string", default: "300000" } },
});
const rounds = Number(values.rounds);
const n = Number(values.n);

const req: RequestHead = {
  t: "req",
  id: "9f1c2a3b4c5d6e7f",
  method: "GET",
  url: "/small",
  client: "127.0.0.1",
  scheme: "http",
  headers: [
    ["host", "app.localhost"],
    ["x-forwarded-for", "127.0.0.1"],
    ["x-forwarded-proto", "http"],
    ["x-forwarded-host", "app.localhost"],
    ["x-real-ip", "127.0.0.1"],
    ["x-request-id", "9f1c2a3b4c5d6e7f"],
  ],
};
const res: ResponseHead = {
  t: "res",
  status: 200,
  headers: [
    ["content-type", "text/plain"],
    ["content-length", "13"],
    ["date", "Sun, 06 Dec 2026 00:26:05 GMT"],
    ["keep-alive", "timeout=65"],
  ],
};

let sink = 0;
function perHead(f: () => number): number {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) sink += f();
  return (performance.now() - t0) * 1000 / n;
}

for (let r = 1; r <= rounds; r++) {
  const rows: string[] = [];
  let totalJson = 0;
  let totalCompact = 0;
  for (const [name, h] of [["request", req], ["response", res]] as const) {
    const json = encodeHead(h, false).slice(4);
    const compact = encodeHead(h, true).slice(4);
    const encJson = perHead(() => encodeHead(h, false).length);
    const encCompact = perHead(() => encodeHead(h, true).length);
    const decJson = perHead(() => decodeHead(json).value ? 1 : 0);
    const decCompact = perHead(() => decodeHead(compact).value ? 1 : 0);
    totalJson += encJson + decJson;
    totalCompact += encCompact + decCompact;
    rows.push(
      `${name.padEnd(8)} encode: JSON ${encJson.toFixed(2)} µs, compact ${
        encCompact.toFixed(2)
      } µs; ` +
        `decode: JSON ${decJson.toFixed(2)} µs, compact ${decCompact.toFixed(2)} µs ` +
        `(${json.length} / ${compact.length} bytes)`,
    );
  }
  rows.push(
    `both heads, encoded and decoded: JSON ${totalJson.toFixed(2)} µs, compact ${
      totalCompact.toFixed(2)
    } µs (${(totalCompact / totalJson).toFixed(2)}x)`,
  );
  console.log(`round ${r}\n  ${rows.join("\n  ")}`);
}
if (sink < 0) console.log(sink);
