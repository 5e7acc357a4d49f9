// @ts-check
/**
 * callroom-client.js — a typed client of the callroom WebSocket protocol (SPEC §1, §3).
 *
 * No framework, no dependency: import it in a browser (`/callroom-client.js` on any
 * callroom server) or in node (inject `WebSocket`, timers and `fetch`). Types are JSDoc,
 * checked by `tsc --checkJs --strict` (see jsconfig.json at the repository root).
 *
 * What it does that a naive client gets wrong (SPEC §3.4, docs/protocol.md "Close codes"):
 * - reconnects with exponential backoff and jitter after a drop, and never after
 *   4003 (denied), 4004 (removed), 4005 (room ended), 4009 (replaced by another tab),
 *   nor after 4001 (token expired) unless `getToken` yields a fresh token;
 * - sends `refresh_token` before the token expires (its `exp` read from the JWT);
 * - lets the caller see `error` events, and gives every close code a human reason.
 */

/** @typedef {{clientId: string, displayName: string}} ClientInfo */
/** @typedef {ClientInfo & {chatId: string, timestamp: number, chatContent: string}} ChatInfo */
/** @typedef {"waiting" | "participant" | "screenshare" | "host"} Role */
/** @typedef {{audio: boolean, video: boolean}} MediaState */
/**
 * @typedef {{
 *   clientId: string, displayName: string, role: Role, roomId: string,
 *   hosts: ClientInfo[], participants: ClientInfo[], handsRaised: ClientInfo[],
 *   waitingUsers: ClientInfo[], sharingScreen: ClientInfo[], locked: boolean,
 *   media: Record<string, MediaState>
 * }} RoomState
 */
/** @typedef {{limit?: number, before?: string | null}} RecentChatsRequest */
/** @typedef {{messages: ChatInfo[], total: number, hasMore: boolean}} RecentChats */
/** @typedef {{targetClientId: string, sdp: string, type: "offer"}} OfferPayload */
/** @typedef {{targetClientId: string, sdp: string, type: "answer"}} AnswerPayload */
/**
 * @typedef {{targetClientId: string, candidate: string, sdpMid?: string | null,
 *   sdpMLineIndex?: number | null}} CandidatePayload
 */
/** @typedef {{targetClientId: string, reason?: string | null}} RenegotiatePayload */
/** @typedef {{clientId: string}} Target */

/**
 * Events a client sends, with their payloads (SPEC §3.1; aliases included).
 * @typedef {{
 *   ping: {},
 *   add_chat: {chatContent: string, chatId?: string},
 *   delete_chat: {chatId: string},
 *   get_recent_chats: RecentChatsRequest,
 *   recents_chat: RecentChatsRequest,
 *   raise_hand: {},
 *   lower_hand: {clientId?: string | null},
 *   request_waiting: {},
 *   waiting_request: {},
 *   accept_waiting: Target,
 *   deny_waiting: Target,
 *   request_screenshare: {},
 *   accept_screenshare: Target,
 *   deny_screenshare: Target,
 *   stop_screenshare: {clientId?: string | null},
 *   kick_participant: {clientId: string, ban?: boolean},
 *   unban_participant: Target,
 *   promote_host: Target,
 *   demote_host: Target,
 *   lock_room: {},
 *   unlock_room: {},
 *   end_room: {},
 *   set_media_state: {audio?: boolean, video?: boolean},
 *   refresh_token: {token: string},
 *   offer: OfferPayload,
 *   answer: AnswerPayload,
 *   candidate: CandidatePayload,
 *   renegotiate: RenegotiatePayload,
 * }} ClientEvents
 */

