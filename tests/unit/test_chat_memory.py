"""The ChatHistory contract on the in-memory backend, and the memory window (SPEC §3.1, §6).

The durable backends run the same contract in tests/integration/test_chat_store.py, with
and without the window; the window's order with the store's writer is tested there too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from callroom.chat.base import ChatHistory, ChatIdTaken, ChatMessage, ChatPage
from callroom.chat.memory import MemoryChatHistory
from callroom.chat.window import Windows

ROOM = "chat:lobby"
T0 = 1_700_000_000_000


def msg(n: int, client: str = "alice", ts: int | None = None, text: str = "") -> ChatMessage:
    return ChatMessage(
        chat_id=f"m{n}",
        client_id=client,
        display_name=client.title(),
        timestamp=T0 + n if ts is None else ts,
        chat_content=text or f"message {n}",
    )


async def add_all(history: ChatHistory, *numbers: int, room: str = ROOM) -> list[ChatMessage]:
    messages = [msg(n) for n in numbers]
    for message in messages:
        assert await history.add(room, message) == (message, True)
    return messages


def ids(page: ChatPage) -> list[str]:
    return [m.chat_id for m in page.messages]


@pytest.fixture
async def history() -> AsyncIterator[ChatHistory]:
    backend: ChatHistory = MemoryChatHistory()
    await backend.start()
    await backend.check()
    yield backend
    await backend.close()


# --- the contract, on both -------------------------------------------------------------


async def test_added_message_is_found_and_unknown_ones_are_not(history: ChatHistory) -> None:
    [first] = await add_all(history, 1)
    assert await history.get(ROOM, "m1") == first
    assert await history.get(ROOM, "nope") is None
    assert await history.get("chat:elsewhere", "m1") is None


async def test_invalidate_forgets_only_memory_never_the_history(history: ChatHistory) -> None:
    for n in (1, 2, 3, 4):
        await history.add(ROOM, msg(n))
    history.invalidate(ROOM)
    history.invalidate("chat:never-seen")
    assert ids(await history.page(ROOM, 10)) == ["m1", "m2", "m3", "m4"]
    assert await history.get(ROOM, "m2") == msg(2)


async def test_page_lists_newest_messages_oldest_first_with_total_and_has_more(
    history: ChatHistory,
) -> None:
    await add_all(history, *range(6))
    newest = await history.page(ROOM, 2)
    assert ids(newest) == ["m4", "m5"]
    assert (newest.total, newest.has_more) == (6, True)
    older = await history.page(ROOM, 3, before="m4")
    assert (ids(older), older.total, older.has_more) == (["m1", "m2", "m3"], 6, True)
    oldest = await history.page(ROOM, 3, before="m1")
    assert (ids(oldest), oldest.has_more) == (["m0"], False)
    everything = await history.page(ROOM, 50)
    assert (ids(everything), everything.has_more) == ([f"m{n}" for n in range(6)], False)
    exact = await history.page(ROOM, 6)
    assert (len(exact.messages), exact.has_more) == (6, False)


async def test_unknown_before_and_unknown_room_give_empty_pages(history: ChatHistory) -> None:
    await add_all(history, 1, 2)
    assert await history.page(ROOM, 10, before="nope") == ChatPage([], 2, False)
    assert await history.page("chat:empty", 10) == ChatPage([], 0, False)


async def test_retry_by_same_sender_returns_the_stored_message(history: ChatHistory) -> None:
    [original] = await add_all(history, 1)
    retry = msg(1, ts=T0 + 999, text="edited on retry")
    assert await history.add(ROOM, retry) == (original, False)
    page = await history.page(ROOM, 10)
    assert (page.messages, page.total) == ([original], 1)


async def test_chat_id_of_another_sender_is_refused(history: ChatHistory) -> None:
    [original] = await add_all(history, 1)
    with pytest.raises(ChatIdTaken):
        await history.add(ROOM, msg(1, client="mallory"))
    assert await history.get(ROOM, "m1") == original
    # The same chat_id in another room is another message.
    other = msg(1, client="mallory")
    assert await history.add("chat:other", other) == (other, True)


async def test_delete_removes_for_good(history: ChatHistory) -> None:
    await add_all(history, 1, 2, 3)
    assert await history.delete(ROOM, "m2") is True
    assert await history.delete(ROOM, "m2") is False
    assert await history.delete("chat:elsewhere", "m1") is False
    assert await history.get(ROOM, "m2") is None
    page = await history.page(ROOM, 10)
    assert (ids(page), page.total) == (["m1", "m3"], 2)
    await history.add("chat:single", msg(9))
    assert await history.delete("chat:single", "m9") is True
    assert await history.page("chat:single", 10) == ChatPage([], 0, False)


async def test_purge_removes_older_messages_in_every_room(history: ChatHistory) -> None:
    await history.add(ROOM, msg(1, ts=100))
    await history.add(ROOM, msg(2, ts=300))
    await history.add("chat:b", msg(3, ts=200))
    assert await history.purge_older_than(250) == 2
    assert ids(await history.page(ROOM, 10)) == ["m2"]
    assert await history.page("chat:b", 10) == ChatPage([], 0, False)
    assert await history.purge_older_than(250) == 0


def test_chat_info_on_the_wire_is_camel_case() -> None:
    assert msg(1).to_wire() == {
        "clientId": "alice",
        "displayName": "Alice",
        "chatId": "m1",
        "timestamp": T0 + 1,
        "chatContent": "message 1",
    }


# --- the memory-only mode --------------------------------------------------------------


async def test_memory_limit_keeps_only_the_newest_messages_per_room() -> None:
    history = MemoryChatHistory(limit_per_room=3)
    await add_all(history, *range(5))
    await add_all(history, 9, room="chat:other")
    page = await history.page(ROOM, 10)
    assert (ids(page), page.total, page.has_more) == (["m2", "m3", "m4"], 3, False)
    assert await history.get(ROOM, "m0") is None
    # Documented trade-off: a chat_id that fell out of the window is stored anew.
    assert (await history.add(ROOM, msg(0)))[1] is True
    assert (await history.page("chat:other", 10)).total == 1


def test_memory_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limit_per_room"):
        MemoryChatHistory(limit_per_room=0)


# --- the memory window (pure: the writer that keeps it is tested with the real stores) ---


def store_page(messages: list[ChatMessage], limit: int, before: str | None = None) -> ChatPage:
    """What the store answers (SPEC §3.1 get_recent_chats), from a room's whole history."""
    ids = [m.chat_id for m in messages]
    if before is None:
        end = len(messages)
    elif before in ids:
        end = ids.index(before)
    else:
        return ChatPage([], len(messages), False)
    start = max(0, end - limit)
    return ChatPage(messages[start:end], len(messages), start > 0)


