"""A model of one room, written from the SPEC alone, for the live model test
(tests/integration/test_model_live.py): who is in it with which role, the memory of
former members, bans, the lock, the hand queue and the chat messages.

Each command method changes the model as SPEC §2 and §3.1 say and returns what the
step must produce (``Expected``): per member, the frames other than ``room_state`` in
order (as ``summary`` tuples), which connections the server closes with which code, and
the views before the step (a member whose view changed must get a ``room_state`` equal
to its new view, SPEC §3.2). The model never looks at the server's code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Summary = tuple[Any, ...]
View = dict[str, Any]

ADMITTED = ("participant", "screenshare", "host")
# SPEC §3.2: all a waiting member may receive.
WAITING_MAY_RECEIVE = frozenset({"room_state", "accept_waiting", "deny_waiting", "pong", "error"})
SIGNALS = {
    "offer": {"sdp": "v=0", "type": "offer"},
    "answer": {"sdp": "v=0", "type": "answer"},
    "candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"},
    "renegotiate": {"reason": "model"},
}


def name(cid: str) -> str:
    """The display name of a user's token."""
    return cid.title()


def summary(frame: dict[str, Any]) -> Summary:
    """What the model checks of a frame: its event and the fields that say about whom."""
    event, payload = frame["event"], frame["payload"]
    if event == "error":
        return ("error", payload["code"], payload["event"])
    if event == "add_chat":
        return (event, payload["clientId"], payload["chatId"], payload["chatContent"])
    if event == "delete_chat":
        return (event, payload["clientId"], payload["chatId"])
    if event in ("room_locked", "room_unlocked"):
        return (event,)
    if event == "get_recent_chats":
        chat_ids = tuple(message["chatId"] for message in payload["messages"])
        return (event, chat_ids, payload["total"], payload["hasMore"])
    return (event, payload.get("clientId"))


def normal_view(state: dict[str, Any]) -> View:
    """A ``room_state`` payload with its member lists as sets (SPEC §3.2 fixes no order
    but the hand queue's) and the ClientInfo pairs checked."""
    view: View = {key: state[key] for key in ("clientId", "displayName", "role", "locked")}
    for key in ("hosts", "participants", "waitingUsers", "sharingScreen"):
        view[key] = frozenset((i["clientId"], i["displayName"]) for i in state[key])
    view["handsRaised"] = [(i["clientId"], i["displayName"]) for i in state["handsRaised"]]
    view["media"] = state["media"]
    return view


def membership(view: View) -> View:
    """A view less what events tell instead of ``room_state`` (SPEC §3.2: it is sent on
    changes of membership or role): ``locked`` (``room_locked``) and the hand queue
    (``raise_hand`` / ``lower_hand``)."""
    return {key: value for key, value in view.items() if key not in ("locked", "handsRaised")}


def told(view: View, frame: dict[str, Any]) -> None:
    """What an event (not a ``room_state``) tells a member of the room: into its view."""
    event, payload = frame["event"], frame["payload"]
    if event in ("room_locked", "room_unlocked"):
        view["locked"] = event == "room_locked"
    hand = (payload.get("clientId"), payload.get("displayName"))
    if event == "raise_hand" and hand not in view["handsRaised"]:
        view["handsRaised"] = [*view["handsRaised"], hand]
    if event == "lower_hand":
        view["handsRaised"] = [h for h in view["handsRaised"] if h != hand]


@dataclass
class Expected:
    before: dict[str, View]  # every member's view before the step
    events: dict[str, list[Summary]] = field(default_factory=dict)
    closes: dict[str, int] = field(default_factory=dict)  # member → close code

    def send(self, recipients: list[str], frame: Summary) -> None:
        for cid in recipients:
            self.events.setdefault(cid, []).append(frame)

    def error(self, actor: str, code: str, event: str) -> Expected:
        self.send([actor], ("error", code, event))
        return self


