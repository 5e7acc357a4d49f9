// Minimal RFC 6455 framing for the load generator (bench/node/generator.mjs): masked
// client frames built from a template, server frames split out of a read in bulk, and the
// 19-digit send time ("~t" + digits) that every timed message carries.
//
// Only what a load generator needs: no fragmentation on send, no extensions, no UTF-8
// validation. The per-frame work on the receive path is a header read and a callback.

export const OP_CONTINUATION = 0x0;
export const OP_TEXT = 0x1;
export const OP_BINARY = 0x2;
export const OP_CLOSE = 0x8;
export const OP_PING = 0x9;
export const OP_PONG = 0xa;

/** Precedes the send time in every timed message (callroom_bench.client.MARK). */
export const MARK = Buffer.from("~t");
export const STAMP_DIGITS = 19;

/**
 * Header length of a masked client frame carrying `size` payload bytes (RFC 6455 §5.2).
 * @param {number} size
 */
export function clientHeaderLength(size) {
  return (size < 126 ? 2 : size < 65536 ? 4 : 10) + 4;
}

/**
 * One masked client frame (FIN set): header, the 4-byte key, the payload XORed with it.
 * @param {number} opcode
 * @param {Uint8Array} payload
 * @param {Uint8Array} key 4 bytes
 */
export function encodeClientFrame(opcode, payload, key) {
  const size = payload.length;
  const head = clientHeaderLength(size);
  const frame = Buffer.allocUnsafe(head + size);
  frame[0] = 0x80 | opcode;
  if (size < 126) {
    frame[1] = 0x80 | size;
  } else if (size < 65536) {
    frame[1] = 0x80 | 126;
    frame.writeUInt16BE(size, 2);
  } else {
    frame[1] = 0x80 | 127;
    frame.writeUInt32BE(Math.floor(size / 2 ** 32), 2);
    frame.writeUInt32BE(size >>> 0, 6);
  }
  frame.set(key.subarray(0, 4), head - 4);
  for (let i = 0; i < size; i++) frame[head + i] = payload[i] ^ key[i & 3];
  return frame;
}

/**
 * A close frame's payload: the status code, big-endian (RFC 6455 §5.5.1).
 * @param {number} code
 */
export function closePayload(code) {
  const payload = Buffer.allocUnsafe(2);
  payload.writeUInt16BE(code, 0);
  return payload;
}

/**
 * Writes `ns` as 19 zero-padded ASCII digits into `out` (19 bytes).
 * @param {number} ns a non-negative integer below 2**53
 * @param {Buffer} out
 */
export function writeStamp(ns, out) {
  out.write(String(ns).padStart(STAMP_DIGITS, "0"), 0, STAMP_DIGITS, "latin1");
}

/**
 * The number written by `writeStamp` at `at`, or -1 when a byte there is not a digit.
 * @param {Uint8Array} buf
 * @param {number} at
 */
export function readStamp(buf, at) {
  let value = 0;
  for (let i = at; i < at + STAMP_DIGITS; i++) {
    const digit = buf[i] - 48;
    if (digit < 0 || digit > 9) return -1;
    value = value * 10 + digit;
  }
  return value;
}

/**
 * A text frame whose payload is `prefix + stamp + suffix`, masked once with the
 * connection's key; `build` copies it and masks only the 19 stamp digits in.
 */
export class StampedFrame {
  /**
   * @param {Uint8Array} prefix
   * @param {Uint8Array} suffix
   * @param {Uint8Array} key 4 bytes
   */
  constructor(prefix, suffix, key) {
    const payload = Buffer.concat([prefix, Buffer.alloc(STAMP_DIGITS, 0x30), suffix]);
    this.template = encodeClientFrame(OP_TEXT, payload, key);
    this.at = clientHeaderLength(payload.length) + prefix.length;
    this.key = key;
    this.phase = prefix.length;
  }

  /**
   * A fresh frame carrying `digits` (19 ASCII bytes) as its stamp.
   * @param {Uint8Array} digits
   */
  build(digits) {
    const frame = Buffer.allocUnsafe(this.template.length);
    this.template.copy(frame, 0);
    const { at, key, phase } = this;
    for (let i = 0; i < STAMP_DIGITS; i++) frame[at + i] = digits[i] ^ key[(phase + i) & 3];
    return frame;
  }
}

/**
 * @callback FrameHandler
 * @param {number} first the frame's first byte (FIN bit and opcode)
 * @param {Buffer} buf holds the payload, unmasked
 * @param {number} start payload start in `buf`
 * @param {number} end payload end in `buf`
 * @returns {void}
 */

/**
 * Splits the frames of one connection's byte stream: `feed` hands every whole frame of a
 * read to the handler in place (no copy) and keeps an incomplete tail for the next read.
 * The buffer given to `feed` may be reused after it returns (Node's `onread` buffer).
 */
export class FrameReader {
  /** @param {FrameHandler} onFrame */
  constructor(onFrame) {
    this.onFrame = onFrame;
    /** @type {Buffer | null} */
    this.tail = null;
  }

  /**
   * @param {Buffer} chunk
   * @param {number} start
   * @param {number} end
   */
  feed(chunk, start, end) {
    let buf = chunk;
    let pos = start;
    if (this.tail !== null) {
      buf = Buffer.concat([this.tail, chunk.subarray(start, end)]);
      pos = 0;
      end = buf.length;
      this.tail = null;
    }
    while (end - pos >= 2) {
      const second = buf[pos + 1];
      let size = second & 0x7f;
      let head = 2;
      if (size === 126) {
        if (end - pos < 4) break;
        size = buf.readUInt16BE(pos + 2);
        head = 4;
      } else if (size === 127) {
        if (end - pos < 10) break;
        size = buf.readUInt32BE(pos + 2) * 2 ** 32 + buf.readUInt32BE(pos + 6);
        head = 10;
      }
      const masked = (second & 0x80) !== 0; // servers must not mask (§5.1); undone anyway
      if (masked) head += 4;
      if (end - pos < head + size) break;
      const from = pos + head;
      if (masked) {
        for (let i = 0; i < size; i++) buf[from + i] ^= buf[from - 4 + (i & 3)];
      }
      this.onFrame(buf[pos], buf, from, from + size);
      pos = from + size;
    }
    if (pos < end) this.tail = Buffer.from(buf.subarray(pos, end));
  }
}
