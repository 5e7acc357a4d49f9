"""python-socketio on uvicorn doing the bench relay: what a Python team would pick instead.

Same behaviour as picows_relay.py over Socket.IO: the identity comes from the handshake
query (`/socket.io/?EIO=4&transport=websocket&room=...&clientId=...`); on connect the
client gets a room_state-shaped `room_state` event; `add_chat` is emitted to the room
(sender included) with clientId/displayName/chatId/timestamp stamped; `candidate` is
emitted to `targetClientId` only. `GET /ws/health` answers 200 for the bench.

    python bench/peers/socketio_server.py --port 8082
"""

from __future__ import annotations

import argparse
import time
from typing import Any
from urllib.parse import parse_qs

import socketio
import uvicorn

sio = socketio.AsyncServer(
    async_mode="asgi",
    cors_allowed_origins="*",
    # Send the CONNECT packet before the handler runs, so the room_state emitted in
    # the handler follows it.
    always_connect=True,
    transports=["websocket"],
)
sessions: dict[str, tuple[str, str]] = {}  # sid -> (room, clientId)
rooms: dict[str, dict[str, str]] = {}  # room -> clientId -> sid
sequence = 0


@sio.event
async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    room = query.get("room", ["default"])[0]
    client_id = query.get("clientId", [sid])[0]
    sessions[sid] = (room, client_id)
    members = rooms.setdefault(room, {})
    members[client_id] = sid
    await sio.enter_room(sid, room)
    infos = [{"clientId": cid, "displayName": cid} for cid in members]
    state = {
        "clientId": client_id,
        "displayName": client_id,
        "role": "participant",
        "roomId": room,
        "hosts": [],
        "participants": infos,
        "handsRaised": [],
        "waitingUsers": [],
        "sharingScreen": [],
        "locked": False,
        "media": {},
    }
    await sio.emit("room_state", state, to=sid)


@sio.on("add_chat")
async def add_chat(sid: str, data: dict[str, Any]) -> None:
    global sequence
    room, client_id = sessions[sid]
    sequence += 1
    chat = {
        "clientId": client_id,
        "displayName": client_id,
        "chatId": str(sequence),
        "timestamp": int(time.time() * 1000),
        "chatContent": data.get("chatContent"),
    }
    await sio.emit("add_chat", chat, room=room)


@sio.on("candidate")
async def candidate(sid: str, data: dict[str, Any]) -> None:
    room, client_id = sessions[sid]
    target = rooms.get(room, {}).get(data.get("targetClientId", ""))
    if target is not None:
        relayed = {**data, "clientId": client_id, "displayName": client_id}
        await sio.emit("candidate", relayed, to=target)


@sio.event
async def disconnect(sid: str, *args: Any) -> None:
    room, client_id = sessions.pop(sid, ("", ""))
    members = rooms.get(room)
    if members is not None and members.get(client_id) == sid:
        del members[client_id]
        if not members:
            del rooms[room]


async def health(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The non-Socket.IO routes: `/ws/health` for the bench, 404 otherwise."""
    if scope["type"] != "http":
        return
    ok = scope["path"] == "/ws/health"
    await send(
        {
            "type": "http.response.start",
            "status": 200 if ok else 404,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"status":"ok"}' if ok else b"{}"})


app = socketio.ASGIApp(sio, other_asgi_app=health)

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    args = parser.parse_args()
    uvicorn.run(
        app, host=args.host, port=args.port, log_level="warning", backlog=2048, lifespan="off"
    )