/**
 * Events the server sends, with their payloads (SPEC §3.1, §3.2).
 * @typedef {{
 *   room_state: RoomState,
 *   pong: {},
 *   connect: ClientInfo,
 *   disconnect: ClientInfo,
 *   error: {code: string, message: string, event: string | null},
 *   add_chat: ChatInfo,
 *   delete_chat: ClientInfo & {chatId: string},
 *   get_recent_chats: RecentChats,
 *   recents_chat: RecentChats,
 *   raise_hand: ClientInfo,
 *   lower_hand: ClientInfo,
 *   waiting_request: ClientInfo,
 *   accept_waiting: ClientInfo,
 *   deny_waiting: ClientInfo,
 *   request_screenshare: ClientInfo,
 *   accept_screenshare: ClientInfo,
 *   deny_screenshare: ClientInfo,
 *   unban_participant: Target,
 *   room_locked: {},
 *   room_unlocked: {},
 *   media_state: ClientInfo & MediaState,
 *   offer: ClientInfo & OfferPayload,
 *   answer: ClientInfo & AnswerPayload,
 *   candidate: ClientInfo & CandidatePayload,
 *   renegotiate: ClientInfo & RenegotiatePayload,
 * }} ServerEvents
 */

/**
 * A connection ended. `final`: no reconnect follows (the reason says why).
 * `refusal`: the server's answer when the upgrade itself was refused (SPEC §1 table).
 * @typedef {{code: number, reason: string, final: boolean, delayMs: number | null,
 *   refusal: {status: number, error: string, message: string} | null}} CloseInfo
 */
/**
 * Events of the client itself (not on the wire).
 * @typedef {{open: {attempt: number}, close: CloseInfo}} LifecycleEvents
 */
/** @typedef {ServerEvents & LifecycleEvents} ListenerEvents */

/** @typedef {"idle" | "connecting" | "open" | "reconnecting" | "closed"} ClientState */

/**
 * The part of a WebSocket the client uses (the browser's, or `ws` in node).
 * @typedef {{
 *   readyState: number,
 *   send(data: string): void,
 *   close(code?: number, reason?: string): void,
 *   onopen: ((ev: any) => void) | null,
 *   onmessage: ((ev: {data: any}) => void) | null,
 *   onclose: ((ev: {code: number, reason: string}) => void) | null,
 *   onerror: ((ev: any) => void) | null,
 * }} SocketLike
 */
/** @typedef {new (url: string) => SocketLike} SocketConstructor */
/**
 * @typedef {{setTimeout(fn: () => void, ms: number): any, clearTimeout(id: any): void}} Timers
 */
/** @typedef {{initialMs: number, maxMs: number, factor: number, maxFailures: number}} Backoff */
/**
 * @typedef {(url: string) => Promise<{status: number, json(): Promise<any>}>} FetchLike
 */
/**
 * @typedef {{
 *   server?: string,
 *   kind?: "zoom" | "screenshare" | "chat",
 *   roomId: string,
 *   token?: string | null,
 *   getToken?: (() => Promise<string | null> | string | null) | null,
 *   WebSocket?: SocketConstructor,
 *   timers?: Timers,
 *   fetch?: FetchLike | null,
 *   random?: () => number,
 *   now?: () => number,
 *   backoff?: Partial<Backoff>,
 *   refreshMarginMs?: number,
 * }} ClientOptions
 */

/** Human reasons for every close code of SPEC §3.4 (and the browser's 1006). */
export const CLOSE_REASONS = Object.freeze({
  1000: "left the meeting",
  1001: "the server is restarting",
  1002: "the client broke the WebSocket protocol",
  1003: "the client sent a binary frame",
  1006: "the connection was lost",
  1008: "disconnected for flooding the server",
  1009: "a message was too large",
  1013: "the connection could not keep up with the room",
  4001: "your session expired",
  4003: "the host denied your request to join",
  4004: "you were removed from the meeting by a host",
  4005: "the meeting was ended by the host",
  4009: "you joined this meeting from another tab or window",
});

/** Close codes after which reconnecting would be wrong whatever happens (SPEC §3.4). */
export const FINAL_CLOSE_CODES = Object.freeze([
  1000, 1002, 1003, 1008, 1009, 4003, 4004, 4005, 4009,
]);

