"""Small server parts: frames, token buckets, connection limits, log redaction."""

from __future__ import annotations

import io
import json
import logging
import struct
from collections.abc import Iterator

import pytest
import structlog

from callroom.logs import configure_logging
from callroom.server.framing import text_frame
from callroom.server.limits import ConnectionLimiter, TokenBucket


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)
    structlog.reset_defaults()


def test_text_frame_uses_the_three_length_encodings_of_rfc6455() -> None:
    small, medium, large = b"x" * 125, b"y" * 126, b"z" * 65536
    assert text_frame(small)[:2] == bytes([0x81, 125])
    assert text_frame(medium)[:4] == bytes([0x81, 126]) + struct.pack("!H", 126)
    assert text_frame(large)[:10] == bytes([0x81, 127]) + struct.pack("!Q", 65536)
    assert text_frame(large).endswith(large)


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=2, burst=3, now=0.0)
    assert [bucket.take(now=0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(now=0.5) is True  # one token back after half a second at 2/s
    assert bucket.take(now=0.5) is False
    assert [bucket.take(now=100.0) for _ in range(4)] == [True, True, True, False]  # capped


def test_connection_limiter_counts_open_connections_and_attempts() -> None:
    limiter = ConnectionLimiter(per_ip=2)
    assert limiter.admit("1.2.3.4")
    limiter.opened("1.2.3.4")
    assert limiter.admit("1.2.3.4")
    limiter.opened("1.2.3.4")
    assert limiter.open_count("1.2.3.4") == 2
    assert not limiter.admit("1.2.3.4")  # holds the maximum (and no attempts left)
    limiter.closed("1.2.3.4")
    limiter.closed("1.2.3.4")
    assert limiter.open_count("1.2.3.4") == 0
    assert limiter.admit("5.6.7.8")  # other addresses are not affected


def test_json_logs_never_carry_a_token() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json")
    handler = logging.getLogger().handlers[0]
    handler.setStream(stream)  # type: ignore[attr-defined]
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
    structlog.get_logger("t").info("request", path=f"/ws/zoom/a?token={token}")
    logging.getLogger("aiohttp.server").error("bad header Authorization: Bearer %s", token)
    structlog.get_logger("t").info("plain", note="nothing secret")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 3
    assert token not in stream.getvalue()
    assert lines[0]["path"] == "/ws/zoom/a?token=[redacted]"
    assert "[redacted]" in lines[1]["event"]
    assert lines[2]["note"] == "nothing secret"


def test_console_format_is_available() -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", "console")
    handler = logging.getLogger().handlers[0]
    handler.setStream(stream)  # type: ignore[attr-defined]
    structlog.get_logger("t").debug("hello", who="dev")
    assert "hello" in stream.getvalue()
    assert not stream.getvalue().startswith("{")
