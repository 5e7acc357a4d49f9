"""The one ordering point of the chat history: the store's writer (SPEC §3.1, §6, §8).

Every change of a store's history goes through its writer, in the order it was called:
adds (group committed), deletes, retention purge batches, and, when the store keeps the
memory window (``callroom.chat.window``), the reads that install a room's window. The
writer runs them one after the other, and tells the window of each change once it is
committed, before its caller hears of it. Hence, with nothing else to keep in step:

- adds commit in the order they were called (the history order: the table's ids);
- the window is the exact suffix of the store between any two steps of the writer: a
  window is installed from a read made in the writer's order, and every change
  committed after that read reaches it in commit order;
- an acknowledged message (SPEC §8: its future resolves only after its commit) is
  already in its room's window when its caller hears of it.

A step that fails (store down, timeout, failed commit) may still have committed: the
windows it touched are forgotten; the next read loads them anew.

**Group commit.** A commit costs one sync of the log (about a millisecond): one
transaction per message would cap a store at about a thousand adds a second. The writer
stores the adds queued one after the other (at most ``max_batch``) in ONE transaction,
then answers each caller with its own result, each only after that commit. It takes
whatever is queued when it is free, but starts a batch no sooner than ``commit_interval``
(10 ms) after the previous one started, unless ``max_batch`` adds wait: an add after a
quiet spell commits at once, and under load the store makes at most 100 commits a
second. Why: a commit has a fixed cost (on SQLite about 0.25 ms of the writer thread's
CPU, plus the hand-off to that thread) besides each row's, and at the rates where one
core saturates, commits that took only what queued during the previous one held 3-4
messages. The price: at most 10 ms more latency under load (docs/performance.md,
finding 10).

- Each caller gets what a lone ``add`` would have given it, in queue order: the first add
  of a (room, chat_id) in a batch may insert; a later one is decided against it (the
  same sender's retry gets the stored message, another sender's ``ChatIdTaken``).
- A batch that fails stores none of its messages; each of its callers gets a
  ``StoreUnavailable("store")`` of its own.
- No task or coroutine per message (the node's chat path): ``submit`` queues and returns
  a future. The writer is one task, started by a call on an empty queue and ended when
  the queue is empty again: an idle store runs no task.
- A caller that gives up cancels its future: its step is skipped unless already taken.
- ``close`` lets the step in flight finish (its callers get their real results) and
  fails what is queued with ``StoreUnavailable("store")``; a call during ``close`` fails
  at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

from callroom.chat.base import AddFuture, ChatIdTaken, ChatMessage, ChatPage
from callroom.chat.models import Key
from callroom.chat.window import Windows
from callroom.errors import StoreUnavailable

log = logging.getLogger(__name__)

PART: Final = "store"
MAX_BATCH: Final = 500  # messages per group-commit transaction
# Seconds from the start of one group commit to the start of the next (module docstring).
COMMIT_INTERVAL: Final = 0.01

_T = TypeVar("_T")


class Durable(Protocol):
    """What the writer runs on the store: each call one transaction.

    A store failure raises ``StoreUnavailable``; nothing is then written (though a failed
    commit may have happened).
    """

    async def insert(
        self, adds: Sequence[tuple[str, ChatMessage]]
    ) -> tuple[set[Key], dict[Key, ChatMessage]]:
        """Insert the messages (unique keys, in order); the keys inserted and the stored
        message of every other key."""

    async def delete(self, room: str, chat_id: str) -> bool: ...

    async def purge(self, cutoff_ms: int, limit: int) -> int:
        """Delete at most ``limit`` messages older than ``cutoff_ms``; how many."""

    async def page(self, room: str, limit: int, before: str | None = None) -> ChatPage: ...


@dataclass(eq=False, slots=True)
class _Add:
    room: str
    message: ChatMessage
    future: AddFuture


@dataclass(eq=False, slots=True)
class _Run:
    """Any other step (a delete, a purge batch, a window load): ``work`` does it, and what
    it does to the windows, in the writer's turn; ``future`` gets its outcome."""

    work: Callable[[], Awaitable[Any]]
    future: asyncio.Future[Any]


@dataclass(eq=False, slots=True)
class _Forget:
    room: str


_Step = _Add | _Run | _Forget