@dataclass
class RoomModel:
    room_id: str
    roles: dict[str, str] = field(default_factory=dict)  # members, in join order
    stay: dict[str, int] = field(default_factory=dict)  # admitted: when (SPEC §2 handoff)
    remembered: dict[str, str] = field(default_factory=dict)
    banned: set[str] = field(default_factory=set)
    locked: bool = False
    hands: list[str] = field(default_factory=list)
    chats: dict[str, str] = field(default_factory=dict)  # chatId → author
    deleted: list[str] = field(default_factory=list)
    history: list[str] = field(default_factory=list)  # the store's, kept past a close
    away: set[str] = field(default_factory=set)  # admitted, dropped, in their grace
    seq: int = 0

    # -- who -------------------------------------------------------------------------

    def having(self, *roles: str) -> list[str]:
        return [cid for cid, role in self.roles.items() if role in roles]

    def admitted(self) -> list[str]:
        return self.having(*ADMITTED)

    def here(self, *roles: str) -> list[str]:
        """Connected members (of ``roles``, or any): those who can act."""
        return [c for c in self.having(*(roles or ("waiting", *ADMITTED))) if c not in self.away]

    def hosts(self) -> list[str]:
        return self.having("host")

    def view(self, cid: str) -> View:
        """``cid``'s room_state as SPEC §3.2 says, in ``normal_view``'s form."""
        role = self.roles[cid]

        def infos(*roles: str) -> frozenset[tuple[str, str]]:
            return frozenset((c, name(c)) for c in self.having(*roles))

        waiting = role == "waiting"
        view: View = {"clientId": cid, "displayName": name(cid), "role": role}
        view["locked"] = self.locked
        view["hosts"] = frozenset() if waiting else infos("host")
        view["participants"] = frozenset() if waiting else infos("participant")
        view["sharingScreen"] = frozenset() if waiting else infos("screenshare")
        view["waitingUsers"] = (
            frozenset({(cid, name(cid))})
            if waiting
            else infos("waiting")
            if role == "host"
            else frozenset()
        )
        view["handsRaised"] = [] if waiting else [(c, name(c)) for c in self.hands]
        view["media"] = {}
        return view

    def views(self) -> dict[str, View]:
        return {cid: self.view(cid) for cid in self.roles}

    def expect(self) -> Expected:
        return Expected(self.views())

    # -- joining and leaving (SPEC §1, §2) ---------------------------------------------

    def refusal(self, cid: str, token_host: bool) -> str | None:
        """The 403 code of a join, or None."""
        if not self.roles:
            return None  # an empty room is a new room: no memory, no ban, no lock
        if cid in self.banned:
            return "banned"
        if self.locked and not token_host and cid not in self.remembered:
            return "room_locked"
        return None

    def join(self, cid: str, token_host: bool) -> Expected:
        exp = self.expect()
        if not self.roles or token_host or self.remembered.get(cid) == "host":
            role = "host"
        elif cid in self.remembered:
            role = "participant" if self.admitted() else "host"
        else:
            role = "waiting"
        self.roles[cid] = "waiting"
        if role == "waiting":
            exp.send(self.hosts(), ("waiting_request", cid))
        else:
            others = self.admitted()
            self._admit(cid, role)
            exp.send(others, ("connect", cid))
        return exp

    def _admit(self, cid: str, role: str) -> None:
        self.seq += 1
        self.stay[cid] = self.seq
        self._set_role(cid, role)

    def _set_role(self, cid: str, role: str) -> None:
        self.roles[cid] = role
        self.remembered[cid] = "host" if role == "host" else "participant"

    def leave(self, cid: str) -> Expected:
        """A leave (1000), or any end of a waiting member's connection."""
        exp = self.expect()
        self._remove(cid, exp, forget=False)
        return exp

    def drop(self, cid: str) -> Expected:
        """An admitted member's connection ends without a leave: its place is kept, the
        others see nothing (SPEC §2)."""
        exp = self.expect()
        self.away.add(cid)
        return exp

    def back(self, cid: str) -> Expected:
        """A dropped member connects again within its grace: same role, nothing to others."""
        exp = self.expect()
        self.away.discard(cid)
        return exp

    def _remove(self, cid: str, exp: Expected, *, forget: bool) -> None:
        was = self.roles.pop(cid)
        self.stay.pop(cid, None)
        self.away.discard(cid)
        if cid in self.hands:
            self.hands.remove(cid)
        if forget:
            self.remembered.pop(cid, None)
        if was in ADMITTED:
            exp.send(self.admitted(), ("disconnect", cid))
        admitted = self.admitted()
        if admitted and not self.hosts():
            # SPEC §2 handoff: the one admitted earliest in its current stay; one in its
            # reconnect grace only when no connected one is left (docs/protocol.md).
            heir = min(admitted, key=lambda c: (c in self.away, self.stay[c]))
            self._set_role(heir, "host")
        if not self.roles:  # the room is closed: it forgets everything (SPEC §2)
            self.remembered.clear()
            self.banned.clear()
            self.locked = False
            self.chats.clear()
            self.deleted.clear()

    # -- the lobby -------------------------------------------------------------------

    def knock(self, cid: str) -> Expected:
        exp = self.expect()
        return self._deny_if(exp, cid, "request_waiting", "waiting") or self._told(
            exp, self.hosts(), ("waiting_request", cid)
        )

    def accept(self, host: str, target: str) -> Expected:
        exp = self.expect()
        if self.roles.get(target) != "waiting":
            return exp.error(host, "not_found", "accept_waiting")
        others = self.admitted()
        self._admit(target, "participant")
        exp.send([*others, target], ("accept_waiting", target))
        exp.send(others, ("connect", target))
        return exp

    def deny(self, host: str, target: str) -> Expected:
        exp = self.expect()
        if self.roles.get(target) != "waiting":
            return exp.error(host, "not_found", "deny_waiting")
        exp.send([target], ("deny_waiting", target))
        exp.closes[target] = 4003
        del self.roles[target]
        self.remembered.pop(target, None)
        exp.send(self.hosts(), ("deny_waiting", target))
        return exp

    # -- chat, hands, screen share, signaling -----------------------------------------

    def chat(self, cid: str, chat_id: str, content: str) -> Expected:
        exp = self.expect()
        if self.roles[cid] not in ADMITTED:
            return exp.error(cid, "forbidden", "add_chat")
        frame = ("add_chat", cid, chat_id, content)
        if chat_id in self.chats:  # a retry: the sender only (SPEC §3.1 safe retry)
            exp.send([cid], frame)
            return exp
        self.chats[chat_id] = cid
        self.history.append(chat_id)
        exp.send(self.admitted(), frame)
        return exp

    def recent(self, cid: str) -> Expected:
        """``get_recent_chats`` without a limit: the newest 50, oldest first (SPEC §3.1)."""
        exp = self.expect()
        if self.roles[cid] not in ADMITTED:
            return exp.error(cid, "forbidden", "get_recent_chats")
        page = (tuple(self.history[-50:]), len(self.history), len(self.history) > 50)
        exp.send([cid], ("get_recent_chats", *page))
        return exp

    def delete(self, cid: str, chat_id: str) -> Expected:
        exp = self.expect()
        if self.roles[cid] not in ADMITTED:
            return exp.error(cid, "forbidden", "delete_chat")
        author = self.chats.get(chat_id)
        if author is None:
            return exp.error(cid, "not_found", "delete_chat")
        if author != cid and self.roles[cid] != "host":
            return exp.error(cid, "forbidden", "delete_chat")
        del self.chats[chat_id]
        self.history.remove(chat_id)  # from the store too, for good
        self.deleted.append(chat_id)
        exp.send(self.admitted(), ("delete_chat", cid, chat_id))
        return exp

    def raise_hand(self, cid: str) -> Expected:
        exp = self.expect()
        if self.roles[cid] not in ADMITTED:
            return exp.error(cid, "forbidden", "raise_hand")
        if cid not in self.hands:
            self.hands.append(cid)
            exp.send(self.admitted(), ("raise_hand", cid))
        return exp

    def lower_hand(self, cid: str, target: str) -> Expected:
        exp = self.expect()
        if self.roles[cid] not in ADMITTED:
            return exp.error(cid, "forbidden", "lower_hand")
        if target != cid and self.roles[cid] != "host":
            return exp.error(cid, "forbidden", "lower_hand")
        if target in self.hands:
            self.hands.remove(target)
            exp.send(self.admitted(), ("lower_hand", target))
        return exp

    def request_share(self, cid: str) -> Expected:
        exp = self.expect()
        return self._deny_if(exp, cid, "request_screenshare", "participant") or self._told(
            exp, self.hosts(), ("request_screenshare", cid)
        )

    def accept_share(self, host: str, target: str) -> Expected:
        exp = self.expect()
        if self.roles.get(target) != "participant":
            return exp.error(host, "not_found", "accept_screenshare")
        if self.having("screenshare"):  # MAX_SCREENSHARES = 1 (the default)
            return exp.error(host, "limit_reached", "accept_screenshare")
        self._set_role(target, "screenshare")
        exp.send([target, *self.hosts()], ("accept_screenshare", target))
        return exp

    def deny_share(self, host: str, target: str) -> Expected:
        exp = self.expect()
        if self.roles.get(target) != "participant":
            return exp.error(host, "not_found", "deny_screenshare")
        exp.send([target, *self.hosts()], ("deny_screenshare", target))
        return exp

    def stop_share(self, cid: str, target: str) -> Expected:
        exp = self.expect()
        role = self.roles[cid]
        if role not in ADMITTED or (role != "host" and target != cid):
            return exp.error(cid, "forbidden", "stop_screenshare")
        if target == cid and role not in ("host", "screenshare"):
            return exp.error(cid, "forbidden", "stop_screenshare")
        if self.roles.get(target) != "screenshare":
            return exp.error(cid, "not_found", "stop_screenshare")
        self._set_role(target, "participant")
        return exp

    def signal(self, cid: str, event: str, target: str) -> Expected:
        exp = self.expect()
        if self.roles[cid] not in ADMITTED:
            return exp.error(cid, "forbidden", event)
        if target == cid or self.roles.get(target) not in ADMITTED:
            return exp.error(cid, "target_not_found", event)
        exp.send([target], (event, cid))
        return exp

    # -- host controls ---------------------------------------------------------------

    def kick(self, host: str, target: str, ban: bool) -> Expected:
        exp = self.expect()
        if self.roles[host] != "host":
            return exp.error(host, "forbidden", "kick_participant")
        if target == host:
            return exp.error(host, "invalid_payload", "kick_participant")
        if target not in self.roles:
            return exp.error(host, "not_found", "kick_participant")
        if target not in self.away:  # a member in its grace has no connection to close
            exp.closes[target] = 4004
        if ban:
            self.banned.add(target)
        self._remove(target, exp, forget=True)
        return exp

    def unban(self, host: str, target: str) -> Expected:
        exp = self.expect()
        if target not in self.banned:
            return exp.error(host, "not_found", "unban_participant")
        self.banned.discard(target)
        exp.send([host], ("unban_participant", target))
        return exp

    def promote(self, host: str, target: str) -> Expected:
        exp = self.expect()
        if self.roles[host] != "host":
            return exp.error(host, "forbidden", "promote_host")
        if self.roles.get(target) not in ("participant", "screenshare"):
            return exp.error(host, "not_found", "promote_host")
        self._set_role(target, "host")
        return exp

    def demote(self, host: str, target: str) -> Expected:
        exp = self.expect()
        if target == host:
            return exp.error(host, "invalid_payload", "demote_host")
        if self.roles.get(target) != "host":
            return exp.error(host, "not_found", "demote_host")
        self._set_role(target, "participant")
        return exp

    def lock(self, host: str, locked: bool) -> Expected:
        exp = self.expect()
        event = "lock_room" if locked else "unlock_room"
        if self.roles[host] != "host":
            return exp.error(host, "forbidden", event)
        self.locked = locked
        exp.send(self.admitted(), ("room_locked" if locked else "room_unlocked",))
        return exp

    # -- helpers ---------------------------------------------------------------------

    def _deny_if(self, exp: Expected, cid: str, event: str, role: str) -> Expected | None:
        if self.roles[cid] != role:
            return exp.error(cid, "forbidden", event)
        return None

    @staticmethod
    def _told(exp: Expected, recipients: list[str], frame: Summary) -> Expected:
        exp.send(recipients, frame)
        return exp
