// Unit tests of src/callroom/web/callroom-client.js: the close-code table, the reconnect
// policy and token refresh, with an injected WebSocket, timers and fetch (node --test).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  CallroomClient,
  CLOSE_REASONS,
  DEFAULT_BACKOFF,
  closeReason,
  reconnectDelay,
  roomUrl,
  shouldReconnect,
  tokenExpiry,
} from "../../src/callroom/web/callroom-client.js";

const NOW = 1_800_000_000_000;

/** A JWT-shaped token (unsigned: the client only reads `exp`). */
function jwt(claims) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "RS256" })}.${part(claims)}.sig`;
}

class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.closedWith = null;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    FakeSocket.all.push(this);
  }
  send(data) {
    this.sent.push(JSON.parse(data));
  }
  close(code) {
    this.closedWith = code;
    this.readyState = 3;
  }
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  message(event, payload) {
    this.onmessage?.({ data: JSON.stringify({ event, payload }) });
  }
  serverClose(code) {
    this.readyState = 3;
    this.onclose?.({ code, reason: "" });
  }
}

class FakeTimers {
  pending = [];
  setTimeout = (fn, ms) => {
    const timer = { fn, ms };
    this.pending.push(timer);
    return timer;
  };
  clearTimeout = (timer) => {
    this.pending = this.pending.filter((item) => item !== timer);
  };
  async runNext() {
    const timer = this.pending.shift();
    assert.ok(timer, "a timer is pending");
    timer.fn();
    await settle();
    return timer.ms;
  }
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

function makeClient(options = {}) {
  FakeSocket.all = [];
  const timers = new FakeTimers();
  const closes = [];
  const client = new CallroomClient({
    server: "http://127.0.0.1:8080",
    roomId: "standup",
    token: "t1",
    WebSocket: FakeSocket,
    timers,
    fetch: null,
    random: () => 0.5,
    now: () => NOW,
    ...options,
  });
  client.on("close", (info) => closes.push(info));
  return { client, timers, closes };
}

async function openClient(options) {
  const made = makeClient(options);
  await made.client.connect();
  FakeSocket.all.at(-1).open();
  FakeSocket.all.at(-1).message("room_state", { role: "participant" });
  return made;
}

test("every close code of SPEC §3.4 has its own human reason", () => {
  const spec = [1001, 1002, 1003, 1008, 1009, 1013, 4001, 4003, 4004, 4005, 4009];
  for (const code of spec) {
    assert.ok(CLOSE_REASONS[code]?.length > 5, `reason for ${code}`);
  }
  const texts = Object.values(CLOSE_REASONS);
  assert.equal(new Set(texts).size, texts.length, "reasons are distinct");
  assert.equal(closeReason(4004), "you were removed from the meeting by a host");
  assert.equal(closeReason(4321), "the connection closed (code 4321)");
});

test("reconnect policy: never after a verdict, 4001 only with a fresh token", () => {
  for (const code of [1000, 1002, 1003, 1008, 1009, 4003, 4004, 4005, 4009, 4999]) {
    assert.equal(shouldReconnect(code, { freshToken: true }), false, `code ${code}`);
  }
  for (const code of [1001, 1006, 1011, 1012, 1013]) {
    assert.equal(shouldReconnect(code, { freshToken: false }), true, `code ${code}`);
  }
  assert.equal(shouldReconnect(4001, { freshToken: false }), false);
  assert.equal(shouldReconnect(4001, { freshToken: true }), true);
});

test("backoff doubles up to its cap, with jitter within [cap/2, cap)", () => {
  const lowest = (n) => reconnectDelay(n, 1006, DEFAULT_BACKOFF, () => 0);
  const highest = (n) => reconnectDelay(n, 1006, DEFAULT_BACKOFF, () => 0.999999);
  assert.deepEqual([0, 1, 2, 3].map(lowest), [250, 500, 1000, 2000]);
  assert.deepEqual([0, 1, 2, 3].map(highest), [499, 999, 1999, 3999]);
  assert.equal(highest(20), DEFAULT_BACKOFF.maxMs - 1);
  assert.equal(lowest(20), DEFAULT_BACKOFF.maxMs / 2);
  // A node going away (1001): the first attempt is at once, spread over initialMs.
  assert.ok(reconnectDelay(0, 1001, DEFAULT_BACKOFF, () => 0.2) < DEFAULT_BACKOFF.initialMs / 2);
});

test("helpers: room URL and token expiry", () => {
  assert.equal(roomUrl("https://meet.example.com/", "zoom", "a b", "x.y"), "wss://meet.example.com/ws/zoom/a%20b?token=x.y");
  assert.equal(tokenExpiry(jwt({ exp: 1234 })), 1_234_000);
  assert.equal(tokenExpiry("not-a-jwt"), null);
  assert.equal(tokenExpiry(jwt({ sub: "a" })), null);
});

test("a drop reconnects after a jittered delay, with the same token", async () => {
  const { timers, closes } = await openClient();
  FakeSocket.all[0].serverClose(1006);
  await settle();
  assert.equal(closes.length, 1);
  assert.equal(closes[0].final, false);
  assert.equal(closes[0].reason, "the connection was lost");
  const delay = await timers.runNext();
  assert.equal(delay, 375); // initialMs 500: half fixed + 0.5 * half
  assert.equal(FakeSocket.all.length, 2);
  assert.equal(FakeSocket.all[1].url, "ws://127.0.0.1:8080/ws/zoom/standup?token=t1");
});

for (const code of [4003, 4004, 4005, 4009, 1008]) {
  test(`close ${code} is final: no reconnect ever`, async () => {
    const { client, timers, closes } = await openClient();
    FakeSocket.all[0].serverClose(code);
    await settle();
    assert.deepEqual(
      closes.map((info) => [info.code, info.final, info.reason]),
      [[code, true, CLOSE_REASONS[code]]],
    );
    assert.equal(timers.pending.length, 0);
    assert.equal(client.state, "closed");
    assert.equal(FakeSocket.all.length, 1);
  });
}

test("4001 without a way to get a fresh token is final", async () => {
  const { closes } = await openClient();
  FakeSocket.all[0].serverClose(4001);
  await settle();
  assert.equal(closes[0].final, true);
  assert.equal(closes[0].reason, "your session expired");
});

test("4001 with the same token from getToken is final", async () => {
  const { closes } = await openClient({ getToken: () => "t1" });
  FakeSocket.all[0].serverClose(4001);
  await settle();
  assert.equal(closes[0].final, true);
});

test("4001 with a fresh token from getToken reconnects with that token", async () => {
  const fresh = jwt({ exp: NOW / 1000 + 3600 });
  let calls = 0;
  const getToken = () => (++calls === 1 ? "t1" : fresh);
  const { timers, closes } = await openClient({ getToken, token: null });
  FakeSocket.all[0].serverClose(4001);
  await settle();
  assert.equal(closes[0].final, false);
  await timers.runNext();
  assert.equal(FakeSocket.all.length, 2);
  assert.ok(FakeSocket.all[1].url.endsWith(`?token=${fresh}`));
});

test("refresh_token is sent before the token expires, with the newer token", async () => {
  const first = jwt({ exp: NOW / 1000 + 120 });
  const second = jwt({ exp: NOW / 1000 + 3600 });
  const { timers } = await openClient({ token: first, getToken: () => second });
  assert.equal(timers.pending.length, 1);
  const delay = await timers.runNext();
  assert.equal(delay, 60_000); // 120 s to exp, 60 s margin
  assert.deepEqual(FakeSocket.all[0].sent, [{ event: "refresh_token", payload: { token: second } }]);
});

test("error events reach listeners; send is typed and fails on a closed socket", async () => {
  const { client } = await openClient();
  const errors = [];
  client.on("error", (payload) => errors.push(payload));
  FakeSocket.all[0].message("error", { code: "forbidden", message: "only a host may do this", event: "kick_participant" });
  assert.deepEqual(errors, [{ code: "forbidden", message: "only a host may do this", event: "kick_participant" }]);
  assert.equal(client.send("raise_hand", {}), true);
  assert.deepEqual(FakeSocket.all[0].sent.at(-1), { event: "raise_hand", payload: {} });
  client.close();
  assert.equal(FakeSocket.all[0].closedWith, 1000);
  assert.equal(client.send("raise_hand", {}), false);
});

test("leaving closes with 1000 and never reconnects", async () => {
  const { client, timers, closes } = await openClient();
  client.close();
  FakeSocket.all[0].serverClose(1000);
  await settle();
  assert.deepEqual(closes.map((info) => [info.code, info.final]), [[1000, true]]);
  assert.equal(timers.pending.length, 0);
});

test("a refused upgrade shows the server's reason and stops (room locked)", async () => {
  const fetched = [];
  const fetch = async (url) => {
    fetched.push(url);
    return { status: 403, json: async () => ({ error: "room_locked", message: "the room is locked" }) };
  };
  const { client, closes } = makeClient({ fetch });
  await client.connect();
  FakeSocket.all[0].serverClose(1006);
  await settle();
  assert.deepEqual(fetched, ["http://127.0.0.1:8080/ws/zoom/standup?token=t1"]);
  assert.equal(closes[0].final, true);
  assert.equal(closes[0].reason, "the room is locked");
  assert.equal(closes[0].refusal.error, "room_locked");
});

test("a busy server (503) is retried; failures in a row end after maxFailures", async () => {
  const fetch = async () => ({ status: 503, json: async () => ({ error: "unavailable", message: "the server is full" }) });
  const { client, timers, closes } = makeClient({ fetch, backoff: { maxFailures: 3 } });
  await client.connect();
  for (let attempt = 0; attempt < 3; attempt += 1) {
    FakeSocket.all.at(-1).serverClose(1006);
    await settle();
    assert.equal(closes.at(-1).final, false);
    await timers.runNext();
  }
  FakeSocket.all.at(-1).serverClose(1006);
  await settle();
  assert.equal(closes.at(-1).final, true);
  assert.equal(FakeSocket.all.length, 4);
});

test("a successful join resets the failure count", async () => {
  const { client, timers } = await openClient({ backoff: { maxFailures: 1 } });
  for (let round = 0; round < 3; round += 1) {
    FakeSocket.all.at(-1).serverClose(1006);
    await settle();
    await timers.runNext();
    FakeSocket.all.at(-1).open();
    FakeSocket.all.at(-1).message("room_state", {});
  }
  assert.equal(client.state, "open");
  assert.equal(FakeSocket.all.length, 4);
});

test("a refused upgrade for an expired token reconnects only with a fresh token", async () => {
  const fresh = jwt({ exp: NOW / 1000 + 3600 });
  const fetch = async () => ({ status: 401, json: async () => ({ error: "unauthorized", message: "token expired" }) });
  const stale = makeClient({ fetch });
  await stale.client.connect();
  FakeSocket.all[0].serverClose(1006);
  await settle();
  assert.deepEqual(stale.closes.map((info) => [info.final, info.reason]), [[true, "token expired"]]);

  const renewed = makeClient({ fetch, getToken: () => fresh });
  await renewed.client.connect();
  FakeSocket.all[0].serverClose(1006);
  await settle();
  assert.equal(renewed.closes[0].final, false);
  await renewed.timers.runNext();
  assert.ok(FakeSocket.all[1].url.endsWith(`?token=${fresh}`));
});

test("a getToken that fails does not stop a connect (the held token is tried)", async () => {
  const { client } = makeClient({
    token: jwt({ exp: NOW / 1000 + 10 }), // expires soon: getToken is asked first
    getToken: async () => {
      throw new Error("identity provider down");
    },
  });
  await client.connect();
  assert.equal(FakeSocket.all.length, 1);
  assert.equal(client.state, "connecting");
});

test("an unreachable server is retried with growing delays", async () => {
  const { client, timers, closes } = makeClient({ fetch: async () => Promise.reject(new Error("refused")) });
  await client.connect();
  const delays = [];
  for (let attempt = 0; attempt < 3; attempt += 1) {
    FakeSocket.all.at(-1).serverClose(1006);
    await settle();
    delays.push(closes.at(-1).delayMs);
    await timers.runNext();
  }
  assert.deepEqual(delays, [375, 750, 1500]);
  assert.ok(closes.every((info) => !info.final && info.refusal === null));
});
