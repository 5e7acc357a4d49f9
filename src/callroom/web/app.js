// @ts-check
/**
 * app.js — the callroom web client page: join screen, waiting room, meeting.
 *
 * The protocol goes through callroom-client.js (reconnects, token refresh, close
 * reasons), media through rtc.js (the WebRTC mesh), lists through view.js. The page's
 * hooks (data-testid) are a contract: docs/web-client.md lists them.
 */

import { CallroomClient } from "./callroom-client.js";
import { Mesh } from "./rtc.js";
import { people, renderChat, renderHands, renderPeople, renderShareRequests, renderWaiting } from "./view.js";

/** @typedef {import("./callroom-client.js").ClientInfo} ClientInfo */
/** @typedef {import("./callroom-client.js").ChatInfo} ChatInfo */
/** @typedef {import("./callroom-client.js").RoomState} RoomState */
/** @typedef {import("./callroom-client.js").CloseInfo} CloseInfo */
/** @typedef {{roomId: string, name: string, token: string | null}} Session */

const ROOM_ID = /^[A-Za-z0-9_-]{1,64}$/;
const SESSION_KEY = "callroom.session";
const SUB_KEY = "callroom.sub";
const PAGE_SIZE = 50;

/** @param {string} testid */
function hook(testid) {
  const node = document.querySelector(`[data-testid="${testid}"]`);
  if (!(node instanceof HTMLElement)) throw new Error(`missing element ${testid}`);
  return node;
}
/** @param {string} id */
function byId(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`missing element #${id}`);
  return node;
}
/** @param {string} testid */
const input = (testid) => /** @type {HTMLInputElement} */ (hook(testid));

const dev = document.querySelector('meta[name="callroom-dev"]')?.getAttribute("content") === "1";
const ui = {
  status: hook("status"),
  notice: hook("notice"),
  joinScreen: byId("join-screen"),
  waitingScreen: byId("waiting-screen"),
  endedScreen: byId("ended-screen"),
  meeting: byId("meeting"),
  grid: byId("grid"),
  localVideo: /** @type {HTMLVideoElement} */ (byId("local-video")),
  participants: hook("participants"),
  waitingPanel: byId("waiting-panel"),
  waitingList: hook("waiting-list"),
  hands: hook("hands"),
  sharePanel: byId("share-panel"),
  shareRequests: hook("share-requests"),
  chat: hook("chat-messages"),
  chatInput: input("chat-input"),
  loadOlder: hook("chat-load-older"),
  mute: hook("mute"),
  camera: hook("camera"),
  share: hook("share-screen"),
  hand: hook("raise-hand"),
  lock: hook("lock"),
  end: hook("end"),
};

/** Everything the page knows about the meeting it is in. */
const state = {
  /** @type {CallroomClient | null} */ client: null,
  /** @type {Session | null} */ session: null,
  /** @type {RoomState | null} */ room: null,
  /** @type {Mesh | null} */ mesh: null,
  /** @type {ClientInfo[]} */ hands: [],
  /** @type {Map<string, ClientInfo>} */ shareRequests: new Map(),
  /** @type {ChatInfo[]} */ chats: [],
  hasMore: false,
  /** Whether this socket's admission was handled (history fetched, mesh made). */
  entered: false,
  /** @type {("recent" | "older")[]} */ pendingPages: [],
  audio: true,
  video: true,
  shareRequested: false,
  /** @type {MediaStream | null} */ screen: null,
};

// -- status and screens ------------------------------------------------------------------

/**
 * @param {string} text
 * @param {string} phase
 * @param {number | null} [code]
 */
function setStatus(text, phase, code = null) {
  ui.status.textContent = text;
  ui.status.dataset.state = phase;
  if (code === null) delete ui.status.dataset.closeCode;
  else ui.status.dataset.closeCode = String(code);
}

/** @param {"join" | "waiting" | "meeting" | "ended"} screen */
function show(screen) {
  const screens = { join: ui.joinScreen, waiting: ui.waitingScreen, meeting: ui.meeting, ended: ui.endedScreen };
  const target = screens[screen];
  const wasHidden = target.hidden;
  for (const [name, node] of Object.entries(screens)) node.hidden = name !== screen;
  // Keyboard and screen reader users land on the new screen, not on a hidden button.
  if (wasHidden && !target.contains(document.activeElement)) {
    /** @type {HTMLElement | null} */ (target.querySelector("[data-autofocus]"))?.focus();
  }
}

/** @param {string} text */
function notify(text) {
  ui.notice.textContent = text;
}

