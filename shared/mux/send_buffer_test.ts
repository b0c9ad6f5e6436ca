import assert from "node:assert/strict";
import { SendBuffer } from "./send_buffer.ts";
import { randomBytes } from "./testing/harness.ts";

/** Piece sizes of the wrap test: uneven, every 5th larger than the smallest ring. */
const pieceSize = (round: number) => round % 5 === 4 ? 1500 : 300 + (round % 13) * 7;

Deno.test("SendBuffer: bytes survive growth while the held range wraps the ring", () => {
  const data = randomBytes(9, 1 << 20);
  const b = new SendBuffer();
  let end = 0;
  let acked = 0;
  for (let round = 0; round < 300; round++) {
    // Growing rounds hold more and more; the others ack down to 100 bytes held,
    // so the held range keeps wrapping around whatever ring size is current.
    const piece = data.subarray(end, end + pieceSize(round) * (round % 50 === 49 ? 20 : 1));
    assert.equal(b.write(piece, 0, 1 << 20), piece.length);
    end += piece.length;
    const held = b.buffered;
    assert.equal(held, end - acked);
    const got = new Uint8Array(held);
    b.read(acked, held, got, 0);
    assert.deepEqual(got, data.subarray(acked, end), `held bytes intact (round ${round})`);
    if (round % 50 !== 49 && end - 100 > acked) {
      b.onAcked(acked, end - 100 - acked, false);
      acked = end - 100;
    }
  }
});

Deno.test("SendBuffer: the limit caps what a write takes; acks make room", () => {
  const b = new SendBuffer();
  const data = randomBytes(2, 3000);
  assert.equal(b.write(data, 0, 1000), 1000);
  assert.equal(b.write(data, 1000, 1000), 0, "full at the limit");
  b.onAcked(0, 600, false);
  assert.equal(b.write(data, 1000, 1000), 600);
  const out = new Uint8Array(1000);
  b.read(600, 1000, out, 0);
  assert.deepEqual(out, data.subarray(600, 1600));
});
