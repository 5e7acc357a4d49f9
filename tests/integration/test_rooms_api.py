"""The REST API (SPEC §4) over real HTTP against rooms made by real sockets, and the
metrics a session leaves behind.

The room routes run on one node and on two (tests/deployment.py: requests alternate
between the nodes, so a room is read and ended through a node that may hold none of its
members). The rest is one node only: the ICE, CORS and OpenAPI routes involve no room,
and the metrics are those of one process."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from typing import Any

from callroom_testing import (
    Client,
    TokenFactory,
    ids,
    join_admitted,
    join_room,
    metric_value,
    metrics_text,
    settle,
    wait_until,
)
from callroom_testing import (
    http_call as call,
)
from deployment import DeployFactory, Deployment, room_gone

# SPEC §3.1 client events (aliases folded) and "unknown": the only event label values.
SPEC_EVENT_LABELS = {
    "ping",
    "add_chat",
    "delete_chat",
    "get_recent_chats",
    "raise_hand",
    "lower_hand",
    "request_waiting",
    "accept_waiting",
    "deny_waiting",
    "request_screenshare",
    "accept_screenshare",
    "deny_screenshare",
    "stop_screenshare",
    "kick_participant",
    "unban_participant",
    "promote_host",
    "demote_host",
    "lock_room",
    "unlock_room",
    "end_room",
    "set_media_state",
    "refresh_token",
    "offer",
    "answer",
    "candidate",
    "renegotiate",
    "unknown",
}


async def populated(nodes: Deployment, make_token: TokenFactory) -> dict[str, Client]:
    """zoom/room-1: alice host, bob participant, wendy waiting; chat/lobby: carol."""
    alice, _ = await join_room(nodes, make_token("alice", "Alice"))
    bob, _ = await join_admitted(alice, nodes, make_token("bob", "Bob"))
    wendy, _ = await join_room(nodes, make_token("wendy", "Wendy"))
    await alice.expect("room_state")
    carol, _ = await join_room(nodes, make_token("carol", "Carol"), room="lobby", kind="chat")
    await settle(alice, bob)
    return {"alice": alice, "bob": bob, "wendy": wendy, "carol": carol}


async def test_admin_lists_every_room_with_its_counts(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    started_ms = int(time.time() * 1000)
    await populated(nodes, make_token)

    status, body, _ = await call(nodes, "GET", "/api/v1/rooms", make_token("root", roles=["admin"]))
    assert status == 200
    rooms = {(room["kind"], room["roomId"]): room for room in body["rooms"]}
    assert set(rooms) == {("zoom", "room-1"), ("chat", "lobby")}
    meeting = rooms["zoom", "room-1"]
    assert {k: v for k, v in meeting.items() if k != "createdAt"} == {
        "kind": "zoom",
        "roomId": "room-1",
        "members": 3,
        "admitted": 2,
        "waiting": 1,
        "hosts": [{"clientId": "alice", "displayName": "Alice"}],
        "locked": False,
    }
    assert started_ms - 1000 <= meeting["createdAt"] <= int(time.time() * 1000)
    assert rooms["chat", "lobby"]["members"] == 1

    # The Auth0 permission works as the role does.
    admin_by_permission = make_token("ops", permissions=["rooms:admin"])
    assert (await call(nodes, "GET", "/api/v1/rooms", admin_by_permission))[0] == 200

    status, body, _ = await call(nodes, "GET", "/api/v1/rooms", make_token("alice"))
    assert (status, body["error"]) == (403, "forbidden")
    status, body, _ = await call(nodes, "GET", "/api/v1/rooms")
    assert (status, body["error"]) == (401, "unauthorized")
    status, body, _ = await call(nodes, "GET", "/api/v1/rooms", make_token("root", ttl=-120))
    assert (status, body["error"]) == (401, "unauthorized")


async def test_room_state_route_for_admins_and_admitted_members_only(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    clients = await populated(nodes, make_token)
    await clients["bob"].send("raise_hand")
    await clients["alice"].expect("raise_hand")
    path = "/api/v1/rooms/zoom/room-1"

    status, admin_view, _ = await call(nodes, "GET", path, make_token("root", roles=["admin"]))
    assert status == 200
    assert admin_view["members"] == 3
    assert ids(admin_view["hosts"]) == ["alice"]
    assert ids(admin_view["participants"]) == ["bob"]
    assert ids(admin_view["waitingUsers"]) == ["wendy"]  # as a host sees it
    assert ids(admin_view["handsRaised"]) == ["bob"]
    assert admin_view["sharingScreen"] == []

    status, bob_view, _ = await call(nodes, "GET", path, make_token("bob"))
    assert status == 200
    assert ids(bob_view["participants"]) == ["bob"]
    assert bob_view["waitingUsers"] == []  # a participant does not see the lobby
    status, alice_view, _ = await call(nodes, "GET", path, make_token("alice"))
    assert ids(alice_view["waitingUsers"]) == ["wendy"]

    for who in ("wendy", "stranger"):
        status, body, _ = await call(nodes, "GET", path, make_token(who))
        assert (status, body["error"]) == (403, "forbidden"), who
    status, body, _ = await call(
        nodes, "GET", "/api/v1/rooms/zoom/nope", make_token("root", roles=["admin"])
    )
    assert (status, body["error"]) == (404, "not_found")
    status, body, _ = await call(nodes, "GET", path)
    assert (status, body["error"]) == (401, "unauthorized")


async def test_delete_room_by_its_host_closes_every_member_4005(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    clients = await populated(nodes, make_token)
    path = "/api/v1/rooms/zoom/room-1"

    status, body, _ = await call(nodes, "DELETE", path, make_token("bob"))
    assert (status, body["error"]) == (403, "forbidden")
    assert await clients["bob"].drain() == []  # nothing happened

    status, _, _ = await call(nodes, "DELETE", path, make_token("alice"))
    assert status == 200
    for name in ("alice", "bob", "wendy"):
        assert await clients[name].closed_with() == 4005, name
    await wait_until(lambda: room_gone(nodes))

    # An admin may end any room; the other room was untouched until then.
    assert await clients["carol"].drain() == []
    status, _, _ = await call(
        nodes, "DELETE", "/api/v1/rooms/chat/lobby", make_token("root", roles=["admin"])
    )
    assert status == 200
    assert await clients["carol"].closed_with() == 4005
    status, body, _ = await call(
        nodes, "DELETE", "/api/v1/rooms/chat/lobby", make_token("root", roles=["admin"])
    )
    assert (status, body["error"]) == (404, "not_found")


async def test_messages_route_pages_the_chat_history(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    clients = await populated(nodes, make_token)
    bob = clients["bob"]
    sent = []
    for i in range(5):
        await bob.send("add_chat", {"chatContent": f"message {i}"})
        sent.append(await bob.expect("add_chat"))
    path = "/api/v1/rooms/zoom/room-1/messages"
    token = make_token("bob")

    status, page, _ = await call(nodes, "GET", f"{path}?limit=2", token)
    assert status == 200
    assert page == {"messages": sent[3:], "hasMore": True}
    status, page, _ = await call(nodes, "GET", f"{path}?limit=2&before={sent[3]['chatId']}", token)
    assert page == {"messages": sent[1:3], "hasMore": True}
    status, page, _ = await call(nodes, "GET", f"{path}?limit=2&before={sent[1]['chatId']}", token)
    assert page == {"messages": sent[:1], "hasMore": False}
    status, page, _ = await call(nodes, "GET", path, make_token("root", roles=["admin"]))
    assert page == {"messages": sent, "hasMore": False}  # default limit 50

    for bad in ("0", "101", "abc", "-1"):
        status, body, _ = await call(nodes, "GET", f"{path}?limit={bad}", token)
        assert (status, body["error"]) == (422, "invalid_payload"), bad
        assert "limit" in body["message"]
    status, body, _ = await call(nodes, "GET", path, make_token("wendy"))
    assert (status, body["error"]) == (403, "forbidden")


async def test_ice_servers_give_coturn_rest_credentials(
    start_node: Any, make_token: TokenFactory
) -> None:
    secret = "coturn-shared-secret"
    node = await start_node(
        STUN_URLS="stun:stun.example.com:3478",
        TURN_URLS="turn:turn.example.com:3478?transport=udp,turns:turn.example.com:5349",
        TURN_SECRET=secret,
        TURN_TTL_SECONDS=600,
    )
    before = int(time.time())
    status, body, _ = await call(node, "GET", "/api/v1/ice-servers", make_token("alice"))
    assert status == 200
    assert body["ttl"] == 600
    stun, turn = body["iceServers"]
    assert stun == {"urls": ["stun:stun.example.com:3478"]}
    assert turn["urls"] == [
        "turn:turn.example.com:3478?transport=udp",
        "turns:turn.example.com:5349",
    ]
    expiry, client_id = turn["username"].split(":")
    assert client_id == "alice"
    assert before + 600 <= int(expiry) <= int(time.time()) + 600
    expected = base64.b64encode(
        hmac.new(secret.encode(), turn["username"].encode(), hashlib.sha1).digest()
    ).decode()
    assert turn["credential"] == expected

    status, body, _ = await call(node, "GET", "/api/v1/ice-servers")
    assert (status, body["error"]) == (401, "unauthorized")


async def test_cors_headers_only_for_allowed_origins(
    start_node: Any, make_token: TokenFactory
) -> None:
    node = await start_node(ALLOWED_ORIGINS="https://meet.example.com")
    preflight = {
        "Origin": "https://meet.example.com",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "Authorization",
    }
    status, _, headers = await call(node, "OPTIONS", "/api/v1/rooms", headers=preflight)
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == "https://meet.example.com"
    assert "authorization" in headers["Access-Control-Allow-Headers"].lower()
    assert "GET" in headers["Access-Control-Allow-Methods"]

    status, _, headers = await call(
        node,
        "GET",
        "/api/v1/ice-servers",
        make_token("alice"),
        headers={"Origin": "https://meet.example.com"},
    )
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "https://meet.example.com"

    evil = {**preflight, "Origin": "https://evil.example.com"}
    status, _, headers = await call(node, "OPTIONS", "/api/v1/rooms", headers=evil)
    assert status != 204
    assert "Access-Control-Allow-Origin" not in headers
    status, _, headers = await call(
        node,
        "GET",
        "/api/v1/ice-servers",
        make_token("alice"),
        headers={"Origin": "https://evil.example.com"},
    )
    assert "Access-Control-Allow-Origin" not in headers


async def test_openapi_document_lists_the_api_and_docs_is_html(start_node: Any) -> None:
    node = await start_node()
    status, document, _ = await call(node, "GET", "/openapi.json")
    assert status == 200
    assert document["openapi"].startswith("3.")
    for path in (
        "/api/v1/rooms",
        "/api/v1/rooms/{kind}/{roomId}",
        "/api/v1/rooms/{kind}/{roomId}/messages",
        "/api/v1/ice-servers",
    ):
        assert path in document["paths"], path
    assert "delete" in document["paths"]["/api/v1/rooms/{kind}/{roomId}"]
    status, html, headers = await call(node, "GET", "/docs")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert "/openapi.json" in html


async def test_metrics_count_events_by_bounded_labels_after_a_session(
    start_node: Any, make_token: TokenFactory
) -> None:
    node = await start_node()
    alice, _ = await join_room(node, make_token("alice"))
    bob, _ = await join_admitted(alice, node, make_token("bob"))
    for text in ("one", "two"):
        await bob.send("add_chat", {"chatContent": text})
        await bob.expect("add_chat")
    await bob.send("recents_chat")  # an alias counts as its event
    await bob.expect("recents_chat")
    await bob.send("fly_me_to_the_moon_42")
    await bob.expect("error")
    await bob.send("kick_participant", {"clientId": "alice"})
    await bob.expect("error")
    await bob.send_raw("{oops")
    await bob.expect("error")

    received = "callroom_messages_received_total"
    assert await metric_value(node, received, '{event="add_chat"}') == 2
    assert await metric_value(node, received, '{event="get_recent_chats"}') == 1
    assert await metric_value(node, received, '{event="unknown"}') == 2
    errors = "callroom_handler_errors_total"
    assert await metric_value(node, errors, '{event="kick_participant",code="forbidden"}') == 1
    assert await metric_value(node, errors, '{event="unknown",code="unknown_event"}') == 1
    assert await metric_value(node, errors, '{event="unknown",code="invalid_json"}') == 1
    text = await metrics_text(node)
    assert "fly_me_to_the_moon_42" not in text
    assert "recents_chat" not in text
    labels = set(re.findall(r'event="([^"]*)"', text))
    assert labels <= SPEC_EVENT_LABELS, labels - SPEC_EVENT_LABELS
    assert await metric_value(node, "callroom_message_handling_seconds_count") >= 6

    assert await metric_value(node, "callroom_rooms_active") == 1
    assert await metric_value(node, "callroom_rooms_created_total") == 1
    await bob.close()
    await alice.close()
    await wait_until(lambda: room_gone(node))
    assert await metric_value(node, "callroom_rooms_active") == 0
    assert await metric_value(node, "callroom_rooms_closed_total") == 1
