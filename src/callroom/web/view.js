// @ts-check
/**
 * view.js — DOM rendering of the meeting's lists (people, waiting users, hands, screen
 * share requests, chat) with the stable `data-testid` hooks of docs/web-client.md.
 *
 * Lists are reconciled by key: an item whose content did not change keeps its element,
 * so keyboard focus stays where it was while the room changes around it.
 */

/** @typedef {import("./callroom-client.js").ClientInfo} ClientInfo */
/** @typedef {import("./callroom-client.js").ChatInfo} ChatInfo */
/** @typedef {import("./callroom-client.js").RoomState} RoomState */
/** @typedef {import("./callroom-client.js").Role} Role */
/** @typedef {(testid: string, clientId: string) => void} Act */

/**
 * @param {string} tag
 * @param {Record<string, string>} attrs
 * @param {(Node | string)[]} children
 */
export function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

/**
 * @param {string} testid
 * @param {string} text
 * @param {string} label
 * @param {() => void} onClick
 * @param {string} [extraClass]
 */
export function button(testid, text, label, onClick, extraClass = "") {
  const node = el("button", { type: "button", "data-testid": testid, "aria-label": label, class: `small ${extraClass}`.trim() }, [text]);
  node.addEventListener("click", onClick);
  return node;
}

/**
 * Make `list`'s children be `items`, in order, reusing unchanged elements.
 * @template T
 * @param {HTMLElement} list
 * @param {T[]} items
 * @param {(item: T) => string} key
 * @param {(item: T) => string} signature what the element shows; a change rebuilds it
 * @param {(item: T) => HTMLElement} build
 */
export function renderKeyed(list, items, key, signature, build) {
  /** @type {Map<string, HTMLElement>} */
  const existing = new Map();
  for (const child of /** @type {HTMLElement[]} */ ([...list.children])) {
    existing.set(child.dataset.key ?? "", child);
  }
  /** @type {ChildNode | null} */
  let previous = null;
  for (const item of items) {
    const itemKey = key(item);
    const itemSig = signature(item);
    let node = existing.get(itemKey);
    existing.delete(itemKey);
    if (node && node.dataset.sig !== itemSig) {
      const focused = document.activeElement instanceof HTMLElement && node.contains(document.activeElement)
        ? document.activeElement.dataset.testid
        : undefined;
      const fresh = build(item);
      fresh.dataset.key = itemKey;
      fresh.dataset.sig = itemSig;
      node.replaceWith(fresh);
      node = fresh;
      if (focused) /** @type {HTMLElement | null} */ (fresh.querySelector(`[data-testid="${focused}"]`))?.focus();
    } else if (!node) {
      node = build(item);
      node.dataset.key = itemKey;
      node.dataset.sig = itemSig;
    }
    /** @type {ChildNode | null} */
    const ref = previous ? previous.nextSibling : list.firstChild;
    if (node !== ref) list.insertBefore(node, ref);
    previous = node;
  }
  for (const node of existing.values()) node.remove();
}

/** @typedef {ClientInfo & {role: Role, audio: boolean, video: boolean, hand: boolean}} Person */

/**
 * Every admitted member, hosts first, then sharers, then participants.
 * @param {RoomState} room
 * @param {Set<string>} hands
 * @returns {Person[]}
 */
export function people(room, hands) {
  /** @type {Person[]} */
  const list = [];
  /** @type {[ClientInfo[], Role][]} */
  const groups = [[room.hosts, "host"], [room.sharingScreen, "screenshare"], [room.participants, "participant"]];
  const seen = new Set();
  for (const [members, role] of groups) {
    for (const member of members) {
      if (seen.has(member.clientId)) continue;
      seen.add(member.clientId);
      const media = room.media[member.clientId] ?? { audio: true, video: true };
      list.push({ ...member, role, audio: media.audio, video: media.video, hand: hands.has(member.clientId) });
    }
  }
  return list;
}

/**
 * @param {HTMLElement} list
 * @param {Person[]} persons
 * @param {string} selfId
 * @param {boolean} host whether the viewer acts as host
 * @param {Act} act
 */