// -- joining -----------------------------------------------------------------------------

function devSub() {
  let sub = sessionStorage.getItem(SUB_KEY);
  if (!sub) {
    sub = `dev-${crypto.randomUUID()}`;
    sessionStorage.setItem(SUB_KEY, sub);
  }
  return sub;
}

/** @param {string} name */
async function devToken(name) {
  const response = await fetch("/dev/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ sub: devSub(), name }),
  });
  const body = await response.json();
  if (!response.ok) throw new Error(body.message ?? "could not get a dev token");
  return /** @type {string} */ (body.token);
}

/** @param {string} token */
async function iceServers(token) {
  try {
    const response = await fetch("/api/v1/ice-servers", { headers: { Authorization: `Bearer ${token}` } });
    if (!response.ok) return [];
    const body = await response.json();
    return /** @type {RTCIceServer[]} */ (body.iceServers ?? []);
  } catch {
    return [];
  }
}

/** @param {Session} session */
async function join(session) {
  state.session = session;
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  history.replaceState(null, "", `#room=${encodeURIComponent(session.roomId)}`);
  byId("room-label").textContent = session.roomId;
  byId("waiting-room").textContent = session.roomId;
  setStatus("connecting", "connecting");
  const client = new CallroomClient({
    roomId: session.roomId,
    token: session.token,
    getToken: dev ? () => devToken(session.name) : null,
  });
  state.client = client;
  wire(client);
  await client.connect();
}

/** @param {CallroomClient} client */
function wire(client) {
  client.on("open", () => {
    state.entered = false;
    state.pendingPages = []; // replies to a previous socket's requests will not come
  });
  client.on("room_state", (room) => onRoomState(room));
  client.on("close", (info) => onClose(info));
  client.on("error", (error) => notify(error.message));
  client.on("add_chat", (chat) => {
    if (!state.chats.some((known) => known.chatId === chat.chatId)) state.chats.push(chat);
    drawChat();
  });
  client.on("delete_chat", ({ chatId }) => {
    state.chats = state.chats.filter((chat) => chat.chatId !== chatId);
    drawChat();
  });
  client.on("get_recent_chats", (page) => {
    const kind = state.pendingPages.shift() ?? "recent";
    const known = new Set(state.chats.map((chat) => chat.chatId));
    const fresh = page.messages.filter((chat) => !known.has(chat.chatId));
    state.chats = kind === "older" ? [...fresh, ...state.chats] : mergeRecent(page.messages);
    if (kind === "older" || state.pendingPages.length === 0) state.hasMore = page.hasMore;
    drawChat();
  });
  client.on("raise_hand", (who) => {
    if (!state.hands.some((hand) => hand.clientId === who.clientId)) state.hands.push(who);
    draw();
  });
  client.on("lower_hand", (who) => {
    state.hands = state.hands.filter((hand) => hand.clientId !== who.clientId);
    draw();
  });
  client.on("request_screenshare", (who) => {
    state.shareRequests.set(who.clientId, who);
    draw();
  });
  client.on("accept_screenshare", (who) => {
    state.shareRequests.delete(who.clientId);
    if (who.clientId === state.room?.clientId) {
      state.shareRequested = false;
      notify("The host let you share your screen: press Share screen.");
    }
    draw();
  });
  client.on("deny_screenshare", (who) => {
    state.shareRequests.delete(who.clientId);
    if (who.clientId === state.room?.clientId) {
      state.shareRequested = false;
      notify("The host did not let you share your screen.");
    }
    draw();
  });
  client.on("media_state", (media) => {
    if (!state.room) return;
    state.room.media[media.clientId] = { audio: media.audio, video: media.video };
    draw();
  });
  client.on("room_locked", () => setLocked(true));
  client.on("room_unlocked", () => setLocked(false));
  client.on("connect", (who) => state.mesh?.ensure(who));
  client.on("disconnect", (who) => state.mesh?.remove(who.clientId));
  for (const event of /** @type {const} */ (["offer", "answer", "candidate", "renegotiate"])) {
    client.on(event, (payload) => state.mesh?.signal(event, payload));
  }
}

/**
 * The newest page replaces the list, keeping messages that arrived meanwhile.
 * @param {ChatInfo[]} page
 */
function mergeRecent(page) {
  const ids = new Set(page.map((chat) => chat.chatId));
  const newest = page.length ? page[page.length - 1].timestamp : 0;
  const later = state.chats.filter((chat) => !ids.has(chat.chatId) && chat.timestamp >= newest);
  return [...page, ...later];
}

