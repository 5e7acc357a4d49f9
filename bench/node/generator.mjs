// The load generator of callroom-bench (docs/performance.md, "The generator").
//
// callroom_bench/generator.py starts this program (pinned to the generator's core) and
// drives it with one JSON command per line on stdin; every command is answered by one
// line {"event":"done",...} on stdout, preceded by {"event":"progress","done":n} lines
// and, for a step, by {"event":"paced"} when the sending window ends (the Python side
// stops its server CPU meter there). A command that cannot run is answered with
// {"event":"error","message":...}.
//
//   {"op":"join","urls":[...],"concurrency":C,"engineio":false,"limit_s":30}
//   {"op":"storm","urls":[...],"window_s":5,"engineio":false,"limit_s":30}
//   {"op":"settle","quiet_s":0.3,"limit_s":60}
//   {"op":"senders","senders":[{"conn":i,"prefix":"...","suffix":"...","fanout":n}]}
//   {"op":"step","rate":r,"duration":d}
//   {"op":"status"}         (open connections, timed messages received)
//   {"op":"close"}          (then the program exits)
//
// The Python side keeps the plan (who joins which room with which pre-minted token, the
// frames, the rates, the step search); this program only does the per-frame work, on raw
// `net` sockets with a shared read buffer (`onread`), so one read hands every frame it
// holds to the parser without a copy or an allocation per frame.

import { randomBytes } from "node:crypto";
import net from "node:net";
import { performance } from "node:perf_hooks";
import readline from "node:readline";

import {
  closePayload,
  encodeClientFrame,
  FrameReader,
  MARK,
  OP_CLOSE,
  OP_PING,
  OP_PONG,
  OP_TEXT,
  readStamp,
  STAMP_DIGITS,
  StampedFrame,
  writeStamp,
} from "./frames.mjs";

const READ_BUFFER = Buffer.allocUnsafe(1 << 18);
const CLOSE_OK = 1000;
const PROGRESS_MS = 200;
const DIGITS = Buffer.alloc(STAMP_DIGITS, 0x30);

/** Nanoseconds on this process's monotonic clock (below 2**53 for 100 days). */
function nowNs() {
  return performance.now() * 1e6;
}

