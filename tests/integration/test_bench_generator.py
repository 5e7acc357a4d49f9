"""The receive path of the bench's generator (bench/node/generator.mjs), against a
scripted picows server: what the server sends is counted where a reader of the report
expects it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from callroom_bench.generator import Generator, JoinReply
from callroom_bench.processes import free_port
from callroom_bench.target import BenchError


class _Scripted(WSListener):
    """Sends ``frames`` on connect, then closes (1001), drops the TCP connection, or waits."""

    def __init__(self, frames: list[bytes], end: str, received: list[bytes]) -> None:
        super().__init__()
        self.frames, self.end, self.received = frames, end, received

    def on_ws_connected(self, transport: WSTransport) -> None:
        for frame in self.frames:
            transport.send(WSMsgType.TEXT, frame)
        if self.end == "close":
            transport.send_close(WSCloseCode.GOING_AWAY)
        elif self.end == "drop":
            transport.disconnect()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            self.received.append(frame.get_payload_as_bytes())


@contextlib.asynccontextmanager
async def _scripted(
    frames: list[bytes], end: str = "stay", status: int = 101
) -> AsyncIterator[tuple[str, list[bytes]]]:
    received: list[bytes] = []

    def route(request: WSUpgradeRequest) -> WSListener | WSUpgradeResponseWithListener:
        if status != 101:
            refusal = WSUpgradeResponse.create_error_response(status, b"{}")
            return WSUpgradeResponseWithListener(refusal, None)
        return _Scripted(frames, end, received)

    server = await ws_create_server(route, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/ws/zoom/r?clientId=a", received
    finally:
        server.close()


ROOM_STATE = b'{"event":"room_state","payload":{"roomId":"r"}}'
TIMED_CHAT = b'{"event":"add_chat","payload":{"chatContent":"~t0000000000000000001|x"}}'


@contextlib.asynccontextmanager
async def _joined(
    url: str, engineio: bool = False, limit_s: float = 5.0
) -> AsyncIterator[tuple[Generator, JoinReply]]:
    """Start a generator and join ``url`` with it."""
    async with Generator.start(None) as generator:
        reply = await generator.join([url], 1, engineio, limit_s=limit_s)
        yield generator, reply
        await generator.close()


async def _until(generator: Generator, check: Callable[[dict[str, int], int], bool]) -> None:
    """Poll the generator until ``check(errors, timed messages received)`` holds."""
    async with asyncio.timeout(5):
        while True:
            _, timed = await generator.status()
            if check(generator.errors, timed):
                return
            await asyncio.sleep(0.01)


async def test_error_events_and_server_closes_are_counted_by_code() -> None:
    frames = [
        ROOM_STATE,
        TIMED_CHAT,
        b'{"event":"error","payload":{"code":"rate_limited","message":"slow down"}}',
        b'{"event":"connect","payload":{"clientId":"b","displayName":"error"}}',
        b'["error"] is not an envelope',
        b'["error"]',
    ]
    async with _scripted(frames, end="close") as (url, _), _joined(url) as (generator, reply):
        assert reply.joined == [True]
        await _until(generator, lambda errors, timed: "closed:1001" in errors and timed == 1)
        assert generator.errors == {
            "error:rate_limited": 1,
            "unparseable_frame": 2,
            "closed:1001": 1,
        }


async def test_the_engineio_client_connects_answers_pings_and_counts_failures() -> None:
    frames = [
        b'0{"sid":"s","pingInterval":25000,"pingTimeout":20000}',
        b'40{"sid":"t"}',
        b'42["room_state",{"roomId":"r"}]',
        b"2",
        b'42["error",{"code":"forbidden"}]',
        b'44{"message":"not allowed"}',
    ]
    async with _scripted(frames) as (url, received), _joined(url, engineio=True) as (gen, _):
        await _until(gen, lambda errors, _: "engineio:44" in errors and b"3" in received)
        assert received[:2] == [b"40", b"3"]
        assert gen.errors == {"error:forbidden": 1, "engineio:44": 1}


async def test_a_connection_the_server_drops_is_counted() -> None:
    async with _scripted([ROOM_STATE], end="drop") as (url, _), _joined(url) as (generator, _):
        await _until(generator, lambda errors, _: errors == {"dropped": 1})


@pytest.mark.parametrize(
    ("frames", "end", "status", "expected"),
    [
        ([], "stay", 101, {"connect:timeout": 1}),
        ([], "stay", 403, {"connect:http_403": 1}),
        (
            [b'{"event":"hello","payload":{}}'],
            "close",
            101,
            {"first_frame_not_room_state": 1, "closed:1001": 1, "connect:ConnectionError": 1},
        ),
    ],
)
async def test_a_join_that_fails_is_counted_and_leaves_a_gap(
    frames: list[bytes], end: str, status: int, expected: dict[str, int]
) -> None:
    async with _scripted(frames, end, status) as (url, _), _joined(url, limit_s=0.3) as (gen, r):
        assert r.joined == [False]
        assert r.latency_ms is None
        assert gen.errors == expected


async def test_a_refused_connection_and_a_wss_url_are_counted() -> None:
    urls = [f"ws://127.0.0.1:{free_port()}/ws/zoom/r", "wss://127.0.0.1:1/ws/zoom/r"]
    async with Generator.start(None) as generator:
        reply = await generator.join(urls, 2, False)
        await generator.close()
    assert reply.joined == [False, False]
    assert generator.errors == {
        "connect:ECONNREFUSED": 1,
        "connect:unsupported_scheme_wss": 1,
    }


async def test_a_step_before_senders_is_refused_and_a_gone_generator_reported() -> None:
    async with Generator.start(None) as generator:
        with pytest.raises(BenchError, match="no senders"):
            await generator.step(10, 0.1, lambda _: None, lambda: None)
        await generator.close()
        with pytest.raises(BenchError, match="exited"):
            await generator.status()