/** @param {boolean} locked */
function setLocked(locked) {
  if (state.room) state.room.locked = locked;
  draw();
}

// -- room state --------------------------------------------------------------------------

/** @param {RoomState} room */
function onRoomState(room) {
  state.room = room;
  state.hands = [...room.handsRaised];
  const waiting = room.role === "waiting";
  setStatus(waiting ? "waiting" : "in meeting", waiting ? "waiting" : "in-meeting");
  if (waiting) {
    show("waiting");
    return;
  }
  show("meeting");
  if (!state.entered) {
    state.entered = true;
    void enterMeeting();
  }
  const present = new Set(others(room).map((member) => member.clientId));
  for (const id of [...state.shareRequests.keys()]) {
    if (!present.has(id) || room.sharingScreen.some((member) => member.clientId === id)) state.shareRequests.delete(id);
  }
  if (state.screen && !canShare(room)) stopScreen(false);
  state.mesh?.reconcile(others(room));
  draw();
}

/** @param {RoomState} room */
function others(room) {
  return [...room.hosts, ...room.sharingScreen, ...room.participants].filter((member) => member.clientId !== room.clientId);
}

/** @param {RoomState} room */
function canShare(room) {
  return room.role === "host" || room.role === "screenshare";
}

/** Admitted (on join, after the waiting room, or on a reconnect): media, mesh, history. */
async function enterMeeting() {
  const client = state.client;
  const room = state.room;
  if (!client || !room || !state.session) return;
  if (client.send("get_recent_chats", { limit: PAGE_SIZE })) state.pendingPages.push("recent");
  if (state.mesh) {
    state.mesh.reconcile(others(room));
    return; // a reconnect within the grace: the peer connections carry on
  }
  // The mesh exists at once (signals of the others are kept until it is ready); it is
  // ready when the camera answered and the ICE servers are known.
  const media = localMedia();
  const ready = Promise.all([media, iceServers(client.token ?? "")]).then(([stream, servers]) => ({
    stream,
    iceServers: servers,
  }));
  const mesh = new Mesh({
    selfId: room.clientId,
    send: (event, payload) => client.send(event, payload),
    grid: ui.grid,
    ready,
    onError: (message) => console.warn(message),
  });
  state.mesh = mesh;
  mesh.reconcile(others(room));
  const stream = await media;
  if (state.mesh !== mesh) return;
  ui.localVideo.srcObject = stream;
  if (stream) ui.localVideo.play().catch(() => {});
  mesh.setAudio(state.audio);
  mesh.setVideo(state.video);
  client.send("set_media_state", { audio: state.audio, video: state.video });
  draw();
}

/** @returns {Promise<MediaStream | null>} camera and microphone, or null without them */
async function localMedia() {
  try {
    return await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 360 } });
  } catch (error) {
    state.audio = false;
    state.video = false;
    notify(`No camera or microphone: ${error instanceof Error ? error.message : error}. You can still watch and chat.`);
    return null;
  }
}

/** @param {CloseInfo} info */
function onClose(info) {
  if (!info.final) {
    setStatus("reconnecting", "reconnecting");
    return;
  }
  const reason = info.code === 1000 ? "left" : info.reason;
  setStatus(reason, "closed", info.code);
  if (info.refusal) ui.status.dataset.refusal = info.refusal.error;
  teardown();
  byId("ended-title").textContent = info.code === 1000 ? "You left the meeting" : "You are not in the meeting";
  byId("ended-reason").textContent = info.code === 1000 ? "" : capitalise(info.reason);
  show("ended");
}

/** @param {string} text */
function capitalise(text) {
  return text.charAt(0).toUpperCase() + text.slice(1) + ".";
}

function teardown() {
  sessionStorage.removeItem(SESSION_KEY);
  state.mesh?.close();
  state.mesh = null;
  state.screen = null;
  showOwnScreen(null);
  state.client = null;
  state.room = null;
  state.chats = [];
  state.hands = [];
  state.shareRequests.clear();
  state.shareRequested = false;
  state.pendingPages = [];
  ui.localVideo.srcObject = null;
  byId("room-label").textContent = "";
  draw();
  drawChat();
}

// -- drawing -----------------------------------------------------------------------------

