"""The memory window of the chat history: each room's newest messages (SPEC §6).

What is kept, per room: the newest ``size`` (``CHAT_HISTORY_LIMIT``) messages exactly as
the store holds them, oldest first, and the store's ``total`` for the room. A room is
*warm* once its window was installed from the store (``loaded``); until then, and after
anything that may have made it differ from the store (``forget``), it is *cold*, and
nothing is kept for it.

Pure data, no I/O, no asyncio. It is changed in one place only: the store's writer
(``callroom.chat.writer``), which runs every change of the history in one order and
tells the window of each once it is committed (``added``, ``deleted``), installs a
window it read in that same order (``loaded``), and forgets a room whose history it
cannot vouch for (a failed transaction may still have committed). That order is what
keeps the window the exact suffix of the store: no line, no generation. Reads
(``page``, ``get``) take what is kept at the moment they are made.

At most ``max_rooms`` rooms are kept; the least recently used goes first. Dropping a
window is always safe: the next read loads it anew, in the writer's order.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

from callroom.chat.base import ChatMessage, ChatPage


@dataclass(eq=False, slots=True)
class _Window:
    messages: deque[ChatMessage]  # oldest first, at most ``size`` (its ``maxlen``)
    total: int  # the store's total for the room


class Windows:
    """The rooms' windows (module docstring)."""

    __slots__ = ("_rooms", "max_rooms", "size")

    def __init__(self, size: int, *, max_rooms: int = 1000) -> None:
        if size < 1 or max_rooms < 1:
            raise ValueError("the window size and max_rooms must be at least 1")
        self.size = size
        self.max_rooms = max_rooms
        self._rooms: OrderedDict[str, _Window] = OrderedDict()

    def __contains__(self, room: object) -> bool:
        """Whether ``room`` is warm."""
        return room in self._rooms

    def __len__(self) -> int:
        return len(self._rooms)

    # --- reads ---------------------------------------------------------------------

    def page(self, room: str, limit: int, before: str | None = None) -> ChatPage | None:
        """``ChatHistory.page`` from the window, or ``None`` when the room is cold or
        (part of) the page lies in the store only."""
        window = self._use(room)
        if window is None:
            return None
        messages = list(window.messages)
        if before is None:
            end = len(messages)
        else:
            ids = [m.chat_id for m in messages]
            if before not in ids:
                return None  # an older message, or an unknown one: the store decides
            end = ids.index(before)
        older_in_store = window.total > len(messages)
        start = end - limit
        if start >= 0:
            has_more = start > 0 or older_in_store
            return ChatPage(messages=messages[start:end], total=window.total, has_more=has_more)
        if older_in_store:
            return None
        return ChatPage(messages=messages[:end], total=window.total, has_more=False)

    def get(self, room: str, chat_id: str) -> ChatMessage | None:
        """The message from the window, or ``None`` (cold, older, or no such message:
        only the store can tell)."""
        window = self._use(room)
        if window is not None:
            for message in window.messages:
                if message.chat_id == chat_id:
                    return message
        return None

    # --- changes, by the writer in its order -------------------------------------------

    def loaded(self, room: str, page: ChatPage) -> None:
        """Install ``page``, the store's newest ``size`` messages of ``room`` (and its
        total), read in the writer's order: the room is warm."""
        self._rooms[room] = _Window(deque(page.messages, maxlen=self.size), page.total)
        self._rooms.move_to_end(room)
        while len(self._rooms) > self.max_rooms:
            self._rooms.popitem(last=False)  # the least recently used

    def added(self, room: str, message: ChatMessage) -> None:
        """``message`` was committed as the newest of ``room``."""
        window = self._rooms.get(room)
        if window is not None:
            window.messages.append(message)  # the oldest falls out (``maxlen``)
            window.total += 1

    def deleted(self, room: str, chat_id: str) -> None:
        """A message of ``room`` was removed from the store (inside the window or not)."""
        window = self._rooms.get(room)
        if window is not None:
            kept = [m for m in window.messages if m.chat_id != chat_id]
            if len(kept) != len(window.messages):
                window.messages = deque(kept, maxlen=self.size)
            window.total -= 1

    def forget(self, room: str) -> None:
        """``room`` turns cold (its history changed unseen, or the room closed)."""
        self._rooms.pop(room, None)

    def forget_all(self) -> None:
        self._rooms.clear()

    def _use(self, room: str) -> _Window | None:
        window = self._rooms.get(room)
        if window is not None:
            self._rooms.move_to_end(room)
        return window
