"""A real WebRTC session negotiated through the server (issue 3 acceptance).

Two ``aiortc`` peers join one room and negotiate a data channel by sending ``offer``,
``answer`` and ``candidate`` frames through the node only, the way a browser client does
with trickle ICE: the session descriptions go without their ``a=candidate`` lines, every
candidate travels as its own ``candidate`` event (``"candidate:..."`` strings with their
``sdpMid``), and the empty candidate marks the end of candidates. Then both peers talk
over the data channel. No STUN server is needed: both peers are on this host.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from callroom_testing import Client, TokenFactory, join_room

TIMEOUT = 20.0


def split_candidates(sdp: str) -> tuple[str, list[tuple[str, str]]]:
    """The SDP without its candidate lines, and those candidates as (candidate, sdpMid)."""
    kept: list[str] = []
    candidates: list[tuple[str, str]] = []
    mid = ""
    for line in sdp.splitlines():
        if line.startswith("a=mid:"):
            mid = line.removeprefix("a=mid:")
        if line.startswith("a=candidate:"):
            candidates.append((line.removeprefix("a="), mid))
        elif line != "a=end-of-candidates":
            kept.append(line)
    return "\r\n".join(kept) + "\r\n", candidates


async def send_description(
    ws: Client, pc: RTCPeerConnection, kind: str, target: str
) -> list[tuple[str, str]]:
    """Send our local description, then trickle its candidates and the end marker."""
    sdp, candidates = split_candidates(pc.localDescription.sdp)
    assert candidates, "aiortc gathered no candidate"
    await ws.send(kind, {"targetClientId": target, "sdp": sdp, "type": kind})
    for candidate, mid in candidates:
        await ws.send(
            "candidate", {"targetClientId": target, "candidate": candidate, "sdpMid": mid}
        )
    await ws.send("candidate", {"targetClientId": target, "candidate": "", "sdpMid": mid})
    return candidates


async def receive_description(
    ws: Client, pc: RTCPeerConnection, kind: str, sender: str
) -> list[str]:
    """Apply the peer's description from the server, then its trickled candidates."""
    description = await ws.expect(kind)
    assert description["clientId"] == sender
    assert "a=candidate" not in description["sdp"]  # so ICE can only use the relayed ones
    await pc.setRemoteDescription(RTCSessionDescription(description["sdp"], description["type"]))
    received: list[str] = []
    while True:
        frame = await ws.expect("candidate")
        assert frame["clientId"] == sender
        if frame["candidate"] == "":
            await pc.addIceCandidate(None)  # end of candidates
            return received
        received.append(frame["candidate"])
        candidate = candidate_from_sdp(frame["candidate"].removeprefix("candidate:"))
        candidate.sdpMid = frame["sdpMid"]
        candidate.sdpMLineIndex = frame["sdpMLineIndex"]
        await pc.addIceCandidate(candidate)


async def test_two_aiortc_peers_talk_over_a_data_channel_negotiated_through_the_server(
    start_node: Any, make_token: TokenFactory
) -> None:
    node = await start_node(LOBBY_ENABLED=False)
    alice_ws, _ = await join_room(node, make_token("alice", "Alice"))
    bob_ws, _ = await join_room(node, make_token("bob", "Bob"))
    await alice_ws.expect("connect")

    config = RTCConfiguration(iceServers=[])
    alice_pc = RTCPeerConnection(config)
    bob_pc = RTCPeerConnection(config)
    loop = asyncio.get_running_loop()
    alice_got: asyncio.Future[str] = loop.create_future()
    bob_got: asyncio.Future[str] = loop.create_future()
    channel_open = asyncio.Event()
    try:
        channel = alice_pc.createDataChannel("meeting")
        channel.on("open", channel_open.set)

        @channel.on("message")
        def on_alice_message(message: Any) -> None:
            if not alice_got.done():
                alice_got.set_result(message)

        @bob_pc.on("datachannel")
        def on_datachannel(remote: Any) -> None:
            def on_bob_message(message: Any) -> None:
                if not bob_got.done():
                    bob_got.set_result(message)
                    remote.send(f"echo: {message}")

            remote.on("message", on_bob_message)

        await alice_pc.setLocalDescription(await alice_pc.createOffer())
        sent_by_alice = await send_description(alice_ws, alice_pc, "offer", "bob")
        relayed_to_bob = await receive_description(bob_ws, bob_pc, "offer", "alice")
        assert relayed_to_bob == [candidate for candidate, _ in sent_by_alice]

        await bob_pc.setLocalDescription(await bob_pc.createAnswer())
        await send_description(bob_ws, bob_pc, "answer", "alice")
        await receive_description(alice_ws, alice_pc, "answer", "bob")

        await asyncio.wait_for(channel_open.wait(), TIMEOUT)
        channel.send("hello over WebRTC")
        assert await asyncio.wait_for(bob_got, TIMEOUT) == "hello over WebRTC"
        assert await asyncio.wait_for(alice_got, TIMEOUT) == "echo: hello over WebRTC"
        assert alice_pc.connectionState == "connected"
        assert bob_pc.connectionState == "connected"
    finally:
        await alice_pc.close()
        await bob_pc.close()
    await alice_ws.close()
    await bob_ws.close()