def loaded(size: int, *messages: ChatMessage, room: str = ROOM, max_rooms: int = 10) -> Windows:
    windows = Windows(size, max_rooms=max_rooms)
    windows.loaded(room, store_page(list(messages), size))
    return windows


def test_a_cold_room_answers_nothing_and_a_loaded_one_answers_what_it_holds() -> None:
    windows = Windows(3)
    assert ROOM not in windows
    assert windows.page(ROOM, 10) is None
    assert windows.get(ROOM, "m1") is None
    history = [msg(n) for n in range(5)]
    windows.loaded(ROOM, store_page(history, 3))
    assert ROOM in windows
    assert len(windows) == 1
    for limit, before in [(1, None), (3, None), (2, "m4"), (1, "m3")]:
        assert windows.page(ROOM, limit, before) == store_page(history, limit, before)
    assert windows.get(ROOM, "m3") == msg(3)


def test_pages_reaching_past_the_window_or_naming_an_older_message_go_to_the_store() -> None:
    windows = loaded(3, *(msg(n) for n in range(5)))  # holds m2, m3, m4 of 5
    assert windows.page(ROOM, 4) is None
    assert windows.page(ROOM, 2, before="m3") is None  # m1 is not held
    assert windows.page(ROOM, 1, before="m1") is None  # older than the window
    assert windows.page(ROOM, 1, before="nope") is None  # unknown: the store says empty
    assert windows.get(ROOM, "m1") is None  # only the store can tell


def test_a_window_holding_the_whole_history_answers_any_limit() -> None:
    history = [msg(1), msg(2)]
    windows = loaded(5, *history)
    assert windows.page(ROOM, 50) == ChatPage(history, 2, False)
    assert windows.page(ROOM, 50, before="m2") == ChatPage([msg(1)], 2, False)
    assert loaded(5).page(ROOM, 10) == ChatPage([], 0, False)  # an empty room is known


