"""Helpers of the browser tests: people (one browser context each) and where they point.

A person's page is driven only through the ``data-testid`` hooks of docs/web-client.md.
Each page is watched: console errors and uncaught exceptions or unhandled rejections are
collected (the ``people`` fixture fails the test on any), every WebSocket it opens is
kept, and every server event it receives is parsed, so that a test can say what the page
was told (``received``) as well as what it shows.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Error,
    Locator,
    Page,
    WebSocket,
    expect,
)
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from callroom.server.node import Node

# Fake camera, microphone and screen, granted without a prompt; the fake camera at 10
# frames/s (a meeting of three encodes six and decodes six video streams, on 2 shared
# cores). ICE between the browsers of one machine: loopback candidates allowed and real
# host addresses instead of mDNS names (a CI container may have only a loopback interface
# and no mDNS resolver). None of Chromium's background traffic. Headless Chromium runs as
# root in CI, hence --no-sandbox.
CHROMIUM_ARGS = [
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream=fps=10",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Longer than any reconnect backoff a page could have scheduled after a close, and how
# long a page whose timers ran that far ahead is watched for a new WebSocket.
RECONNECT_HORIZON_MS = 600_000
QUIET_WINDOW_MS = 3_000

# Waits are Playwright's auto-waiting with these bounds (2 shared cores in CI): UI changes
# that follow a server round trip or two, and media that needs ICE and a decoded frame.
UI_TIMEOUT_MS = 15_000
MEDIA_TIMEOUT_MS = 45_000
expect.set_options(timeout=UI_TIMEOUT_MS)


@dataclass
class Topology:
    """Where the browsers point: one node, or two nodes sharing Redis (SPEC §7)."""

    name: str
    nodes: list[Node]

    def url(self, index: int) -> str:
        """The node of the ``index``-th person: people alternate between the nodes."""
        return self.nodes[index % len(self.nodes)].url


@dataclass(eq=False)
class Person:
    """One user: a browser context with one page."""

    name: str
    url: str
    context: BrowserContext
    page: Page
    problems: list[str] = field(default_factory=list)
    # Console errors a test said the browser itself logs (a refused upgrade), and those seen.
    allowed: list[re.Pattern[str]] = field(default_factory=list)
    allowed_seen: list[str] = field(default_factory=list)
    sockets: list[WebSocket] = field(default_factory=list)
    # Every server event the page received, in order: {"event": ..., "payload": ...}.
    received: list[dict[str, Any]] = field(default_factory=list)
    # The page's other console lines (the mesh warns of a failed negotiation step).
    console: list[str] = field(default_factory=list)

    def watch(self) -> None:
        self.page.on("console", self._on_console)
        self.page.on("pageerror", self._on_page_error)
        self.page.on("websocket", self._on_websocket)

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            self.console.append(f"console {message.type}: {message.text}")
            return
        if any(pattern.search(message.text) for pattern in self.allowed):
            self.allowed_seen.append(message.text)
        else:
            self.problems.append(f"console error: {message.text} at {message.location}")

    def _on_page_error(self, error: Error) -> None:
        self.problems.append(f"uncaught in the page: {error.name}: {error.message}")

    def _on_websocket(self, socket: WebSocket) -> None:
        self.sockets.append(socket)
        socket.on("framereceived", self._on_frame)

    def _on_frame(self, payload: str | bytes) -> None:
        if isinstance(payload, str):
            self.received.append(json.loads(payload))

    def expect_refused_upgrades(self, status: int, reason: str) -> None:
        """From now on a refused upgrade is expected: the browser itself logs the failed
        WebSocket handshake and the page's ``GET`` that reads why (docs/web-client.md)."""
        self.allowed += [
            re.compile(r"^WebSocket connection to 'ws://[^']+' failed"),
            re.compile(rf"status of {status} \({reason}\)$"),
        ]

    def events(self, name: str) -> list[dict[str, Any]]:
        """Payloads of the ``name`` events the page received."""
        return [m.get("payload") or {} for m in self.received if m.get("event") == name]

    @property
    def client_id(self) -> str:
        """The clientId the server knows this person by (from its ``room_state``)."""
        states = self.events("room_state")
        assert states, f"{self.name} has received no room_state"
        return str(states[-1]["clientId"])

    def hook(self, testid: str) -> Locator:
        return self.page.get_by_test_id(testid)

    def member(self, testid: str, client_id: str) -> Locator:
        """The ``testid`` element (participant, video-tile, ...) of member ``client_id``."""
        return self.page.locator(f'[data-testid="{testid}"][data-client-id="{client_id}"]')

    async def join(self, room: str) -> None:
        response = await self.page.goto(self.url + "/")
        assert response is not None
        assert response.ok, f"GET / answered {response.status}"
        await self.hook("display-name").fill(self.name)
        await self.hook("room-id").fill(room)
        await self.hook("join").click()

    async def expect_status(self, state: str) -> None:
        await expect(self.hook("status")).to_have_attribute("data-state", state)

    async def tab_to(self, target: Locator, limit: int = 60) -> None:
        """Press Tab until ``target`` has the focus (keyboard reachable), at most ``limit``."""
        for _ in range(limit):
            if await target.evaluate("element => element === document.activeElement"):
                return
            await self.page.keyboard.press("Tab")
        await expect(target).to_be_focused(timeout=1)

    async def no_new_websocket(self) -> None:
        """After a final close: every timer of the page (opened with ``fake_clock``) runs
        as if ten minutes had passed, so a reconnect with any backoff would start now; no
        WebSocket may open within the quiet window."""
        await self.page.clock.fast_forward(RECONNECT_HORIZON_MS)
        with pytest.raises(PlaywrightTimeoutError):
            await self.page.wait_for_event("websocket", timeout=QUIET_WINDOW_MS)


