"""The live side of the model test (tests/integration/test_model_live.py): real clients
of one room on a ``Deployment``, the actions of a step, and the checks after it against
``RoomModel`` (tests/room_model.py; the checks are listed in the test's docstring)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.exceptions import ConnectionClosed

from callroom_testing import Client, TokenFactory, join_room, refused, room_url, wait_until
from deployment import Deployment, current_room, dropped, find_room, room_gone
from room_model import (
    WAITING_MAY_RECEIVE,
    Expected,
    RoomModel,
    membership,
    name,
    normal_view,
    summary,
    told,
)

Act = Callable[[], Awaitable[None]]
Frames = list[dict[str, Any]]
# No keepalive pings of the clients: websockets draws their payloads from ``random``,
# which hypothesis takes for a strategy using global randomness.
QUIET: dict[str, Any] = {"ping_interval": None}
SECONDS = 5.0  # the most a step's frames may take to arrive


class LiveRoom:
    def __init__(self, deploy: Deployment, make_token: TokenFactory, model: RoomModel) -> None:
        self.deploy = deploy
        self.make_token = make_token
        self.model = model
        self.key = f"zoom:{model.room_id}"
        self.clients: dict[str, Client] = {}
        self.views: dict[str, dict[str, Any]] = {}  # the last room_state each one got
        self.first: dict[str, Frames] = {}  # frames a step's action read already
        self.closing: dict[str, Client] = {}  # connections the step ends

    def token(self, cid: str) -> str:
        return self.make_token(cid, name(cid), ["host"] if cid == "hal" else None)

    async def _connect(self, cid: str) -> None:
        client, state = await join_room(self.deploy, self.token(cid), self.model.room_id, **QUIET)
        self.clients[cid] = client
        self.first[cid] = [{"event": "room_state", "payload": state}]

    # -- the actions of a step -----------------------------------------------------------

    def joins(self, cid: str) -> Act:
        return lambda: self._connect(cid)

    def refused(self, cid: str, code: str) -> Act:
        async def act() -> None:
            url = room_url(self.deploy, self.token(cid), self.model.room_id)
            status, body = await refused(url, **QUIET)
            assert (status, body["error"]) == (403, code), (cid, status, body)

        return act

    def leaves(self, cid: str, code: int) -> Act:
        async def act() -> None:
            client = self.clients.pop(cid)
            await client.close(code)
            await wait_until(self._gone(cid), SECONDS)

        return act

    def _gone(self, cid: str) -> Callable[[], Awaitable[bool]]:
        async def gone() -> bool:
            room = await find_room(self.deploy, self.key)
            return room is None or cid not in room.members

        return gone

    def reconnects(self, cid: str, abort: bool) -> Act:
        async def act() -> None:
            await self._drop(self.clients.pop(cid), abort)  # its place is kept (SPEC §2)
            await wait_until(lambda: dropped(self.deploy, cid, self.key), SECONDS)
            await self._connect(cid)

        return act

    def drops(self, cid: str, abort: bool) -> Act:
        async def act() -> None:
            await self._drop(self.clients.pop(cid), abort)
            await wait_until(lambda: dropped(self.deploy, cid, self.key), SECONDS)

        return act

    @staticmethod
    async def _drop(client: Client, abort: bool) -> None:
        """SPEC §2: a reloading tab's 1001, or a lost network."""
        if abort:
            client.ws.transport.abort()
        else:
            await client.close(1001)

    def takes_over(self, cid: str) -> Act:
        async def act() -> None:
            self.closing[cid] = self.clients.pop(cid)
            await self._connect(cid)

        return act

    def sends(self, cid: str, event: str, payload: dict[str, Any]) -> Act:
        async def act() -> None:
            await self.clients[cid].send(event, payload)

        return act

    # -- one step ------------------------------------------------------------------------

    async def step(self, actor: str | None, act: Act, exp: Expected) -> None:
        was_waiting = {cid for cid, view in exp.before.items() if view["role"] == "waiting"}
        await act()
        for cid in exp.closes:
            if cid not in self.closing:
                self.closing[cid] = self.clients.pop(cid)
        assert set(self.closing) == set(exp.closes), (set(self.closing), exp.closes)
        for cid, client in self.closing.items():
            await self._closed(cid, client, exp, waiting=cid in was_waiting)
        self.closing.clear()
        got = await self._collect(actor, exp)
        for cid, frames in got.items():
            self._check(cid, frames, exp, waiting=cid in was_waiting)
        await self._room_matches()

    async def _closed(self, cid: str, client: Client, exp: Expected, *, waiting: bool) -> None:
        """The frames a connection got up to its close, and the close code."""
        frames: Frames = []
        try:
            while True:
                frames.append(await client.next(SECONDS))
        except ConnectionClosed:
            pass
        assert client.ws.close_code == exp.closes[cid], (cid, client.ws.close_code, frames)
        got = [summary(f) for f in frames if f["event"] != "room_state"]
        assert got == exp.events.get(cid, []), (cid, got, exp.events.get(cid))
        if waiting:
            assert {f["event"] for f in frames} <= WAITING_MAY_RECEIVE, (cid, frames)
        self.views.pop(cid, None)

    async def _collect(self, actor: str | None, exp: Expected) -> dict[str, Frames]:
        """Every live client's frames of the step: the actor's first (its pong says its
        node carried its command out), then the others'; drained again while a client
        still lacks what it expects, until ``SECONDS`` (then the checks say what)."""
        got: dict[str, Frames] = {cid: self.first.pop(cid, []) for cid in self.clients}
        if actor in self.clients:
            got[actor] += await self.clients[actor].drain()
        deadline = time.monotonic() + SECONDS
        pending = [cid for cid in self.clients if cid != actor]
        while pending:
            drained = await asyncio.gather(*(self.clients[cid].drain() for cid in pending))
            for cid, frames in zip(pending, drained, strict=True):
                got[cid] += frames
            pending = [cid for cid in pending if not self._complete(cid, got[cid], exp)]
            if time.monotonic() > deadline:
                break
        return got

    def _complete(self, cid: str, frames: Frames, exp: Expected) -> bool:
        others = [f for f in frames if f["event"] != "room_state"]
        if len(others) < len(exp.events.get(cid, [])):
            return False
        if not self._view_changed(cid, exp):
            return True
        states = [f["payload"] for f in frames if f["event"] == "room_state"]
        return bool(states) and normal_view(states[-1]) == self.model.view(cid)

    def _view_changed(self, cid: str, exp: Expected) -> bool:
        before = exp.before.get(cid)
        return before is None or membership(before) != membership(self.model.view(cid))

    def _check(self, cid: str, frames: Frames, exp: Expected, *, waiting: bool) -> None:
        """Checks 1 to 3 of the test's docstring for one live client."""
        got = [summary(f) for f in frames if f["event"] != "room_state"]
        assert got == exp.events.get(cid, []), (cid, got, exp.events.get(cid))
        view = self.model.view(cid)
        states = [normal_view(f["payload"]) for f in frames if f["event"] == "room_state"]
        if self._view_changed(cid, exp):
            assert states, f"{cid}'s view changed but it got no room_state"
        if states:
            assert states[-1] == view, (cid, states[-1], view)
            self.views[cid] = states[-1]
        known = self.views[cid]
        for frame in frames:
            told(known, frame)
        if waiting or view["role"] == "waiting":
            assert {f["event"] for f in frames} <= WAITING_MAY_RECEIVE, (cid, frames)
            # The lobby is not told of a lock: its view's `locked` is as it was.
            known["locked"] = view["locked"]
        # One view for all: what the client holds is the model's view of it.
        assert known == view, (cid, known, view)

    async def _room_matches(self) -> None:
        """Check 5: the deployment's room is the model's."""
        model = self.model
        if not model.roles:
            assert await room_gone(self.deploy, self.key)
            return
        room = await current_room(self.deploy, self.key)
        roles = {cid: str(member.role) for cid, member in room.members.items()}
        assert roles == model.roles, (roles, model.roles)
        assert list(room.hands) == model.hands
        assert set(room.banned) == model.banned
        assert room.locked == model.locked
        connected = {cid: member.connected for cid, member in room.members.items()}
        assert connected == {cid: cid not in model.away for cid in model.roles}, connected
        if model.admitted():
            assert model.hosts(), "a room with admitted members has a host"
        assert set(self.clients) == set(model.here())

    async def close_all(self) -> None:
        """The end of an example: everyone leaves (1000), and the room is gone."""
        for cid in sorted(self.model.away):  # back first: no grace left running
            await self._connect(cid)
        for client in self.clients.values():
            await client.close(1000)
        self.clients.clear()
        await wait_until(lambda: room_gone(self.deploy, self.key), SECONDS)
