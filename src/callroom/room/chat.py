"""The chat rules of a room (SPEC §3.1 ``add_chat``, ``delete_chat``, ``get_recent_chats``).

Pure functions over a ``Room``: no I/O, no asyncio. The chat rows need the chat store
between their steps, so each row is a few steps the node runs around its store calls;
every step either raises ``ProtocolError`` (SPEC §3.3) or returns what to send to whom
(``Effects``, one ``Send`` per frame, the payload typed below):

- ``add_chat``: ``new_message`` (who may chat; the server's stamps) → the store keeps it
  → ``stored`` (who receives it; the retry rule), or ``chat_id_taken`` when the store
  refused the chatId.
- ``delete_chat``: ``may_delete`` → the store finds the message → ``check_delete`` (it
  exists; the author or a host) → the store removes it → ``deleted`` (who is told).
- ``get_recent_chats``: ``may_read`` → the store pages → ``recent_chats`` (the reply).

The store's values (``ChatMessage``, ``ChatPage``) are defined here, with the core that
gives them meaning; ``callroom.chat.base`` (the store port) speaks them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypedDict

from callroom.errors import ErrorCode, ProtocolError
from callroom.room.access import admitted_ids, authorize_delete, require_admitted
from callroom.room.commands import AddChat
from callroom.room.events import Event, RecentChatsEvent
from callroom.room.model import Effects, Member, Room
from callroom.room.payloads import ChatDeleted, ChatInfo, RecentChats


class MessagesPage(TypedDict):
    """The body of ``GET /api/v1/rooms/{kind}/{roomId}/messages`` (SPEC §4)."""

    messages: list[ChatInfo]  # oldest first
    hasMore: bool


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """A stored chat message (SPEC §3.1): the sender and the time are the server's."""

    chat_id: str
    client_id: str
    display_name: str
    timestamp: int  # ms since epoch, server clock
    chat_content: str

    def to_wire(self) -> ChatInfo:
        """ChatInfo of SPEC §3."""
        return {
            "clientId": self.client_id,
            "displayName": self.display_name,
            "chatId": self.chat_id,
            "timestamp": self.timestamp,
            "chatContent": self.chat_content,
        }


@dataclass(frozen=True, slots=True)
class ChatPage:
    """A page of a room's history (SPEC §3.1 ``get_recent_chats``, §4 messages route)."""

    messages: list[ChatMessage]  # oldest first
    total: int
    has_more: bool


def chat_info(message: ChatMessage) -> ChatInfo:
    """ChatInfo of SPEC §3."""
    return message.to_wire()


# --- add_chat --------------------------------------------------------------------------


def new_message(
    room: Room,
    actor_id: str,
    command: AddChat,
    *,
    now_ms: int,
    new_chat_id: Callable[[], str],
) -> ChatMessage:
    """The message ``actor_id``'s ``add_chat`` asks the store to keep (SPEC §3.1).

    Only admitted members may chat (``forbidden`` otherwise, SPEC §3.2: the waiting room
    sees nothing). The server stamps the sender (its clientId and displayName, never the
    client's word) and the time (``now_ms``, the server clock), and takes the client's
    ``chatId`` or, when none was given, ``new_chat_id()`` (called only then).
    """
    member = require_admitted(room, actor_id, "add_chat")
    return ChatMessage(
        chat_id=command.chat_id or new_chat_id(),
        client_id=actor_id,
        display_name=member.display_name,
        timestamp=now_ms,
        chat_content=command.chat_content,
    )


def stored(room: Room | None, sender_id: str, message: ChatMessage, created: bool) -> Effects:
    """Who gets the ``add_chat`` of a message the store kept (SPEC §3.1, §8).

    Call it only once the store answered (durable: SPEC §8 "nothing acknowledged is
    lost"). A new message (``created``) goes to every admitted member, the sender
    included, members in their reconnect grace too (a frame for one without a socket is
    not delivered). A repeated chatId of the same sender (``created`` False: the store
    kept nothing new) re-sends the stored ChatInfo to the sender only: a safe retry
    never shows the others a message twice. ``room`` is ``None`` when it closed while the
    store worked: the sender only.
    """
    effects = Effects()
    recipients = admitted_ids(room) if created and room is not None else (sender_id,)
    effects.send(recipients, Event.ADD_CHAT, message.to_wire())
    return effects