/** @type {Backoff} */
export const DEFAULT_BACKOFF = Object.freeze({
  initialMs: 500,
  maxMs: 30_000,
  factor: 2,
  maxFailures: 8,
});

/**
 * The reason shown for a close code.
 * @param {number} code
 * @returns {string}
 */
export function closeReason(code) {
  const known = /** @type {Record<number, string>} */ (CLOSE_REASONS)[code];
  return known ?? `the connection closed (code ${code})`;
}

/**
 * Whether a close may be followed by a reconnect (SPEC §3.4, docs/protocol.md).
 * 4001 only with a fresh token; other 4xxx codes are the application's verdicts.
 * @param {number} code
 * @param {{freshToken: boolean}} context
 * @returns {boolean}
 */
export function shouldReconnect(code, context) {
  if (FINAL_CLOSE_CODES.includes(code)) return false;
  if (code === 4001) return context.freshToken;
  return code < 4000;
}

/**
 * Delay before reconnect attempt number `failures` (0 = the first after a drop):
 * exponential, capped, with "equal jitter" (half fixed, half random) so a room whose
 * node restarted does not come back in one burst. After 1001 (a node going away on
 * purpose) the first attempt is at once, spread over `initialMs` only.
 * @param {number} failures
 * @param {number} code
 * @param {Backoff} backoff
 * @param {() => number} random in [0, 1)
 * @returns {number}
 */
export function reconnectDelay(failures, code, backoff, random) {
  if (code === 1001 && failures === 0) return Math.floor(random() * backoff.initialMs);
  const cap = Math.min(backoff.maxMs, backoff.initialMs * backoff.factor ** failures);
  return Math.floor(cap / 2 + random() * (cap / 2));
}

/**
 * The `exp` claim of a JWT in ms since the epoch, or null (not a JWT, no `exp`).
 * The signature is not checked: the server does that; this is only for scheduling.
 * @param {string} token
 * @returns {number | null}
 */
export function tokenExpiry(token) {
  const part = token.split(".")[1];
  if (!part) return null;
  try {
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "===".slice((base64.length + 3) % 4);
    const claims = JSON.parse(atob(padded));
    return typeof claims.exp === "number" ? claims.exp * 1000 : null;
  } catch {
    return null;
  }
}

/**
 * The WebSocket URL of a room: `server` is the http(s) or ws(s) base URL.
 * @param {string} server
 * @param {string} kind
 * @param {string} roomId
 * @param {string | null} token
 */
export function roomUrl(server, kind, roomId, token) {
  const base = server.replace(/^http/, "ws").replace(/\/+$/, "");
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  return `${base}/ws/${encodeURIComponent(kind)}/${encodeURIComponent(roomId)}${query}`;
}

const OPEN = 1;

/** One member's connection to one room, reconnecting as SPEC §3.4 allows. */
export class CallroomClient {
  /** @param {ClientOptions} options */
  constructor(options) {
    const globals = /** @type {any} */ (globalThis);
    this.server = options.server ?? (globals.location ? globals.location.origin : "");
    this.kind = options.kind ?? "zoom";
    this.roomId = options.roomId;
    /** @type {string | null} */
    this.token = options.token ?? null;
    this.getToken = options.getToken ?? null;
    /** @type {SocketConstructor} */
    this.WebSocket = options.WebSocket ?? globals.WebSocket;
    /** @type {Timers} */
    this.timers = options.timers ?? {
      setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
      clearTimeout: (id) => globalThis.clearTimeout(id),
    };
    /** @type {FetchLike | null} */
    this.fetch =
      options.fetch === undefined ? (globals.fetch ? globals.fetch.bind(globals) : null) : options.fetch;
    this.random = options.random ?? Math.random;
    this.now = options.now ?? Date.now;
    /** @type {Backoff} */
    this.backoff = { ...DEFAULT_BACKOFF, ...(options.backoff ?? {}) };
    this.refreshMarginMs = options.refreshMarginMs ?? 60_000;
    /** @type {ClientState} */
    this.state = "idle";
    /** @type {SocketLike | null} */
    this.socket = null;
    /** Failed attempts in a row (reset by a `room_state`, i.e. a successful join). */
    this.failures = 0;
    this.attempt = 0;
    /** @type {Map<string, Set<(payload: any) => void>>} */
    this.listeners = new Map();
    /** @type {any} */
    this.retryTimer = null;
    /** @type {any} */
    this.refreshTimer = null;
  }