class ChatWriter:
    """The store's writer (module docstring)."""

    def __init__(
        self,
        durable: Durable,
        windows: Windows | None = None,
        *,
        max_batch: int = MAX_BATCH,
        commit_interval: float = COMMIT_INTERVAL,
        on_commit: Callable[[int, float], None] | None = None,
    ) -> None:
        """``windows``: the memory window to keep, if any.

        ``max_batch``: messages stored per transaction. ``commit_interval``: seconds
        from the start of one group commit to the start of the next, unless
        ``max_batch`` adds wait (0: take what is queued when free).
        ``on_commit(messages, seconds)`` is told of every group commit that succeeded
        (for metrics): how many adds it answered and how long storing them took.
        """
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if commit_interval < 0:
            raise ValueError("commit_interval must not be negative")
        self._durable = durable
        self.windows = windows
        self._max_batch = max_batch
        self._commit_interval = commit_interval
        self._on_commit = on_commit
        self._queue: deque[_Step] = deque()
        self._adds = 0  # ``_Add`` steps in the queue
        self._next_batch_at = 0.0  # ``time.monotonic()`` before which no batch starts
        self._pause: asyncio.Future[None] | None = None  # the wait for that time
        self._current: _Run | _Forget | None = None  # the step in flight, if not a batch
        self._closing = False
        self.task: asyncio.Task[None] | None = None
        """The writer's task while it runs (for tests and diagnostics)."""

    # --- the calls, each queued in call order -------------------------------------------

    def submit(
        self, room: str, message: ChatMessage, *, into: AddFuture | None = None
    ) -> AddFuture:
        """Queue an add; the future is answered after the commit that holds it."""
        future = into if into is not None else asyncio.get_running_loop().create_future()
        if self._closing:
            _settle(future, _unavailable("chat store closed"))
            return future
        self._queue.append(_Add(room, message, future))
        self._adds += 1
        if self._pause is not None and self._adds >= self._max_batch:
            _wake(self._pause)  # a full batch waits for nothing
        if self.task is None:
            self._start()
        return future

    async def delete(self, room: str, chat_id: str) -> bool:
        """Delete a message, after every change called before; whether it was there."""

        async def work() -> bool:
            try:
                removed = await self._durable.delete(room, chat_id)
            except Exception:
                self._forget(room)  # a failed commit may still have happened
                raise
            if removed and self.windows is not None:
                self.windows.deleted(room, chat_id)
            return removed

        return await self._call(work)

    async def purge(self, cutoff_ms: int, limit: int) -> int:
        """Delete at most ``limit`` messages older than ``cutoff_ms``; how many."""

        async def work() -> int:
            try:
                purged = await self._durable.purge(cutoff_ms, limit)
            except Exception:
                self._forget(None)  # a failed commit may still have happened
                raise
            if purged:
                self._forget(None)  # purged messages may sit in any window
            return purged

        return await self._call(work)

    async def load(self, room: str) -> None:
        """Install ``room``'s window from the store, after every change called before
        (nothing when it is warm by then, or when no window is kept)."""
        windows = self.windows
        if windows is None:
            return

        async def work() -> None:
            if room not in windows:  # (else loaded by a load called before)
                windows.loaded(room, await self._durable.page(room, windows.size))

        await self._call(work)

    def forget(self, room: str) -> None:
        """Turn ``room``'s window cold now, and again after a load queued before."""
        self._forget(room)
        if self.task is not None and self.windows is not None:
            self._queue.append(_Forget(room))

    async def close(self) -> None:
        """Finish the step in flight, fail what is still queued, forget every window."""
        self._closing = True
        if self._pause is not None:
            _wake(self._pause)  # what is still queued fails now, not after the interval
        try:
            if self.task is not None:
                # The writer stops after its step and fails what is still queued.
                # ``wait`` and not ``await``: a cancelled ``close`` must not cancel the
                # writer in the middle of a commit.
                await asyncio.wait((self.task,))
        finally:
            self._closing = False
            self._forget(None)  # others may write while the store is closed

    async def _call(self, work: Callable[[], Awaitable[_T]]) -> _T:
        if self._closing:
            raise _unavailable("chat store closed")
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Run(work, future))
        if self.task is None:
            self._start()
        return await future

    def _start(self) -> None:
        task = asyncio.create_task(self._run(), name="chat-store-writer")
        task.add_done_callback(self._done)
        self.task = task

    # --- the writer task -----------------------------------------------------------------

    async def _run(self) -> None:
        """One step after the other, in queue order, until the queue is empty."""
        batch: list[_Add] = []
        finished = False
        try:
            while self._queue and not self._closing:
                step = self._queue[0]
                if not isinstance(step, _Add):
                    self._queue.popleft()
                    self._current = step
                    await self._run_step(step)
                    self._current = None
                    continue
                wait = self._next_batch_at - time.monotonic()
                if wait > 0 and self._adds < self._max_batch:
                    await self._gather(wait)
                    if self._closing:
                        break  # as the loop's test would (nothing left the queue)
                self._next_batch_at = time.monotonic() + self._commit_interval
                batch = self._take_batch()
                if batch:  # (empty when every caller taken had given up)
                    await self._commit(batch)
                    batch = []
            finished = not self._queue
        finally:
            # Stopped by ``close``, or cancelled (the event loop is closing) in the middle
            # of a step: nobody will run what is left.
            self._stopped(batch, cut_short=not finished)

    async def _gather(self, seconds: float) -> None:
        """Let adds queue for ``seconds``, or until ``close`` or a full batch ends the wait."""
        loop = asyncio.get_running_loop()
        pause = self._pause = loop.create_future()
        timer = loop.call_later(seconds, _wake, pause)
        try:
            await pause
        finally:
            timer.cancel()
            self._pause = None

    def _take_batch(self) -> list[_Add]:
        """The adds at the head of the queue whose callers still wait, at most
        ``max_batch``. A forget among them is applied at once: whether before or after
        these adds, the room ends cold."""
        batch: list[_Add] = []
        queue = self._queue
        while queue and len(batch) < self._max_batch:
            step = queue[0]
            if type(step) is _Forget:
                queue.popleft()
                self._forget(step.room)
                continue
            if not isinstance(step, _Add):
                break
            queue.popleft()
            self._adds -= 1
            if not step.future.done():
                batch.append(step)
        return batch

    async def _commit(self, batch: Sequence[_Add]) -> None:
        """Store ``batch`` in one transaction; keep the windows; answer each caller."""
        # The first add of a (room, chat_id) in queue order is the one that may insert; a
        # later one in the batch is decided against it, as if it had come in a later batch.
        first: dict[Key, _Add] = {}
        for add in batch:
            first.setdefault((add.room, add.message.chat_id), add)
        started = time.perf_counter()
        windows = self.windows
        try:
            inserted, existing = await self._durable.insert(
                [(add.room, add.message) for add in first.values()]
            )
        except Exception as exc:
            if not isinstance(exc, StoreUnavailable):
                # Not a store failure but a bug: its callers must not hang.
                log.error("chat store batch failed", exc_info=exc)
            if windows is not None:
                for room in {add.room for add in batch}:
                    windows.forget(room)  # a failed commit may still have happened
            for add in batch:
                _settle(add.future, _unavailable("chat store unavailable", exc))
            return
        if self._on_commit is not None:
            self._on_commit(len(batch), time.perf_counter() - started)
        for add in batch:
            key = (add.room, add.message.chat_id)
            winner = first[key]
            if key in inserted:
                if winner is add:
                    if windows is not None:
                        windows.added(add.room, add.message)  # commit order: queue order
                    _settle(add.future, (add.message, True))
                    continue
                stored = winner.message
            else:
                stored = existing[key]
            if stored.client_id != add.message.client_id:
                _settle(add.future, ChatIdTaken(add.message.chat_id))
            else:
                _settle(add.future, (stored, False))  # a retry: the stored message

    async def _run_step(self, step: _Run | _Forget) -> None:
        if isinstance(step, _Forget):
            self._forget(step.room)
        elif not step.future.done():  # else its caller gave up: it is not run
            try:
                outcome = await step.work()
            except Exception as exc:
                outcome = exc
            _settle(step.future, outcome)

    def _forget(self, room: str | None) -> None:
        """Turn ``room`` (``None``: every room) cold."""
        if self.windows is None:
            return
        if room is None:
            self.windows.forget_all()
        else:
            self.windows.forget(room)

    def _done(self, task: asyncio.Task[None]) -> None:
        """A writer cancelled before it ever ran skipped its ``finally``: do it here."""
        if self.task is task:
            self._stopped([], cut_short=True)

    def _stopped(self, batch: Sequence[_Add], *, cut_short: bool) -> None:
        self.task = None
        current, self._current = self._current, None
        left = [*batch, *([current] if current is not None else []), *self._queue]
        self._queue.clear()
        self._adds = 0
        if cut_short:
            self._forget(None)  # the step cut short may still have committed
        for step in left:
            if not isinstance(step, _Forget):
                _settle(step.future, _unavailable("chat store stopped"))


def _unavailable(message: str, cause: BaseException | None = None) -> StoreUnavailable:
    """A ``StoreUnavailable`` of its own for each caller."""
    error = StoreUnavailable(PART, message)
    error.__cause__ = cause
    return error


def _settle(future: asyncio.Future[Any], outcome: object) -> None:
    if future.done():
        return  # the caller gave up (cancelled)
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _wake(pause: asyncio.Future[None]) -> None:
    if not pause.done():
        pause.set_result(None)