/** @param {Record<string, unknown>} message */
function emit(message) {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

/** Latency samples in nanoseconds, in a growable typed array (no object per sample). */
class Samples {
  constructor() {
    this.data = new Float64Array(1 << 16);
    this.length = 0;
  }

  /** @param {number} value */
  push(value) {
    if (this.length === this.data.length) {
      const bigger = new Float64Array(this.data.length * 2);
      bigger.set(this.data);
      this.data = bigger;
    }
    this.data[this.length++] = value;
  }

  reset() {
    this.length = 0;
  }

  /** Nearest-rank p50/p99/max in ms, as callroom_bench.stats.Latency.of; null if empty. */
  percentiles() {
    return latency(this.data.slice(0, this.length));
  }
}

/** @param {Float64Array} samples nanoseconds */
function latency(samples) {
  if (samples.length === 0) return null;
  samples.sort();
  const count = samples.length;
  /** @param {number} p */
  const rank = (p) => ms(samples[Math.max(Math.ceil(p * count) - 1, 0)]);
  return { p50: rank(0.5), p99: rank(0.99), max: ms(samples[count - 1]) };
}

/** @param {number} ns */
function ms(ns) {
  return Math.round(ns / 1e3) / 1e3;
}

const state = {
  /** @type {Conn[]} */
  conns: [],
  /** @type {Outlet[]} */
  outlets: [],
  engineio: false,
  storm: false, // a storm: members wait in the lobby, hosts admit them (Conn.lobby)
  closing: false,
  /** @type {Record<string, number>} */
  errors: {},
  samples: new Samples(),
  lastRx: 0,
  rxNow: 0,
};

/** @param {string} code */
function count(code) {
  state.errors[code] = (state.errors[code] ?? 0) + 1;
}

/** The `code` of an `error` event, or null when the frame is some other event. */
function errorCode(/** @type {string} */ body) {
  let message;
  try {
    message = JSON.parse(body);
  } catch {
    return "unparseable_frame";
  }
  let event;
  let payload;
  if (state.engineio && Array.isArray(message) && message.length === 2) {
    [event, payload] = message;
  } else if (message !== null && typeof message === "object" && !Array.isArray(message)) {
    ({ event, payload } = message);
  } else {
    return "unparseable_frame";
  }
  if (event !== "error") return null;
  const code =
    payload !== null && typeof payload === "object" && !Array.isArray(payload)
      ? payload.code
      : undefined;
  return `error:${code ?? "None"}`;
}

/** One generator connection: handshake, then frames. */
class Conn {
  /** @param {string} url */
  constructor(url) {
    this.url = url;
    this.key = randomBytes(4);
    /** @type {net.Socket | null} */
    this.socket = null;
    /** @type {Buffer | null} the handshake response read so far; null once upgraded */
    this.head = Buffer.alloc(0);
    this.reader = new FrameReader((first, buf, start, end) =>
      this.frame(first, buf, start, end),
    );
    this.open = false; // upgraded and not closed
    this.joined = false; // its first room_state arrived
    this.done = false; // the join has an outcome
    this.closedByServer = false;
    this.started = 0;
    this.joinNs = 0;
    this.role = ""; // a storm's: the role of its latest room_state
    this.waited = false; // a storm's: it was in the waiting room before it got in
    /** @type {Set<string>} a storm host's: the waiting members it admitted */
    this.admitted = new Set();
    /** @type {(ok: boolean) => void} */
    this.settle = () => {};
    /** @type {Promise<void>} */
    this.ended = Promise.resolve();
  }

  /** @param {number} opcode @param {Uint8Array} payload */
  send(opcode, payload) {
    if (this.open) this.socket?.write(encodeClientFrame(opcode, payload, this.key));
  }

  /** Connect, upgrade, wait for the first room_state; false (and counted) on failure. */
  join(/** @type {number} */ limitMs) {
    return new Promise((resolve) => {
      const url = new URL(this.url);
      this.started = nowNs();
      const timer = setTimeout(() => this.fail("connect:timeout"), limitMs);
      this.settle = (ok) => {
        if (this.done) return;
        this.done = true;
        clearTimeout(timer);
        resolve(ok);
      };
      if (url.protocol !== "ws:") {
        this.fail(`connect:unsupported_scheme_${url.protocol.replace(":", "")}`);
        return;
      }
      const socket = net.connect({
        host: url.hostname,
        port: Number(url.port || 80),
        noDelay: true,
        // Every read lands in the one shared buffer, parsed before the next read.
        onread: {
          buffer: READ_BUFFER,
          callback: (n) => {
            this.read(n, READ_BUFFER);
            return true; // keep reading
          },
        },
      });
      this.socket = socket;
      this.ended = new Promise((ended) => socket.once("close", () => ended()));
      socket.on("connect", () => socket.write(upgradeRequest(url)));
      socket.on("error", (/** @type {NodeJS.ErrnoException} */ err) => {
        if (!this.done) this.fail(`connect:${err.code ?? err.name}`);
      });
      socket.on("close", () => this.closed());
    });
  }

  /** @param {string} reason */
  fail(reason) {
    if (this.done) return;
    count(reason);
    this.settle(false);
    this.socket?.destroy();
  }

  closed() {
    this.open = false;
    if (!this.done) {
      count("connect:ConnectionError"); // closed before room_state
      this.settle(false);
    } else if (this.joined && !state.closing && !this.closedByServer) {
      count("dropped");
    }
  }

  /** @param {number} n @param {Buffer} buf */
  read(n, buf) {
    state.rxNow = nowNs();
    if (this.head === null) {
      this.reader.feed(buf, 0, n);
      return;
    }
    const head = Buffer.concat([this.head, buf.subarray(0, n)]);
    const end = head.indexOf("\r\n\r\n");
    if (end < 0) {
      this.head = head;
      if (head.length > 65536) this.fail("connect:bad_handshake");
      return;
    }
    const status = /^HTTP\/1\.1 (\d{3})/.exec(head.toString("latin1", 0, 16));
    if (status === null || status[1] !== "101") {
      this.fail(`connect:http_${status === null ? "unparseable" : status[1]}`);
      return;
    }
    this.head = null;
    this.open = true;
    if (end + 4 < head.length) this.reader.feed(head, end + 4, head.length);
  }

  /** @param {number} first @param {Buffer} buf @param {number} start @param {number} end */
  frame(first, buf, start, end) {
    const opcode = first & 0x0f;
    if (first === (0x80 | OP_TEXT)) {
      // The hot path: a timed message. The marker may be found past this frame's end
      // (in the next frame, or in stale bytes of the shared buffer): then it is not ours.
      const at = buf.indexOf(MARK, start);
      if (at >= 0 && at + MARK.length + STAMP_DIGITS <= end) {
        const sent = readStamp(buf, at + MARK.length);
        if (sent >= 0) {
          state.samples.push(state.rxNow - sent);
          state.lastRx = state.rxNow;
          return;
        }
      }
      state.lastRx = state.rxNow;
      this.control(buf.toString("utf8", start, end));
    } else if (opcode === OP_CLOSE) {
      const code = end - start >= 2 ? buf.readUInt16BE(start) : 1005;
      this.closedByServer = true;
      if (!state.closing) count(`closed:${code}`);
      this.send(OP_CLOSE, closePayload(code === 1005 ? CLOSE_OK : code));
      this.open = false;
      this.socket?.end();
    } else if (opcode === OP_PING) {
      this.send(OP_PONG, Buffer.from(buf.subarray(start, end)));
    } else if (opcode !== OP_PONG) {
      count("unparseable_frame"); // binary or fragmented: none of the servers sends them
    }
  }

  /** A text frame without a timestamp: room_state, connect, error, Engine.IO packets. */
  control(/** @type {string} */ text) {
    let body = text;
    if (state.engineio) {
      if (text === "2") {
        this.send(OP_TEXT, Buffer.from("3")); // Engine.IO ping -> pong
        return;
      }
      const kind = text.slice(0, 2);
      if (kind[0] === "0") {
        this.send(OP_TEXT, Buffer.from("40")); // open -> connect the default namespace
        return;
      }
      if (kind !== "42") {
        if (kind !== "40") count(`engineio:${kind}`); // "40{sid}" is the connect answer
        return;
      }
      body = text.slice(2);
    }
    if (state.storm) {
      this.lobby(body);
      return;
    }
    if (!this.joined) {
      if (body.includes('"room_state"')) {
        this.joined = true;
        this.joinNs = state.rxNow - this.started;
        this.settle(true);
      } else {
        count("first_frame_not_room_state");
      }
      return;
    }
    if (body.includes('"error"')) {
      const code = errorCode(body);
      if (code !== null) count(code);
    }
  }

  /**
   * A storm's frame: a member counts as joined at its first room_state as participant
   * (a peer without a lobby sends no role), and a host admits whoever waits.
   * @param {string} body
   */
  lobby(body) {
    let message;
    try {
      message = JSON.parse(body);
    } catch {
      count("unparseable_frame");
      return;
    }
    const { event, payload } = Array.isArray(message)
      ? { event: message[0], payload: message[1] }
      : message;
    if (event === "room_state") {
      this.role = payload.role ?? "participant";
      if (this.role === "waiting") this.waited = true;
      if (this.role !== "waiting" && !this.joined) {
        this.joined = true;
        this.joinNs = state.rxNow - this.started;
        this.settle(true);
      }
      if (this.role === "host") {
        for (const waiting of payload.waitingUsers ?? []) this.admit(waiting.clientId);
      }
    } else if (event === "waiting_request") {
      if (this.role === "host") this.admit(payload.clientId);
    } else if (event === "error") {
      count(`error:${payload?.code ?? "None"}`);
    } else if (!this.joined && event !== "accept_waiting") {
      count("first_frame_not_room_state");
    }
  }

  /** A storm host lets a waiting member in, once (SPEC §3.1 accept_waiting). */
  admit(/** @type {string} */ clientId) {
    if (this.admitted.has(clientId)) return;
    this.admitted.add(clientId);
    const frame = { event: "accept_waiting", payload: { clientId } };
    this.send(OP_TEXT, Buffer.from(JSON.stringify(frame)));
  }
}

/** @param {URL} url */
function upgradeRequest(url) {
  return (
    `GET ${url.pathname}${url.search} HTTP/1.1\r\n` +
    `Host: ${url.host}\r\n` +
    "Upgrade: websocket\r\nConnection: Upgrade\r\n" +
    `Sec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\n` +
    "Sec-WebSocket-Version: 13\r\n\r\n"
  );
}

/** A sender: its connection, its frame, how many deliveries each of its messages makes. */
class Outlet {
  /** @param {Conn} conn @param {StampedFrame} frame @param {number} fanout */
  constructor(conn, frame, fanout) {
    this.conn = conn;
    this.frame = frame;
    this.fanout = fanout;
    this.sent = 0;
  }
}

/** @param {number} done */
function progress(done) {
  emit({ event: "progress", done });
}

/** The generator's CPU since `since` (process.cpuUsage) as a share of one core. */
function cpuShare(/** @type {NodeJS.CpuUsage} */ since, /** @type {number} */ seconds) {
  const used = process.cpuUsage(since);
  return Math.round(((used.user + used.system) / 1e6 / Math.max(seconds, 1e-9)) * 1e3) / 1e3;
}

/**
 * Which connections joined, how long the joins took since `started` and their latency,
 * the generator's CPU since `cpu` (the reply of `join` and of `storm`).
 * @param {number} started @param {NodeJS.CpuUsage} cpu
 */
function joinOutcome(started, cpu) {
  const elapsed = (nowNs() - started) / 1e9;
  const joined = state.conns.filter((c) => c.joined);
  return {
    joined: state.conns.map((c) => c.joined),
    elapsed_s: elapsed,
    latency_ms: latency(Float64Array.from(joined, (c) => c.joinNs)),
    generator_cpu: cpuShare(cpu, elapsed),
  };
}

/** @param {number} msec */
function sleep(msec) {
  return new Promise((resolve) => setTimeout(resolve, msec));
}

const ops = {
  /** @param {{urls: string[], concurrency: number, engineio: boolean, limit_s: number}} cmd */
  async join(cmd) {
    state.engineio = cmd.engineio;
    state.conns = cmd.urls.map((url) => new Conn(url));
    const cpu = process.cpuUsage();
    const started = nowNs();
    let next = 0;
    let finished = 0;
    const ticker = setInterval(() => progress(finished), PROGRESS_MS);
    const worker = async () => {
      while (next < state.conns.length) {
        await state.conns[next++].join(cmd.limit_s * 1e3);
        finished++;
      }
    };
    const workers = Math.max(1, Math.min(cmd.concurrency, state.conns.length));
    await Promise.all(Array.from({ length: workers }, worker));
    clearInterval(ticker);
    return joinOutcome(started, cpu);
  },

  /**
   * The top of the hour: every connection opened on schedule (open loop: connection k of
   * n at k * window / n, in the given order, whatever the server's pace), hosts admitting
   * their waiting members; each join timed from its TCP connect to its first room_state
   * as participant.
   * @param {{urls: string[], window_s: number, engineio: boolean, limit_s: number}} cmd
   */
  async storm(cmd) {
    state.storm = true;
    state.engineio = cmd.engineio;
    state.conns = cmd.urls.map((url) => new Conn(url));
    const cpu = process.cpuUsage();
    const started = nowNs();
    const spacing = (cmd.window_s * 1e9) / Math.max(state.conns.length, 1);
    /** @type {Promise<boolean>[]} */
    const joins = [];
    let finished = 0;
    const ticker = setInterval(() => progress(finished), PROGRESS_MS);
    await new Promise((resolve) => {
      const tick = () => {
        const due = Math.min(
          Math.floor((nowNs() - started) / spacing) + 1,
          state.conns.length,
        );
        while (joins.length < due) {
          const join = state.conns[joins.length].join(cmd.limit_s * 1e3);
          joins.push(join.finally(() => finished++));
        }
        if (joins.length === state.conns.length) resolve(undefined);
        else setTimeout(tick, 1);
      };
      tick();
    });
    const opened = (nowNs() - started) / 1e9;
    await Promise.all(joins);
    clearInterval(ticker);
    const waited = state.conns.filter((c) => c.waited).length;
    return { ...joinOutcome(started, cpu), opened_s: opened, waited };
  },

  /** Wait until the join traffic (room_state, connect broadcasts) has died down. */
  async settle(/** @type {{quiet_s: number, limit_s: number}} */ cmd) {
    const deadline = nowNs() + cmd.limit_s * 1e9;
    for (;;) {
      const now = nowNs();
      if (now - state.lastRx >= cmd.quiet_s * 1e9 || now >= deadline) return {};
      await sleep(50);
    }
  },

  /** @param {{senders: {conn: number, prefix: string, suffix: string, fanout: number}[]}} cmd */
  async senders(cmd) {
    state.outlets = cmd.senders.map(({ conn, prefix, suffix, fanout }) => {
      const c = state.conns[conn];
      const frame = new StampedFrame(Buffer.from(prefix), Buffer.from(suffix), c.key);
      return new Outlet(c, frame, fanout);
    });
    return {};
  },

  /** @param {{rate: number, duration: number}} cmd */
  async step(cmd) {
    const outlets = state.outlets;
    if (outlets.length === 0) throw new Error("no senders: send the senders command first");
    for (const outlet of outlets) outlet.sent = 0;
    state.samples.reset();
    const errorsBefore = { ...state.errors };
    const cpu = process.cpuUsage();
    const interval = 1e9 / cmd.rate;
    const start = nowNs();
    const end = start + cmd.duration * 1e9;
    let sent = 0;
    let position = 0;
    let nextProgress = start;
    // The messages scheduled in the window: start + k * interval < end.
    const total = Math.ceil((cmd.duration * 1e9) / interval - 1e-9);
    // Open-loop token bucket, checked every millisecond: send every message due by now,
    // round-robin over the senders, each batch stamped with the scheduled time of its
    // first message (no coordinated omission: a late generator shows up as latency, and
    // a tick that comes after the window's end still sends what was due in it).
    await new Promise((resolve) => {
      const tick = () => {
        const now = nowNs();
        const due = Math.min(Math.floor((now - start) / interval) + 1, total) - sent;
        if (due > 0) {
          writeStamp(Math.round(start + sent * interval), DIGITS);
          for (let k = 0; k < due; k++) {
            const outlet = outlets[position];
            const { conn } = outlet;
            if (conn.open) conn.socket?.write(outlet.frame.build(DIGITS));
            outlet.sent++;
            if (++position === outlets.length) position = 0;
          }
          sent += due;
        }
        if (now >= end) {
          resolve(undefined);
          return;
        }
        if (now >= nextProgress) {
          progress((now - start) / 1e9);
          nextProgress += PROGRESS_MS * 1e6;
        }
        setTimeout(tick, 1);
      };
      tick();
    });
    const elapsed = (nowNs() - start) / 1e9;
    const generatorCpu = cpuShare(cpu, elapsed);
    emit({ event: "paced" });
    let expected = 0;
    for (const outlet of outlets) expected += outlet.sent * outlet.fanout;
    await drain(expected);
    const delivered = state.samples.length;
    /** @type {Record<string, number>} */
    const errors = {};
    for (const [code, n] of Object.entries(state.errors)) {
      const added = n - (errorsBefore[code] ?? 0);
      if (added > 0) errors[code] = added;
    }
    return {
      sent,
      elapsed_s: elapsed,
      expected,
      delivered,
      window_s: Math.max(elapsed, (state.lastRx - start) / 1e9),
      latency_ms: state.samples.percentiles(),
      generator_cpu: generatorCpu,
      step_errors: errors,
    };
  },

  /** Joined connections still open, timed messages received since the last step began. */
  async status() {
    const open = state.conns.filter((c) => c.joined && c.open).length;
    return { open, timed: state.samples.length };
  },

  /** Leave (close code 1000, SPEC §2) on every open connection and wait for the ends. */
  async close() {
    state.closing = true;
    const open = state.conns.filter((c) => c.socket !== null && !c.socket.destroyed);
    for (const conn of open) {
      conn.send(OP_CLOSE, closePayload(CLOSE_OK));
      conn.open = false;
      conn.socket?.end();
    }
    // A server that never closes is its problem: give up after 30 s.
    const limit = sleep(30_000);
    await Promise.race([Promise.all(open.map((c) => c.ended)), limit]);
    for (const conn of open) conn.socket?.destroy();
    return {};
  },
};

/** Wait for the deliveries still in flight: all arrived, or nothing came for 0.5 s. */
async function drain(/** @type {number} */ expected) {
  const deadline = nowNs() + 10e9;
  while (state.samples.length < expected) {
    const now = nowNs();
    if (now - state.lastRx > 0.5e9 || now > deadline) return;
    await sleep(10);
  }
}

async function main() {
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line.trim()) continue;
    let command;
    try {
      command = JSON.parse(line);
    } catch {
      emit({ event: "error", message: "a command is not JSON" });
      continue;
    }
    const op = ops[/** @type {keyof typeof ops} */ (command.op)];
    if (op === undefined) {
      emit({ event: "error", message: `unknown command ${JSON.stringify(command.op)}` });
      continue;
    }
    try {
      const reply = await op(command);
      emit({ event: "done", op: command.op, node: process.version, errors: state.errors, ...reply });
    } catch (err) {
      emit({ event: "error", message: err instanceof Error ? err.message : String(err) });
    }
    if (command.op === "close") break;
  }
  lines.close();
  // Every socket is closed or destroyed; stdin's end is ours to stop waiting for.
  process.exit(0);
}

await main();