function draw() {
  const room = state.room;
  const host = room?.role === "host";
  const selfId = room?.clientId ?? "";
  const handIds = new Set(state.hands.map((hand) => hand.clientId));
  const persons = room ? people(room, handIds) : [];
  renderPeople(ui.participants, persons, selfId, host, act);
  byId("people-count").textContent = persons.length ? `(${persons.length})` : "";
  ui.waitingPanel.hidden = !host || !room || room.waitingUsers.length === 0;
  renderWaiting(ui.waitingList, host && room ? room.waitingUsers : [], act);
  renderHands(ui.hands, state.hands, host, act);
  ui.sharePanel.hidden = !host || state.shareRequests.size === 0;
  renderShareRequests(ui.shareRequests, host ? [...state.shareRequests.values()] : [], act);
  for (const node of document.querySelectorAll(".host-only")) /** @type {HTMLElement} */ (node).hidden = !host;
  const locked = room?.locked ?? false;
  pressed(ui.lock, locked, locked ? "Unlock" : "Lock", locked ? "Unlock the room" : "Lock the room");
  const raised = handIds.has(selfId);
  pressed(ui.hand, raised, raised ? "Lower hand" : "Raise hand", raised ? "Lower hand" : "Raise hand");
  pressed(ui.mute, !state.audio, state.audio ? "Mute" : "Unmute", state.audio ? "Mute microphone" : "Unmute microphone");
  pressed(ui.camera, !state.video, state.video ? "Camera off" : "Camera on", state.video ? "Turn camera off" : "Turn camera on");
  drawShareButton();
}

/**
 * @param {HTMLElement} node
 * @param {boolean} on
 * @param {string} text
 * @param {string} label
 */
function pressed(node, on, text, label) {
  node.setAttribute("aria-pressed", String(on));
  node.textContent = text;
  node.setAttribute("aria-label", label);
}

function drawShareButton() {
  const room = state.room;
  /** @type {[string, string, string]} */
  let look = ["request", "Ask to share", "Ask to share your screen"];
  if (state.screen) look = ["sharing", "Stop sharing", "Stop sharing your screen"];
  else if (room && canShare(room)) look = ["start", "Share screen", "Share screen"];
  else if (state.shareRequested) look = ["requested", "Asked to share…", "Asked to share, waiting for the host"];
  ui.share.dataset.state = look[0];
  ui.share.textContent = look[1];
  ui.share.setAttribute("aria-label", look[2]);
  ui.share.toggleAttribute("disabled", look[0] === "requested");
}

function drawChat() {
  const room = state.room;
  renderChat(ui.chat, state.chats, room?.clientId ?? "", room?.role === "host", (chatId) => state.client?.send("delete_chat", { chatId }));
  ui.loadOlder.hidden = !state.hasMore || state.chats.length === 0;
}

// -- actions -----------------------------------------------------------------------------

/** @type {import("./view.js").Act} */
function act(testid, clientId) {
  const client = state.client;
  if (!client) return;
  const target = { clientId };
  if (testid === "admit") client.send("accept_waiting", target);
  else if (testid === "deny") client.send("deny_waiting", target);
  else if (testid === "kick") client.send("kick_participant", { clientId, ban: false });
  else if (testid === "ban") client.send("kick_participant", { clientId, ban: true });
  else if (testid === "promote") client.send("promote_host", target);
  else if (testid === "demote") client.send("demote_host", target);
  else if (testid === "stop-share") client.send("stop_screenshare", target);
  else if (testid === "lower-hand") client.send("lower_hand", target);
  else if (testid === "approve-share") client.send("accept_screenshare", target);
  else if (testid === "deny-share") client.send("deny_screenshare", target);
}

async function onShareClick() {
  const room = state.room;
  const client = state.client;
  if (!room || !client) return;
  if (state.screen) {
    stopScreen(true);
  } else if (canShare(room)) {
    try {
      const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
      state.screen = stream;
      for (const track of stream.getVideoTracks()) track.addEventListener("ended", () => stopScreen(true));
      state.mesh?.startScreen(stream);
      showOwnScreen(stream);
      notify("");
    } catch (error) {
      notify(`Screen sharing did not start: ${error instanceof Error ? error.message : error}`);
    }
  } else if (client.send("request_screenshare", {})) {
    state.shareRequested = true;
    notify("Asked the host to let you share your screen.");
  }
  draw();
}

/** @param {boolean} tellServer stop_screenshare when the role was granted for it */
function stopScreen(tellServer) {
  if (!state.screen) return;
  state.screen = null;
  state.mesh?.stopScreen();
  showOwnScreen(null);
  if (tellServer && state.room?.role === "screenshare") state.client?.send("stop_screenshare", {});
  draw();
}