export function renderPeople(list, persons, selfId, host, act) {
  renderKeyed(
    list,
    persons,
    (person) => person.clientId,
    (person) => JSON.stringify([person, host]),
    (person) => {
      const self = person.clientId === selfId;
      const name = person.displayName + (self ? " (you)" : "");
      const media = [person.audio ? "" : "mic off", person.video ? "" : "camera off", person.hand ? "hand raised" : ""]
        .filter(Boolean)
        .join(" · ");
      const item = el(
        "li",
        {
          "data-testid": "participant",
          "data-client-id": person.clientId,
          "data-role": person.role,
          "data-audio": String(person.audio),
          "data-video": String(person.video),
          "data-hand": String(person.hand),
        },
        [el("span", { class: "name", title: name }, [name]), el("span", { class: `badge ${person.role}` }, [person.role])],
      );
      if (self) item.dataset.self = "true";
      if (media) item.append(el("span", { class: "media" }, [media]));
      if (host && !self) {
        const who = person.displayName;
        const id = person.clientId;
        const actions = el("div", { class: "actions", role: "group", "aria-label": `Host actions for ${who}` });
        if (person.role === "host") {
          actions.append(button("demote", "Demote", `Demote ${who} to participant`, () => act("demote", id)));
        } else {
          actions.append(button("promote", "Make host", `Make host: ${who}`, () => act("promote", id)));
        }
        if (person.role === "screenshare") {
          actions.append(button("stop-share", "Stop share", `Stop share of ${who}`, () => act("stop-share", id)));
        }
        actions.append(
          button("kick", "Remove", `Remove ${who} from the meeting`, () => act("kick", id), "danger"),
          button("ban", "Ban", `Ban ${who} from this room`, () => act("ban", id), "danger"),
        );
        item.append(actions);
      }
      return item;
    },
  );
}

/**
 * @param {HTMLElement} list
 * @param {ClientInfo[]} waiting
 * @param {Act} act
 */
export function renderWaiting(list, waiting, act) {
  renderKeyed(
    list,
    waiting,
    (user) => user.clientId,
    (user) => user.displayName,
    (user) =>
      el("li", { "data-testid": "waiting-user", "data-client-id": user.clientId }, [
        el("span", { class: "name" }, [user.displayName]),
        button("admit", "Admit", `Admit ${user.displayName}`, () => act("admit", user.clientId), "primary"),
        button("deny", "Deny", `Deny ${user.displayName}`, () => act("deny", user.clientId)),
      ]),
  );
}

/**
 * @param {HTMLElement} list
 * @param {ClientInfo[]} hands in queue order
 * @param {boolean} host
 * @param {Act} act
 */
export function renderHands(list, hands, host, act) {
  renderKeyed(
    list,
    hands,
    (user) => user.clientId,
    (user) => JSON.stringify([user.displayName, host]),
    (user) => {
      const item = el("li", { "data-testid": "hand", "data-client-id": user.clientId }, [
        el("span", { class: "name" }, [user.displayName]),
      ]);
      if (host) item.append(button("lower-hand", "Lower", `Lower ${user.displayName}'s hand`, () => act("lower-hand", user.clientId)));
      return item;
    },
  );
}

/**
 * @param {HTMLElement} list
 * @param {ClientInfo[]} requests
 * @param {Act} act
 */
export function renderShareRequests(list, requests, act) {
  renderKeyed(
    list,
    requests,
    (user) => user.clientId,
    (user) => user.displayName,
    (user) =>
      el("li", { "data-testid": "share-request", "data-client-id": user.clientId }, [
        el("span", { class: "name" }, [user.displayName]),
        button("approve-share", "Approve", `Approve ${user.displayName}'s screen share`, () => act("approve-share", user.clientId), "primary"),
        button("deny-share", "Deny", `Deny ${user.displayName}'s screen share`, () => act("deny-share", user.clientId)),
      ]),
  );
}

/**
 * @param {HTMLElement} list
 * @param {ChatInfo[]} messages oldest first
 * @param {string} selfId
 * @param {boolean} host
 * @param {(chatId: string) => void} remove
 */
export function renderChat(list, messages, selfId, host, remove) {
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  renderKeyed(
    list,
    messages,
    (chat) => chat.chatId,
    (chat) => JSON.stringify([chat.chatContent, host]),
    (chat) => {
      const time = new Date(chat.timestamp).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      const meta = el("div", { class: "meta" }, [
        el("span", { class: "author" }, [chat.displayName]),
        el("time", { datetime: new Date(chat.timestamp).toISOString() }, [time]),
      ]);
      if (host || chat.clientId === selfId) {
        meta.append(button("chat-delete", "Delete", `Delete the message from ${chat.displayName}`, () => remove(chat.chatId), "link"));
      }
      return el("li", { "data-testid": "chat-message", "data-chat-id": chat.chatId, "data-client-id": chat.clientId }, [
        meta,
        el("p", { "data-testid": "chat-text" }, [chat.chatContent]),
      ]);
    },
  );
  if (atBottom) list.scrollTop = list.scrollHeight;
}
