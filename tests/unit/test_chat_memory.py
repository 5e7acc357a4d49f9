"""The ChatHistory contract on the in-memory backend and the cached window (SPEC §3.1 chat).

The durable backends run the same contract in tests/integration/test_chat_store.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from callroom.chat.base import AddFuture, ChatHistory, ChatIdTaken, ChatMessage, ChatPage
from callroom.chat.cached import CachedChatHistory
from callroom.chat.memory import MemoryChatHistory
from callroom.errors import StoreUnavailable

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


async def settle() -> None:
    """Let every task that is ready run up to its next wait (no wall-clock wait)."""
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.fixture(params=["memory", "cached"])
async def history(request: pytest.FixtureRequest) -> AsyncIterator[ChatHistory]:
    backend: ChatHistory = MemoryChatHistory()
    if request.param == "cached":
        # A window smaller than the histories below, so pages cross it.
        backend = CachedChatHistory(MemoryChatHistory(), window=3)
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


# --- the cached window -----------------------------------------------------------------


async def answer_after(gate: asyncio.Event, committed: AddFuture, future: AddFuture) -> None:
    """... but the caller hears of it only once ``gate`` is set."""
    await gate.wait()
    if not future.done():  # the caller may have given up
        future.set_result(committed.result())


class SpyStore(MemoryChatHistory):
    """A memory store that counts reads, can fail, and can hold a read after taking it."""

    def __init__(self) -> None:
        super().__init__()
        self.pages: list[tuple[str, int, str | None]] = []
        self.gets = 0
        self.failing = False
        self.page_gate: asyncio.Event | None = None
        self.page_taken = asyncio.Event()
        self.delete_gate: asyncio.Event | None = None
        self.add_gates: dict[str, asyncio.Event] = {}
        self.answering: set[asyncio.Future[None]] = set()
        self.calls: list[str] = []

    async def start(self) -> None:
        self.calls.append("start")

    async def close(self) -> None:
        self.calls.append("close")

    async def check(self) -> None:
        if self.failing:
            raise StoreUnavailable("store")

    def submit(
        self, room: str, message: ChatMessage, *, into: AddFuture | None = None
    ) -> AddFuture:
        future = into if into is not None else asyncio.get_running_loop().create_future()
        if self.failing:
            future.set_exception(StoreUnavailable("store"))
            return future
        gate = self.add_gates.get(message.chat_id)
        if gate is None:
            return super().submit(room, message, into=future)
        committed = super().submit(room, message)  # committed here ...
        self.answering.add(asyncio.ensure_future(answer_after(gate, committed, future)))
        return future

    async def delete(self, room: str, chat_id: str) -> bool:
        if self.failing:
            raise StoreUnavailable("store")
        if self.delete_gate is not None:
            await self.delete_gate.wait()
        return await super().delete(room, chat_id)

    async def get(self, room: str, chat_id: str) -> ChatMessage | None:
        self.gets += 1
        return await super().get(room, chat_id)

    async def page(self, room: str, limit: int, before: str | None = None) -> ChatPage:
        self.pages.append((room, limit, before))
        result = await super().page(room, limit, before)  # the snapshot is taken here ...
        self.page_taken.set()
        if self.page_gate is not None:
            await self.page_gate.wait()  # ... and answered only later
        return result


async def test_cached_serves_pages_inside_the_warm_window_from_memory() -> None:
    store = SpyStore()
    cached = CachedChatHistory(store, window=5)
    await add_all(cached, *range(8))
    assert ids(await cached.page(ROOM, 3)) == ["m5", "m6", "m7"]
    assert store.pages == [(ROOM, 5, None)]  # one load of the window, nothing else
    for limit, before in [(2, None), (2, "m6"), (3, "m6"), (5, None)]:
        assert await cached.page(ROOM, limit, before) == await MemoryChatHistory.page(
            store, ROOM, limit, before
        )
    assert store.pages == [(ROOM, 5, None)]


async def test_cached_pages_past_the_window_come_from_the_store() -> None:
    store = SpyStore()
    cached = CachedChatHistory(store, window=3)
    await add_all(cached, *range(6))
    await cached.page(ROOM, 1)  # warm: m3, m4, m5
    for limit, before in [(2, "m4"), (4, None), (1, "m3"), (2, "m1")]:
        store.pages.clear()
        page = await cached.page(ROOM, limit, before)
        assert store.pages == [(ROOM, limit, before)]
        assert page == await MemoryChatHistory.page(store, ROOM, limit, before)
    page = await cached.page(ROOM, 2, before="m4")
    assert (ids(page), page.total, page.has_more) == (["m2", "m3"], 6, True)


async def test_cached_window_holding_the_whole_history_answers_any_limit() -> None:
    store = SpyStore()
    cached = CachedChatHistory(store, window=5)
    await add_all(cached, 1, 2)
    assert await cached.page(ROOM, 50) == ChatPage([msg(1), msg(2)], 2, False)
    assert await cached.page(ROOM, 50, before="m2") == ChatPage([msg(1)], 2, False)
    assert store.pages == [(ROOM, 5, None)]


async def test_cached_total_follows_adds_retries_and_deletes() -> None:
    store = SpyStore()
    cached = CachedChatHistory(store, window=3)
    await add_all(cached, *range(5))
    await cached.page(ROOM, 1)  # warm
    await add_all(cached, 5)
    assert await cached.add(ROOM, msg(5)) == (msg(5), False)  # a retry: nothing new
    assert await cached.delete(ROOM, "m4") is True  # inside the window
    assert await cached.delete(ROOM, "m0") is True  # older than the window
    assert await cached.delete(ROOM, "m0") is False
    page = await cached.page(ROOM, 2)
    assert (ids(page), page.total, page.has_more) == (["m3", "m5"], 4, True)
    assert store.pages == [(ROOM, 3, None)]  # all of it from memory
    assert page == await MemoryChatHistory.page(store, ROOM, 2)


async def test_cached_store_failure_caches_nothing_and_reloads_the_window() -> None:
    store = SpyStore()
    cached = CachedChatHistory(store, window=3)
    await add_all(cached, 1, 2)
    await cached.page(ROOM, 10)  # warm
    store.failing = True
    with pytest.raises(StoreUnavailable):
        await cached.add(ROOM, msg(3))
    with pytest.raises(StoreUnavailable):
        await cached.check()
    store.failing = False
    store.pages.clear()
    assert ids(await cached.page(ROOM, 10)) == ["m1", "m2"]
    assert store.pages == [(ROOM, 3, None)]  # the window was reloaded, not trusted
    store.failing = True
    with pytest.raises(StoreUnavailable):
        await cached.delete(ROOM, "m1")
    store.failing = False
    store.pages.clear()
    assert ids(await cached.page(ROOM, 10)) == ["m1", "m2"]
    assert store.pages == [(ROOM, 3, None)]


async def test_cached_get_looks_in_the_window_then_in_the_store() -> None:
    store = SpyStore()
    cached = CachedChatHistory(store, window=2)
    await add_all(cached, 1, 2, 3)
    assert await cached.get(ROOM, "m3") == msg(3)  # cold: asks the store
    assert store.gets == 1
    await cached.page(ROOM, 1)
    assert await cached.get(ROOM, "m3") == msg(3)
    assert store.gets == 1  # from the window
    assert await cached.get(ROOM, "m1") == msg(1)  # older than the window
    assert await cached.get(ROOM, "nope") is None
    assert store.gets == 3


async def test_cached_add_during_a_window_load_is_not_lost() -> None:
    store = SpyStore()
    cached = CachedChatHistory(store, window=5)
    await add_all(store, 1)
    store.page_gate = asyncio.Event()
    load = asyncio.create_task(cached.page(ROOM, 5))
    await store.page_taken.wait()  # the load read [m1] and is held
    add = asyncio.create_task(cached.add(ROOM, msg(2)))
    await settle()
    store.page_gate.set()
    assert ids(await load) == ["m1"]
    assert await add == (msg(2), True)
    store.page_gate = None
    assert await cached.page(ROOM, 5) == ChatPage([msg(1), msg(2)], 2, False)


async def test_cached_add_given_up_in_flight_turns_the_window_cold() -> None:
    store = SpyStore()
    cached = CachedChatHistory(store, window=5)
    await cached.page(ROOM, 5)  # warm and empty
    store.add_gates = {"m1": asyncio.Event()}
    add = asyncio.create_task(cached.add(ROOM, msg(1)))
    await settle()
    add.cancel()
    with pytest.raises(asyncio.CancelledError):
        await add
    store.add_gates["m1"].set()
    # The commit may have happened (here it did): the window is reloaded, not trusted.
    store.pages.clear()
    assert ids(await cached.page(ROOM, 5)) == ["m1"]
    assert store.pages == [(ROOM, 5, None)]


async def test_cached_operations_behind_a_delete_run_after_it_in_call_order() -> None:
    store = SpyStore()
    cached = CachedChatHistory(store, window=5)
    await add_all(cached, 1, 2)
    await cached.page(ROOM, 5)  # warm
    store.delete_gate = asyncio.Event()
    first = asyncio.create_task(cached.delete(ROOM, "m1"))  # has the room, held at the gate
    await settle()
    held = asyncio.create_task(cached.add(ROOM, msg(3)))
    given_up_delete = asyncio.create_task(cached.delete(ROOM, "m2"))
    given_up_add = asyncio.create_task(cached.add(ROOM, msg(4)))
    after = asyncio.create_task(cached.add(ROOM, msg(5)))
    await settle()
    assert await store.page(ROOM, 5) == ChatPage([msg(1), msg(2)], 2, False)  # all wait
    given_up_delete.cancel()
    given_up_add.cancel()
    await settle()
    store.delete_gate.set()
    assert await first is True
    assert await held == (msg(3), True)
    assert await after == (msg(5), True)
    for task in (given_up_delete, given_up_add):
        with pytest.raises(asyncio.CancelledError):
            await task
    expected = ChatPage([msg(2), msg(3), msg(5)], 3, False)
    assert await store.page(ROOM, 5) == expected  # m2 stays, m4 was never stored
    store.pages.clear()
    assert await cached.page(ROOM, 5) == expected
    assert store.pages == []  # the window stayed exact: served from memory
    assert cached._rooms[ROOM].users == 0  # nothing holds the entry: it may be evicted


async def test_cached_delete_given_the_room_but_cancelled_passes_it_on() -> None:
    store = SpyStore()
    cached = CachedChatHistory(store, window=5)
    await add_all(cached, 1, 2)
    await cached.page(ROOM, 5)  # warm
    store.delete_gate = asyncio.Event()
    second = asyncio.create_task(cached.delete(ROOM, "m2"))  # in line behind this task's
    behind = asyncio.create_task(cached.add(ROOM, msg(3)))  # held behind ``second``

    async def open_gate() -> None:
        await settle()
        assert store.delete_gate is not None
        store.delete_gate.set()

    opener = asyncio.create_task(open_gate())
    assert await cached.delete(ROOM, "m1") is True  # releases the room to ``second`` ...
    second.cancel()  # ... which gives up before it could run
    with pytest.raises(asyncio.CancelledError):
        await second
    assert await behind == (msg(3), True)  # the room was passed on
    await opener
    store.pages.clear()
    assert await cached.page(ROOM, 5) == ChatPage([msg(2), msg(3)], 2, False)
    assert store.pages == []


async def test_cached_concurrent_first_reads_load_the_window_once() -> None:
    store = SpyStore()
    cached = CachedChatHistory(store, window=5)
    await add_all(store, 1, 2)
    store.page_gate = asyncio.Event()
    first = asyncio.create_task(cached.page(ROOM, 5))
    await store.page_taken.wait()
    second = asyncio.create_task(cached.page(ROOM, 1))
    await settle()
    store.page_gate.set()
    assert ids(await first) == ["m1", "m2"]
    assert ids(await second) == ["m2"]
    assert store.pages == [(ROOM, 5, None)]


async def test_cached_window_turns_cold_when_adds_are_answered_out_of_order() -> None:
    store = SpyStore()
    cached = CachedChatHistory(store, window=5)
    await cached.page(ROOM, 5)  # warm and empty
    store.add_gates = {"m1": asyncio.Event()}
    first = asyncio.create_task(cached.add(ROOM, msg(1)))
    second = asyncio.create_task(cached.add(ROOM, msg(2)))
    assert await second == (msg(2), True)  # m1 was committed first but is answered last
    store.add_gates["m1"].set()
    assert await first == (msg(1), True)
    # The window could not tell where m2 lies: the next page reloads it, in store order.
    store.pages.clear()
    assert ids(await cached.page(ROOM, 5)) == ["m1", "m2"]
    assert store.pages == [(ROOM, 5, None)]


def test_cached_needs_a_store_that_commits_adds_in_call_order() -> None:
    class Unordered(MemoryChatHistory):
        adds_commit_in_call_order = False

    with pytest.raises(ValueError, match="call order"):
        CachedChatHistory(Unordered(), window=5)


async def test_cached_invalidate_during_a_load_discards_what_it_read() -> None:
    store = SpyStore()
    cached = CachedChatHistory(store, window=5)
    await add_all(store, 1)
    store.page_gate = asyncio.Event()
    load = asyncio.create_task(cached.page(ROOM, 5))
    await store.page_taken.wait()  # the load read [m1] and is held
    await store.add(ROOM, msg(2))  # another node adds m2 ...
    cached.invalidate(ROOM)  # ... and its add_chat arrives over the bus
    store.page_gate.set()
    # The stale read is not installed (nor answered): the page is read from the store anew.
    assert ids(await load) == ["m1", "m2"]
    store.page_gate = None
    assert ids(await cached.page(ROOM, 5)) == ["m1", "m2"]
    cached.invalidate("chat:never-seen")  # nothing to forget


async def test_cached_purge_turns_every_window_cold() -> None:
    store = SpyStore()
    cached = CachedChatHistory(store, window=5)
    await cached.add(ROOM, msg(1, ts=100))
    await cached.add(ROOM, msg(2, ts=300))
    assert ids(await cached.page(ROOM, 5)) == ["m1", "m2"]
    assert await cached.purge_older_than(200) == 1
    assert await cached.page(ROOM, 5) == ChatPage([msg(2, ts=300)], 1, False)


async def test_cached_keeps_at_most_max_rooms_windows() -> None:
    store = SpyStore()
    cached = CachedChatHistory(store, window=5, max_rooms=2)
    for room in ("chat:a", "chat:b", "chat:c"):
        await add_all(cached, 1, room=room)
        await cached.page(room, 5)
    store.pages.clear()
    await cached.page("chat:c", 5)
    assert store.pages == []  # recently used: still in memory
    await cached.page("chat:a", 5)
    assert store.pages == [("chat:a", 5, None)]  # least recently used: was dropped


async def test_cached_passes_start_and_close_to_the_store() -> None:
    store = SpyStore()
    cached = CachedChatHistory(store, window=5)
    await cached.start()
    await cached.close()
    assert store.calls == ["start", "close"]
    with pytest.raises(ValueError, match="window"):
        CachedChatHistory(store, window=0)
