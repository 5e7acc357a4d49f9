"""Members' commands in the runtime (SPEC §3.1): signaling at once, room commands as
transitions, chat and token refreshes through ``RoomChat``.

Signaling changes nothing of the room: it is checked against the replica and published
to the node holding the target only, behind the member's earlier frames. A room command
is a transition (``callroom.room.placement.command``): on a store that never waits (one
node) it runs in the frame's own turn (``run_now``); otherwise in the member's receive
loop (``run_awaiting``), which then waits until this node's replica carried it out, so
the member's next frame meets the room as the command left it.
"""

from __future__ import annotations

from typing import get_args

from callroom.room import core, placement
from callroom.room.commands import Command, Ping, Signal
from callroom.room.encode import PONG_FRAME_BYTES, encode_bytes
from callroom.room.model import RoomRules, Send
from callroom.room.record import RoomRecord, session_id
from callroom.runtime.chat import AWAITED_CHAT_COMMANDS, RoomChat
from callroom.runtime.messages import Delivery
from callroom.runtime.peer import Peer
from callroom.runtime.ports import RoomBus
from callroom.runtime.refusals import RESTORING, UNCERTAIN, require_bus, room_unavailable
from callroom.runtime.replicas import Replicas
from callroom.runtime.resync import Resync
from callroom.runtime.transitions import Transitions
from callroom.server.audit import audit_command
from callroom.server.framing import text_frame

PONG_BYTES = text_frame(PONG_FRAME_BYTES)
# Commands that change nothing of the room: checked against the replica, run at once.
AT_ONCE: frozenset[type[Command]] = frozenset({Ping, Signal})
ROOM_COMMANDS: frozenset[type[Command]] = (
    frozenset(t for t in get_args(Command) if t not in AT_ONCE and t not in RoomChat.submitted)
    - AWAITED_CHAT_COMMANDS
)


class RoomCommands:
    """The commands of one node's members."""

    def __init__(
        self,
        node_id: str,
        rules: RoomRules,
        *,
        replicas: Replicas,
        transitions: Transitions,
        bus: RoomBus,
        chat: RoomChat,
        resync: Resync,
        at_once: bool,
    ) -> None:
        self.node_id = node_id
        self.rules = rules
        self.replicas = replicas
        self.transitions = transitions
        self.bus = bus
        self.chat = chat
        self.resync = resync
        self.at_once = at_once
        # What the WebSocket module runs in the member's task, in the order of
        # its frames (they await the store or the identity provider); every other
        # command runs at once (``run_now``), ``add_chat`` through ``submit_chat``.
        self.awaiting: frozenset[type[Command]] = AWAITED_CHAT_COMMANDS | (
            frozenset() if at_once else ROOM_COMMANDS
        )

    def run_now(self, peer: Peer, command: Command) -> None:
        """``ping``; signaling checked against the replica (SPEC §3.1: to the target
        only), published to the target's node; or a room command on one node."""
        if type(command) is Ping:
            peer.send(PONG_BYTES)
            return
        if type(command) is not Signal:
            self._command_at_once(peer, command)
            return
        key = peer.room_key
        record = self.replicas.member_record(peer)
        effects = core.handle(record.room, peer.client_id, command, self.rules)
        require_bus(self.bus, key)
        for action in effects.actions:
            if isinstance(action, Send):
                # A signal has one recipient: to the node holding it only.
                delivery = Delivery(action.recipients, encode_bytes(action.event, action.payload))
                self.bus.publish_to_holders(key, delivery, record.sessions)

    def _command_at_once(self, peer: Peer, command: Command) -> None:
        self.replicas.member_room(peer, core.event_name(command))
        cid = peer.client_id
        session = session_id(self.node_id, peer.conn_id)
        rules = self.rules
        committed = self.transitions.run_at_once(
            peer.room_key, lambda record: placement.command(record, cid, session, command, rules)
        )
        if committed is not None:
            audit_command(cid, peer.room_key, command)  # SPEC §9: it took effect

    async def run_awaiting(self, peer: Peer, command: Command) -> None:
        """Run a command of ``awaiting``; rule violations raise ProtocolError (SPEC §3.3)."""
        if type(command) in AWAITED_CHAT_COMMANDS:
            await self.chat.run(peer, command)
            return
        event = core.event_name(command)
        self.replicas.member_room(peer, event)  # this session is still in the room
        key = peer.room_key
        if self.resync.holds(key):
            raise room_unavailable(event, RESTORING)
        cid = peer.client_id
        session = session_id(self.node_id, peer.conn_id)
        rules = self.rules

        def decide(record: RoomRecord | None) -> placement.Change:
            return placement.command(record, cid, session, command, rules)

        # A refusal or StoreUnavailable goes to the member as it is, naming its event
        # (callroom.server.ws_answers).
        committed = await self.transitions.run(key, decide)
        if committed is not None:
            audit_command(cid, key, command)  # SPEC §9: it took effect
            if not await self.replicas.seen(key, committed.version):
                # Written, but its update never came back (the bus broke meanwhile): the
                # member must hear something; the resync decides what stands.
                raise room_unavailable(event, UNCERTAIN)
