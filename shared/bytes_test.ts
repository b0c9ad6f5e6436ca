import assert from "node:assert/strict";
import { concatBytes } from "./bytes.ts";

Deno.test("concatBytes joins in order; a lone non-empty part comes back as is", () => {
  const a = new Uint8Array([1, 2]);
  const b = new Uint8Array([3]);
  assert.deepEqual(concatBytes(a, b, new Uint8Array(0), a), new Uint8Array([1, 2, 3, 1, 2]));
  assert.equal(concatBytes(new Uint8Array(0), a), a);
  assert.equal(concatBytes(a), a);
  assert.deepEqual(concatBytes(), new Uint8Array(0));
});
