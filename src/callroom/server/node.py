"""One callroom node: its parts, its start-up and its written shutdown sequence.

Start-up: bind the listening socket (explicit backlog, DESIGN "Listen backlog"), build
the token verifier (dev mode: pointed at this node's own ``/dev/jwks.json``, SPEC §5),
serve, then fetch the keys and open the chat store concurrently. A part that is down
does not stop the node: ``/readyz`` names it until it answers (SPEC §6).

Shutdown (SPEC §8, after uvicorn's ``Server.shutdown``):
1. mark draining: ``/readyz`` 503, new upgrades 503;
2. close every member with 1001 so clients reconnect to another node;
3. wait for the sockets to finish, at most half of ``SHUTDOWN_GRACE_SECONDS``;
4. stop background tasks, close the chat store (everything acknowledged was already
   stored before its broadcast) and the key fetcher;
5. stop the HTTP server; the whole sequence is bounded by ``SHUTDOWN_GRACE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import itertools
import os
import socket
import time
from pathlib import Path
from typing import cast

import structlog
from aiohttp import web

from callroom.auth.dev import DEV_AUDIENCE, DEV_ISSUER, DevKeys
from callroom.auth.jwks import JwksCache
from callroom.auth.verifier import AuthError, TokenVerifier
from callroom.chat.base import ChatHistory
from callroom.chat.memory import MemoryChatHistory
from callroom.chat.sql import SqlChatHistory
from callroom.config import MEMORY_DATABASE, Settings
from callroom.errors import CloseCode, StartupError, StoreUnavailable
from callroom.logs import NODE_ID
from callroom.metrics import Metrics
from callroom.room.model import Identity
from callroom.room.protocol import ProtocolLimits
from callroom.runtime.build import build_hub
from callroom.runtime.hub import Hub
from callroom.server.app import build_app
from callroom.server.connection import Connection, OutBox
from callroom.server.guard import (
    LINGERING_SECONDS,
    MAX_HEADERS,
    MAX_LINE_BYTES,
    GuardedRequestHandler,
    GuardedSite,
    HandshakeGuard,
)
from callroom.server.heartbeat import Heartbeat
from callroom.server.limits import ConnectionLimiter
from callroom.server.proxies import parse_networks
from callroom.server.refusals import RefusalLog
from callroom.server.state import AppState

log = structlog.get_logger(__name__)

LISTEN_BACKLOG = 2048
RETENTION_INTERVAL_SECONDS = 3600.0
# Nodes started in this process: the first takes the process's NODE_ID as its id (in
# Redis too), the others (tests run several in one process) a numbered variant of it.
_node_numbers = itertools.count()


def dev_settings(settings: Settings) -> Settings:
    """Dev mode (SPEC §5): own issuer/audience unless configured otherwise."""
    return settings.model_copy(
        update={
            "AUTH_ISSUER": settings.AUTH_ISSUER or DEV_ISSUER,
            "AUTH0_AUDIENCE": settings.AUTH0_AUDIENCE or DEV_AUDIENCE,
        }
    )


def build_history(settings: Settings, metrics: Metrics | None = None) -> ChatHistory:
    """The durable store behind a memory window of ``CHAT_HISTORY_LIMIT`` per room.

    ``metrics``: where the store's group commits are counted.

    ``DATABASE_URL=memory://``: the last ``CHAT_HISTORY_LIMIT`` messages per room in
    memory only, nothing durable (tests, benchmarks); each node has its own.
    With ``REDIS_URL`` (many nodes, SPEC §7) there is no memory window: another node's
    messages would not be in it; every read goes to the shared store.
    """
    if settings.DATABASE_URL == MEMORY_DATABASE:
        log.warning("chat history in memory only: it is lost when the process stops")
        return MemoryChatHistory(limit_per_room=settings.CHAT_HISTORY_LIMIT)
    on_commit = None if metrics is None else metrics.observe_store_commit
    on_failure = None if metrics is None else metrics.store_failures.inc
    window = None if settings.REDIS_URL else settings.CHAT_HISTORY_LIMIT
    store = SqlChatHistory(
        settings.DATABASE_URL, window=window, on_commit=on_commit, on_failure=on_failure
    )
    if settings.REDIS_URL and store.engine.dialect.name == "sqlite":
        # Accepted (one machine may run several nodes on one file), but on many
        # machines each node would keep a history of its own (SPEC §9).
        log.warning(
            "redis_with_sqlite",
            message="REDIS_URL is set with a SQLite DATABASE_URL: nodes on other "
            "machines do not share this chat history; use PostgreSQL",
        )
    return store


def listen_socket(host: str, port: int) -> socket.socket:
    """A bound, non-blocking socket, or ``StartupError`` naming why not (SPEC §9 "CLI")."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(_bind_failure(host, port, exc)) from None
    sock.setblocking(False)
    return sock


