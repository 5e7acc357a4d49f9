"""The node's room runtime: rooms in memory, sessions, timers, and effects delivered.

The hub is the thin adapter around the pure core (``callroom.room.core``): it looks up
the room, runs a transition, then carries out the returned ``Effects`` in order — each
``Send`` encoded once and written to every recipient's socket, each ``Close`` started.
Chat goes through the ``ChatHistory`` port: stored durably before the broadcast
(SPEC §3.1, §8 "nothing acknowledged is lost").

Room state lives in this process (``REDIS_URL`` unset: one node, SPEC §6). Everything
room-related passes through ``precheck``/``enter``/``ended``/``run_now``/
``run_awaiting`` (and ``submit_chat``/``chat_stored`` for chat messages,
``find_room``/``all_rooms``/``end`` for the admin API), the seam where
``callroom.server.cluster_hub.ClusterHub`` runs the same rooms over Redis (SPEC §7).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import structlog

from callroom.chat.base import AddFuture, ChatHistory, ChatIdTaken, ChatMessage
from callroom.errors import CloseCode, ErrorCode, ProtocolError, StoreUnavailable
from callroom.room import core
from callroom.room.commands import (
    AddChat,
    Command,
    DeleteChat,
    GetRecentChats,
    Ping,
    RefreshToken,
)
from callroom.room.encode import (
    PONG_FRAME_BYTES,
    Payload,
    encode_bytes,
    encode_split_bytes,
    encode_tail,
)
from callroom.room.model import Close, Effects, Identity, Room, RoomRules, Send, SendView
from callroom.server.audit import AUDITED, audit_command
from callroom.server.connection import Connection, is_leave
from callroom.server.framing import text_frame

if TYPE_CHECKING:
    from callroom.auth.verifier import TokenVerifier
    from callroom.config import Settings
    from callroom.metrics import Metrics

log = structlog.get_logger(__name__)

PONG_BYTES = text_frame(PONG_FRAME_BYTES)


def event_frame(event: str, payload: Payload) -> bytes:
    """The WebSocket frame of one event, encoded once for all its recipients."""
    return text_frame(encode_bytes(event, payload))


def now_ms() -> int:
    return int(time.time() * 1000)


class Hub:
    """Rooms and sessions of this node."""

    def __init__(
        self,
        settings: Settings,
        history: ChatHistory,
        verifier: TokenVerifier,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.history = history
        self.verifier = verifier
        self.metrics = metrics
        self.rules = RoomRules(
            lobby_enabled=settings.LOBBY_ENABLED,
            max_room_size=settings.MAX_ROOM_SIZE,
            max_screenshares=settings.MAX_SCREENSHARES,
        )
        self.rooms: dict[str, Room] = {}
        self.sessions: dict[str, dict[str, Connection]] = {}
        self.connections: set[Connection] = set()
        self._grace: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._entropy = b""
        self._entropy_at = 0
        self.idle = asyncio.Event()  # set while no socket is open (shutdown waits on it)
        self.idle.set()

    async def start(self) -> None:
        """Start what the hub runs in the background (nothing, on one node)."""

    async def stop(self) -> None:
        """Stop it, once every socket is closed."""

    async def ready(self) -> bool:
        """Whether the parts the rooms need answer (``/readyz`` "bus" otherwise)."""
        return True

    # -- membership ---------------------------------------------------------------

    async def precheck(self, kind: str, room_id: str, identity: Identity) -> None:
        """Refuse before the upgrade (SPEC §1: banned, room_locked, room_full)."""
        core.check_join(self.rooms.get(f"{kind}:{room_id}"), identity, self.rules)

    async def enter(self, conn: Connection) -> None:
        """Add ``conn`` as the member's session; its ``room_state`` is queued first.

        Re-checks the room's rules (HandshakeRefused): the checks before awaited."""
        key = conn.room_key
        room = self.rooms.get(key)
        created = room is None
        if room is None:
            room = core.new_room(conn.kind, conn.room_id, now_ms())
        effects = core.join(room, conn.identity, self.rules)  # re-checks: may refuse
        if created:
            self.rooms[key] = room
            self.metrics.rooms_created.inc()
            self.metrics.rooms_active.set(len(self.rooms))
        sessions = self.sessions.setdefault(key, {})
        old = sessions.get(conn.client_id)
        if old is not None:
            # SPEC §2: one session per (room, clientId); the older one is closed 4009.
            old.detached = True
            old.close(CloseCode.REPLACED, "session replaced")
        sessions[conn.client_id] = conn
        self.connections.add(conn)
        self.idle.clear()
        grace = self._grace.pop((key, conn.client_id), None)
        if grace is not None:
            grace.cancel()
        self.schedule_expiry(conn, conn.identity.expires_at)
        self.apply(key, effects)

    def ended(self, conn: Connection, client_close_code: int | None) -> None:
        """The socket is gone: a leave (client 1000) or a drop (anything else, SPEC §2)."""
        self.connections.discard(conn)
        if not self.connections:
            self.idle.set()
        if conn.expiry_handle is not None:
            conn.expiry_handle.cancel()
        if conn.detached:
            return
        key = conn.room_key
        sessions = self.sessions.get(key)
        if sessions is not None and sessions.get(conn.client_id) is conn:
            del sessions[conn.client_id]
        room = self.rooms.get(key)
        if room is None:
            return
        if is_leave(client_close_code):
            effects = core.leave(room, conn.client_id)
        else:
            effects = core.drop(room, conn.client_id)
            member = room.members.get(conn.client_id)
            if member is not None and not member.connected:
                self._schedule_grace(key, conn.client_id)
        self.apply(key, effects)

    def _schedule_grace(self, key: str, client_id: str) -> None:
        loop = asyncio.get_running_loop()
        self._grace[(key, client_id)] = loop.call_later(
            self.settings.RECONNECT_GRACE_SECONDS, self._grace_expired, key, client_id
        )

    def _grace_expired(self, key: str, client_id: str) -> None:
        self._grace.pop((key, client_id), None)
        room = self.rooms.get(key)
        if room is not None:
            self.apply(key, core.grace_expired(room, client_id))

    def schedule_expiry(self, conn: Connection, expires_at: float) -> None:
        """SPEC §5: closed with 4001 when ``exp`` + leeway passes, unless refreshed."""
        if conn.expiry_handle is not None:
            conn.expiry_handle.cancel()
        delay = expires_at + self.settings.AUTH_LEEWAY_SECONDS - time.time()
        conn.expiry_handle = asyncio.get_running_loop().call_later(
            max(0.0, delay), conn.close, CloseCode.TOKEN_EXPIRED, "token expired"
        )

    # -- delivery -----------------------------------------------------------------

    def apply(self, key: str, effects: Effects) -> None:
        """Carry out ``effects`` in order: each Send encoded once (DESIGN "Encode once").

        A ``SendView``'s lists are encoded once per transition, for every member of
        its view class; only each member's own part is encoded per member.
        """
        sessions = self.sessions.get(key, {})
        sent = 0
        shared_json: dict[int, bytes] = {}  # id(SendView.shared) → its JSON
        for action in effects.actions:
            if isinstance(action, Send):
                frame = event_frame(action.event, action.payload)
                sent += _deliver(sessions, action.recipients, frame)
            elif isinstance(action, SendView):
                target = sessions.get(action.recipient)
                if target is None:
                    continue
                tail = shared_json.get(id(action.shared))
                if tail is None:  # the actions hold every shared dict: ids stay unique
                    tail = shared_json[id(action.shared)] = encode_tail(action.shared)
                target.send(text_frame(encode_split_bytes(action.event, action.own, tail)))
                sent += 1
            elif isinstance(action, Close):
                target = sessions.pop(action.client_id, None)
                if target is not None:
                    target.detached = True
                    target.close(action.code, action.reason)  # counted at its end
        if sent:
            self.metrics.messages_sent.inc(sent)
        if effects.room_closed:
            self._close_room(key)

    def _close_room(self, key: str) -> None:
        if self.rooms.pop(key, None) is None:
            return
        for conn in self.sessions.pop(key, {}).values():
            conn.detached = True
        for grace_key in [k for k in self._grace if k[0] == key]:
            self._grace.pop(grace_key).cancel()
        # The history stays in the store; its memory window is freed with the room.
        self.history.invalidate(key)
        self.metrics.rooms_closed.inc()
        self.metrics.rooms_active.set(len(self.rooms))

    def broadcast(self, key: str, recipients: tuple[str, ...], text: bytes) -> None:
        """Send the frame of JSON ``text`` (encoded once) to the room's ``recipients``."""
        frame = text_frame(text)
        self.metrics.messages_sent.inc(_deliver(self.sessions.get(key, {}), recipients, frame))

    # -- the admin API (SPEC §4) ----------------------------------------------------

    async def find_room(self, key: str) -> Room | None:
        """The open room ``key`` (a copy is not made: read it, do not change it)."""
        return self.rooms.get(key)

    async def all_rooms(self) -> list[Room]:
        return list(self.rooms.values())

    async def end(self, key: str) -> bool:
        """End a room (SPEC §4 DELETE): every member closed 4005; False when there is
        no such room."""
        room = self.rooms.get(key)
        if room is None:
            return False
        self.apply(key, core.end_room(room))
        return True

    # -- commands -----------------------------------------------------------------

    def _new_chat_id(self) -> str:
        """96 bits from the OS's CSPRNG: unguessable, so no client can claim a server id in
        advance (chatIds are unique per room). Read 256 ids at a time: one system call
        instead of one per chat message."""
        if self._entropy_at >= len(self._entropy):
            self._entropy = os.urandom(12 * 256)
            self._entropy_at = 0
        at = self._entropy_at
        self._entropy_at = at + 12
        return self._entropy[at : at + 12].hex()

    def _room(self, conn: Connection) -> Room:
        room = self.rooms.get(conn.room_key)
        if room is None or conn.detached:
            # The room ended or this session was replaced while a frame was in flight.
            raise ProtocolError(ErrorCode.FORBIDDEN, "you are no longer in this room")
        return room

    def run_now(self, conn: Connection, command: Command) -> None:
        """Run a decoded command that waits for nothing (neither ``add_chat`` nor one of
        ``AWAITING_COMMANDS``); rule violations raise ProtocolError."""
        if type(command) is Ping:
            conn.send(PONG_BYTES)
        else:
            room = self._room(conn)
            self.apply(conn.room_key, core.handle(room, conn.client_id, command, self.rules))
            if type(command) in AUDITED:  # SPEC §9: who did what to whom
                audit_command(conn.client_id, conn.room_key, command)

    async def run_awaiting(self, conn: Connection, command: Command) -> None:
        """Run a command of ``AWAITING_COMMANDS``; rule violations raise ProtocolError."""
        await self._AWAITING[type(command)](self, conn, command)

    def submit_chat(self, conn: Connection, command: AddChat) -> AddFuture:
        """Start an ``add_chat`` (SPEC §3.1): the room's rules now (a violation raises
        ProtocolError), then the store's future; ``chat_stored`` answers it once done."""
        member = core.require_admitted(self._room(conn), conn.client_id, "add_chat")
        message = ChatMessage(
            chat_id=command.chat_id or self._new_chat_id(),
            client_id=conn.client_id,
            display_name=member.display_name,
            timestamp=now_ms(),
            chat_content=command.chat_content,
        )
        return self.history.submit(conn.room_key, message)

    def chat_stored(self, conn: Connection, done: AddFuture) -> None:
        """Broadcast a stored ``add_chat`` (SPEC §8: only once durable). A store failure
        raises ProtocolError; any other exception the future holds is raised as it is."""
        if done.cancelled():  # given up (the node itself never does): nothing to broadcast
            raise _store_down("add_chat")
        try:
            stored, created = done.result()
        except ChatIdTaken:
            raise ProtocolError(
                ErrorCode.INVALID_PAYLOAD,
                "chatId is already used by another message in this room",
                "add_chat",
            ) from None
        except StoreUnavailable:
            raise _store_down("add_chat") from None
        text = encode_bytes("add_chat", stored.to_wire())
        room = self.rooms.get(conn.room_key)
        if created and room is not None:
            self.broadcast(conn.room_key, core.admitted_ids(room), text)
        else:
            # SPEC §3.1: a repeated chatId re-sends the stored ChatInfo to the sender only.
            conn.send(text_frame(text))

    async def _delete_chat(self, conn: Connection, command: DeleteChat) -> None:
        member = core.require_admitted(self._room(conn), conn.client_id, "delete_chat")
        try:
            message = await self.history.get(conn.room_key, command.chat_id)
            if message is None:
                raise ProtocolError(ErrorCode.NOT_FOUND, "no such chat message", "delete_chat")
            core.authorize_delete(self._room(conn), conn.client_id, message.client_id)
            deleted = await self.history.delete(conn.room_key, command.chat_id)
        except StoreUnavailable:
            raise _store_down("delete_chat") from None
        if not deleted:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such chat message", "delete_chat")
        payload = {
            "chatId": command.chat_id,
            "clientId": conn.client_id,
            "displayName": member.display_name,
        }
        room = self.rooms.get(conn.room_key)
        if room is not None:
            text = encode_bytes("delete_chat", payload)
            self.broadcast(conn.room_key, core.admitted_ids(room), text)

    async def _recent_chats(self, conn: Connection, command: GetRecentChats) -> None:
        core.require_admitted(self._room(conn), conn.client_id, command.reply_event)
        try:
            page = await self.history.page(conn.room_key, command.limit, command.before)
        except StoreUnavailable:
            raise _store_down(command.reply_event) from None
        payload = {
            "messages": [message.to_wire() for message in page.messages],
            "total": page.total,
            "hasMore": page.has_more,
        }
        conn.send(event_frame(command.reply_event, payload))

    async def _refresh_token(self, conn: Connection, command: RefreshToken) -> None:
        from callroom.auth.verifier import AuthError

        try:
            identity = await self.verifier.verify_for_refresh(command.token, conn.client_id)
        except AuthError as exc:
            raise ProtocolError(
                ErrorCode.INVALID_PAYLOAD,
                f"token is not a valid token for this session ({exc.reason})",
                "refresh_token",
            ) from None
        if identity.expires_at <= conn.identity.expires_at:
            # SPEC §5: only a newer exp extends the session; the old expiry stands.
            raise ProtocolError(
                ErrorCode.INVALID_PAYLOAD,
                "token must expire later than the session's current token",
                "refresh_token",
            )
        conn.identity = identity
        self.schedule_expiry(conn, identity.expires_at)

    # The commands whose handling awaits the chat store or the identity provider, and the
    # method running each. ``add_chat`` is not one: it is started by ``submit_chat`` and
    # finished by ``chat_stored`` (no coroutine per message); every other command runs
    # without an await (``run_now``).
    _AWAITING: ClassVar[dict[type[Command], Callable[[Hub, Connection, Any], Awaitable[None]]]] = {
        DeleteChat: _delete_chat,
        GetRecentChats: _recent_chats,
        RefreshToken: _refresh_token,
    }

    # The commands the WebSocket module runs with ``run_awaiting`` (in the member's
    # receive loop, in order); every other command but ``add_chat`` runs at once with
    # ``run_now``.
    awaiting_commands: ClassVar[frozenset[type[Command]]] = frozenset(_AWAITING)


AWAITING_COMMANDS = Hub.awaiting_commands


def _deliver(sessions: dict[str, Connection], recipients: Sequence[str], frame: bytes) -> int:
    """Queue ``frame`` to each recipient with a socket on this node; how many got it."""
    sent = 0
    for client_id in recipients:
        target = sessions.get(client_id)
        if target is not None:
            target.send(frame)
            sent += 1
    return sent


def _store_down(event: str) -> ProtocolError:
    return ProtocolError(
        ErrorCode.UNAVAILABLE,
        "the chat store is unavailable; nothing was done, retry later",
        event,
    )
