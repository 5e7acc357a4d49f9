"""Chat in the runtime (SPEC §3.1, §8): stored first, then one delivery to the room.

``add_chat`` is started by ``submit`` (the room's rules now, then the store's future,
no coroutine per message) and finished by ``stored`` once the store made it durable:
only then is it broadcast, as one ``Delivery`` on the room's bus. ``delete_chat`` and
the history pages await the store in the member's task (``run``).

A broadcast the bus did not take (Redis died at that instant) is answered to its sender
with ``unavailable``; the message is stored, so the sender's retry with the same chatId
then goes to every member, not only to the sender as a repeated chatId otherwise does
(SPEC §3.1), so nobody misses it live.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from callroom.chat.base import AddFuture, ChatMessage
from callroom.errors import ErrorCode, ProtocolError, StoreUnavailable
from callroom.room import chat
from callroom.room.commands import AddChat, Command, DeleteChat, GetRecentChats, RefreshToken
from callroom.room.encode import encode_bytes
from callroom.room.keys import RoomKey
from callroom.room.model import Effects, Send
from callroom.runtime.messages import Delivery
from callroom.runtime.peer import Peer
from callroom.runtime.ports import RoomBus
from callroom.runtime.refusals import require_bus
from callroom.runtime.replicas import Replicas
from callroom.server.framing import text_frame

if TYPE_CHECKING:
    from callroom.auth.verifier import TokenVerifier
    from callroom.chat.base import ChatHistory

AWAITED_CHAT_COMMANDS: frozenset[type[Command]] = frozenset(
    {DeleteChat, GetRecentChats, RefreshToken}
)
UNSENT_PER_ROOM = 1024  # chatIds kept for a full broadcast on retry, per room
NOT_DELIVERED = "the message was stored but not delivered; retry with the same chatId"
NOT_CONFIRMED = "the message was stored; its delivery was not confirmed, retry with the same chatId"
ECHO_TIMEOUT_SECONDS = 5.0  # a broadcast not back by then is answered NOT_CONFIRMED


@dataclass(slots=True)
class _Echo:
    """A sender's add waiting for its broadcast to come back (many nodes)."""

    answered: AddFuture
    result: tuple[ChatMessage, bool]
    key: RoomKey
    deadline: float  # loop time after which it is answered NOT_CONFIRMED


