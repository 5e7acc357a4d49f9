"""The sessions this node holds, and the frames of updates carried out for them.

One place turns bus messages into socket writes (DESIGN "Encode once"): the frames of an
``Update`` or a ``Delivery`` were encoded by the node that published them; here each is
framed once and queued to every recipient whose socket is on this node, and each
``room_state`` gets its member's own part joined to its view class's shared tail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from callroom.errors import CloseCode
from callroom.metrics import Metrics
from callroom.room.encode import encode_split_bytes
from callroom.room.keys import RoomKey
from callroom.room.record import RoomRecord, session_id
from callroom.runtime.messages import CloseOf, FrameTo, Update, ViewTo
from callroom.runtime.peer import Peer
from callroom.server.framing import text_frame


class LocalSessions:
    """Members' sessions on this node, per room."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.by_room: dict[RoomKey, dict[str, Peer]] = {}
        self.connections: set[Peer] = set()
        self.idle = asyncio.Event()  # set while no socket is open (shutdown waits on it)
        self.idle.set()

    def of(self, key: RoomKey) -> dict[str, Peer]:
        return self.by_room.get(key, {})

    def install(self, key: RoomKey, peer: Peer) -> None:
        self.by_room.setdefault(key, {})[peer.client_id] = peer
        self.connections.add(peer)
        self.idle.clear()

    def forget(self, peer: Peer) -> None:
        """The socket ended: it is no longer this node's, nor its member's session."""
        self.connections.discard(peer)
        if not self.connections:
            self.idle.set()
        sessions = self.by_room.get(peer.room_key)
        if sessions is not None and sessions.get(peer.client_id) is peer:
            del sessions[peer.client_id]

    def deliver(self, key: RoomKey, recipients: Iterable[str], text: bytes) -> None:
        """Queue the frame of JSON ``text`` (framed once) to each recipient held here."""
        sessions = self.by_room.get(key)
        if not sessions:
            return
        frame = text_frame(text)
        sent = 0
        for client_id in recipients:
            target = sessions.get(client_id)
            if target is not None:
                target.send(frame)
                sent += 1
        if sent:
            self.metrics.messages_sent.inc(sent)

    def carry_out(self, key: RoomKey, update: Update) -> None:
        """The frames and closes of ``update`` for the members held here, in order."""
        sessions = self.by_room.get(key)
        if not sessions:
            return
        sent = 0
        for step in update.steps:
            if isinstance(step, FrameTo):
                frame = text_frame(step.text)
                for client_id in step.recipients:
                    target = sessions.get(client_id)
                    if target is not None:
                        target.send(frame)
                        sent += 1
            elif isinstance(step, ViewTo):
                target = sessions.get(step.recipient)
                if target is not None:
                    tail = update.tails[step.tail]
                    target.send(text_frame(encode_split_bytes("room_state", step.own, tail)))
                    sent += 1
            else:
                self.close(key, step)
        if sent:
            self.metrics.messages_sent.inc(sent)

    def close(self, key: RoomKey, step: CloseOf) -> None:
        target = self.by_room.get(key, {}).pop(step.client_id, None)
        if target is not None:
            target.detached = True
            target.close(step.code, step.reason)  # counted at its end

    def detach_room(self, key: RoomKey) -> None:
        """The room is gone: its sockets here change nothing more in it."""
        for peer in self.by_room.pop(key, {}).values():
            peer.detached = True

    def reconcile(self, key: RoomKey, record: RoomRecord, node_id: str) -> None:
        """Close the sockets whose place the record no longer gives them: taken by a newer
        session (4009), or lost (swept while this node could not reach the store, or a
        write-back without it: 1001, so the member reconnects, SPEC §3.4)."""
        sessions = self.by_room.get(key)
        if not sessions:
            return
        for cid, peer in list(sessions.items()):
            holder = record.sessions.get(cid)
            if holder != session_id(node_id, peer.conn_id):
                del sessions[cid]
                peer.detached = True
                if holder is None:
                    peer.close(CloseCode.GOING_AWAY, "session lost: reconnect")
                else:
                    peer.close(CloseCode.REPLACED, "session replaced")
