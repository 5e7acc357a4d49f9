"""The soak scenario (issue 21): steady churn for minutes, failing if the server grows.

``rooms`` meetings run side by side, each in a loop: ``room_size`` members join a fresh
room, send ``add_chat`` and ``candidate`` frames at a modest rate for
``meeting_seconds``, then all leave, so rooms are created and closed, and connections
opened and closed, at a steady rate (the loops start staggered). Every ``interval``
seconds the server is sampled: RSS and open file descriptors from ``/proc/PID``, open
rooms, open connections and asyncio tasks from its ``/metrics``
(``callroom_rooms_active``, ``callroom_ws_connections``, ``callroom_asyncio_tasks``).

The clients are Python asyncio (aiohttp), not the Node generator of the throughput
scenarios: a soak offers tens of joins and a few hundred frames a second, which one
Python core handles easily, and its clients live and die with their meetings, which the
generator (a fixed set of connections opened once) does not model.

``check_growth`` is the verdict: after the warm-up, the median of the last third of the
samples against the median of the first third, for RSS, fds and tasks; and once the load
has stopped, rooms and connections back to the level before it, fds and tasks within a
small slack of it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import statistics
import time
from asyncio import Event
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from callroom import __version__
from callroom_bench.client import Protocol
from callroom_bench.report import machine
from callroom_bench.servers import ServerKind, pinned_generator, spawn
from callroom_bench.stats import process_rss_kb
from callroom_bench.target import BenchError, Minter, Target

JOIN_TIMEOUT_SECONDS = 30.0
QUIET_TIMEOUT_SECONDS = 30.0
"""How long the server may take, once the load stops, to close every room and socket."""


@dataclass(frozen=True)
class SoakParams:
    seconds: float
    rooms: int = 20
    room_size: int = 4
    meeting_seconds: float = 4.0
    chat_rate: float = 150.0
    signal_rate: float = 150.0
    interval: float = 5.0
    warmup: float = 30.0


@dataclass(frozen=True)
class Limits:
    """Growth allowed between the first and the last third of the steady samples, and
    between the quiet server before and after the load."""

    rss_fraction: float = 0.10
    rss_kb: int = 8192
    fds: int = 16
    tasks: int = 32
    quiet_fds: int = 8
    quiet_tasks: int = 8


@dataclass(frozen=True)
class Sample:
    seconds: float
    rss_kb: int
    fds: int
    tasks: int
    rooms: int
    connections: int


@dataclass
class Totals:
    joins: int = 0
    join_failures: int = 0
    leaves: int = 0
    chat_sent: int = 0
    candidates_sent: int = 0
    frames_received: int = 0
    errors: int = 0
    send_failures: int = 0
    farewells_lost: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)


def _median(values: Sequence[int]) -> float:
    return float(statistics.median(values))


def check_growth(
    steady: Sequence[Sample], before: Sample, after: Sample, limits: Limits = Limits()
) -> list[str]:
    """Why the run failed (an empty list: it passed). ``steady`` are the samples taken
    under load after the warm-up; ``before``/``after`` the quiet server around the load."""
    reasons: list[str] = []
    if len(steady) < 3:
        return [f"only {len(steady)} samples after the warm-up: run longer"]
    third = len(steady) // 3
    first, last = steady[:third], steady[-third:]
    rss_first = _median([s.rss_kb for s in first])
    rss_last = _median([s.rss_kb for s in last])
    rss_allowed = max(limits.rss_fraction * rss_first, limits.rss_kb)
    if rss_last - rss_first > rss_allowed:
        reasons.append(
            f"RSS grew from {rss_first:.0f} KiB to {rss_last:.0f} KiB "
            f"(more than {rss_allowed:.0f} KiB)"
        )
    for name, allowed in (("fds", limits.fds), ("tasks", limits.tasks)):
        start = _median([getattr(s, name) for s in first])
        end = _median([getattr(s, name) for s in last])
        if end - start > allowed:
            reasons.append(f"{name} grew from {start:.0f} to {end:.0f} (more than {allowed})")
    for name in ("rooms", "connections"):
        if getattr(after, name) != getattr(before, name):
            reasons.append(
                f"{name} did not return to {getattr(before, name)} after the load: "
                f"{getattr(after, name)}"
            )
    for name, allowed in (("fds", limits.quiet_fds), ("tasks", limits.quiet_tasks)):
        if getattr(after, name) - getattr(before, name) > allowed:
            reasons.append(
                f"quiet {name} went from {getattr(before, name)} to {getattr(after, name)} "
                f"(more than {allowed})"
            )
    return reasons


def parse_gauges(text: str, names: Sequence[str]) -> dict[str, float]:
    """The values of unlabelled gauges in Prometheus text."""
    wanted = set(names)
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            values[name] = float(value)
    missing = wanted - values.keys()
    if missing:
        raise BenchError(f"/metrics has no {', '.join(sorted(missing))}: is it callroom?")
    return values


class Sampler:
    """Reads one server's /proc entries and /metrics."""

    GAUGES = ("callroom_asyncio_tasks", "callroom_rooms_active", "callroom_ws_connections")

    def __init__(self, session: aiohttp.ClientSession, base_url: str, pid: int) -> None:
        self._session = session
        self._metrics_url = base_url.replace("ws", "http", 1).rstrip("/") + "/metrics"
        self._pid = pid
        self._start = time.monotonic()

    async def sample(self) -> Sample:
        async with self._session.get(self._metrics_url) as response:
            gauges = parse_gauges(await response.text(), self.GAUGES)
        return Sample(
            seconds=round(time.monotonic() - self._start, 1),
            rss_kb=process_rss_kb(self._pid),
            fds=len(os.listdir(f"/proc/{self._pid}/fd")),
            tasks=int(gauges["callroom_asyncio_tasks"]),
            rooms=int(gauges["callroom_rooms_active"]),
            connections=int(gauges["callroom_ws_connections"]),
        )

    async def quiet(self, before: Sample, limits: Limits) -> Sample:
        """Poll until rooms and connections are back to ``before`` and fds and tasks within
        the slack, or the deadline passes; the last sample either way."""
        deadline = time.monotonic() + QUIET_TIMEOUT_SECONDS
        while True:
            now = await self.sample()
            settled = (
                now.rooms == before.rooms
                and now.connections == before.connections
                and now.fds - before.fds <= limits.quiet_fds
                and now.tasks - before.tasks <= limits.quiet_tasks
            )
            if settled or time.monotonic() > deadline:
                return now
            await asyncio.sleep(0.5)


