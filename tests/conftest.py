"""Fixtures shared by the integration tests: JWKS server, tokens, a running node, the
nodes of a deployment (one, or two on Redis: tests/deployment.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from callroom_testing import (
    AUDIENCE,
    ISSUER,
    JwksServer,
    SigningKey,
    TokenFactory,
    flush_test_redis,
)
from deployment import DeployFactory, Deployment
from log_lines import LogLines
from loop_thread import LoopThread
from redis_cluster import RedisTestCluster
from restart_members import Member


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    return SigningKey.generate("test-key-1")


@pytest.fixture
async def jwks_server(signing_key: SigningKey) -> AsyncIterator[JwksServer]:
    server = JwksServer([signing_key])
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def make_token(signing_key: SigningKey) -> TokenFactory:
    return TokenFactory(signing_key)


NodeFactory = Callable[..., Awaitable[Any]]


@pytest.fixture
async def start_node(jwks_server: JwksServer, tmp_path: Path) -> AsyncIterator[NodeFactory]:
    """Start a real node on a free 127.0.0.1 port; every started node is stopped."""
    from callroom.config import Settings
    from callroom.server.node import Node

    nodes: list[Node] = []

    async def factory(**overrides: Any) -> Node:
        values: dict[str, Any] = {
            "AUTH_ISSUER": ISSUER,
            "AUTH0_AUDIENCE": AUDIENCE,
            "AUTH_JWKS_URL": jwks_server.url,
            "HOST": "127.0.0.1",
            "PORT": 0,
            "DATABASE_URL": f"sqlite:///{tmp_path}/chat-{len(nodes)}.db",
            "ALLOWED_ORIGINS": "http://localhost:3000",
            "SHUTDOWN_GRACE_SECONDS": 3,
        }
        values.update(overrides)
        settings = Settings(_env_file=None, **values)
        node = Node(settings)
        await node.start()
        nodes.append(node)
        return node

    yield factory
    for node in nodes:
        if not node.stopped.is_set():
            await node.stop()


@pytest.fixture
async def people() -> AsyncIterator[list[Member]]:
    """The members of a meeting scenario (tests/restart_meeting.py); they leave before
    the nodes stop (fixture order: request it after the nodes)."""
    members: list[Member] = []
    yield members
    await asyncio.gather(*(member.leave() for member in members))


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisTestCluster]:
    """The suite's own Redis Cluster (3 primaries, 3 replicas; tests/redis_cluster.py),
    started once; emptied by ``cluster_url``."""
    cluster = RedisTestCluster(tmp_path_factory.mktemp("redis-cluster"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: RedisTestCluster) -> str:
    """The suite's Redis Cluster, every primary emptied; its ``redis+cluster://`` URL."""
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture
async def redis_url(request: pytest.FixtureRequest) -> str:
    """Many nodes (SPEC §7): the tests' own Redis database, emptied; or, parametrised
    indirectly with ``"redis_cluster"``, the suite's Redis Cluster emptied."""
    if getattr(request, "param", "redis") == "redis_cluster":
        url: str = request.getfixturevalue("cluster_url")
        return url
    return await flush_test_redis()


@pytest.fixture
async def start_cluster(start_node: NodeFactory, redis_url: str, tmp_path: Path) -> NodeFactory:
    """Start nodes sharing one Redis and one chat store (SQLite file unless given)."""

    async def factory(count: int = 2, **overrides: Any) -> list[Any]:
        values: dict[str, Any] = {
            "REDIS_URL": redis_url,
            "DATABASE_URL": f"sqlite:///{tmp_path}/cluster.db",
        }
        values.update(overrides)
        return [await start_node(**values) for _ in range(count)]

    return factory


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "xfail_on_two_nodes(reason): a known difference of the many-node runtime; the test "
        "is expected to fail (strictly) on the two_nodes deployment only",
    )
    config.addinivalue_line(
        "markers",
        "on_redis_cluster: the room behaviour test runs on two_nodes_cluster too (two "
        "nodes over the suite's Redis Cluster)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``deploy``: one node and two nodes on one Redis always; two nodes over the
    suite's Redis Cluster for the tests marked ``on_redis_cluster`` (issue 19: admission,
    chat and history, signaling, takeover, host handoff, bans)."""
    if "deploy" not in metafunc.fixturenames:
        return
    params = ["one_node", "two_nodes"]
    if metafunc.definition.get_closest_marker("on_redis_cluster") is not None:
        params.append("two_nodes_cluster")
    metafunc.parametrize("deploy", params, indirect=True)


@pytest.fixture
async def deploy(
    request: pytest.FixtureRequest, start_node: NodeFactory, tmp_path: Path
) -> DeployFactory:
    """Start the nodes of a room behaviour test: one node, or two sharing the tests'
    Redis (or the suite's Redis Cluster) and one chat store, with members alternating
    between them (tests/deployment.py). Every node gets the same settings."""
    many = request.param != "one_node"
    marker = request.node.get_closest_marker("xfail_on_two_nodes")
    if many and marker is not None:
        request.applymarker(pytest.mark.xfail(strict=True, reason=marker.args[0]))
    on_cluster = request.param == "two_nodes_cluster"

    async def factory(**overrides: Any) -> Deployment:
        if not many:
            return Deployment([await start_node(**overrides)])
        if on_cluster:
            url = request.getfixturevalue("cluster_url")
        else:
            url = await flush_test_redis()
        values: dict[str, Any] = {
            "REDIS_URL": url,
            "DATABASE_URL": f"sqlite:///{tmp_path}/cluster.db",  # one store for both
        }
        values.update(overrides)
        return Deployment([await start_node(**values) for _ in range(2)])

    return factory


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    """An event loop on a thread of its own, for a module's live hypothesis tests
    (test_fuzz_live.py, test_model_live.py): their rules are synchronous."""
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture(scope="module")
def log_lines() -> Iterator[LogLines]:
    """The log lines of the module's nodes (tests/log_lines.py)."""
    lines = LogLines()
    lines.start()
    yield lines
    lines.stop()
