"""Sessions in real browsers: a kick, a reload within the grace, a meeting of three.

Each test runs with the browsers on one node and on two nodes sharing Redis (SPEC §7).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from browsing import (
    People,
    admit,
    expect_remote_video,
    expect_roles,
    host_opens,
    knock,
    meeting_of_two,
)
from playwright.async_api import expect

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_a_kicked_user_sees_why_and_does_not_reconnect(people: People) -> None:
    host, guest = await meeting_of_two(people, guest_clock=True)
    await expect_remote_video(host, guest)
    opened = len(guest.sockets)

    await host.member("participant", guest.client_id).get_by_test_id("kick").click()
    status = guest.hook("status")
    await guest.expect_status("closed")
    await expect(status).to_have_attribute("data-close-code", "4004")
    await expect(status).to_have_text("you were removed from the meeting by a host")
    await expect(host.hook("participants").get_by_test_id("participant")).to_have_count(1)
    await expect(host.member("video-tile", guest.client_id)).to_have_count(0)

    await guest.no_new_websocket()  # 4004 is final (SPEC §3.4)
    assert len(guest.sockets) == opened
    await expect(status).to_have_attribute("data-close-code", "4004")
    # A knock would show on the host: the kick erased the guest's admission (SPEC §2).
    await expect(host.hook("waiting-list").get_by_test_id("waiting-user")).to_have_count(0)


async def test_a_reload_within_the_grace_keeps_the_role_and_nobody_sees_a_disconnect(
    people: People,
) -> None:
    host, guest = await meeting_of_two(people)
    await expect_remote_video(guest, host)
    host_id, sockets = host.client_id, len(host.sockets)

    await host.page.reload()
    await host.expect_status("in-meeting")
    assert len(host.sockets) == sockets + 1, "the reloaded page opens one new WebSocket"
    assert host.client_id == host_id
    assert host.events("room_state")[-1]["role"] == "host"
    for viewer in (host, guest):
        await expect_roles(viewer, {host: "host", guest: "participant"})
    # The reloaded tab negotiates new peer connections; video flows both ways again.
    await expect_remote_video(guest, host)
    await expect_remote_video(host, guest)
    assert guest.events("disconnect") == []
    assert all(state["role"] != "host" for state in guest.events("room_state"))


async def test_a_meeting_of_three_until_the_host_ends_it(
    people: People, screenshot_dir: Path
) -> None:
    room = "design-review"  # shown in the screenshot; no other test uses it
    host = await host_opens(people, room)
    guests = []
    for name in ("Gus Guest", "Tia Third"):
        guest = await knock(people, room, name)
        await admit(host, guest)
        guests.append(guest)
    trio = [host, *guests]
    for viewer in trio:
        await expect_roles(
            viewer, {host: "host", guests[0]: "participant", guests[1]: "participant"}
        )
        for sender in trio:
            if sender is not viewer:
                await expect_remote_video(viewer, sender)

    await guests[0].hook("chat-input").fill("Morning all! Agenda is in the doc.")
    await guests[0].hook("chat-send").click()
    await guests[1].hook("raise-hand").click()
    await expect(host.hook("chat-messages").get_by_test_id("chat-message")).to_have_count(1)
    await expect(host.hook("hands").get_by_test_id("hand")).to_have_count(1)
    await host.page.screenshot(path=screenshot_dir / "meeting.png")
    assert (screenshot_dir / "meeting.png").stat().st_size > 10_000

    await host.hook("end").click()
    for guest in guests:
        await guest.expect_status("closed")
        await expect(guest.hook("status")).to_have_attribute("data-close-code", "4005")
        await expect(guest.hook("status")).to_have_text("the meeting was ended by the host")


async def test_host_controls_promote_demote_lock_and_ban(people: People) -> None:
    host, guest = await meeting_of_two(people)
    guest_item = host.member("participant", guest.client_id)

    await guest_item.get_by_test_id("promote").click()
    for viewer in (host, guest):
        await expect_roles(viewer, {host: "host", guest: "host"})
    await expect(guest.hook("end")).to_be_visible()
    await guest_item.get_by_test_id("demote").click()
    for viewer in (host, guest):
        await expect_roles(viewer, {host: "host", guest: "participant"})
    await expect(guest.hook("end")).to_be_hidden()

    room = host.events("room_state")[-1]["roomId"]
    await host.hook("lock").click()
    await expect(host.hook("lock")).to_have_attribute("aria-pressed", "true")
    late = await people.open("Lou Late")
    late.expect_refused_upgrades(403, "Forbidden")
    await late.join(room)
    await late.expect_status("closed")
    await expect(late.hook("status")).to_have_attribute("data-refusal", "room_locked")
    await expect(late.hook("status")).to_have_text("this room is locked")
    assert late.allowed_seen, "the refused upgrade was logged by the browser"
    await host.hook("lock").click()
    await expect(host.hook("lock")).to_have_attribute("aria-pressed", "false")

    await guest_item.get_by_test_id("ban").click()
    await guest.expect_status("closed")
    await expect(guest.hook("status")).to_have_attribute("data-close-code", "4004")
    await expect(host.hook("participants").get_by_test_id("participant")).to_have_count(1)
    # Back as the same user (same tab): refused on every node for the life of the room.
    guest.expect_refused_upgrades(403, "Forbidden")
    await guest.join(room)
    await guest.expect_status("closed")
    await expect(guest.hook("status")).to_have_attribute("data-refusal", "banned")
    await expect(guest.hook("status")).to_have_text("you were banned from this room")
    await expect(host.hook("waiting-list").get_by_test_id("waiting-user")).to_have_count(0)
