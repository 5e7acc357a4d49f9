"""The project's docs are complete on their own: docs/protocol.md names every event, error
and close code of the code, and no link of README or docs/ leaves the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from callroom.errors import CloseCode, ErrorCode, HandshakeCode
from callroom.room.events import CLIENT_EVENTS, SERVER_EVENTS, Event

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = (ROOT / "docs" / "protocol.md").read_text()
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def section(title: str) -> str:
    start = PROTOCOL.index(f"\n## {title}\n")
    end = PROTOCOL.find("\n## ", start + 1)
    return PROTOCOL[start : end if end != -1 else None]


def named(text: str) -> set[str]:
    return set(re.findall(r"`([a-z_]+)`", text))


def first_column(text: str) -> set[str]:
    """The names in the first cell of each row of the (one) table in ``text``."""
    rows = re.findall(r"^\| (.+?) \|", text, re.MULTILINE)
    return {name for row in rows[1:] for name in named(row)}  # past the header


def test_the_table_of_events_you_send_is_exactly_the_client_events() -> None:
    # callroom.room.events is the one table of names; the docs table mirrors SPEC §3.1,
    # so an event added to one and not the other fails here.
    assert first_column(section("Events you send")) == CLIENT_EVENTS


def test_the_table_of_events_you_receive_is_exactly_the_server_events() -> None:
    assert first_column(section("Events you receive")) == SERVER_EVENTS
    # Every name of the table travels one way or both (none is left unused).
    assert set(Event) == CLIENT_EVENTS | SERVER_EVENTS
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
