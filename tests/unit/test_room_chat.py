"""The chat rules of the room core (SPEC §3.1 add_chat, delete_chat, get_recent_chats)."""

from __future__ import annotations

from typing import Any, cast

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from callroom.errors import ErrorCode, ProtocolError
from callroom.room import chat, core
from callroom.room.chat import ChatMessage, ChatPage
from callroom.room.commands import (
    AcceptWaiting,
    AddChat,
    DemoteHost,
    KickParticipant,
    PromoteHost,
)
from callroom.room.events import Event, RecentChatsEvent
from callroom.room.model import Identity, Role, Room, RoomRules
from callroom.room.payloads import RecentChats
from core_helpers import sends, setup, who

NOW = 1_700_000_000_000


def server_id() -> str:
    return "server-id"


def message(cid: str, chat_id: str = "c1", text: str = "hi") -> ChatMessage:
    return ChatMessage(chat_id, cid, f"name-{cid}", NOW, text)


# --- add_chat ----------------------------------------------------------------------------


def test_an_admitted_member_chats_under_its_own_name_and_the_servers_clock() -> None:
    room = setup(participants=("p",), waiting=("w",))
    made = chat.new_message(room, "p", AddChat("hello", "c1"), now_ms=NOW, new_chat_id=server_id)
    assert made == ChatMessage("c1", "p", "name-p", NOW, "hello")
    # Without a chatId the server gives one (and only then is it asked for one).
    made = chat.new_message(room, "h", AddChat("hello", None), now_ms=NOW, new_chat_id=server_id)
    assert made.chat_id == "server-id"


@pytest.mark.parametrize("actor", ["w", "stranger"])
def test_the_waiting_room_and_strangers_may_not_chat(actor: str) -> None:
    room = setup(waiting=("w",))
    with pytest.raises(ProtocolError) as raised:
        chat.new_message(room, actor, AddChat("hi", None), now_ms=NOW, new_chat_id=server_id)
    assert (raised.value.code, raised.value.event) == (ErrorCode.FORBIDDEN, "add_chat")


def test_a_new_message_goes_to_every_admitted_member_and_a_retry_to_the_sender_only() -> None:
    room = setup(participants=("p", "q"), waiting=("w",))
    stored = message("p")
    info = {
        "clientId": "p",
        "displayName": "name-p",
        "chatId": "c1",
        "timestamp": NOW,
        "chatContent": "hi",
    }
    assert sends(chat.stored(room, "p", stored, created=True)) == [
        (("h", "p", "q"), "add_chat", info)
    ]
    assert sends(chat.stored(room, "p", stored, created=False)) == [(("p",), "add_chat", info)]
    # The room closed while the store worked: only the sender.
    assert sends(chat.stored(None, "p", stored, created=True)) == [(("p",), "add_chat", info)]


def test_a_member_in_its_reconnect_grace_is_among_the_recipients() -> None:
    room = setup(participants=("p", "q"))
    core.drop(room, "q")
    recipients = sends(chat.stored(room, "p", message("p"), created=True))[0][0]
    assert recipients == ("h", "p", "q")


def test_a_chat_id_taken_by_another_sender_is_an_invalid_payload() -> None:
    error = chat.chat_id_taken()
    assert (error.code, error.event) == (ErrorCode.INVALID_PAYLOAD, "add_chat")
    assert "chatId" in error.message


# --- delete_chat -------------------------------------------------------------------------


def test_the_author_or_a_host_may_delete_and_everyone_admitted_is_told() -> None:
    room = setup(participants=("p", "q"), waiting=("w",))
    written_by_p = message("p")
    for actor in ("p", "h"):
        deleter = chat.may_delete(room, actor)
        chat.check_delete(room, actor, written_by_p)
        effects = chat.deleted(room, deleter, "c1", removed=True)
        payload = {"chatId": "c1", "clientId": actor, "displayName": f"name-{actor}"}
        assert sends(effects) == [(("h", "p", "q"), "delete_chat", payload)]
    with pytest.raises(ProtocolError) as raised:
        chat.check_delete(room, "q", written_by_p)
    assert (raised.value.code, raised.value.event) == (ErrorCode.FORBIDDEN, "delete_chat")


def test_an_admitted_admin_acts_as_host_for_deletes() -> None:
    room = setup(participants=("p",))
    core.join(room, who("z", is_admin=True), RoomRules())
    room.members["z"].role = Role.PARTICIPANT  # an admin need not hold the host role
    chat.may_delete(room, "z")
    chat.check_delete(room, "z", message("p"))


