"""``callroom connect``: a small WebSocket client to try the protocol (docs/protocol.md).

Every frame the server sends is printed to stdout, one JSON object per line, as it came.
Every line read from stdin is sent as one frame: a whole frame
``{"event": "add_chat", "payload": {"chatContent": "hi"}}`` or the short form
``add_chat {"chatContent": "hi"}`` (``EVENT`` alone sends an empty payload). A line that
is neither is not sent; the reason goes to stderr. The end of stdin closes the socket with
1000, a leave (SPEC §2).

The token goes in the ``Authorization: Bearer`` header, never in the URL, so no proxy or
access log sees it (SPEC §1). Exit codes: 0 when the session ended by the end of stdin or
by a 1000 close; 1 when the connection was refused or closed with any other code (the
reason is one line on stderr).
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from typing import IO, Any

import aiohttp

CLOSE_MEANINGS = {
    1001: "server shutting down",
    1003: "binary frame received",
    1008: "abuse: kept flooding",
    1009: "frame too large",
    4001: "token expired",
    4003: "denied from the waiting room",
    4004: "removed by a host",
    4005: "room ended",
    4009: "session replaced by a newer connection",
}


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None


def parse_line(line: str) -> str:
    """The frame text to send for one input line; ``ValueError`` says why not."""
    text = line.strip()
    if text.startswith("{"):
        frame = _json(text)
        if not isinstance(frame, dict) or not isinstance(frame.get("event"), str):
            raise ValueError('a frame is {"event": NAME, "payload": {...}}')
        return json.dumps(frame, separators=(",", ":"))
    event, _, rest = text.partition(" ")
    payload: Any = _json(rest) if rest.strip() else {}
    if not isinstance(payload, dict):
        raise ValueError("the payload must be a JSON object")
    return json.dumps({"event": event, "payload": payload}, separators=(",", ":"))


def _read_lines(stream: IO[str], loop: asyncio.AbstractEventLoop, queue: Any) -> None:
    """Blocking reads of stdin in a daemon thread: works for a terminal, a pipe or a file,
    and never keeps the process alive once the socket is closed."""
    for line in stream:
        loop.call_soon_threadsafe(queue.put_nowait, line)
    loop.call_soon_threadsafe(queue.put_nowait, None)


async def _print_frames(ws: aiohttp.ClientWebSocketResponse, out: IO[str]) -> None:
    async for message in ws:
        if message.type is aiohttp.WSMsgType.TEXT:
            out.write(message.data + "\n")
            out.flush()


async def _send_input(
    ws: aiohttp.ClientWebSocketResponse, reader: asyncio.Task[None], stdin: IO[str], err: IO[str]
) -> None:
    """Send stdin's lines until its end (then close with 1000) or until the server closes."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    threading.Thread(target=_read_lines, args=(stdin, loop, queue), daemon=True).start()
    while True:
        get = asyncio.ensure_future(queue.get())
        await asyncio.wait((get, reader), return_when=asyncio.FIRST_COMPLETED)
        if not get.done():  # the server closed the socket
            get.cancel()
            return
        line = get.result()
        if line is None:
            await ws.close(code=1000)
            return
        if not line.strip():
            continue
        try:
            frame = parse_line(line)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            print(f"callroom: not sent: {exc}", file=err, flush=True)
            continue
        await ws.send_str(frame)


async def connect(url: str, token: str | None, stdin: IO[str], out: IO[str], err: IO[str]) -> int:
    """Run one session; the exit code of the module docstring."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            ws = await session.ws_connect(
                url, headers=headers, timeout=aiohttp.ClientWSTimeout(ws_close=10)
            )
        except aiohttp.WSServerHandshakeError as exc:
            print(f"callroom: refused: HTTP {exc.status}", file=err, flush=True)
            return 1
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            print(f"callroom: cannot connect to {url}: {exc or type(exc).__name__}", file=err)
            return 1
        reader = asyncio.create_task(_print_frames(ws, out))
        await _send_input(ws, reader, stdin, err)
        await reader
        code = ws.close_code or 1006
        if code == 1000:
            return 0
        meaning = CLOSE_MEANINGS.get(code, "connection lost")
        print(f"callroom: closed by the server: {code} ({meaning})", file=err, flush=True)
        return 1


def run(url: str, token: str | None) -> int:
    return asyncio.run(connect(url, token, sys.stdin, sys.stdout, sys.stderr))