class RoomChat:
    """The chat commands of a node's rooms."""

    submitted: frozenset[type[Command]] = frozenset({AddChat})

    def __init__(
        self,
        history: ChatHistory,
        verifier: TokenVerifier,
        bus: RoomBus,
        replicas: Replicas,
        schedule_expiry: Callable[[Peer, float], None],
        *,
        node_id: str,
        immediate: bool,
    ) -> None:
        self.history = history
        self.verifier = verifier
        self.bus = bus
        self.replicas = replicas
        self.schedule_expiry = schedule_expiry
        self._entropy = b""
        self._entropy_at = 0
        self._unsent: dict[RoomKey, set[str]] = {}  # stored, broadcast lost
        # Many nodes: a sender's add is answered once its own echo came back through the
        # bus (its later answers must not overtake it, SPEC §3.2). The bus of one node
        # delivers in the same turn, so there the store's future is answered directly.
        self._immediate = immediate
        self._node_id = node_id
        self._tags = itertools.count(1)
        # tag → the add waiting for its echo, oldest first (one watch timer for all,
        # not one timer per message)
        self._echoes: dict[str, _Echo] = {}
        self._watch: asyncio.TimerHandle | None = None
        self._broadcast: set[AddFuture] = set()  # answered futures already broadcast

    def new_chat_id(self) -> str:
        """96 bits from the OS's CSPRNG: unguessable, so no client can claim a server id
        in advance (chatIds are unique per room). Read 256 ids at a time: one system
        call instead of one per chat message."""
        if self._entropy_at >= len(self._entropy):
            self._entropy = os.urandom(12 * 256)
            self._entropy_at = 0
        at = self._entropy_at
        self._entropy_at = at + 12
        return self._entropy[at : at + 12].hex()

    def submit(self, peer: Peer, command: AddChat) -> AddFuture:
        """The room's rules now (a violation raises ProtocolError), then the store."""
        room = self.replicas.member_room(peer, "add_chat")
        message = chat.new_message(
            room,
            peer.client_id,
            command,
            now_ms=int(time.time() * 1000),
            new_chat_id=self.new_chat_id,
        )
        require_bus(self.bus, peer.room_key)
        kept = self.history.submit(peer.room_key, message)
        if self._immediate:
            return kept
        answered: AddFuture = asyncio.get_running_loop().create_future()
        kept.add_done_callback(partial(self._broadcast_then_answer, peer, answered))
        return answered

    def stored(self, peer: Peer, done: AddFuture) -> None:
        """Broadcast a stored ``add_chat`` (SPEC §8: only once durable). A store failure
        raises ProtocolError; any other exception the future holds is raised as is."""
        if done.cancelled():  # given up (the node itself never does): nothing to broadcast
            raise StoreUnavailable("store")
        if done in self._broadcast:  # many nodes: broadcast, and its echo is back
            self._broadcast.discard(done)
            return
        # ChatIdTaken and StoreUnavailable go to the sender as they are
        # (callroom.server.ws_answers says how).
        stored, created = done.result()
        self._send(peer, stored, created, None)

    def _broadcast_then_answer(self, peer: Peer, answered: AddFuture, kept: AddFuture) -> None:
        """Many nodes: the store kept the message (or failed); broadcast it now, and answer
        the sender's add when the broadcast came back to this node."""
        if kept.cancelled():  # given up (the node itself never does)
            answered.set_exception(StoreUnavailable("store"))
            return
        failure = kept.exception()
        if failure is not None:
            answered.set_exception(failure)
            return
        stored, created = kept.result()
        try:
            if not self._send(peer, stored, created, answered):
                answered.set_result((stored, created))  # the sender only: stored() sends it
        except Exception as exc:
            answered.set_exception(exc)

    def echoed(self, tag: str) -> None:
        """A chat broadcast of this node came back: the sender's add is answered."""
        echo = self._echoes.pop(tag, None)
        if echo is not None:
            self._broadcast.add(echo.answered)
            echo.answered.set_result(echo.result)

    def _expire_echoes(self) -> None:
        """Answer NOT_CONFIRMED every add whose echo is overdue (the oldest come first)."""
        self._watch = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for tag, echo in list(self._echoes.items()):
            if echo.deadline > now:
                self._watch = loop.call_later(echo.deadline - now, self._expire_echoes)
                return
            self._echo_lost(tag, NOT_CONFIRMED)

    def _echo_lost(self, tag: str, message: str) -> None:
        """The broadcast of ``tag`` was not taken by the bus, or never came back."""
        echo = self._echoes.pop(tag, None)
        if echo is not None:
            self._unsent_to(echo.key, echo.result[0].chat_id)
            echo.answered.set_exception(ProtocolError(ErrorCode.UNAVAILABLE, message, "add_chat"))

    def _send(
        self, peer: Peer, stored: ChatMessage, created: bool, answered: AddFuture | None
    ) -> bool:
        """Send a stored message to whom the core says; whether it was a broadcast.
        ``answered``: many nodes, the sender's add, answered when its echo is back."""
        key = peer.room_key
        room = self.replicas.room(key)
        unsent = self._unsent.get(key)
        retry_unsent = unsent is not None and stored.chat_id in unsent
        broadcast = room is not None and (created or retry_unsent)
        (send,) = _sends(chat.stored(room, peer.client_id, stored, broadcast))
        text = encode_bytes(send.event, send.payload)
        if not broadcast:
            if answered is None:
                # SPEC §3.1: a repeated chatId re-sends the stored ChatInfo to the sender only.
                peer.send(text_frame(text))
            return False
        if unsent is not None:
            unsent.discard(stored.chat_id)
        if not self.bus.hears(key):  # went down while the store wrote it
            self._unsent_to(key, stored.chat_id)
            raise ProtocolError(ErrorCode.UNAVAILABLE, NOT_DELIVERED, "add_chat")
        if answered is None:  # one node: delivered in this turn, nothing can be lost
            self.bus.publish(key, Delivery(send.recipients, text))
            return True
        tag = f"{self._node_id}:{next(self._tags)}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ECHO_TIMEOUT_SECONDS
        self._echoes[tag] = _Echo(answered, (stored, created), key, deadline)
        if self._watch is None:
            self._watch = loop.call_later(ECHO_TIMEOUT_SECONDS, self._expire_echoes)
        self.bus.publish(
            key, Delivery(send.recipients, text, tag), partial(self._echo_lost, tag, NOT_DELIVERED)
        )
        return True

    def _unsent_to(self, key: RoomKey, chat_id: str) -> None:
        unsent = self._unsent.setdefault(key, set())
        if len(unsent) < UNSENT_PER_ROOM:
            unsent.add(chat_id)

    def forget_room(self, key: RoomKey) -> None:
        self._unsent.pop(key, None)

    async def run(self, peer: Peer, command: Command) -> None:
        if isinstance(command, DeleteChat):
            await self._delete(peer, command)
        elif isinstance(command, GetRecentChats):
            await self._recent(peer, command)
        elif isinstance(command, RefreshToken):
            await self._refresh_token(peer, command)

    async def _delete(self, peer: Peer, command: DeleteChat) -> None:
        key = peer.room_key
        deleter = chat.may_delete(self.replicas.member_room(peer, "delete_chat"), peer.client_id)
        require_bus(self.bus, key)
        found = await self.history.get(key, command.chat_id)
        # The room as it is now: a member demoted or sent away meanwhile is refused.
        chat.check_delete(self.replicas.member_room(peer, "delete_chat"), peer.client_id, found)
        removed = await self.history.delete(key, command.chat_id)
        for send in _sends(
            chat.deleted(self.replicas.room(key), deleter, command.chat_id, removed)
        ):
            self.bus.publish(key, Delivery(send.recipients, encode_bytes(send.event, send.payload)))

    async def _recent(self, peer: Peer, command: GetRecentChats) -> None:
        event = command.reply_event
        chat.may_read(self.replicas.member_room(peer, event), peer.client_id, event)
        page = await self.history.page(peer.room_key, command.limit, command.before)
        for send in _sends(chat.recent_chats(peer.client_id, event, page)):
            peer.send(text_frame(encode_bytes(send.event, send.payload)))

    async def _refresh_token(self, peer: Peer, command: RefreshToken) -> None:
        # An AuthError goes to the sender as it is (callroom.server.ws_answers).
        identity = await self.verifier.verify_for_refresh(command.token, peer.client_id)
        if identity.expires_at <= peer.identity.expires_at:
            # SPEC §5: only a newer exp extends the session; the old expiry stands.
            raise ProtocolError(
                ErrorCode.INVALID_PAYLOAD,
                "token must expire later than the session's current token",
                "refresh_token",
            )
        peer.identity = identity
        self.schedule_expiry(peer, identity.expires_at)


def _sends(effects: Effects) -> list[Send]:
    """The frames of a chat rule's effects (chat rules only send)."""
    return [action for action in effects.actions if isinstance(action, Send)]
