import { equal as assertEquals } from "node:assert/strict";
import { pskIdentity } from "./psk.ts";

Deno.test("pskIdentity lowercases and trims", () => {
  assertEquals(pskIdentity(" App.Example.TEST "), "app.example.test");
});
