"""The last ``CHAT_HISTORY_LIMIT`` messages per room in memory, in front of the store (SPEC §6).

What is cached, per room: a *window*, the newest ``window`` messages of the room exactly as
the store holds them (oldest first), plus the store's ``total`` for the room. A room's
window is *warm* once loaded from the store (the first ``page`` of the room loads it);
until then, and after anything that may have made it differ from the store, it is *cold*
and every read goes to the store.

- ``add`` writes through: the store first (SPEC §8: durable before the broadcast), then the
  window. A store failure caches nothing and turns the window cold, because a failed commit
  may still have happened.
- ``delete`` removes from the store, then from the window.
- ``page`` is answered from a warm window when the requested page lies within it (or the
  window holds the room's whole history); otherwise from the store.
- ``get`` looks in the window, then in the store.
- ``purge_older_than`` purges the store and turns every window cold.

Order and consistency on one node: the window must stay the suffix of what the store holds,
in the store's order (insertion order). A lock per room orders the room's deletes and
window loads; each runs alone, after the room's adds in flight and before the adds that
come after it. Reads of a warm window take no lock. The adds of one room:

- With a store whose concurrent adds commit in the order they were called (it says so
  with ``adds_commit_in_call_order = True``, as ``SqlChatHistory`` does: one writer, one
  queue, group commit), the adds of a room run concurrently, so that they share the
  store's transactions (one room's burst is not one commit per message). Each add is
  appended to the window when it returns, if every add of the room called before it has
  returned: the store's order is then the call order, which is the order of the appends.
  An add that returns before an earlier one (the window cannot tell the store's order) or
  that fails or is cancelled (a failed commit may still have happened) turns the window
  cold instead; the next page reloads it, once no add is in flight.
- With any other store, the adds of a room run one at a time under the room's lock, as
  the deletes and loads do: the store's order is then the order of the returns.

Different rooms never wait for each other.

Many nodes (SPEC §7): another node writes to the same store without this cache knowing.
Call ``invalidate(room)`` when another node changed a room's history (its ``add_chat`` or
``delete_chat`` arrived over the bus), and when a room closes, to free its window. A load
that was running across an ``invalidate`` does not install what it read.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from callroom.chat.base import ChatHistory, ChatIdTaken, ChatMessage, ChatPage
from callroom.errors import StoreUnavailable


def _set_event() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


@dataclass(eq=False, slots=True)
class _Room:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # coroutines using the entry (its lock, its adds): it stays while > 0
    messages: list[ChatMessage] | None = None  # the window, oldest first; None = cold
    total: int = 0  # the store's total for the room (meaningful while warm)
    generation: int = 0  # bumped by ``invalidate``: an older load does not install
    adding: deque[object] = field(default_factory=deque)  # adds in flight, in call order
    idle: asyncio.Event = field(default_factory=_set_event)  # set while ``adding`` is empty


class CachedChatHistory:
    """``ChatHistory`` with a per-room memory window in front of ``store`` (module docstring)."""

    def __init__(self, store: ChatHistory, window: int, *, max_rooms: int = 1000) -> None:
        """``max_rooms``: windows kept at most; the least recently used idle ones go first."""
        if window < 1 or max_rooms < 1:
            raise ValueError("window and max_rooms must be at least 1")
        self._store = store
        # The store commits concurrent adds in call order: a room's adds may run together.
        self._concurrent_adds = getattr(store, "adds_commit_in_call_order", False) is True
        self._window = window
        self._max_rooms = max_rooms
        self._rooms: OrderedDict[str, _Room] = OrderedDict()

    async def start(self) -> None:
        await self._store.start()

    async def close(self) -> None:
        self._rooms.clear()
        await self._store.close()

    async def check(self) -> None:
        await self._store.check()

    async def add(self, room: str, message: ChatMessage) -> tuple[ChatMessage, bool]:
        async with self._entered(room) as entry:
            if self._concurrent_adds:
                async with entry.lock:
                    pass  # after the deletes and loads of the room that came first
                # No suspension from here until the store has the message (call order).
                return await self._store_add(room, entry, message)
            async with entry.lock:
                return await self._store_add(room, entry, message)

    async def _store_add(
        self, room: str, entry: _Room, message: ChatMessage
    ) -> tuple[ChatMessage, bool]:
        token = object()
        entry.adding.append(token)
        entry.idle.clear()
        try:
            stored, created = await self._store.add(room, message)
            in_order = entry.adding[0] is token  # every add called before it returned
        except ChatIdTaken:
            raise
        except BaseException:
            _cool(entry)  # a failed (or abandoned) commit may still have happened
            raise
        finally:
            entry.adding.remove(token)
            if not entry.adding:
                entry.idle.set()
        if created and entry.messages is not None:
            if in_order:
                entry.messages.append(stored)
                entry.total += 1
                del entry.messages[: -self._window]  # keep the newest ``window``
            else:
                _cool(entry)  # where it lies among the adds still in flight is unknown
        return stored, created

    async def get(self, room: str, chat_id: str) -> ChatMessage | None:
        entry = self._rooms.get(room)
        if entry is not None and entry.messages is not None:
            for message in entry.messages:
                if message.chat_id == chat_id:
                    return message
        return await self._store.get(room, chat_id)

    async def delete(self, room: str, chat_id: str) -> bool:
        async with self._exclusive(room) as entry:
            try:
                removed = await self._store.delete(room, chat_id)
            except StoreUnavailable:
                _cool(entry)
                raise
            if removed and entry.messages is not None:
                entry.messages = [m for m in entry.messages if m.chat_id != chat_id]
                entry.total -= 1
            return removed

    async def page(self, room: str, limit: int, before: str | None = None) -> ChatPage:
        entry = self._rooms.get(room)
        if entry is None or entry.messages is None:
            entry = await self._load(room)
        if entry.messages is not None:
            hit = _from_window(entry.messages, entry.total, limit, before)
            if hit is not None:
                return hit
        return await self._store.page(room, limit, before)

    async def purge_older_than(self, cutoff_ms: int) -> int:
        try:
            return await self._store.purge_older_than(cutoff_ms)
        finally:
            # Purged messages may sit in any window; a batch may have failed half-way.
            for room in list(self._rooms):
                self.invalidate(room)

    def invalidate(self, room: str) -> None:
        """Forget the room's window: its history changed elsewhere, or the room closed."""
        entry = self._rooms.get(room)
        if entry is None:
            return
        _cool(entry)
        if entry.users == 0:
            del self._rooms[room]

    async def _load(self, room: str) -> _Room:
        async with self._exclusive(room) as entry:
            if entry.messages is not None:
                return entry  # loaded by the call this one waited behind
            generation = entry.generation
            page = await self._store.page(room, self._window)
            if entry.generation == generation:
                entry.messages = list(page.messages)
                entry.total = page.total
            return entry

    @asynccontextmanager
    async def _entered(self, room: str) -> AsyncIterator[_Room]:
        """The room's entry, kept (not evicted) until the block ends."""
        entry = self._rooms.get(room)
        if entry is None:
            entry = self._rooms[room] = _Room()
        self._rooms.move_to_end(room)
        entry.users += 1
        try:
            yield entry
        finally:
            entry.users -= 1
            self._evict()

    @asynccontextmanager
    async def _exclusive(self, room: str) -> AsyncIterator[_Room]:
        """The room alone: after its adds in flight, before the operations that follow."""
        async with self._entered(room) as entry, entry.lock:
            await entry.idle.wait()  # no add can start while the lock is held
            yield entry

    def _evict(self) -> None:
        excess = len(self._rooms) - self._max_rooms
        if excess <= 0:
            return
        # Least recently used first; a room in use keeps its entry (and its lock).
        idle = [room for room, entry in self._rooms.items() if entry.users == 0]
        for room in idle[:excess]:
            del self._rooms[room]


def _cool(entry: _Room) -> None:
    entry.messages = None
    entry.generation += 1


def _from_window(
    window: list[ChatMessage], total: int, limit: int, before: str | None
) -> ChatPage | None:
    """The page from a warm window, or ``None`` when (part of) it lies in the store only."""
    if before is None:
        end = len(window)
    else:
        ids = [m.chat_id for m in window]
        if before not in ids:
            return None  # an older message, or an unknown one: the store decides
        end = ids.index(before)
    older_in_store = total > len(window)
    start = end - limit
    if start >= 0:
        return ChatPage(
            messages=window[start:end], total=total, has_more=start > 0 or older_in_store
        )
    if older_in_store:
        return None
    return ChatPage(messages=window[:end], total=total, has_more=False)