def test_a_missing_message_is_not_found_before_and_after_the_store() -> None:
    room = setup(participants=("p",))
    with pytest.raises(ProtocolError) as raised:
        chat.check_delete(room, "h", None)
    assert (raised.value.code, raised.value.event) == (ErrorCode.NOT_FOUND, "delete_chat")
    deleter = chat.may_delete(room, "h")
    with pytest.raises(ProtocolError) as raised:
        chat.deleted(room, deleter, "c1", removed=False)  # deleted meanwhile by another
    assert raised.value.code is ErrorCode.NOT_FOUND
    assert chat.deleted(None, deleter, "c1", removed=True).actions == []  # room closed


def test_a_member_demoted_while_the_store_looked_is_refused() -> None:
    room = setup(participants=("p",))
    core.handle(room, "h", PromoteHost("p"), RoomRules())
    chat.may_delete(room, "p")  # a host when its command arrived ...
    core.handle(room, "h", DemoteHost("p"), RoomRules())
    with pytest.raises(ProtocolError) as raised:
        chat.check_delete(room, "p", message("h"))  # ... no longer once the store answered
    assert raised.value.code is ErrorCode.FORBIDDEN


# --- get_recent_chats ----------------------------------------------------------------------


def test_recent_chats_go_to_the_reader_only_under_the_name_it_sent() -> None:
    room = setup(participants=("p",), waiting=("w",))
    names: tuple[RecentChatsEvent, ...] = (Event.GET_RECENT_CHATS, Event.RECENTS_CHAT)
    for event in names:
        reader = chat.may_read(room, "p", event)
        assert reader.client_id == "p"
        page = ChatPage([message("h", "a"), message("p", "b")], total=5, has_more=True)
        [(recipients, sent_as, payload)] = sends(chat.recent_chats("p", event, page))
        assert (recipients, sent_as) == (("p",), event)
        assert payload == {
            "messages": [m.to_wire() for m in page.messages],
            "total": 5,
            "hasMore": True,
        }
        with pytest.raises(ProtocolError) as raised:
            chat.may_read(room, "w", event)
        assert (raised.value.code, raised.value.event) == (ErrorCode.FORBIDDEN, event)


def test_the_rest_messages_page_has_no_total() -> None:
    page = ChatPage([message("p")], total=3, has_more=True)
    assert chat.messages_page(page) == {"messages": [message("p").to_wire()], "hasMore": True}


# --- every chat step, under random membership (hypothesis) ---------------------------------

CLIENTS = ("a", "b", "c", "d", "z")  # z: admin