def chat_id_taken() -> ProtocolError:
    """The answer when the store refused the chatId: another sender's message in this
    room has it (SPEC §3.1 "a chatId is unique in a room", §3.3 ``invalid_payload``)."""
    return ProtocolError(
        ErrorCode.INVALID_PAYLOAD,
        "chatId is already used by another message in this room",
        "add_chat",
    )


# --- delete_chat -----------------------------------------------------------------------


def may_delete(room: Room, actor_id: str) -> Member:
    """The deleting member, before the store is asked (SPEC §3.1 ``delete_chat``):
    only admitted members may delete (``forbidden`` otherwise), whose message it is is
    checked once it is found (``check_delete``)."""
    return require_admitted(room, actor_id, "delete_chat")


def check_delete(room: Room, actor_id: str, found: ChatMessage | None) -> None:
    """Whether ``actor_id`` may delete ``found`` (SPEC §3.1 ``delete_chat``, §3.3).

    ``found`` is what the store holds under the chatId (``None``: ``not_found``). The
    author or a host (an admitted admin acts as host, SPEC §2) may delete it, while
    admitted (``forbidden`` otherwise). ``room`` is the room as it is after the store
    answered: a member demoted or sent away meanwhile is refused.
    """
    if found is None:
        raise _no_such_message()
    authorize_delete(room, actor_id, found.client_id)


def deleted(room: Room | None, deleter: Member, chat_id: str, removed: bool) -> Effects:
    """Who is told of a deletion (SPEC §3.1 ``delete_chat``).

    ``removed``: whether the store removed the message; it was gone already (deleted by
    another member meanwhile) is ``not_found``. Every admitted member gets ``delete_chat``
    ``{chatId, clientId, displayName}`` naming the deleter (``deleter``: as it was when
    its command arrived, ``may_delete``). ``room`` is ``None`` when it closed meanwhile:
    nobody is told.
    """
    if not removed:
        raise _no_such_message()
    effects = Effects()
    if room is not None:
        payload: ChatDeleted = {
            "chatId": chat_id,
            "clientId": deleter.client_id,
            "displayName": deleter.display_name,
        }
        effects.send(admitted_ids(room), Event.DELETE_CHAT, payload)
    return effects


def _no_such_message() -> ProtocolError:
    return ProtocolError(ErrorCode.NOT_FOUND, "no such chat message", "delete_chat")


# --- get_recent_chats ------------------------------------------------------------------


def may_read(room: Room, actor_id: str, event: str) -> Member:
    """The reading member, before the store is asked (SPEC §3.1 ``get_recent_chats``):
    admitted members only (``forbidden`` otherwise). ``event`` is the name the client
    sent (``get_recent_chats`` or its alias ``recents_chat``), for the error."""
    return require_admitted(room, actor_id, event)


def recent_chats(reader_id: str, event: RecentChatsEvent, page: ChatPage) -> Effects:
    """The reply to ``get_recent_chats`` (SPEC §3.1): to the sender only, under the event
    name it sent, ``{messages (oldest first), total, hasMore}`` of the store's page."""
    payload: RecentChats = {
        "messages": [chat_info(message) for message in page.messages],
        "total": page.total,
        "hasMore": page.has_more,
    }
    effects = Effects()
    effects.send((reader_id,), event, payload)
    return effects


def messages_page(page: ChatPage) -> MessagesPage:
    """The body of the REST messages route (SPEC §4): the page without its total."""
    return {"messages": [chat_info(message) for message in page.messages], "hasMore": page.has_more}
