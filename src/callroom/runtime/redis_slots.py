"""Redis Cluster's slot map (SPEC §9): which primary serves each of the 16384 slots.

A name's slot is the CRC16 of its hash tag (the part between the first ``{`` and the
next ``}``, when not empty) or of the whole name, modulo 16384. Every key and channel
of one room carries the room's tag (``redis_keys.py``), so one primary serves all of a
room's commands and messages.

The map is read with ``CLUSTER SLOTS`` from any node known (the seed of
``redis+cluster://HOST:PORT``, then every node the cluster named), and read again when
a shard answers ``MOVED`` or stops answering (a failover): ``request_refresh`` runs one
refresh at a time, and once more if asked meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import structlog
from redis.asyncio import ConnectionPool
from redis.crc import key_slot

from callroom.runtime.redis_writer import REDIS_ERRORS

log = structlog.get_logger(__name__)

SLOTS = 16384
REFRESH_TIMEOUT_SECONDS = 2.0
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

Address = tuple[str, int]


def slot_of(name: str | bytes) -> int:
    """The hash slot of a key or shard channel."""
    return key_slot(name.encode() if isinstance(name, str) else name)


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0] in CLUSTER_SCHEMES


def node_url(url: str, address: Address | None = None) -> str:
    """``redis+cluster://`` as the ``redis://`` URL of one node (the seed by default),
    credentials and options kept, the database dropped (a cluster has only 0)."""
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme, parts.scheme)
    netloc = parts.netloc
    if address is not None:
        credentials, at, _ = netloc.rpartition("@")
        netloc = f"{credentials}{at}{address[0]}:{address[1]}"
    return urlunsplit((scheme, netloc, "", parts.query, ""))


def parse_address(text: str) -> Address:
    """``host:port`` (IPv6 hosts hold colons too) as an address."""
    host, _, port = text.rpartition(":")
    return host, int(port)


class SlotMap:
    """The primary of every slot, as the cluster last said."""

    def __init__(self, url: str, **connection: Any) -> None:
        self._url = url
        self._connection = connection
        seed = urlsplit(url)
        self.seeds: list[Address] = [(seed.hostname or "127.0.0.1", seed.port or 6379)]
        self.owners: list[Address | None] = [None] * SLOTS
        self.nodes: list[Address] = []  # every node named by the last map
        self.known = False  # a map was read once
        self.listeners: list[Callable[[], None]] = []  # told after each map read
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self.refreshed = asyncio.Event()

    def owner(self, slot: int) -> Address | None:
        return self.owners[slot]

    def pool(self, address: Address, **options: Any) -> ConnectionPool:
        """A pool of connections to one node of the cluster."""
        return ConnectionPool.from_url(
            node_url(self._url, address), **{**self._connection, **options}
        )

    def moved(self, slot: int, address: Address) -> None:
        """A node answered ``MOVED slot address``: take it at once, read the map again."""
        self.owners[slot] = address
        self.request_refresh()

    def request_refresh(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self.refreshed.clear()
        self._task = asyncio.create_task(self._refresh_loop())

    async def refresh(self) -> bool:
        """Read the map now (or wait for the read under way); whether one was read."""
        self.request_refresh()
        await self.refreshed.wait()
        return self.known

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _refresh_loop(self) -> None:
        try:
            while True:
                self._again = False
                await self._read_map()
                if not self._again:
                    break
        finally:
            self.refreshed.set()
        for listener in list(self.listeners):
            listener()

    async def _read_map(self) -> None:
        candidates = list(dict.fromkeys([*self._primaries(), *self.nodes, *self.seeds]))
        for address in candidates:
            try:
                reply = await self._cluster_slots(address)
            except (*REDIS_ERRORS, TimeoutError) as exc:
                log.info(
                    "redis_cluster_node_unreachable",
                    node=f"{address[0]}:{address[1]}",
                    error=str(exc),
                )
                continue
            self._take(reply, address)
            return
        log.warning("redis_cluster_map_unread", tried=len(candidates))

    def _primaries(self) -> list[Address]:
        return [owner for owner in dict.fromkeys(self.owners) if owner is not None]

    async def _cluster_slots(self, address: Address) -> Any:
        pool = self.pool(address)
        connection = pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            async with asyncio.timeout(REFRESH_TIMEOUT_SECONDS):
                await connection.connect()
                await connection.send_command("CLUSTER", "SLOTS")
                return await connection.read_response(disable_decoding=True)
        finally:
            await connection.disconnect()
            await pool.aclose()

    def _take(self, reply: Any, asked: Address) -> None:
        owners: list[Address | None] = [None] * SLOTS
        nodes: list[Address] = []
        for start, end, *servers in reply:
            found = [_address(server, asked) for server in servers]
            nodes.extend(found)
            owners[int(start) : int(end) + 1] = [found[0]] * (int(end) - int(start) + 1)
        self.owners = owners
        self.nodes = list(dict.fromkeys(nodes))
        self.known = True


def _address(server: list[Any], asked: Address) -> Address:
    """One node of a ``CLUSTER SLOTS`` entry; an empty or ``?`` host is the node asked."""
    host = server[0].decode() if isinstance(server[0], bytes) else str(server[0])
    return (host if host not in ("", "?") else asked[0], int(server[1]))
