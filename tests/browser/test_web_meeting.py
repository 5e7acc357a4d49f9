"""A meeting held in real browsers: waiting room, video, chat, hands, media, screen share.

Each test runs twice (the ``topology`` fixture): all browsers on one node, and the
browsers alternating between two nodes that share Redis (SPEC §7). The page is driven
only through the ``data-testid`` hooks of docs/web-client.md; what the page was told is
read from its WebSocket frames.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from browsing import (
    People,
    Topology,
    admit,
    expect_remote_video,
    expect_roles,
    host_opens,
    knock,
    meeting_of_two,
    new_room,
)
from playwright.async_api import expect

from callroom_testing import open_client

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_the_host_admits_a_waiting_guest_and_both_see_each_other(
    people: People, screenshot_dir: Path
) -> None:
    room = "weekly-sync"  # shown in the screenshots; no other test uses it
    host = await host_opens(people, room)
    await expect(host.hook("waiting-list").get_by_test_id("waiting-user")).to_have_count(0)

    guest = await knock(people, room, "Gus Guest")
    await expect(guest.hook("status")).to_have_text("waiting")
    await expect(guest.page.get_by_text("Waiting for the host to let you in")).to_be_visible()
    # A waiting user is told nothing of the meeting (SPEC §3.2).
    assert {m["event"] for m in guest.received} <= {"room_state", "pong", "error"}
    assert guest.events("error") == []
    waiting = host.member("waiting-user", guest.client_id)
    await expect(waiting).to_contain_text("Gus Guest")
    await guest.page.screenshot(path=screenshot_dir / "waiting-room.png")
    await host.page.screenshot(path=screenshot_dir / "waiting-room-host.png")

    await waiting.get_by_test_id("admit").click()
    await guest.expect_status("in-meeting")
    await expect(guest.hook("status")).to_have_text("in meeting")
    await expect(host.hook("waiting-list").get_by_test_id("waiting-user")).to_have_count(0)
    for viewer in (host, guest):
        await expect_roles(viewer, {host: "host", guest: "participant"})
    await expect_remote_video(host, guest)
    await expect_remote_video(guest, host)


async def test_chat_goes_both_ways_and_its_history_survives_a_reload(people: People) -> None:
    host, guest = await meeting_of_two(people)

    await host.hook("chat-input").fill("hello from the host")
    await host.hook("chat-send").click()
    await guest.hook("chat-input").fill("hi host, guest here")
    await guest.hook("chat-input").press("Enter")
    texts = ["hello from the host", "hi host, guest here"]
    for viewer in (host, guest):
        messages = viewer.hook("chat-messages").get_by_test_id("chat-message")
        await expect(messages.get_by_test_id("chat-text")).to_have_text(texts)
    await expect(host.hook("chat-input")).to_have_value("")

    await guest.page.reload()
    await guest.expect_status("in-meeting")
    messages = guest.hook("chat-messages").get_by_test_id("chat-message")
    await expect(messages.get_by_test_id("chat-text")).to_have_text(texts)
    await expect(messages.first).to_have_attribute("data-client-id", host.client_id)
    await expect(messages.last).to_have_attribute("data-client-id", guest.client_id)
    # The reload was within the grace: the guest kept its place (SPEC §2).
    await expect_roles(host, {host: "host", guest: "participant"})
    assert host.events("disconnect") == []


async def post_chats(base_url: str, room: str, texts: list[str]) -> None:
    """A non-browser member (a host by its token) posts ``texts`` to ``room`` and leaves."""
    async with aiohttp.ClientSession() as http:
        body = {"sub": "scribe", "name": "Sam Scribe", "roles": ["host"]}
        async with http.post(f"{base_url}/dev/token", json=body) as response:
            token = (await response.json())["token"]
    ws_url = base_url.replace("http://", "ws://") + f"/ws/zoom/{room}?token={token}"
    scribe = await open_client(ws_url)
    await scribe.expect("room_state")
    for number, text in enumerate(texts):
        await scribe.send("add_chat", {"chatContent": text, "chatId": f"note-{number}"})
    for _ in texts:
        await scribe.expect("add_chat")
    await scribe.close(1000)


async def test_chat_history_pages_back_and_deletes_reach_everyone(
    people: People, topology: Topology
) -> None:
    room = new_room()
    host = await host_opens(people, room)
    notes = [f"note {n}" for n in range(1, 61)]
    await post_chats(topology.url(1), room, notes)
    guest = await knock(people, room, "Gus Guest")
    await admit(host, guest)

    texts = guest.hook("chat-messages").get_by_test_id("chat-message").get_by_test_id("chat-text")
    await expect(texts).to_have_text(notes[-50:])  # the newest page, oldest first
    await guest.hook("chat-load-older").click()
    await expect(texts).to_have_text(notes)
    await expect(guest.hook("chat-load-older")).to_be_hidden()

    last = host.page.locator('[data-testid="chat-message"][data-chat-id="note-59"]')
    await last.get_by_test_id("chat-delete").click()
    await expect(texts).to_have_text(notes[:-1])
    await guest.hook("chat-input").fill("a typo")
    await guest.hook("chat-send").click()
    mine = guest.hook("chat-messages").get_by_test_id("chat-message").filter(has_text="a typo")
    host_texts = host.hook("chat-messages").get_by_test_id("chat-text")
    await expect(host_texts.last).to_have_text("a typo")
    await mine.get_by_test_id("chat-delete").click()
    await expect(host_texts.last).to_have_text("note 59")
    await expect(texts.last).to_have_text("note 59")
    # A participant may delete its own messages only (SPEC §3.1).
    await expect(
        guest.page.locator('[data-testid="chat-message"][data-chat-id="note-0"]').get_by_test_id(
            "chat-delete"
        )
    ).to_have_count(0)


async def test_a_raised_hand_and_the_media_state_show_on_the_host(people: People) -> None:
    host, guest = await meeting_of_two(people)
    on_host = host.member("participant", guest.client_id)

    await guest.hook("raise-hand").click()
    await expect(guest.hook("raise-hand")).to_have_attribute("aria-pressed", "true")
    hand = host.hook("hands").get_by_test_id("hand")
    await expect(hand).to_have_count(1)
    await expect(hand).to_have_attribute("data-client-id", guest.client_id)
    await expect(hand).to_contain_text("Gus Guest")
    await expect(on_host).to_have_attribute("data-hand", "true")
    await guest.hook("raise-hand").click()
    await expect(guest.hook("raise-hand")).to_have_attribute("aria-pressed", "false")
    await expect(hand).to_have_count(0)

    await expect(on_host).to_have_attribute("data-audio", "true")
    await guest.hook("mute").click()
    await expect(guest.hook("mute")).to_have_attribute("aria-pressed", "true")
    await expect(on_host).to_have_attribute("data-audio", "false")
    await guest.hook("camera").click()
    await expect(guest.hook("camera")).to_have_attribute("aria-pressed", "true")
    await expect(on_host).to_have_attribute("data-video", "false")
    await guest.hook("mute").click()
    await expect(on_host).to_have_attribute("data-audio", "true")


async def test_a_screen_share_is_requested_approved_and_seen(people: People) -> None:
    host, guest = await meeting_of_two(people)
    share = guest.hook("share-screen")

    await expect(share).to_have_attribute("data-state", "request")
    await share.click()
    await expect(share).to_have_attribute("data-state", "requested")
    request = host.member("share-request", guest.client_id)
    await request.get_by_test_id("approve-share").click()
    await expect(share).to_have_attribute("data-state", "start")
    await expect_roles(host, {host: "host", guest: "screenshare"})

    await share.click()  # a user gesture: getDisplayMedia picks the fake screen
    await expect(share).to_have_attribute("data-state", "sharing")
    await expect_remote_video(host, guest, "screen-tile")
    await expect_remote_video(host, guest)  # the camera still plays beside the screen

    await share.click()
    await expect(host.member("screen-tile", guest.client_id)).to_have_count(0)
    await expect_roles(host, {host: "host", guest: "participant"})
    await expect(share).to_have_attribute("data-state", "request")


async def test_a_denied_guest_sees_why_and_does_not_knock_again(people: People) -> None:
    room = new_room()
    host = await host_opens(people, room)
    guest = await knock(people, room, "Gus Guest", fake_clock=True)
    opened = len(guest.sockets)

    await host.member("waiting-user", guest.client_id).get_by_test_id("deny").click()
    await guest.expect_status("closed")
    await expect(guest.hook("status")).to_have_attribute("data-close-code", "4003")
    await expect(guest.hook("status")).to_have_text("the host denied your request to join")
    await expect(host.hook("waiting-list").get_by_test_id("waiting-user")).to_have_count(0)
    await guest.no_new_websocket()
    assert len(guest.sockets) == opened
    await expect(host.hook("waiting-list").get_by_test_id("waiting-user")).to_have_count(0)


# Every visible control without a name a screen reader could say (aria-label, a <label>,
# aria-labelledby, its text, or a title).
UNLABELLED_CONTROLS = """() => [...document.querySelectorAll("button, input, select, textarea")]
  .filter((el) => el.offsetParent !== null)
  .filter((el) => !(el.getAttribute("aria-label") || el.getAttribute("title")
    || (el.labels && [...el.labels].some((l) => l.textContent.trim()))
    || (el.getAttribute("aria-labelledby") || "").split(" ").some(
         (id) => document.getElementById(id)?.textContent.trim())
    || (el.tagName === "BUTTON" && el.textContent.trim())))
  .map((el) => el.outerHTML.slice(0, 120))"""

# Elements wider than the window, or sticking out of it on the right.
OVERFLOWING = """() => [document.documentElement, ...document.querySelectorAll("body *")]
  .filter((el) => el === document.documentElement ? el.scrollWidth > innerWidth
    : el.offsetParent !== null && el.getBoundingClientRect().right > innerWidth + 1)
  .map((el) => el.outerHTML.slice(0, 120))"""


async def test_on_a_phone_from_the_keyboard_only(people: People, screenshot_dir: Path) -> None:
    room = "standup"  # shown in the screenshot; no other test uses it
    host = await people.open("Hana Host", width=390, height=844)
    response = await host.page.goto(host.url + "/")
    assert response is not None
    assert response.ok
    keys = host.page.keyboard
    await host.tab_to(host.hook("display-name"))
    await keys.type("Hana Host")
    await keys.press("Tab")
    await expect(host.hook("room-id")).to_be_focused()
    await keys.type(room)
    await keys.press("Enter")
    await host.expect_status("in-meeting")
    assert await host.page.evaluate(UNLABELLED_CONTROLS) == []

    guest = await knock(people, room, "Gus Guest")
    admit_button = host.member("waiting-user", guest.client_id).get_by_test_id("admit")
    await host.tab_to(admit_button)
    await keys.press("Enter")
    await guest.expect_status("in-meeting")
    await expect_remote_video(host, guest)

    await host.tab_to(host.hook("raise-hand"))
    await keys.press("Space")
    await expect(host.hook("raise-hand")).to_have_attribute("aria-pressed", "true")
    await expect(guest.member("hand", host.client_id)).to_have_count(1)
    assert await host.page.evaluate(UNLABELLED_CONTROLS) == []
    assert await host.page.evaluate(OVERFLOWING) == []
    await host.page.screenshot(path=screenshot_dir / "phone.png", full_page=True)