  /**
   * Listen to a server event or a lifecycle event; returns the function that stops it.
   * @template {keyof ListenerEvents} K
   * @param {K} event
   * @param {(payload: ListenerEvents[K]) => void} handler
   * @returns {() => void}
   */
  on(event, handler) {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(handler);
    return () => set.delete(handler);
  }

  /**
   * Send one event; false when the socket is not open (nothing is queued: a frame sent
   * into a dead socket would be acted on by nobody, and state is resent on join).
   * @template {keyof ClientEvents} K
   * @param {K} event
   * @param {ClientEvents[K]} payload
   * @returns {boolean}
   */
  send(event, payload) {
    if (!this.socket || this.socket.readyState !== OPEN) return false;
    this.socket.send(JSON.stringify({ event, payload }));
    return true;
  }

  /** Open the connection (resolving a token first when `getToken` is given). */
  async connect() {
    if (this.state === "connecting" || this.state === "open") return;
    this.state = "connecting";
    if (this.getToken && (!this.token || this.expiresSoon(this.token))) {
      try {
        const token = await this.getToken();
        if (token) this.token = token;
      } catch {
        // keep the token held; a refusal says 401 and the close handling asks again
      }
    }
    if (this.state !== "connecting") return; // closed meanwhile
    this.attempt += 1;
    let opened = false;
    const socket = new this.WebSocket(roomUrl(this.server, this.kind, this.roomId, this.token));
    this.socket = socket;
    socket.onopen = () => {
      opened = true;
      this.state = "open";
      this.scheduleRefresh();
      this.emit("open", { attempt: this.attempt });
    };
    socket.onmessage = (message) => this.receive(message.data);
    socket.onerror = () => {}; // the close event follows and carries what can be known
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      void this.closed(event.code, opened);
    };
  }

  /** Leave the room: close with 1000 (SPEC §2: left at once), never reconnect. */
  close() {
    this.stopTimers();
    const socket = this.socket;
    this.socket = null;
    const wasClosed = this.state === "closed";
    this.state = "closed";
    if (socket) socket.close(1000, "left");
    if (!wasClosed) {
      this.emit("close", { code: 1000, reason: closeReason(1000), final: true, delayMs: null, refusal: null });
    }
  }

  /** @param {string} token */
  expiresSoon(token) {
    const exp = tokenExpiry(token);
    return exp !== null && exp - this.now() < this.refreshMarginMs;
  }

  /** @param {unknown} data */
  receive(data) {
    if (typeof data !== "string") return;
    /** @type {{event?: unknown, payload?: unknown}} */
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (typeof frame.event !== "string") return;
    if (frame.event === "room_state") this.failures = 0;
    this.emit(/** @type {keyof ListenerEvents} */ (frame.event), frame.payload ?? {});
  }

  /**
   * @param {keyof ListenerEvents} event
   * @param {unknown} payload
   */
  emit(event, payload) {
    for (const handler of [...(this.listeners.get(event) ?? [])]) handler(payload);
  }

  /**
   * @param {number} code
   * @param {boolean} opened
   */
  async closed(code, opened) {
    this.stopTimers();
    if (this.state === "closed") return;
    /** @type {CloseInfo["refusal"]} */
    let refusal = null;
    let reconnect = false;
    if (opened) {
      const freshToken = code === 4001 && (await this.renewToken());
      reconnect = shouldReconnect(code, { freshToken });
    } else {
      // The upgrade itself failed; browsers hide why (a close 1006). A plain GET of the
      // same URL gets the server's JSON refusal (SPEC §1), so the user reads "the room is
      // locked". Busy (429, 503) or unreachable: retry with backoff; an expired token:
      // retry only with a fresh one; any other refusal is final.
      this.failures += 1;
      refusal = await this.probeRefusal();
      if (refusal === null || refusal.status === 429 || refusal.status === 503) {
        reconnect = true;
      } else if (refusal.status === 401) {
        reconnect = await this.renewToken();
      }
      if (this.failures > this.backoff.maxFailures) reconnect = false;
    }
    if (this.isClosed()) return; // close() was called while we waited
    const reason = refusal ? refusal.message : closeReason(code);
    if (!reconnect) {
      this.state = "closed";
      this.emit("close", { code, reason, final: true, delayMs: null, refusal });
      return;
    }
    const delayMs = reconnectDelay(opened ? 0 : this.failures - 1, code, this.backoff, this.random);
    this.state = "reconnecting";
    this.emit("close", { code, reason, final: false, delayMs, refusal });
    this.retryTimer = this.timers.setTimeout(() => {
      this.retryTimer = null;
      if (this.state !== "reconnecting") return;
      this.state = "idle";
      void this.connect();
    }, delayMs);
  }

  /** Read through a method: TypeScript would keep a narrowing of `state` across awaits. */
  isClosed() {
    return this.state === "closed";
  }

  /** Ask `getToken` for a token newer than the one held; true when one came. */
  async renewToken() {
    if (!this.getToken) return false;
    let token = null;
    try {
      token = await this.getToken();
    } catch {
      return false;
    }
    if (!token || token === this.token) return false;
    const exp = tokenExpiry(token);
    if (exp !== null && exp <= this.now()) return false;
    this.token = token;
    return true;
  }

  /** @returns {Promise<CloseInfo["refusal"]>} */
  async probeRefusal() {
    if (!this.fetch) return null;
    const url = roomUrl(this.server, this.kind, this.roomId, this.token).replace(/^ws/, "http");
    try {
      const response = await this.fetch(url);
      if (response.status < 400) return null;
      const body = await response.json();
      // 400 "expected a WebSocket upgrade": every check passed, the failure was transient.
      if (response.status === 400 && /upgrade/i.test(String(body.message))) return null;
      return { status: response.status, error: String(body.error), message: String(body.message) };
    } catch {
      return null;
    }
  }

  /** Send `refresh_token` `refreshMarginMs` before the token's `exp` (SPEC §5). */
  scheduleRefresh() {
    if (this.refreshTimer !== null) this.timers.clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    const exp = this.token ? tokenExpiry(this.token) : null;
    if (exp === null || !this.getToken) return;
    const delay = Math.max(0, exp - this.refreshMarginMs - this.now());
    this.refreshTimer = this.timers.setTimeout(() => {
      this.refreshTimer = null;
      void this.refreshNow(exp);
    }, delay);
  }

  /** @param {number} oldExp */
  async refreshNow(oldExp) {
    if (this.state !== "open") return;
    const renewed = await this.renewToken();
    const exp = this.token ? tokenExpiry(this.token) : null;
    if (renewed && this.token && exp !== null && exp > oldExp) {
      this.send("refresh_token", { token: this.token });
      this.scheduleRefresh();
    } else if (oldExp > this.now()) {
      // No newer token yet: ask again shortly, until the old one runs out.
      this.refreshTimer = this.timers.setTimeout(() => {
        this.refreshTimer = null;
        void this.refreshNow(oldExp);
      }, Math.min(15_000, Math.max(1000, (oldExp - this.now()) / 2)));
    }
  }

  stopTimers() {
    if (this.retryTimer !== null) this.timers.clearTimeout(this.retryTimer);
    if (this.refreshTimer !== null) this.timers.clearTimeout(this.refreshTimer);
    this.retryTimer = null;
    this.refreshTimer = null;
  }
}
