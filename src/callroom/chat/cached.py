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
in the store's order (insertion order). The store must commit concurrent adds in the order
they were called (it says so with ``adds_commit_in_call_order = True``, as
``SqlChatHistory`` does: one writer, one queue, group commit; ``MemoryChatHistory``'s adds
are done when called).

- The adds of a room run concurrently, so that they share the store's transactions (one
  room's burst is not one commit per message). ``submit`` hands an add to the store at
  once and keeps the window from a callback on the store's future: no coroutine per
  message (the node's chat path). Each add is appended to the window when it is
  answered, if every add of the room called before it was answered: the store's order is
  then the call order, which is the order of the appends. An add answered before an
  earlier one (the window cannot tell the store's order), or that fails or is given up (a
  failed commit may still have happened), turns the window cold instead; the next page
  reloads it, once no add is in flight.
- A delete or a window load takes the room to itself (its *turn*): it waits for the
  room's adds in flight, and whatever is called while it waits or runs (adds, other
  deletes and loads) waits in the room's *line*, in call order. When it ends, the adds at
  the head of the line go to the store, answering the futures their callers already hold
  (``submit(..., into=...)``: no extra hop, so their broadcasts keep their order), up to
  the next delete or load, which gets the turn. A place in line is taken when the call is
  made, so a room's operations run in the order they were called. Reads of a warm window
  wait for nothing.

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
from functools import partial
from typing import ClassVar

from callroom.chat.base import AddFuture, ChatHistory, ChatIdTaken, ChatMessage, ChatPage
from callroom.errors import StoreUnavailable


def _set_event() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


@dataclass(eq=False, slots=True)
class _Held:
    """An add called while a delete or load of its room ran or waited: it goes after."""

    room: str
    message: ChatMessage
    future: AddFuture  # the caller's; the store answers it once the add is released


@dataclass(eq=False, slots=True)
class _Room:
    users: int = 0  # operations using the entry (its turn, its adds): it stays while > 0
    messages: list[ChatMessage] | None = None  # the window, oldest first; None = cold
    total: int = 0  # the store's total for the room (meaningful while warm)
    generation: int = 0  # bumped by ``invalidate``: an older load does not install
    adding: deque[AddFuture] = field(default_factory=deque)  # adds in the store, in call order
    idle: asyncio.Event = field(default_factory=_set_event)  # set while ``adding`` is empty
    taken: bool = False  # a delete or load has the room to itself (its turn)
    # What was called after the delete or load that has the room, in call order: held
    # adds, and the turns (futures) of deletes and loads.
    line: deque[_Held | asyncio.Future[None]] = field(default_factory=deque)