def _bind_failure(host: str, port: int, exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return f"HOST: cannot resolve {host!r} ({exc.strerror})"
    if exc.errno == errno.EADDRINUSE:
        return f"PORT: {host}:{port} is already in use"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"HOST: {host} is not an address of this machine"
    if exc.errno == errno.EACCES:
        return f"PORT: {port} needs privileges this process does not have"
    return f"HOST/PORT: cannot listen on {host}:{port} ({exc.strerror or exc})"


class Node:
    """Everything one server process runs."""

    def __init__(
        self,
        settings: Settings,
        *,
        dev_keys: DevKeys | None = None,
        dev_key_file: Path | None = None,
        history: ChatHistory | None = None,
    ) -> None:
        if settings.DEV_MODE:
            settings = dev_settings(settings)
            if dev_keys is None:
                dev_keys = DevKeys.load_or_create(dev_key_file or Path(".callroom-dev-key.pem"))
        self.settings = settings
        self.dev_keys = dev_keys
        number = next(_node_numbers)
        self.node_id = NODE_ID if number == 0 else f"{NODE_ID}-{number}"
        self.metrics = Metrics(redis=settings.REDIS_URL is not None)
        self.metrics.max_connections.set(settings.MAX_CONNECTIONS)
        self.trusted_proxies = parse_networks(settings.TRUSTED_PROXIES)
        self.refusal_log = RefusalLog()
        self.limiter = ConnectionLimiter(settings.MAX_CONNECTIONS_PER_IP)
        self.protocol_limits = ProtocolLimits(
            chat_max_length=settings.CHAT_MAX_LENGTH, max_sdp_bytes=settings.MAX_SDP_BYTES
        )
        # Outgoing bytes a slow consumer may have buffered before it is closed.
        self._max_buffer = max(1 << 20, 16 * settings.MAX_MESSAGE_BYTES)
        self.outbox = OutBox()
        self.history = history if history is not None else build_history(settings, self.metrics)
        self._draining = False
        self._state: AppState | None = None
        self.port = 0
        self._sock: socket.socket | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._jwks: JwksCache | None = None
        self._verifier: TokenVerifier | None = None
        self._hub: Hub | None = None
        self._heartbeat: Heartbeat | None = None
        self.stopped = asyncio.Event()

    @property
    def hub(self) -> Hub:
        assert self._hub is not None, "node not started"
        return self._hub

    @property
    def verifier(self) -> TokenVerifier:
        assert self._verifier is not None, "node not started"
        return self._verifier

    @property
    def state(self) -> AppState:
        """What the request handlers use (``server/state.py``), built by ``start``."""
        assert self._state is not None, "node not started"
        return self._state

    # Both are the handlers' too once the node has started (tests change them live).
    @property
    def draining(self) -> bool:
        return self._state.draining if self._state is not None else self._draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self._draining = value
        if self._state is not None:
            self._state.draining = value

    @property
    def max_buffer(self) -> int:
        return self._state.max_buffer if self._state is not None else self._max_buffer

    @max_buffer.setter
    def max_buffer(self, value: int) -> None:
        self._max_buffer = value
        if self._state is not None:
            self._state.max_buffer = value

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.settings.HOST in ("0.0.0.0", "") else self.settings.HOST
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        settings = self.settings
        sock = listen_socket(settings.HOST, settings.PORT)
        self._sock = sock
        self.port = sock.getsockname()[1]
        jwks_url = settings.jwks_url
        if settings.DEV_MODE and not settings.AUTH_JWKS_URL:
            jwks_url = f"http://127.0.0.1:{self.port}/dev/jwks.json"
        assert jwks_url is not None  # Settings refuses to build without one (SPEC §5)
        metrics = self.metrics
        self._jwks = JwksCache(
            jwks_url,
            refresh_seconds=settings.JWKS_REFRESH_SECONDS,
            on_fetch=lambda ok: metrics.jwks_fetches.labels(outcome="ok" if ok else "error").inc(),
        )
        jwks = self._jwks
        metrics.jwks_breaker_open.set_function(lambda: float(jwks.breaker_open))
        self._verifier = TokenVerifier(settings, self._jwks)
        self._hub = build_hub(settings, self.history, self._verifier, metrics, node_id=self.node_id)
        # A heartbeat timeout is counted (1006) where every close is: at the socket's end.
        # Every peer of this node's hub is a WebSocket connection of this node.
        self._heartbeat = Heartbeat(
            cast("set[Connection]", self._hub.connections), settings.HEARTBEAT_INTERVAL_SECONDS
        )
        self._heartbeat.start()

        self._state = AppState(
            settings=settings,
            metrics=metrics,
            hub=self._hub,
            history=self.history,
            authenticate=self.authenticate,
            readiness=self.readiness,
            limiter=self.limiter,
            protocol_limits=self.protocol_limits,
            outbox=self.outbox,
            refusal_log=self.refusal_log,
            trusted_proxies=self.trusted_proxies,
            dev_keys=self.dev_keys,
            max_buffer=self._max_buffer,
            draining=self._draining,
        )
        app = build_app(self._state)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        server = self._runner.server
        loop = asyncio.get_running_loop()
        guard = HandshakeGuard(
            timeout=settings.HANDSHAKE_TIMEOUT_SECONDS,
            per_ip=settings.MAX_CONNECTIONS_PER_IP,
            closes=self.metrics.pre_upgrade_closes,
            lines=self.refusal_log,
            trusted=self.trusted_proxies,
        )

        def handler() -> GuardedRequestHandler:
            return GuardedRequestHandler(
                server,
                guard,
                loop=loop,
                access_log=None,
                max_line_size=MAX_LINE_BYTES,
                max_field_size=MAX_LINE_BYTES,
                max_headers=MAX_HEADERS,
                lingering_time=LINGERING_SECONDS,
            )

        site = GuardedSite(self._runner, sock, handler, backlog=LISTEN_BACKLOG)
        await site.start()
        log.info(
            "listening",
            url=self.url,
            dev=settings.DEV_MODE,
            node_id=self.node_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            trusted_proxies=list(settings.TRUSTED_PROXIES),
        )
        await asyncio.gather(self._jwks.start(), self.history.start(), self._hub.start())
        if settings.CHAT_RETENTION_DAYS is not None:
            self._tasks.append(asyncio.create_task(self._retention_loop()))
        # DESIGN "Garbage collector": move start-up objects out of the collector's sight
        # and collect young objects less often, so full collections stay rare and short.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)

    async def authenticate(self, token: str | None) -> Identity:
        """Verify a token; an ``AuthError`` (answered 401, SPEC §1, §4) is counted by
        its reason."""
        try:
            return await self.verifier.verify(token)
        except AuthError as exc:
            self.metrics.auth_failures.labels(reason=exc.reason).inc()
            raise

    async def readiness(self) -> list[str]:
        """Names of the parts that are not usable (SPEC §4 ``/readyz``); each part's
        ``callroom_ready`` gauge set on the way (SPEC §9)."""
        failing: list[str] = []
        if self.draining:
            failing.append("draining")
        keys = self._verifier is not None and self._verifier.ready
        if not keys:
            failing.append("token keys")
        bus = self._hub is None or await self._hub.ready()
        if not bus:
            failing.append("bus")
        try:
            await asyncio.wait_for(self.history.check(), timeout=5)
            store = True
        except (StoreUnavailable, TimeoutError):
            failing.append("store")
            store = False
        ready = self.metrics.ready
        for part, up in (("store", store), ("keys", keys), ("bus", bus)):
            ready.labels(part=part).set(1 if up else 0)
        return failing

    async def _retention_loop(self) -> None:
        days = self.settings.CHAT_RETENTION_DAYS
        assert days is not None
        while True:
            cutoff = int((time.time() - days * 86400) * 1000)
            try:
                purged = await self.history.purge_older_than(cutoff)
                log.info("chat_retention_purge", purged=purged, days=days)
            except StoreUnavailable:
                log.warning("chat_retention_skipped", reason="store unavailable")
            await asyncio.sleep(RETENTION_INTERVAL_SECONDS)

    async def stop(self) -> None:
        """The shutdown sequence of the module docstring, bounded by the grace."""
        grace = self.settings.SHUTDOWN_GRACE_SECONDS
        try:
            await asyncio.wait_for(self._shutdown(grace), timeout=max(grace, 0.1))
        except TimeoutError:
            log.warning("shutdown_grace_exceeded", grace_seconds=grace)
        finally:
            if self._runner is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._runner.cleanup(), timeout=1)
            self.stopped.set()

    async def _shutdown(self, grace: float) -> None:
        self.draining = True
        log.info("shutdown_started", connections=len(self._hub.connections if self._hub else ()))
        if self._heartbeat is not None:
            self._heartbeat.stop()
        hub = self._hub
        if hub is not None:
            for conn in list(hub.connections):
                conn.detached = True
                conn.close(CloseCode.GOING_AWAY, "server shutting down")
            if hub.connections:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(hub.idle.wait(), timeout=grace / 2)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if hub is not None:
            await hub.stop()  # many nodes: leave Redis after the members' last frames
        await self.history.close()
        self.refusal_log.close()
        if self._jwks is not None:
            await self._jwks.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        log.info("shutdown_complete")
