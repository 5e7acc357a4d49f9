"""The project's docs are complete on their own: docs/protocol.md names every event, error
and close code of the code, and no link of README or docs/ leaves the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from callroom.errors import CloseCode, ErrorCode, HandshakeCode
from callroom.room.protocol import CLIENT_EVENTS

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = (ROOT / "docs" / "protocol.md").read_text()
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Every event the server sends (room/control.py, membership.py, views.py, runtime/chat.py).
SERVER_EVENTS = {
    "room_state",
    "connect",
    "disconnect",
    "waiting_request",
    "pong",
    "add_chat",
    "delete_chat",
    "get_recent_chats",
    "recents_chat",
    "raise_hand",
    "lower_hand",
    "accept_waiting",
    "deny_waiting",
    "request_screenshare",
    "accept_screenshare",
    "deny_screenshare",
    "unban_participant",
    "room_locked",
    "room_unlocked",
    "media_state",
    "offer",
    "answer",
    "candidate",
    "renegotiate",
    "error",
}


def section(title: str) -> str:
    start = PROTOCOL.index(f"\n## {title}\n")
    end = PROTOCOL.find("\n## ", start + 1)
    return PROTOCOL[start : end if end != -1 else None]


def named(text: str) -> set[str]:
    return set(re.findall(r"`([a-z_]+)`", text))


def test_every_client_event_is_in_the_table_of_events_you_send() -> None:
    assert named(section("Events you send")) >= CLIENT_EVENTS


def test_every_server_event_is_in_the_table_of_events_you_receive() -> None:
    assert named(section("Events you receive")) >= SERVER_EVENTS
    # The reply to get_recent_chats, in full.
    assert '`{"messages": [ChatInfo, oldest first], "total": int, "hasMore": bool}`' in (
        section("Events you receive")
    )


def test_every_error_refusal_and_close_code_is_explained() -> None:
    assert {code.value for code in ErrorCode} <= named(section("Errors"))
    # Refusals before the upgrade; the API-only codes are in the HTTP section.
    api_only = {HandshakeCode.FORBIDDEN, HandshakeCode.NOT_FOUND, HandshakeCode.INVALID_PAYLOAD}
    api_only.add(HandshakeCode.PAYLOAD_TOO_LARGE)
    assert named(section("Connecting")) >= {code.value for code in HandshakeCode} - api_only
    assert named(section("HTTP")) >= {code.value for code in api_only}
    closes = set(re.findall(r"^\| (\d{4}) \|", section("Close codes"), re.MULTILINE))
    assert {str(int(code)) for code in CloseCode} | {"1013"} == closes


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.name)
def test_no_link_leaves_the_repository(doc: Path) -> None:
    text = doc.read_text()
    assert "SPEC.md" not in text
    assert "../shared" not in text
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        assert not re.match(r"[a-z]+:", target), f"{doc.name} links outside: {target}"
        path = target.split("#", 1)[0]
        if path:
            assert (doc.parent / path).exists(), f"{doc.name}: {target} does not exist"


def test_the_readme_quick_start_uses_the_shipped_client_and_shows_the_first_frames() -> None:
    readme = (ROOT / "README.md").read_text()
    quick_start = readme[readme.index("### Quick start") :]
    assert ".venv/bin/callroom connect ws://127.0.0.1:8080/ws/zoom/my-room" in quick_start
    for frame in ('{"event":"room_state"', "ping", '{"event":"pong","payload":{}}'):
        assert frame in quick_start
