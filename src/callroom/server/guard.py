"""Bounds on a connection until it is a member (SPEC §9 "Bounds before membership").

aiohttp keeps a connection that has not finished its request for as long as its
keep-alive deadline (3,630 s by default), does not bound the whole header block, and logs
a client's malformed request at ERROR with a traceback. A client that never finishes its
request could so hold a file descriptor and up to a megabyte of buffered headers each,
and fill the error log. Here every connection, from its first byte to its upgrade:

- must send a complete request head within ``HANDSHAKE_TIMEOUT_SECONDS`` of opening
  (trickled bytes do not extend it), and any later request on a kept-alive connection
  within as long after the previous response (aiohttp's keep-alive deadline, set to the
  same bound); a request body must arrive within as long after its head (``app.py``);
- counts against its address's unfinished connections: an address may hold at most
  ``MAX_CONNECTIONS_PER_IP`` connections that are not (yet) members; one more is answered
  429 ``too_many_connections`` and closed. Peers in ``TRUSTED_PROXIES`` are exempt: they
  carry many clients' connections, which the per-IP limits of the handshake count one
  by one, by the forwarded address;
- may send at most ``MAX_REQUEST_HEAD_BYTES`` of request line and headers (431);
- gets a JSON 400 for a malformed request, logged at INFO without a traceback, within
  the refusal lines' rate limit (``access.RefusalLog``: 10 a second per reason).

A connection stops counting as unfinished once it is upgraded to a member's WebSocket
(``became_member``); from then on the room's own limits apply.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from callroom.errors import HandshakeCode, HandshakeRefused
from callroom.server.http_answers import error_response, http_answer
from callroom.server.proxies import Network, is_trusted, parse_address

if TYPE_CHECKING:
    from aiohttp.web_request import BaseRequest
    from prometheus_client import Counter

    from callroom.server.refusals import RefusalLog

log = structlog.get_logger(__name__)

# What browsers send fits: nginx's default buffers for a request head are 4 x 8 KiB.
MAX_REQUEST_HEAD_BYTES = 32 * 1024
MAX_LINE_BYTES = 8190  # the request line (with a token in its query) and each header line
MAX_HEADERS = 100
# After an error answer, the unread rest of a body is read (so the answer is not lost to a
# reset) for at most this long; aiohttp's default of 10 s would hold a hostile sender.
LINGERING_SECONDS = 1.0


class HandshakeGuard:
    """The node's count of unfinished connections per address, and the bounds' settings."""

    def __init__(
        self,
        *,
        timeout: float,
        per_ip: int,
        closes: Counter,
        lines: RefusalLog,
        trusted: Sequence[Network] = (),
    ) -> None:
        self.timeout = timeout
        self.per_ip = per_ip
        self.closes = closes  # callroom_pre_upgrade_closes{reason}
        self.lines = lines
        self.trusted = trusted
        self._unfinished: dict[str, int] = {}

    def exempt(self, ip: str) -> bool:
        """A trusted proxy's connections are many clients': not capped per address."""
        if not self.trusted:
            return False
        address = parse_address(ip)
        return address is not None and is_trusted(address, self.trusted)

    def unfinished(self, ip: str) -> int:
        return self._unfinished.get(ip, 0)

    def enter(self, ip: str) -> bool:
        """Count a new connection from ``ip``; False when the address holds too many."""
        if self.exempt(ip):
            return True
        count = self._unfinished.get(ip, 0)
        if count >= self.per_ip:
            return False
        self._unfinished[ip] = count + 1
        return True

    def leave(self, ip: str) -> None:
        if self.exempt(ip):
            return
        count = self._unfinished.get(ip, 0) - 1
        if count > 0:
            self._unfinished[ip] = count
        else:
            self._unfinished.pop(ip, None)

    def closed(self, reason: str, ip: str, **details: Any) -> None:
        """Count a connection closed by a bound, and log it within the throttle."""
        self.closes.labels(reason=reason).inc()
        if self.lines.allow(reason):
            log.info("connection_refused", reason=reason, client=ip, **details)


class GuardedRequestHandler(RequestHandler):
    """aiohttp's HTTP protocol with the bounds of the module docstring."""

    __slots__ = ("_counted", "_deadline", "_guard", "_head_bytes", "_ip", "_refused")

    def __init__(self, manager: Any, guard: HandshakeGuard, **kwargs: Any) -> None:
        super().__init__(manager, keepalive_timeout=guard.timeout, **kwargs)
        self._guard = guard
        self._ip = ""
        self._counted = False  # holds one of its address's unfinished connections
        self._head_bytes = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False  # answered by ``_refuse``: the rest of its bytes are dropped

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._ip = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        guard = self._guard
        # Armed before aiohttp's keep-alive deadline (the same bound), so it fires first.
        self._deadline = self._loop.call_later(guard.timeout, self._head_deadline)
        super().connection_made(transport)
        if guard.enter(self._ip):
            self._counted = True
            return
        guard.closed("too_many_unfinished", self._ip)
        self._refuse(HandshakeRefused(HandshakeCode.TOO_MANY_CONNECTIONS, "too many connections"))

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_counting()
        super().connection_lost(exc)

    def hand_off(self) -> bytes:
        """Upgraded to a member's WebSocket: no longer an unfinished connection, and the
        transport is no longer this handler's (server/member_socket.py takes it over).

        Returns the bytes read after the request (the member's first frames, if any).
        The handler forgets the transport, so aiohttp neither closes it when the request
        ends nor answers another request on it; the server forgets the handler once its
        task ends, and the request, the response and both tasks are freed.
        """
        self._stop_counting()
        tail, self._message_tail = self._message_tail, b""
        transport = self.transport
        if self._buffer_paused and transport is not None:  # paused for a long tail
            self._buffer_paused = False
            transport.resume_reading()
        self.transport = None
        self.force_close()
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
            self._keepalive_handle = None
        if self._manager is not None:
            self._manager.connection_lost(self, None)
        return tail

    def _stop_counting(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._counted:
            self._counted = False
            self._guard.leave(self._ip)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._upgraded:
            super().data_received(data)
            return
        requests = self._request_count
        super().data_received(data)
        if self._request_count != requests:
            self._head_bytes = 0  # a head completed: what follows is its body or the next
            return
        self._head_bytes += len(data)
        if self._head_bytes > MAX_REQUEST_HEAD_BYTES:
            self._guard.closed("head_too_large", self._ip, bytes=self._head_bytes)
            message = f"the request head is over {MAX_REQUEST_HEAD_BYTES} bytes"
            self._refuse(HandshakeRefused(HandshakeCode.BAD_REQUEST, message, status=431))

    def _head_deadline(self) -> None:
        self._deadline = None
        if self._request_count == 0 and not self._force_close:
            self._guard.closed("handshake_timeout", self._ip, bytes=self._head_bytes)
            self.force_close()

    def _refuse(self, refusal: HandshakeRefused) -> None:
        """Answer with the JSON error body (SPEC §1) and close, outside any request.

        The close lingers: the answer goes out with a FIN, what the client still sends is
        read and dropped for ``LINGERING_SECONDS``, then the socket is closed. Closing at
        once, with its bytes unread, would reset the connection, and the reset can destroy
        the answer before the client reads it (RFC 9112 §9.6).
        """
        transport = self.transport
        if transport is None or self._refused:
            return
        self._refused = True
        answer = http_answer(refusal)
        body = json.dumps(answer.body).encode()
        phrase = HTTPStatus(answer.status).phrase.encode()
        transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (answer.status, phrase, len(body), body)
        )
        if transport.can_write_eof():
            transport.write_eof()
        self._loop.call_later(LINGERING_SECONDS, self.force_close)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A malformed request (the client's fault, status < 500) is answered with the
        JSON error body, echoing nothing of the request, and logged at INFO without a
        traceback; anything else is aiohttp's (a 500 is a bug, with its traceback)."""
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        self._guard.closed("malformed_request", self._ip, error=type(exc).__name__)
        message = "malformed HTTP request"
        refusal = HandshakeRefused(HandshakeCode.BAD_REQUEST, message, status=status)
        response = error_response(http_answer(refusal))
        response.force_close()
        return response


class GuardedSite(web.SockSite):
    """``SockSite`` serving ``GuardedRequestHandler`` instead of aiohttp's own."""

    __slots__ = ("_factory",)

    def __init__(
        self, runner: web.BaseRunner, sock: Any, factory: Callable[[], RequestHandler], **kw: Any
    ) -> None:
        super().__init__(runner, sock, **kw)
        self._factory = factory

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._factory, sock=self._sock, backlog=self._backlog
        )