class People:
    """Opens one browser context per person and collects what went wrong in the pages."""

    def __init__(self, browser: Browser, topology: Topology) -> None:
        self.browser = browser
        self.topology = topology
        self.people: list[Person] = []

    async def open(
        self, name: str, *, fake_clock: bool = False, width: int = 1280, height: int = 800
    ) -> Person:
        """A new person on the next node, its window ``width`` x ``height`` CSS pixels.
        ``fake_clock``: its page's timers can be fast-forwarded (``page.clock``); time
        still flows on its own."""
        context = await self.browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(UI_TIMEOUT_MS)
        if fake_clock:
            await context.clock.install()
        page = await context.new_page()
        person = Person(name, self.topology.url(len(self.people)), context, page)
        person.watch()
        self.people.append(person)
        return person

    def story(self) -> str:
        """Every server event each person's pages received, one line each, in order."""
        lines = []
        for person in self.people:
            lines.append(f"-- events received by {person.name}:")
            lines += [f"  {summary(message)}" for message in person.received]
            lines.append(f"-- console of {person.name}:")
            lines += [f"  {line}" for line in person.console]
        return "\n".join(lines)

    async def close(self) -> list[str]:
        """Close every context; the problems seen in the pages."""
        problems: list[str] = []
        for person in self.people:
            await person.context.close()
            problems.extend(f"{person.name}: {p}" for p in person.problems)
        return problems


# -- Flows shared by the tests ------------------------------------------------------------


def new_room(name: str = "room") -> str:
    """A room of the test's own (the nodes serve every test of a module)."""
    return f"{name}-{uuid.uuid4().hex[:6]}"


async def host_opens(people: People, room: str, name: str = "Hana Host") -> Person:
    host = await people.open(name)
    await host.join(room)
    await host.expect_status("in-meeting")
    await expect(host.hook("status")).to_have_text("in meeting")
    return host


async def admit(host: Person, guest: Person) -> None:
    """``guest`` knocks, ``host`` lets it in from the waiting-room panel."""
    await guest.expect_status("waiting")
    waiting = host.member("waiting-user", guest.client_id)
    await waiting.get_by_test_id("admit").click()
    await guest.expect_status("in-meeting")


async def knock(people: People, room: str, name: str, *, fake_clock: bool = False) -> Person:
    """A new person asks to join ``room`` and waits."""
    guest = await people.open(name, fake_clock=fake_clock)
    await guest.join(room)
    await guest.expect_status("waiting")
    return guest


