import assert, { deepEqual, equal } from "node:assert/strict";
import { decodeFrame, FrameType } from "./frames.ts";
import { SendBuffer } from "./send_buffer.ts";
import type { Stream } from "./stream.ts";
import { Reader, Writer } from "./wire.ts";
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

Deno.test("SendBuffer: the limit caps the unsent bytes a write takes; sending makes room, acks do not", () => {
  const b = new SendBuffer();
  const data = randomBytes(2, 3000);
  const s = { id: 2 } as Stream;
  const w = new Writer(new Uint8Array(700));
  assert.equal(b.write(data, 0, 1000), 1000);
  assert.equal(b.write(data, 1000, 1000), 0, "full at the limit");
  const f = b.writeFrame(w, s, Infinity);
  assert.ok(f !== null && f.length > 600, `sent ${f?.length}`);
  assert.equal(b.unsent, 1000 - f.length);
  assert.equal(b.write(data, 1000, 1000), f.length, "what went out is room again");
  assert.equal(b.buffered, 1000 + f.length, "sent bytes stay until acked");
  b.onAcked(0, f.length, false);
  assert.equal(b.write(data, 2000, 1000), 0, "an ack frees memory, not room");
  assert.equal(b.buffered, 1000);
  const out = new Uint8Array(1000);
  b.read(f.length, 1000, out, 0);
  assert.deepEqual(out, data.subarray(f.length, f.length + 1000));
});

Deno.test("SendBuffer: writeFrame sends lost data first, new data up to the limit, the FIN at the end", () => {
  const data = randomBytes(3, 3000);
  const b = new SendBuffer();
  b.write(data, 0, 1 << 20);
  b.finQueued = true; // what Stream.close() does
  b.finPending = true;
  const s = { id: 6 } as Stream;
  const w = new Writer(new Uint8Array(4000));
  /** Writes the next frame; returns it as sent and as decoded from the wire. */
  const next = (limit: number) => {
    w.pos = 0;
    const sent = b.writeFrame(w, s, limit);
    if (sent === null) return null;
    const f = decodeFrame(new Reader(w.buf, 0, w.pos));
    assert.ok(f !== null && f.type === FrameType.STREAM);
    equal(f.streamId, 6);
    deepEqual(f.data, data.subarray(f.offset, f.offset + f.data.length));
    equal(f.fin, sent.fin);
    equal(f.offset, sent.offset);
    equal(f.data.length, sent.length);
    return sent;
  };
  const a = next(1000);
  deepEqual([a?.offset, a?.length, a?.fin], [0, 1000, false], "new data up to the limit");
  equal(b.hasWork(1000), false, "nothing more below the limit");
  b.onLost(200, 300, false);
  equal(b.hasWork(1000), true, "lost data goes regardless of the limit");
  const r = next(1000);
  deepEqual([r?.offset, r?.length, r?.fin], [200, 300, false], "the lost range, first");
  equal(b.retransmitting, false);
  const c = next(Infinity);
  deepEqual([c?.offset, c?.length, c?.fin], [1000, 2000, true], "the rest, with the FIN");
  equal(b.hasWork(Infinity), false);
  equal(next(Infinity), null);
  b.onLost(2500, 500, true);
  const f = next(Infinity);
  deepEqual([f?.offset, f?.length, f?.fin], [2500, 500, true], "a lost FIN goes with its data");
});