class ChatMachine(RuleBasedStateMachine):
    """Members come, go, are admitted, promoted, demoted and kicked; and they chat.

    A model of the store (chatId → message) stands for the chat store. After each chat
    step: who may act is decided by the role alone (admitted to chat and read; the
    author, a host or an admitted admin to delete); the waiting room never receives a
    chat frame; a new message reaches every admitted member and a retry the sender only;
    no chat step changes the room.
    """

    def __init__(self) -> None:
        super().__init__()
        self.room: Room = core.new_room("chat", "r", 0)
        self.room_rules = RoomRules()
        self.store: dict[str, ChatMessage] = {}
        self.ids = 0

    @initialize(lobby=st.booleans(), admitted=st.integers(0, 4))
    def configure(self, lobby: bool, admitted: int) -> None:
        self.room_rules = RoomRules(lobby_enabled=lobby, max_room_size=10)
        for cid in CLIENTS[:admitted]:  # a room with several admitted members to start
            self.join(cid)
            self.admit_everyone()

    @precondition(lambda self: bool(core.host_ids(self.room)))
    @rule()
    def admit_everyone(self) -> None:
        host = core.host_ids(self.room)[0]
        for cid, member in list(self.room.members.items()):
            if member.role is Role.WAITING:
                core.handle(self.room, host, AcceptWaiting(cid), self.room_rules)

    # -- membership -------------------------------------------------------------------

    @rule(cid=st.sampled_from(CLIENTS))
    def join(self, cid: str) -> None:
        if cid not in self.room.members:
            core.join(self.room, Identity(cid, f"name-{cid}", is_admin=cid == "z"), self.room_rules)

    @rule(cid=st.sampled_from(CLIENTS), leave=st.booleans())
    def go(self, cid: str, leave: bool) -> None:
        effects = (core.leave if leave else core.drop)(self.room, cid)
        if effects.room_closed:
            self.room = core.new_room("chat", "r", 0)  # the history stays in the store

    @precondition(lambda self: bool(core.host_ids(self.room)))
    @rule(data=st.data())
    def host_acts(self, data: st.DataObject) -> None:
        host = data.draw(st.sampled_from(core.host_ids(self.room)))
        target = data.draw(st.sampled_from(sorted(self.room.members)))
        make = data.draw(st.sampled_from([AcceptWaiting, PromoteHost, DemoteHost, _kick]))
        try:
            effects = core.handle(self.room, host, make(target), self.room_rules)
        except ProtocolError:
            return
        if effects.room_closed:
            self.room = core.new_room("chat", "r", 0)

    # -- chat -----------------------------------------------------------------------------

    @rule(actor=st.sampled_from(CLIENTS), given=st.sampled_from([None, "x1", "x2"]))
    def add_chat(self, actor: str, given: str | None) -> None:
        before = core.room_to_dict(self.room)
        member = self.room.members.get(actor)
        try:
            made = chat.new_message(
                self.room, actor, AddChat("text", given), now_ms=NOW, new_chat_id=self.new_id
            )
        except ProtocolError as exc:
            error: ProtocolError | None = exc
        else:
            error = None
        if error is not None:
            assert member is None or not member.role.admitted
            assert (error.code, error.event) == (ErrorCode.FORBIDDEN, "add_chat")
            assert core.room_to_dict(self.room) == before
            return
        assert member is not None
        assert member.role.admitted
        assert (made.client_id, made.display_name) == (actor, member.display_name)
        kept = self.store.setdefault(made.chat_id, made)
        if kept.client_id != actor:
            return  # the store refuses it: ``chat_id_taken``
        created = kept is made
        [(recipients, event, payload)] = sends(chat.stored(self.room, actor, kept, created))
        assert event == "add_chat"
        assert payload == kept.to_wire()
        if created:
            assert recipients == core.admitted_ids(self.room)
        else:
            assert recipients == (actor,)  # SPEC §3.1: the retry goes to the sender only
        self.check_nobody_waiting_gets(recipients)
        assert core.room_to_dict(self.room) == before

    @rule(actor=st.sampled_from(CLIENTS), data=st.data())
    def delete_chat(self, actor: str, data: st.DataObject) -> None:
        before = core.room_to_dict(self.room)
        chat_id = data.draw(st.sampled_from([*sorted(self.store), "unknown"]))
        member = self.room.members.get(actor)
        admitted = member is not None and member.role.admitted
        found = self.store.get(chat_id)
        try:
            deleter = chat.may_delete(self.room, actor)
            chat.check_delete(self.room, actor, found)
        except ProtocolError as exc:
            error: ProtocolError | None = exc
        else:
            error = None
        if error is not None:
            assert error.event == "delete_chat"
            if not admitted:
                assert error.code is ErrorCode.FORBIDDEN
            elif found is None:
                assert error.code is ErrorCode.NOT_FOUND
            else:
                assert error.code is ErrorCode.FORBIDDEN
                assert member is not None
                assert found.client_id != actor
                assert not core.acts_as_host(member)
            assert core.room_to_dict(self.room) == before
            return
        assert member is not None
        assert admitted
        assert found is not None
        assert found.client_id == actor or core.acts_as_host(member)
        del self.store[chat_id]
        [(recipients, event, payload)] = sends(chat.deleted(self.room, deleter, chat_id, True))
        assert (event, recipients) == ("delete_chat", core.admitted_ids(self.room))
        assert payload == {"chatId": chat_id, "clientId": actor, "displayName": f"name-{actor}"}
        self.check_nobody_waiting_gets(recipients)
        assert core.room_to_dict(self.room) == before

    @rule(actor=st.sampled_from(CLIENTS), limit=st.integers(1, 5))
    def get_recent_chats(self, actor: str, limit: int) -> None:
        member = self.room.members.get(actor)
        try:
            chat.may_read(self.room, actor, "recents_chat")
        except ProtocolError as exc:
            error: ProtocolError | None = exc
        else:
            error = None
        if error is not None:
            assert member is None or not member.role.admitted
            assert (error.code, error.event) == (ErrorCode.FORBIDDEN, "recents_chat")
            return
        assert member is not None
        assert member.role.admitted
        messages = list(self.store.values())
        page = ChatPage(messages[-limit:], len(messages), len(messages) > limit)
        [(recipients, event, payload)] = sends(chat.recent_chats(actor, Event.RECENTS_CHAT, page))
        assert (recipients, event) == ((actor,), "recents_chat")
        reply = cast("RecentChats", payload)
        assert [m["chatId"] for m in reply["messages"]] == [m.chat_id for m in page.messages]

    def new_id(self) -> str:
        self.ids += 1
        return f"s{self.ids}"

    def check_nobody_waiting_gets(self, recipients: tuple[str, ...]) -> None:
        for cid in recipients:
            assert self.room.members[cid].role is not Role.WAITING


def _kick(target: str) -> Any:
    return KickParticipant(target, False)


ChatMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
TestChatMachine = ChatMachine.TestCase