/**
 * The sharer's own view of what it shares (`local-screen`), first in the grid.
 * @param {MediaStream | null} stream
 */
function showOwnScreen(stream) {
  document.querySelector('[data-testid="local-screen"]')?.remove();
  if (!stream) return;
  const tile = document.createElement("div");
  tile.className = "tile screen local-screen";
  tile.dataset.testid = "local-screen";
  const video = document.createElement("video");
  video.autoplay = true;
  video.playsInline = true;
  video.muted = true;
  video.setAttribute("muted", "");
  video.srcObject = stream;
  const label = document.createElement("span");
  label.className = "tile-label";
  label.textContent = "Your screen";
  tile.append(video, label);
  ui.grid.prepend(tile);
  video.play().catch(() => {});
}

function sendMedia() {
  state.mesh?.setAudio(state.audio);
  state.mesh?.setVideo(state.video);
  state.client?.send("set_media_state", { audio: state.audio, video: state.video });
  draw();
}

function sendChat() {
  const text = ui.chatInput.value.trim();
  if (!text || !state.client) return;
  if (state.client.send("add_chat", { chatContent: text, chatId: crypto.randomUUID() })) ui.chatInput.value = "";
}

/** @param {SubmitEvent} event */
async function onJoinSubmit(event) {
  event.preventDefault();
  const error = byId("join-error");
  const roomId = input("room-id").value.trim();
  const name = input("display-name").value.trim();
  const tokenText = input("token").value.trim();
  error.textContent = "";
  if (!ROOM_ID.test(roomId)) return void (error.textContent = "The room needs 1-64 letters, digits, - or _.");
  if (dev && !name) return void (error.textContent = "Please enter your name.");
  if (!dev && !tokenText) return void (error.textContent = "Please paste an access token.");
  try {
    const token = dev ? await devToken(name) : tokenText;
    await join({ roomId, name, token });
  } catch (failure) {
    error.textContent = failure instanceof Error ? failure.message : String(failure);
  }
}

function leave() {
  const client = state.client;
  if (client) client.close(); // 1000: left at once; onClose shows the end screen
}

function init() {
  byId("name-field").hidden = !dev;
  byId("token-field").hidden = dev;
  const params = new URLSearchParams(location.hash.slice(1));
  const room = params.get("room");
  if (room) input("room-id").value = room;
  const token = params.get("token");
  if (token) {
    input("token").value = token;
    history.replaceState(null, "", room ? `#room=${encodeURIComponent(room)}` : location.pathname);
  }
  byId("join-form").addEventListener("submit", (event) => void onJoinSubmit(/** @type {SubmitEvent} */ (event)));
  byId("chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sendChat();
  });
  ui.loadOlder.addEventListener("click", () => {
    const oldest = state.chats[0];
    if (!oldest || !state.client) return;
    if (state.client.send("get_recent_chats", { limit: PAGE_SIZE, before: oldest.chatId })) {
      state.pendingPages.push("older");
    }
  });
  ui.hand.addEventListener("click", () => {
    const raised = state.hands.some((hand) => hand.clientId === state.room?.clientId);
    state.client?.send(raised ? "lower_hand" : "raise_hand", {});
  });
  ui.mute.addEventListener("click", () => {
    state.audio = !state.audio;
    sendMedia();
  });
  ui.camera.addEventListener("click", () => {
    state.video = !state.video;
    sendMedia();
  });
  ui.share.addEventListener("click", () => void onShareClick());
  ui.lock.addEventListener("click", () => state.client?.send(state.room?.locked ? "unlock_room" : "lock_room", {}));
  ui.end.addEventListener("click", () => state.client?.send("end_room", {}));
  hook("leave").addEventListener("click", leave);
  byId("leave-waiting").addEventListener("click", leave);
  byId("rejoin").addEventListener("click", () => {
    setStatus("not joined", "idle");
    delete ui.status.dataset.refusal;
    notify("");
    show("join");
  });
  // A reload of a tab that was in a meeting rejoins it as the same user (SPEC §2 grace);
  // a login page that redirects here with #token=...&room=... joins at once.
  const saved = sessionStorage.getItem(SESSION_KEY);
  if (!saved && !dev && token && room && ROOM_ID.test(room)) {
    void join({ roomId: room, name: "", token }).catch((failure) => notify(String(failure)));
  } else if (saved) {
    /** @type {Session} */
    const session = JSON.parse(saved);
    input("room-id").value = session.roomId;
    input("display-name").value = session.name;
    void join(session).catch((failure) => notify(String(failure)));
  }
  draw();
}

init();
