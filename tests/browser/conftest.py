"""Fixtures of the browser tests: Debian's Chromium and real in-process dev-mode nodes.

One Chromium per test module (launching it is the slow part), one browser context per
person (its own profile and sessionStorage, so its own dev user). The nodes run in dev
mode (SPEC §5: the page gets its token from ``/dev/token``) in the test's event loop, so
the fixtures and tests of this directory share one event loop per module.

Chromium is never downloaded; a missing one fails the tests (never skips them):
``apt-get install chromium`` (.ci/run does it).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from browsing import CHROMIUM_ARGS, People, Topology
from playwright.async_api import Browser, async_playwright

from callroom.auth.dev import DevKeys
from callroom.config import Settings
from callroom.server.node import Node
from callroom_testing import flush_test_redis

# The screenshots shown in the README: written there when CALLROOM_SCREENSHOTS=update,
# otherwise to the test's tmp_path, so that an ordinary run leaves the worktree as it was.
SCREENSHOTS_DIR = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "chromium is not installed: `apt-get install chromium` (.ci/run does it); "
            "the browser tests fail without it, they never skip",
            pytrace=False,
        )
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    path = chromium_path()
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=path, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        await chromium.close()


async def start_dev_node(keys: DevKeys, database: Path, **overrides: Any) -> Node:
    """A node as ``callroom serve --dev`` runs it, on a free 127.0.0.1 port.

    ``ALLOWED_ORIGINS`` stays unset: the page opens its WebSocket to the origin that
    served it, which SPEC §9 always allows.
    """
    values: dict[str, Any] = {
        "DEV_MODE": True,
        "HOST": "127.0.0.1",
        "PORT": 0,
        "DATABASE_URL": f"sqlite:///{database}",
        "SHUTDOWN_GRACE_SECONDS": 2,
        # The history test posts more than a page of chat (50) at once.
        "RATE_LIMIT_BURST": 100,
    }
    values.update(overrides)
    settings = Settings(_env_file=None, **values)
    node = Node(settings, dev_keys=keys)
    await node.start()
    return node


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["one-node", "two-nodes"])
async def topology(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Topology]:
    """One node; or two nodes sharing Redis and the chat store, people alternating."""
    keys = DevKeys.generate()
    database = tmp_path_factory.mktemp("browser") / "chat.db"
    nodes: list[Node] = []
    try:
        if request.param == "one-node":
            nodes.append(await start_dev_node(keys, database))
        else:
            redis_url = await flush_test_redis()
            # Pub/sub ignores database numbers: a prefix of its own keeps another test
            # run on the same Redis out of these rooms ("design-review" is a fixed name).
            prefix = f"browser-{uuid.uuid4().hex[:8]}"
            for _ in range(2):
                nodes.append(
                    await start_dev_node(keys, database, REDIS_URL=redis_url, REDIS_PREFIX=prefix)
                )
        yield Topology(request.param, nodes)
    finally:
        for node in nodes:
            if not node.stopped.is_set():
                await node.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def people(
    request: pytest.FixtureRequest, browser: Browser, topology: Topology
) -> AsyncIterator[People]:
    """Opens people; fails the test on any console error or uncaught error in their pages.
    After a failed test, what each page was told is printed (the test's captured output)."""
    crowd = People(browser, topology)
    yield crowd
    report = getattr(request.node, "call_report", None)
    if report is not None and report.failed:
        print(crowd.story())
    problems = await crowd.close()
    assert not problems, "errors in the pages:\n" + "\n".join(problems)


@pytest.fixture
def screenshot_dir(topology: Topology, tmp_path: Path) -> Path:
    """docs/screenshots/ when CALLROOM_SCREENSHOTS=update (the one-node run), else tmp_path."""
    if os.environ.get("CALLROOM_SCREENSHOTS") == "update" and topology.name == "one-node":
        SCREENSHOTS_DIR.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS_DIR
    return tmp_path


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep the call phase's report on the item: the ``people`` fixture reads it."""
    report = yield
    if report.when == "call":
        item.call_report = report  # type: ignore[attr-defined]
    return report