class CachedChatHistory:
    """``ChatHistory`` with a per-room memory window in front of ``store`` (module docstring)."""

    adds_commit_in_call_order: ClassVar[bool] = True  # the store's order, kept

    def __init__(self, store: ChatHistory, window: int, *, max_rooms: int = 1000) -> None:
        """``store`` must commit concurrent adds in call order (``adds_commit_in_call_order``).

        ``max_rooms``: windows kept at most; the least recently used idle ones go first.
        """
        if window < 1 or max_rooms < 1:
            raise ValueError("window and max_rooms must be at least 1")
        if getattr(store, "adds_commit_in_call_order", False) is not True:
            raise ValueError("the store must commit concurrent adds in call order")
        self._store = store
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
        return await self.submit(room, message)

    def submit(
        self, room: str, message: ChatMessage, *, into: AddFuture | None = None
    ) -> AddFuture:
        """Hand the add to the store now, or hold it behind the room's delete or load.

        The window is kept by a callback on the add's future (``_stored``): no coroutine
        per message.
        """
        entry = self._enter(room)  # left by ``_stored`` (or ``_release``, if given up)
        if entry.taken or entry.line:
            future = into if into is not None else asyncio.get_running_loop().create_future()
            entry.line.append(_Held(room, message, future))
            return future
        return self._track(entry, self._store.submit(room, message, into=into))

    def _track(self, entry: _Room, future: AddFuture) -> AddFuture:
        """Count ``future``, an add in the store, in flight; keep the window when done.

        The entry stays (``users``) until then: evicting it with an add in flight would
        let a new entry load a window without that add.
        """
        entry.adding.append(future)
        entry.idle.clear()
        if future.done():  # a store that answers at once: the caller may not suspend
            self._stored(entry, future)
        else:
            future.add_done_callback(partial(self._stored, entry))
        return future

    def _stored(self, entry: _Room, future: AddFuture) -> None:
        """The store answered an add: count it out, keep the window, leave the entry."""
        in_order = entry.adding[0] is future  # every add called before it returned
        entry.adding.remove(future)
        if not entry.adding:
            entry.idle.set()
        try:
            self._keep(entry, future, in_order)
        finally:
            self._leave(entry)

    def _keep(self, entry: _Room, future: AddFuture, in_order: bool) -> None:
        """The window after an add was answered (module docstring)."""
        if future.cancelled():
            _cool(entry)  # an abandoned commit may still have happened
            return
        error = future.exception()
        if error is not None:
            if not isinstance(error, ChatIdTaken):
                _cool(entry)  # a failed commit may still have happened
            return
        stored, created = future.result()
        if created and entry.messages is not None:
            if in_order:
                entry.messages.append(stored)
                entry.total += 1
                del entry.messages[: -self._window]  # keep the newest ``window``
            else:
                _cool(entry)  # where it lies among the adds still in flight is unknown

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
        if entry is not None and entry.messages is not None:
            hit = _from_window(entry.messages, entry.total, limit, before)
        else:
            hit = await self._load(room, limit, before)
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

    async def _load(self, room: str, limit: int, before: str | None) -> ChatPage | None:
        """Load the room's window; the page from it, taken in the room's turn (before the
        adds called after this), or ``None`` when the page lies (partly) outside it."""
        async with self._exclusive(room) as entry:
            if entry.messages is None:  # else loaded by the call this one waited behind
                generation = entry.generation
                page = await self._store.page(room, self._window)
                if entry.generation == generation:
                    entry.messages = list(page.messages)
                    entry.total = page.total
            if entry.messages is None:
                return None
            return _from_window(entry.messages, entry.total, limit, before)

    def _enter(self, room: str) -> _Room:
        """The room's entry, kept (not evicted) until a matching ``_leave``."""
        entry = self._rooms.get(room)
        if entry is None:
            entry = self._rooms[room] = _Room()
        self._rooms.move_to_end(room)
        entry.users += 1
        return entry

    def _leave(self, entry: _Room) -> None:
        entry.users -= 1
        self._evict()

    @asynccontextmanager
    async def _exclusive(self, room: str) -> AsyncIterator[_Room]:
        """The room alone: after its adds in flight, before the operations called later.

        The place in line is taken when called (no suspension before it), so the
        operations of a room run in the order they were called.
        """
        entry = self._enter(room)
        try:
            if entry.taken or entry.line:
                turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                entry.line.append(turn)
                try:
                    await turn
                except asyncio.CancelledError:
                    if turn.done() and not turn.cancelled():
                        self._release(entry)  # it was given the room: pass it on
                    raise
            else:
                entry.taken = True
            try:
                await entry.idle.wait()  # the adds called before it are answered
                yield entry
            finally:
                self._release(entry)
        finally:
            self._leave(entry)

    def _release(self, entry: _Room) -> None:
        """The room's delete or load is done: release what waits behind it, in order."""
        entry.taken = False
        line = entry.line
        while line:
            waiting = line.popleft()
            if isinstance(waiting, _Held):
                if waiting.future.done():  # its caller gave up: it is not stored
                    self._leave(entry)
                else:
                    add = self._store.submit(waiting.room, waiting.message, into=waiting.future)
                    self._track(entry, add)
            elif not waiting.done():  # a turn whose caller gave up is skipped
                entry.taken = True
                waiting.set_result(None)
                return

    def _evict(self) -> None:
        excess = len(self._rooms) - self._max_rooms
        if excess <= 0:
            return
        # Least recently used first; a room in use keeps its entry (and its line).
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
