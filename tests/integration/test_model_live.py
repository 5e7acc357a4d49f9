"""A stateful model test over live clients (issue 21): hypothesis drives several real
WebSocket clients through random joins, admissions, denials, chats, retries, deletes,
history reads, hands, screen shares, signaling, kicks, bans, promotions, demotions,
locks, leaves, reconnects and takeovers, on one node and on two nodes over Redis
(SPEC §7), and checks the server against a model of the room written from the SPEC
(tests/room_model.py).

After every step every connected client is drained (``Client.drain``: on two nodes it
waits for a barrier from each node) and:

1. each client received exactly the frames the model expects for it, in order
   (``room_state`` aside), and the connections the step ends were closed with their
   SPEC §3.4 code: the right recipients, nobody else;
2. a member whose view changed got a ``room_state``, and the last one it got is its
   view as the model has it (SPEC §3.2); so all admitted members hold one view of the
   room, hosts one view of the lobby too, and a room with admitted members has a host;
3. a waiting member received only what SPEC §3.2 lets the lobby see;
4. a command the SPEC refuses got its ``error`` code naming the event (participants
   trying host controls, the lobby chatting or signaling, a kick of oneself, a target
   of the wrong kind, a second screen sharer...), and a refused join its 403 code;
5. the room the deployment holds (on two nodes, its record in Redis) has the model's
   roles, hand queue, bans and lock; a room whose last member left is gone;
6. no node logged a line of level error or above (tests/log_lines.py).

The nodes live for the whole module on a loop of their own (tests/loop_thread.py); each
example plays in a fresh room. Size: ``CALLROOM_MODEL_EXAMPLES`` examples (default 80)
of up to ``CALLROOM_MODEL_STEPS`` steps (default 25) per deployment, ``CALLROOM_MODEL_SHRINK=1``
to shrink a failure; the figures of docs/security.md come from
``CALLROOM_MODEL_EXAMPLES=500 .venv/bin/pytest -s --timeout=0
tests/integration/test_model_live.py`` (``--timeout=0``: past pytest-timeout's 120 s).
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from callroom_testing import (
    AUDIENCE,
    ISSUER,
    JwksServer,
    SigningKey,
    TokenFactory,
    flush_test_redis,
)
from deployment import Deployment
from log_lines import LogLines
from loop_thread import LoopThread
from model_driver import Act, LiveRoom
from room_model import ADMITTED, SIGNALS, Expected, RoomModel

EXAMPLES = int(os.environ.get("CALLROOM_MODEL_EXAMPLES", "80"))
STEPS = int(os.environ.get("CALLROOM_MODEL_STEPS", "25"))
# Shrinking replays live examples for minutes: off unless asked for; a failure prints
# its steps as drawn (at most STEPS, plus the opening meeting).
SHRINK = os.environ.get("CALLROOM_MODEL_SHRINK", "") == "1"
PHASES = [Phase.explicit, Phase.reuse, Phase.generate, *([Phase.shrink] if SHRINK else [])]
USERS = ("ann", "bob", "cat", "dan", "eve", "hal")  # hal: a token host (SPEC §2)
HOST_ONLY = ("kick_participant", "promote_host", "lock_room", "accept_waiting", "demote_host")


class Nodes:
    """The JWKS and the nodes of one deployment, for the whole module."""

    def __init__(self, tmp: Path, count: int) -> None:
        self.tmp = tmp
        self.count = count
        self.key = SigningKey.generate("model-key")
        self.make_token = TokenFactory(self.key)
        self.jwks = JwksServer([self.key])
        self.deploy = Deployment([])

    async def start(self) -> None:
        from callroom.config import Settings
        from callroom.server.node import Node

        await self.jwks.start()
        extra: dict[str, Any] = {}
        if self.count > 1:
            extra["REDIS_URL"] = await flush_test_redis()
        for _ in range(self.count):
            settings_ = Settings(
                _env_file=None,
                AUTH_ISSUER=ISSUER,
                AUTH0_AUDIENCE=AUDIENCE,
                AUTH_JWKS_URL=self.jwks.url,
                HOST="127.0.0.1",
                PORT=0,
                DATABASE_URL=f"sqlite:///{self.tmp}/model.db",  # one store for all nodes
                SHUTDOWN_GRACE_SECONDS=3,
                # The model steps fast; the rate limits have tests of their own.
                RATE_LIMIT_PER_SECOND=100_000,
                RATE_LIMIT_BURST=100_000,
                MAX_CONNECTIONS_PER_IP=1000,
                **extra,
            )
            node = Node(settings_)
            await node.start()
            self.deploy.nodes.append(node)

    async def stop(self) -> None:
        for node in self.deploy.nodes:
            await node.stop()
        await self.jwks.stop()


@pytest.fixture(scope="module", params=["one_node", "two_nodes"])
def nodes(
    request: pytest.FixtureRequest,
    loop_thread: LoopThread,
    log_lines: LogLines,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Nodes]:
    started = Nodes(tmp_path_factory.mktemp("model"), 1 if request.param == "one_node" else 2)
    loop_thread.run(started.start())
    yield started
    loop_thread.run(started.stop())


class RoomMachine(RuleBasedStateMachine):
    """One example: a fresh room on the module's nodes, steps drawn by hypothesis."""

    nodes: Nodes
    loop: LoopThread
    figures: Counter[str]

    def __init__(self) -> None:
        super().__init__()
        self.model = RoomModel(f"model-{uuid.uuid4().hex[:12]}")
        self.live = LiveRoom(self.nodes.deploy, self.nodes.make_token, self.model)
        self.figures["examples"] += 1

    def run(self, what: str, actor: str | None, act: Act, exp: Expected) -> None:
        self.figures["steps"] += 1
        self.figures[what] += 1
        self.figures["errors expected"] += sum(
            frame[0] == "error" for frames in exp.events.values() for frame in frames
        )
        self.loop.run(self.live.step(actor, act, exp))

    def teardown(self) -> None:
        self.loop.run(self.live.close_all())

    # -- drawing ----------------------------------------------------------------------

    @staticmethod
    def pick(data: st.DataObject, among: list[str]) -> str:
        return data.draw(st.sampled_from(among))

    def member(self, data: st.DataObject) -> str:
        return self.pick(data, self.model.here())

    def host(self, data: st.DataObject) -> str:
        return self.pick(data, self.model.here("host"))

    def fit(self, data: st.DataObject, fitting: list[str]) -> str:
        """Mostly a member the command fits (so that most commands are carried out),
        else any connected member (the SPEC's refusals)."""
        odds: int = data.draw(st.integers(0, 3), label="fitting?")
        if fitting and odds > 0:
            return self.pick(data, fitting)
        return self.member(data)

    # -- joining and leaving ------------------------------------------------------------

    @initialize(admitted=st.integers(0, 3), waiting=st.integers(0, 1))
    def meeting(self, admitted: int, waiting: int) -> None:
        """ann hosts; ``admitted`` users let in through the lobby, ``waiting`` knock:
        a busy room from the start, so that handoffs and host controls come early."""
        self.run("join", None, self.live.joins("ann"), self.model.join("ann", False))
        for cid in USERS[1 : 1 + admitted + waiting]:
            self.run("join", None, self.live.joins(cid), self.model.join(cid, False))
        for cid in USERS[1 : 1 + admitted]:
            exp = self.model.accept("ann", cid)
            self.command("accept_waiting", "ann", {"clientId": cid}, exp)

    @rule(data=st.data())
    def join(self, data: st.DataObject) -> None:
        outside = [cid for cid in USERS if cid not in self.model.roles]
        if not outside:
            return
        cid = self.pick(data, outside)
        code = self.model.refusal(cid, cid == "hal")
        if code is not None:
            self.run(
                f"join refused {code}", None, self.live.refused(cid, code), self.model.expect()
            )
            return
        self.run("join", None, self.live.joins(cid), self.model.join(cid, cid == "hal"))

    @precondition(lambda self: bool(self.model.here()))
    @rule(data=st.data(), code=st.sampled_from([1000, 1001]))
    def leave(self, data: st.DataObject, code: int) -> None:
        cid = self.fit(data, self.model.here("host"))  # mostly a host: the handoff (SPEC §2)
        if self.model.roles[cid] != "waiting":
            code = 1000  # an admitted member's 1001 is a drop: ``reconnect``
        self.run("leave", None, self.live.leaves(cid, code), self.model.leave(cid))

    @precondition(lambda self: bool(self.model.here(*ADMITTED)))
    @rule(data=st.data(), abort=st.booleans())
    def reconnect(self, data: st.DataObject, abort: bool) -> None:
        cid = self.pick(data, self.model.here(*ADMITTED))
        self.run("reconnect", None, self.live.reconnects(cid, abort), self.model.expect())

    @precondition(lambda self: bool(self.model.here(*ADMITTED)))
    @rule(data=st.data(), abort=st.booleans())
    def drop(self, data: st.DataObject, abort: bool) -> None:
        """A drop that lasts: the member stays away (in its grace) while others act."""
        cid = self.pick(data, self.model.here(*ADMITTED))
        self.run("drop", None, self.live.drops(cid, abort), self.model.drop(cid))

    @precondition(lambda self: bool(self.model.away))
    @rule(data=st.data())
    def come_back(self, data: st.DataObject) -> None:
        cid = self.pick(data, sorted(self.model.away))
        self.run("come back", None, self.live.joins(cid), self.model.back(cid))

    @precondition(lambda self: bool(self.model.here()))
    @rule(data=st.data())
    def takeover(self, data: st.DataObject) -> None:
        cid = self.member(data)
        exp = self.model.expect()
        exp.closes[cid] = 4009
        self.run("takeover", None, self.live.takes_over(cid), exp)

    # -- commands -------------------------------------------------------------------------

    def command(self, what: str, actor: str, payload: dict[str, Any], exp: Expected) -> None:
        event = what.split(" ")[0]
        self.run(what, actor, self.live.sends(actor, event, payload), exp)

    @precondition(lambda self: bool(self.model.having("waiting")))
    @rule(data=st.data())
    def knock(self, data: st.DataObject) -> None:
        cid = self.fit(data, self.model.having("waiting"))
        self.command("request_waiting", cid, {}, self.model.knock(cid))

    @precondition(lambda self: bool(self.model.here("host") and self.model.having("waiting")))
    @rule(data=st.data(), admit=st.booleans())
    def answer_knock(self, data: st.DataObject, admit: bool) -> None:
        host = self.host(data)
        target = self.fit(data, self.model.having("waiting"))
        if admit:
            self.command(
                "accept_waiting", host, {"clientId": target}, self.model.accept(host, target)
            )
        else:
            self.command("deny_waiting", host, {"clientId": target}, self.model.deny(host, target))

    @precondition(lambda self: bool(self.model.here()))
    @rule(data=st.data(), retry=st.booleans())
    def chat(self, data: st.DataObject, retry: bool) -> None:
        cid = self.fit(data, self.model.here(*ADMITTED))
        own = [chat_id for chat_id, author in self.model.chats.items() if author == cid]
        if own and retry:  # a retry of one of its messages
            chat_id = self.pick(data, own)
        else:
            self.figures["chat ids"] += 1
            chat_id = f"m{self.figures['chat ids']}"
        payload = {"chatContent": f"text of {chat_id}", "chatId": chat_id}
        self.command(
            "add_chat", cid, payload, self.model.chat(cid, chat_id, payload["chatContent"])
        )

    @precondition(lambda self: bool(self.model.here() and (self.model.chats or self.model.deleted)))
    @rule(data=st.data())
    def delete_chat(self, data: st.DataObject) -> None:
        cid = self.fit(data, self.model.here(*ADMITTED))
        chat_id = self.pick(data, [*self.model.chats, *self.model.deleted])
        self.command("delete_chat", cid, {"chatId": chat_id}, self.model.delete(cid, chat_id))

    @precondition(lambda self: bool(self.model.here()))
    @rule(data=st.data())
    def recent_chats(self, data: st.DataObject) -> None:
        cid = self.fit(data, self.model.here(*ADMITTED))
        self.command("get_recent_chats", cid, {}, self.model.recent(cid))

    @precondition(lambda self: bool(self.model.here()))
    @rule(data=st.data(), raise_it=st.booleans())
    def hand(self, data: st.DataObject, raise_it: bool) -> None:
        cid = self.fit(data, self.model.here(*ADMITTED))
        if raise_it:
            self.command("raise_hand", cid, {}, self.model.raise_hand(cid))
            return
        target = self.pick(data, [cid, *self.model.hands])
        payload = {"clientId": target} if target != cid else {}
        self.command("lower_hand", cid, payload, self.model.lower_hand(cid, target))

    @precondition(lambda self: bool(self.model.here("participant")))
    @rule(data=st.data())
    def request_share(self, data: st.DataObject) -> None:
        cid = self.fit(data, self.model.here("participant"))
        self.command("request_screenshare", cid, {}, self.model.request_share(cid))

    @precondition(lambda self: bool(self.model.here("host") and self.model.having("participant")))
    @rule(data=st.data(), grant=st.booleans())
    def answer_share(self, data: st.DataObject, grant: bool) -> None:
        host = self.host(data)
        target = self.fit(data, self.model.having("participant"))
        payload = {"clientId": target}
        if grant:
            self.command("accept_screenshare", host, payload, self.model.accept_share(host, target))
        else:
            self.command("deny_screenshare", host, payload, self.model.deny_share(host, target))

    @precondition(lambda self: bool(self.model.here()))
    @rule(data=st.data())
    def stop_share(self, data: st.DataObject) -> None:
        cid = self.fit(data, self.model.here("screenshare", "host"))
        target = self.pick(data, [cid, *self.model.having("screenshare")])
        payload = {"clientId": target} if target != cid else {}
        self.command("stop_screenshare", cid, payload, self.model.stop_share(cid, target))

    @precondition(lambda self: bool(self.model.here()))
    @rule(data=st.data(), event=st.sampled_from(sorted(SIGNALS)))
    def signal(self, data: st.DataObject, event: str) -> None:
        cid = self.fit(data, self.model.here(*ADMITTED))
        target = self.fit(data, [c for c in self.model.admitted() if c != cid])
        payload = {"targetClientId": target, **SIGNALS[event]}
        self.command(event, cid, payload, self.model.signal(cid, event, target))

    @precondition(lambda self: bool(self.model.here("host")))
    @rule(data=st.data(), ban=st.booleans())
    def kick(self, data: st.DataObject, ban: bool) -> None:
        host = self.host(data)
        target = self.fit(data, [c for c in self.model.roles if c != host])
        what = "kick_participant ban" if ban else "kick_participant"
        payload = {"clientId": target, "ban": ban}
        self.command(what, host, payload, self.model.kick(host, target, ban))

    @precondition(lambda self: bool(self.model.here("host") and self.model.banned))
    @rule(data=st.data())
    def unban(self, data: st.DataObject) -> None:
        host = self.host(data)
        target = self.fit(data, sorted(self.model.banned))
        self.command(
            "unban_participant", host, {"clientId": target}, self.model.unban(host, target)
        )

    @precondition(lambda self: bool(self.model.here("host")))
    @rule(data=st.data(), promote=st.booleans())
    def promote_or_demote(self, data: st.DataObject, promote: bool) -> None:
        host = self.host(data)
        fitting = self.model.having("participant", "screenshare") if promote else self.model.hosts()
        target = self.fit(data, [c for c in fitting if c != host])
        payload = {"clientId": target}
        if promote:
            self.command("promote_host", host, payload, self.model.promote(host, target))
        else:
            self.command("demote_host", host, payload, self.model.demote(host, target))

    @precondition(lambda self: bool(self.model.here("host")))
    @rule(data=st.data(), locked=st.booleans())
    def lock(self, data: st.DataObject, locked: bool) -> None:
        host = self.host(data)
        event = "lock_room" if locked else "unlock_room"
        self.command(event, host, {}, self.model.lock(host, locked))

    @precondition(lambda self: len(self.model.here()) > len(self.model.here("host")))
    @rule(data=st.data(), event=st.sampled_from(HOST_ONLY))
    def non_host_tries_a_host_control(self, data: st.DataObject, event: str) -> None:
        non_hosts = [c for c in self.model.here() if self.model.roles[c] != "host"]
        actor = self.pick(data, non_hosts)
        target = self.member(data)
        exp = self.model.expect().error(actor, "forbidden", event)
        self.command(f"{event} by a non-host", actor, {"clientId": target}, exp)


def test_the_room_behaves_as_its_model_under_random_steps(
    nodes: Nodes, loop_thread: LoopThread, log_lines: LogLines
) -> None:
    since = len(log_lines.lines)
    figures: Counter[str] = Counter()
    RoomMachine.nodes = nodes
    RoomMachine.loop = loop_thread
    RoomMachine.figures = figures
    run_state_machine_as_test(
        RoomMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            phases=PHASES,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    print(f"\nmodel ({len(nodes.deploy.nodes)} node(s)): {sorted(figures.items())}")
    assert figures["examples"] >= 1
    assert figures["steps"] >= figures["examples"]
    assert not log_lines.errors(since), log_lines.errors(since)  # 6: no fault of a node
