import { equal as assertEquals } from "node:assert/strict";
import { derivePsk, PSK_LABEL } from "./credentials.ts";

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

Deno.test("derivePsk matches openssl's HMAC-SHA256 of the label keyed by the API key", async () => {
  const apiKey = "k3y-for-app.example.test";
  const cmd = new Deno.Command("sh", {
    args: [
      "-c",
      `printf %s "hopgate/dtls-psk/v1" | openssl dgst -sha256 -mac HMAC -macopt "key:$K" -r | cut -d' ' -f1`,
    ],
    env: { K: apiKey },
    stdout: "piped",
  });
  const out = new TextDecoder().decode((await cmd.output()).stdout).trim();
  assertEquals(out.length, 64);
  assertEquals(hex(derivePsk(apiKey)), out);
});

Deno.test("the PSK label is the one on the wire (changing it breaks every client)", () => {
  assertEquals(PSK_LABEL, "hopgate/dtls-psk/v1");
});