def test_adds_and_deletes_keep_the_window_the_suffix_of_the_store() -> None:
    history = [msg(n) for n in range(4)]
    windows = loaded(3, *history)
    windows.added(ROOM, msg(4))
    history.append(msg(4))
    assert windows.page(ROOM, 3) == store_page(history, 3)  # m0..m1 fell out
    windows.deleted(ROOM, "m3")  # inside the window
    windows.deleted(ROOM, "m0")  # older than the window: only the total changes
    history = [m for m in history if m.chat_id not in ("m3", "m0")]
    assert windows.page(ROOM, 2) == ChatPage([msg(2), msg(4)], 3, True)
    assert windows.page(ROOM, 3) is None  # m1 is in the store only
    windows.added("chat:cold", msg(9))  # a cold room stays cold
    windows.deleted("chat:cold", "m9")
    assert "chat:cold" not in windows


def test_forget_turns_rooms_cold_and_the_least_recently_used_room_goes_first() -> None:
    windows = loaded(2, max_rooms=2)
    windows.loaded("chat:b", ChatPage([], 0, False))
    windows.page(ROOM, 1)  # ROOM used last
    windows.loaded("chat:c", ChatPage([], 0, False))
    assert "chat:b" not in windows
    assert ROOM in windows
    assert "chat:c" in windows
    windows.forget(ROOM)
    windows.forget("chat:never-seen")
    assert ROOM not in windows
    windows.forget_all()
    assert len(windows) == 0
    with pytest.raises(ValueError, match="at least 1"):
        Windows(0)
    with pytest.raises(ValueError, match="at least 1"):
        Windows(3, max_rooms=0)


ROOMS = ("chat:a", "chat:b")


class WindowMachine(RuleBasedStateMachine):
    """The windows, told of every change in the store's order, answer what the store does.

    The store is a list per room; each step changes it and tells the windows as the
    store's writer does (``callroom.chat.writer``). After every step, whatever a window
    answers (every page, every message) is the store's answer.
    """

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[str, list[ChatMessage]] = {room: [] for room in ROOMS}
        self.windows = Windows(3)
        self.count = 0

    @initialize(size=st.integers(1, 4), max_rooms=st.integers(1, 3))
    def configure(self, size: int, max_rooms: int) -> None:
        self.windows = Windows(size, max_rooms=max_rooms)

    @rule(room=st.sampled_from(ROOMS))
    def add(self, room: str) -> None:
        self.count += 1
        message = msg(self.count)
        self.store[room].append(message)
        self.windows.added(room, message)

    @rule(room=st.sampled_from(ROOMS), data=st.data())
    def delete(self, room: str, data: st.DataObject) -> None:
        messages = self.store[room]
        if messages:
            message = data.draw(st.sampled_from(messages))
            messages.remove(message)
            self.windows.deleted(room, message.chat_id)  # told only of a real removal

    @rule(room=st.sampled_from(ROOMS))
    def load(self, room: str) -> None:
        self.windows.loaded(room, store_page(self.store[room], self.windows.size))
        # A window just loaded answers its own page.
        expected = store_page(self.store[room], self.windows.size)
        assert self.windows.page(room, self.windows.size) == expected

    @rule(room=st.sampled_from(ROOMS))
    def forget(self, room: str) -> None:
        self.windows.forget(room)
        assert room not in self.windows

    @rule(cutoff=st.integers(0, 30))
    def purge(self, cutoff: int) -> None:
        for room in ROOMS:
            self.store[room] = [m for m in self.store[room] if m.timestamp >= T0 + cutoff]
        self.windows.forget_all()

    @invariant()
    def every_answer_is_the_stores(self) -> None:
        for room in ROOMS:
            known = [m.chat_id for m in self.store[room]]
            for before in (None, *known, "nope"):
                for limit in range(1, 6):
                    got = self.windows.page(room, limit, before)
                    if got is not None:
                        assert got == store_page(self.store[room], limit, before)
            for chat_id in (*known, "nope"):
                found = self.windows.get(room, chat_id)
                assert found is None or found in self.store[room]
        assert len(self.windows) <= self.windows.max_rooms


WindowMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestWindowMachine = WindowMachine.TestCase
