"""Bare picows room relay: the Python floor for `callroom-bench compare`.

No auth, no validation, no storage: the identity comes from the query
(`/ws/{kind}/{roomId}?clientId=...&name=...`) and the wire envelope is callroom's
(SPEC §3): a room_state-shaped frame on connect, `add_chat` relayed to the whole room
(sender included) with clientId/displayName/chatId/timestamp stamped and encoded once,
`candidate` relayed to `targetClientId` only, `ping` answered with `pong`.

    python bench/peers/picows_relay.py --port 8081
"""

from __future__ import annotations

import argparse
import asyncio
import time
from urllib.parse import parse_qs, urlsplit

import orjson
from picows import (
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

TEXT = WSMsgType.TEXT
PONG = b'{"event":"pong","payload":{}}'
rooms: dict[str, dict[str, Member]] = {}


class Member(WSListener):
    def __init__(self, room: str, client_id: str, name: str) -> None:
        super().__init__()
        self.room = room
        self.client_id = client_id
        self.name = name
        self.transport: WSTransport | None = None
        self.sequence = 0

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        members = rooms.setdefault(self.room, {})
        members[self.client_id] = self
        infos = [{"clientId": m.client_id, "displayName": m.name} for m in members.values()]
        state = {
            "clientId": self.client_id,
            "displayName": self.name,
            "role": "participant",
            "roomId": self.room,
            "hosts": [],
            "participants": infos,
            "handsRaised": [],
            "waitingUsers": [],
            "sharingScreen": [],
            "locked": False,
            "media": {},
        }
        transport.send(TEXT, orjson.dumps({"event": "room_state", "payload": state}))

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if frame.msg_type != TEXT:
            return
        try:
            message = orjson.loads(frame.get_payload_as_bytes())
            event = message["event"]
            payload = message.get("payload") or {}
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return
        members = rooms.get(self.room, {})
        if event == "add_chat":
            self.sequence += 1
            out = orjson.dumps(
                {
                    "event": "add_chat",
                    "payload": {
                        "clientId": self.client_id,
                        "displayName": self.name,
                        "chatId": f"{self.client_id}-{self.sequence}",
                        "timestamp": int(time.time() * 1000),
                        "chatContent": payload.get("chatContent"),
                    },
                }
            )
            for member in members.values():
                if member.transport is not None:
                    member.transport.send(TEXT, out)
        elif event == "candidate":
            target = members.get(payload.get("targetClientId"))
            if target is not None and target.transport is not None:
                relayed = {**payload, "clientId": self.client_id, "displayName": self.name}
                target.transport.send(
                    TEXT, orjson.dumps({"event": "candidate", "payload": relayed})
                )
        elif event == "ping":
            transport.send(TEXT, PONG)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        members = rooms.get(self.room)
        if members is not None and members.get(self.client_id) is self:
            del members[self.client_id]
            if not members:
                del rooms[self.room]


def route(request: WSUpgradeRequest) -> WSListener | WSUpgradeResponseWithListener | None:
    url = urlsplit(request.path.decode())
    if url.path == "/ws/health":
        response = WSUpgradeResponse.create_ok_response(
            b'{"status":"ok"}', {"Content-Type": "application/json"}
        )
        return WSUpgradeResponseWithListener(response, None)
    parts = url.path.split("/")
    if len(parts) != 4 or parts[1] != "ws" or not parts[3]:
        return None
    query = parse_qs(url.query)
    client_id = query.get("clientId", [""])[0]
    if not client_id:
        response = WSUpgradeResponse.create_error_response(400, b"clientId missing")
        return WSUpgradeResponseWithListener(response, None)
    name = query.get("name", [client_id])[0]
    return Member(f"{parts[2]}/{parts[3]}", client_id, name)


async def main(host: str, port: int) -> None:
    server = await ws_create_server(route, host, port, backlog=2048)
    print(f"picows relay on ws://{host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(args.host, args.port))
    else:
        uvloop.run(main(args.host, args.port))