class Meetings:
    """The load: ``rooms`` meeting loops over one session."""

    def __init__(
        self, params: SoakParams, target: Target, session: aiohttp.ClientSession, run: str
    ) -> None:
        self.params = params
        self.totals = Totals()
        self._target = target
        self._session = session
        self._run = run
        self._stop = asyncio.Event()
        members = params.rooms * params.room_size
        self._send_interval = members / max(params.chat_rate + params.signal_rate, 1e-9)
        self._chat_share = params.chat_rate / max(params.chat_rate + params.signal_rate, 1e-9)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        await asyncio.gather(*(self._loop(slot) for slot in range(self.params.rooms)))

    async def _loop(self, slot: int) -> None:
        # Staggered starts: the meetings' joins and leaves spread over the cycle.
        stagger = self.params.meeting_seconds * slot / self.params.rooms
        if await self._wait(stagger):
            return
        for cycle in itertools.count():
            await self._meeting(f"soak-{self._run}-{slot}-{cycle}", slot, cycle)
            if self._stop.is_set():
                return

    async def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless stopped first; True when stopped."""
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def _join(self, room: str, index: int, client_id: str) -> aiohttp.ClientWebSocketResponse:
        ws = await self._session.ws_connect(self._target.url(room, index, client_id))
        first = await ws.receive(timeout=JOIN_TIMEOUT_SECONDS)
        if first.type is not aiohttp.WSMsgType.TEXT or b'"room_state"' not in first.data.encode():
            await ws.close()
            raise BenchError(f"{client_id} got {first.type.name} {str(first.data)[:120]}")
        return ws

    async def _meeting(self, room: str, slot: int, cycle: int) -> None:
        ids = [f"s{slot}c{cycle}m{m}" for m in range(self.params.room_size)]
        joined = await asyncio.gather(
            *(self._join(room, m, cid) for m, cid in enumerate(ids)), return_exceptions=True
        )
        sockets = [ws for ws in joined if isinstance(ws, aiohttp.ClientWebSocketResponse)]
        self.totals.joins += len(sockets)
        self.totals.join_failures += len(joined) - len(sockets)
        byes = [(f"{cid} leaves", asyncio.Event()) for cid in ids[: len(sockets)]]
        readers = [
            asyncio.create_task(self._read(ws, bye)) for ws, bye in zip(sockets, byes, strict=True)
        ]
        try:
            await asyncio.gather(
                *(self._send(ws, ids[(m + 1) % len(ids)]) for m, ws in enumerate(sockets))
            )
            # A socket's frames are handled in order and add_chat comes back to its sender
            # (SPEC §3.1): once every member has its last message back, every candidate
            # addressed to a member was handled before anyone leaves (else the server
            # answers target_not_found, rightly: the race would be the bench's).
            await asyncio.gather(
                *(self._bye(ws, bye) for ws, bye in zip(sockets, byes, strict=True))
            )
        finally:
            for ws in sockets:
                await ws.close()
                self.totals.leaves += 1
            await asyncio.gather(*readers, return_exceptions=True)

    async def _send(self, ws: aiohttp.ClientWebSocketResponse, peer: str) -> None:
        """Chat and candidate frames in the configured mix until the meeting ends."""
        end = time.monotonic() + self.params.meeting_seconds
        sent = 0
        while time.monotonic() < end:
            if await self._wait(self._send_interval):
                return
            sent += 1
            if (sent * self._chat_share) % 1 < self._chat_share:
                self.totals.chat_sent += 1
                frame: dict[str, Any] = {"event": "add_chat", "payload": {"chatContent": "soak"}}
            else:
                self.totals.candidates_sent += 1
                candidate = {"targetClientId": peer, "candidate": "candidate:soak", "sdpMid": "0"}
                frame = {"event": "candidate", "payload": candidate}
            try:
                await ws.send_str(orjson.dumps(frame).decode())
            except (aiohttp.ClientError, ConnectionError):
                self.totals.send_failures += 1  # the server closed it: a reason to fail
                return

    async def _bye(self, ws: aiohttp.ClientWebSocketResponse, bye: tuple[str, Event]) -> None:
        text, back = bye
        self.totals.chat_sent += 1
        try:
            await ws.send_str(
                orjson.dumps({"event": "add_chat", "payload": {"chatContent": text}}).decode()
            )
            await asyncio.wait_for(back.wait(), JOIN_TIMEOUT_SECONDS)
        except (aiohttp.ClientError, ConnectionError, TimeoutError):
            self.totals.farewells_lost += 1

    async def _read(self, ws: aiohttp.ClientWebSocketResponse, bye: tuple[str, Event]) -> None:
        async for message in ws:
            self.totals.frames_received += 1
            if message.type is aiohttp.WSMsgType.TEXT and bye[0] in message.data:
                bye[1].set()  # its own last message back
            if message.type is aiohttp.WSMsgType.TEXT and '"error"' in message.data:
                decoded = orjson.loads(message.data)
                if decoded.get("event") == "error":
                    self.totals.errors += 1
                    code = str(decoded.get("payload", {}).get("code"))
                    self.totals.error_codes[code] = self.totals.error_codes.get(code, 0) + 1


async def _soak(params: SoakParams, target: Target, limits: Limits, run: str) -> dict[str, Any]:
    if len(target.urls) != 1 or len(target.server_pids) != 1:
        raise BenchError("the soak watches one server: give one --url and its --server-pid")
    timeout = aiohttp.ClientTimeout(total=JOIN_TIMEOUT_SECONDS)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    load_before = os.getloadavg()  # a soak measures growth, not speed: the load is context
    async with aiohttp.ClientSession(timeout=timeout) as session:
        sampler = Sampler(session, target.urls[0], target.server_pids[0])
        before = await sampler.sample()
        meetings = Meetings(params, target, session, run)
        load = asyncio.create_task(meetings.run())
        samples: list[Sample] = []
        end = time.monotonic() + params.seconds
        while time.monotonic() < end and not load.done():
            await asyncio.sleep(min(params.interval, max(end - time.monotonic(), 0)))
            samples.append(await sampler.sample())
        meetings.stop()
        await load  # a crash of the load raises here
        after = await sampler.quiet(before, limits)
    steady = [s for s in samples if s.seconds >= params.warmup]
    reasons = check_growth(steady, before, after, limits)
    totals = meetings.totals
    if totals.join_failures:
        reasons.append(f"{totals.join_failures} joins failed")
    if totals.send_failures or totals.farewells_lost:
        lost = totals.send_failures + totals.farewells_lost
        reasons.append(f"{lost} sockets closed under the senders or their last message lost")
    if totals.errors:
        reasons.append(f"{totals.errors} error frames: {totals.error_codes}")
    return {
        "tool": "callroom bench",
        "version": __version__,
        "scenario": "soak",
        "started_at": started_at,
        "machine": machine() | {"load_average": [load_before, os.getloadavg()]},
        "params": asdict(params),
        "limits": asdict(limits),
        "before": asdict(before),
        "after": asdict(after),
        "steady_first": asdict(steady[0]) if steady else None,
        "steady_last": asdict(steady[-1]) if steady else None,
        "totals": asdict(totals),
        "samples": [asdict(s) for s in samples],
        "passed": not reasons,
        "reasons": reasons,
    }


async def soak(
    params: SoakParams,
    limits: Limits,
    run: str,
    urls: tuple[str, ...] = (),
    server_pids: tuple[int, ...] = (),
    key_file: Path | None = None,
    pin: bool = True,
) -> dict[str, Any]:
    """The soak against a given server (``urls``) or a callroom it spawns."""
    if urls:
        if key_file is None:
            raise BenchError("--key-file is needed with --url")
        target = Target("external", urls, Protocol.CALLROOM, Minter(key_file), server_pids)
        return await _soak(params, target, limits, run)
    async with spawn(ServerKind.CALLROOM, 1, pin) as server:
        minter = Minter(server.key_file)
        target = Target("callroom", server.urls, Protocol.CALLROOM, minter, server.pids)
        with pinned_generator(server.generator_cpu):
            report = await _soak(params, target, limits, run)
        return report | {"pinned": server.generator_cpu is not None}
