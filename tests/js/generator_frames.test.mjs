// Unit tests of bench/node/frames.mjs, the load generator's WebSocket framing (node --test).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  closePayload,
  encodeClientFrame,
  FrameReader,
  OP_CLOSE,
  OP_TEXT,
  readStamp,
  StampedFrame,
  writeStamp,
} from "../../bench/node/frames.mjs";

const KEY = Buffer.from([0x12, 0x34, 0x56, 0x78]);

/** The payload of a masked client frame, as a server reads it (RFC 6455 §5.3). */
function unmask(/** @type {Buffer} */ frame) {
  const size = frame[1] & 0x7f;
  const head = size === 126 ? 4 : size === 127 ? 10 : 2;
  const key = frame.subarray(head, head + 4);
  const payload = Buffer.from(frame.subarray(head + 4));
  for (let i = 0; i < payload.length; i++) payload[i] ^= key[i & 3];
  return { first: frame[0], masked: (frame[1] & 0x80) !== 0, key, payload };
}

/** A server frame (unmasked) with the given opcode and payload. */
function serverFrame(/** @type {number} */ opcode, /** @type {Buffer} */ payload) {
  const size = payload.length;
  const head =
    size < 126
      ? Buffer.from([0x80 | opcode, size])
      : size < 65536
        ? Buffer.from([0x80 | opcode, 126, size >> 8, size & 0xff])
        : Buffer.concat([Buffer.from([0x80 | opcode, 127]), bigLength(size)]);
  return Buffer.concat([head, payload]);
}

function bigLength(/** @type {number} */ size) {
  const out = Buffer.alloc(8);
  out.writeUInt32BE(Math.floor(size / 2 ** 32), 0);
  out.writeUInt32BE(size >>> 0, 4);
  return out;
}

/** Feeds `bytes` to a FrameReader in the given chunk sizes; the frames it handed out. */
function parse(/** @type {Buffer} */ bytes, /** @type {number[]} */ cuts) {
  /** @type {{first: number, payload: string}[]} */
  const frames = [];
  const reader = new FrameReader((first, buf, start, end) =>
    frames.push({ first, payload: buf.toString("latin1", start, end) }),
  );
  const scratch = Buffer.alloc(bytes.length + 16);
  let at = 0;
  for (const cut of [...cuts, bytes.length]) {
    const end = Math.min(cut, bytes.length);
    if (end <= at) continue;
    // As with Node's onread buffer: the bytes of a read sit in a reused buffer.
    scratch.fill(0x7e);
    bytes.copy(scratch, 3, at, end);
    reader.feed(scratch, 3, 3 + end - at);
    at = end;
  }
  return frames;
}

test("client frames are masked with the key and carry every length form", () => {
  for (const size of [0, 5, 125, 126, 200, 65535, 65536, 70000]) {
    const payload = Buffer.alloc(size, 0x61);
    const frame = encodeClientFrame(OP_TEXT, payload, KEY);
    const read = unmask(frame);
    assert.equal(read.first, 0x81);
    assert.equal(read.masked, true);
    assert.deepEqual(read.key, KEY);
    assert.equal(read.payload.length, size);
    assert.ok(read.payload.equals(payload), `size ${size}`);
  }
});

test("a close frame carries its code big-endian", () => {
  const read = unmask(encodeClientFrame(OP_CLOSE, closePayload(1000), KEY));
  assert.equal(read.first, 0x88);
  assert.deepEqual([...read.payload], [0x03, 0xe8]);
});

test("a stamped frame carries the stamp where the template had zeros, masked", () => {
  const prefix = Buffer.from('{"event":"add_chat","payload":{"chatContent":"~t');
  const suffix = Buffer.from('|xxxxx"}}');
  const frame = new StampedFrame(prefix, suffix, KEY);
  const digits = Buffer.alloc(19);
  for (const ns of [0, 1, 123456789012345, 2 ** 53 - 1]) {
    writeStamp(ns, digits);
    const payload = unmask(frame.build(digits)).payload;
    const text = payload.toString();
    assert.equal(text, `${prefix}${String(ns).padStart(19, "0")}${suffix}`);
    assert.equal(readStamp(payload, prefix.length), ns);
  }
  // Every build is a fresh buffer: a frame still queued for writing is never changed.
  writeStamp(1, digits);
  const first = frame.build(digits);
  writeStamp(2, digits);
  frame.build(digits);
  assert.equal(readStamp(unmask(first).payload, prefix.length), 1);
});

test("a stamp with a non-digit reads as -1", () => {
  assert.equal(readStamp(Buffer.from("00000000000000000x1"), 0), -1);
  assert.equal(readStamp(Buffer.from("0000000000000000012"), 0), 12);
});

test("frames split anywhere across reads come out whole and in order", () => {
  const frames = [
    serverFrame(OP_TEXT, Buffer.from("hello")),
    serverFrame(OP_TEXT, Buffer.alloc(300, 0x62)),
    serverFrame(OP_TEXT, Buffer.alloc(70000, 0x63)),
    serverFrame(OP_CLOSE, closePayload(1001)),
  ];
  const bytes = Buffer.concat(frames);
  const expected = [
    { first: 0x81, payload: "hello" },
    { first: 0x81, payload: "b".repeat(300) },
    { first: 0x81, payload: "c".repeat(70000) },
    { first: 0x88, payload: "\x03\xe9" },
  ];
  assert.deepEqual(parse(bytes, []), expected);
  // Every cut inside the first two frames and their length fields, then a few big ones.
  for (let cut = 1; cut < 320; cut++) {
    assert.deepEqual(parse(bytes, [cut]), expected, `cut at ${cut}`);
  }
  assert.deepEqual(parse(bytes, [1, 2, 3, 310, 311, 313, 5000, 70310, 70320]), expected);
});

test("a masked server frame is unmasked", () => {
  const masked = encodeClientFrame(OP_TEXT, Buffer.from("masked anyway"), KEY);
  assert.deepEqual(parse(masked, [3]), [{ first: 0x81, payload: "masked anyway" }]);
});