async def meeting_of_two(people: People, *, guest_clock: bool = False) -> tuple[Person, Person]:
    """A host and an admitted guest; ``guest_clock``: the guest's timers can be fast-forwarded."""
    room = new_room()
    host = await host_opens(people, room)
    guest = await knock(people, room, "Gus Guest", fake_clock=guest_clock)
    await admit(host, guest)
    return host, guest


async def expect_remote_video(viewer: Person, sender: Person, testid: str = "video-tile") -> None:
    """``viewer``'s tile of ``sender`` is connected and its <video> plays: decoded frames
    keep coming. The tile is looked up afresh on every check: after a reload the peer
    connection, hence the tile, is replaced, and the old one's picture is frozen."""
    try:
        await viewer.page.wait_for_function(
            PLAYING_JS, arg=[testid, sender.client_id], timeout=MEDIA_TIMEOUT_MS
        )
    except PlaywrightTimeoutError as timeout:
        raise AssertionError(await media_report(viewer, sender)) from timeout


PLAYING_JS = """([testid, clientId]) => {
  const selector = `[data-testid="${testid}"][data-client-id="${clientId}"]`;
  const tiles = document.querySelectorAll(selector);
  if (tiles.length !== 1) return false;
  const tile = tiles[0];
  if (testid === "video-tile" && tile.dataset.connectionState !== "connected") return false;
  const video = tile.querySelector("video");
  if (!video || !(video.videoWidth > 0 && video.readyState >= 2 && !video.paused)) return false;
  const frames = video.getVideoPlaybackQuality().totalVideoFrames;
  const seen = (window.__framesSeen ??= new WeakMap());
  if (!seen.has(video)) {
    seen.set(video, frames);
    return false;
  }
  return frames > seen.get(video);
}"""


SIGNALS = ("offer", "answer", "candidate", "renegotiate")
TILES_JS = """() => [...document.querySelectorAll('[data-testid$="-tile"]')].map(tile => {
  const video = tile.querySelector('video');
  return {testid: tile.dataset.testid, clientId: tile.dataset.clientId,
          state: tile.dataset.connectionState, attached: tile.isConnected,
          width: video?.videoWidth, readyState: video?.readyState, paused: video?.paused,
          tracks: video?.srcObject?.getTracks().map(t => `${t.kind}:${t.readyState}`)};
})"""


async def media_report(viewer: Person, sender: Person) -> str:
    """Why media did not flow: the tiles each side shows and the signals each received."""
    lines = [f"no video of {sender.name} at {viewer.name}"]
    for person in (viewer, sender):
        tiles = await person.page.evaluate(TILES_JS)
        lines.append(f"{person.name} tiles: {tiles}")
        signals = [summary(m) for m in person.received if m.get("event") in SIGNALS]
        lines.append(f"{person.name} signals received: {signals}")
    return "\n".join(lines)


def summary(message: dict[str, Any]) -> str:
    """One received event in a line: its name and what matters of its payload."""
    event, payload = message.get("event"), message.get("payload") or {}
    if event in SIGNALS:
        return f"{event} from {payload.get('clientId')} {_signal_summary(payload)}"
    if event == "room_state":
        members = {
            key: [m.get("clientId") for m in payload.get(key) or []]
            for key in ("hosts", "participants", "sharingScreen", "waitingUsers")
        }
        return f"room_state role={payload.get('role')} members={members}"
    return f"{event} {json.dumps(payload)[:300]}"


def _signal_summary(payload: dict[str, Any]) -> str:
    if "sdp" in payload:
        session = re.search(r"^o=\S+ (\d+) ", str(payload["sdp"]), re.MULTILINE)
        return f"session {session.group(1) if session else '?'}"
    if "reason" in payload:
        return f"reason {payload['reason']}"
    return ""


async def expect_roles(viewer: Person, roles: dict[Person, str]) -> None:
    items = viewer.hook("participants").get_by_test_id("participant")
    await expect(items).to_have_count(len(roles))
    for person, role in roles.items():
        await expect(viewer.member("participant", person.client_id)).to_have_attribute(
            "data-role", role
        )
