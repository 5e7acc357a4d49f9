"""What must hold after Redis came back (issue 18 acceptance), checked on a ``Meeting``
(tests/restart_meeting.py) and written down in ``Findings``: room commands, a new
joiner, a round of chat, every ``add_chat`` answered, the history (SPEC §3.1, §4, §8).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Collection

from callroom_testing import http_call, refused, room_url
from restart_meeting import (
    ANSWER_SECONDS,
    EVENT_SECONDS,
    ROLES,
    ROOM,
    ROOM_PATH,
    Meeting,
    all_of,
    expected_lists,
    is_participant,
    lists_of,
)
from restart_members import ADMITTED, Findings, Member, Payload, Received


async def everyone_got(
    members: list[Member], marks: dict[Member, int], event: str, where: Callable[[Payload], bool]
) -> list[str]:
    """The members that did not receive ``event`` (matching ``where``) since their mark."""
    got = await asyncio.gather(
        *(m.wait_event(event, marks[m], EVENT_SECONDS, where) for m in members)
    )
    return [m.client_id for m, payload in zip(members, got, strict=True) if payload is None]


async def check_commands(meeting: Meeting, findings: Findings) -> None:
    """raise_hand by dan; lock_room (a stranger refused on every node) and unlock_room."""
    admitted_now = meeting.admitted()
    dan, alice = meeting.members["dan"], meeting.host()

    marks = {m: m.mark() for m in admitted_now}
    await dan.send("raise_hand")
    answer = await dan.answered("raise_hand", "raise_hand", marks[dan], EVENT_SECONDS)
    raised = answer is not None and answer.event == "raise_hand"
    missing = await everyone_got(admitted_now, marks, "raise_hand", by("dan")) if raised else []
    meeting.hands.append("dan")
    findings.check(
        "raise_hand after the restart reaches every admitted member",
        raised and not missing,
        {"answer": shown(answer), "missing": missing},
    )

    marks = {m: m.mark() for m in admitted_now}
    await alice.send("lock_room")
    answer = await alice.answered("lock_room", "room_locked", marks[alice], EVENT_SECONDS)
    locked = answer is not None and answer.event == "room_locked"
    missing = await everyone_got(admitted_now, marks, "room_locked", anything) if locked else []
    findings.check(
        "lock_room after the restart",
        locked and not missing,
        {"answer": shown(answer), "missing": missing},
    )
    if locked:
        token = meeting.make_token("gus", "Gus")
        answers = []
        for node in meeting.nodes:
            try:
                status, body = await refused(room_url(node, token, ROOM))
                answers.append((status, body.get("error")))
            except AssertionError as exc:  # connected: the lock did not hold there
                answers.append((101, str(exc)))
        findings.check(
            "a stranger is refused room_locked on every node",
            all(a == (403, "room_locked") for a in answers),
            answers,
        )
    marks = {m: m.mark() for m in admitted_now}
    await alice.send("unlock_room")
    answer = await alice.answered("unlock_room", "room_unlocked", marks[alice], EVENT_SECONDS)
    unlocked = answer is not None and answer.event == "room_unlocked"
    missing = await everyone_got(admitted_now, marks, "room_unlocked", anything) if unlocked else []
    findings.check(
        "unlock_room after the restart",
        unlocked and not missing,
        {"answer": shown(answer), "missing": missing},
    )


def shown(frame: Received | None) -> object:
    return None if frame is None else (frame.event, frame.payload)


def by(client_id: str) -> Callable[[Payload], bool]:
    return lambda payload: payload.get("clientId") == client_id


def anything(_payload: Payload) -> bool:
    return True


async def check_new_joiner(meeting: Meeting, findings: Findings) -> None:
    """frank joins after the restart: the lobby of the same room, then admitted and seen
    by every admitted member."""
    alice = meeting.host()
    admitted_before = meeting.admitted()
    marks = {m: m.mark() for m in admitted_before}
    try:
        frank = await meeting.arrive("frank")
    except Exception as exc:  # refused: the room is not usable
        findings.check("a new joiner gets in", False, repr(exc))
        return
    meeting.roles["frank"] = "participant"  # what the rest expects of him from now on
    if not findings.check(
        "a new joiner lands in the lobby of the same room",
        frank.role == "waiting",
        frank.link.room_state,
    ):
        return
    knock = await alice.wait_event("waiting_request", marks[alice], EVENT_SECONDS, by("frank"))
    if not findings.check("the host hears the new joiner knock", knock is not None):
        return
    since = frank.mark()
    await alice.send("accept_waiting", {"clientId": "frank"})
    state = await frank.wait_event("room_state", since, EVENT_SECONDS, is_participant)
    want = expected_lists(meeting.roles, as_host=False)
    seen = None if state is None else lists_of(state)
    if not findings.check(
        "the new joiner, admitted, sees the room as it is",
        seen == want,
        {"sees": seen, "expected": want, "answers": alice.received[marks[alice] :][-3:]},
    ):
        return
    missing = await everyone_got(admitted_before, marks, "connect", by("frank"))
    findings.check("every admitted member sees the new joiner", not missing, missing)


async def check_chat_round(meeting: Meeting, findings: Findings) -> None:
    """One new message from every admitted member; every admitted member receives all."""
    speakers = meeting.admitted()
    sent = []
    for member in speakers:
        chat_id = member.next_chat_id()
        sent.append(chat_id)
        await member.chat(chat_id)
    got = await asyncio.gather(
        *(
            m.wait_until(lambda m: all(c in m.chat_counts for c in sent), EVENT_SECONDS)
            for m in speakers
        )
    )
    missing = {
        m.client_id: [c for c in sent if c not in m.chat_counts]
        for m, ok in zip(speakers, got, strict=True)
        if not ok
    }
    findings.check("new chat messages reach every admitted member", not missing, missing)


async def check_answers(meeting: Meeting, findings: Findings) -> None:
    """Every add_chat answered (its echo or an ``error``); every error names its event.

    A message on a connection the server closed before answering it cannot be asked
    about on that connection: the member sent it again with its chatId after rejoining
    (SPEC §3.1, a safe retry), and that one must be answered."""
    members = list(meeting.members.values())

    def settled(member: Member) -> bool:
        return member.gone or (
            member.connected
            and member.link.unanswered == 0
            and not member.unacked_of_closed_links()
        )

    await all_of(*(m.wait_until(settled, ANSWER_SECONDS) for m in members))
    unanswered = {
        m.client_id: [link.unanswered for link in m.links if not link.closed and link.unanswered]
        for m in members
    }
    unanswered = {k: v for k, v in unanswered.items() if v}
    findings.check("every add_chat answered (echo or error)", not unanswered, unanswered)
    never = {m.client_id: m.unacked_of_closed_links() for m in members}
    never = {k: v for k, v in never.items() if v}
    findings.check("every add_chat cut by a close sent again and answered", not never, never)
    cut = {
        m.client_id: [(link.close_code, link.unanswered) for link in m.links if link.unanswered]
        for m in members
    }
    findings.note(
        f"add_chat cut by a close (code, how many): { {k: v for k, v in cut.items() if v} }"
    )
    wrong = []
    for member in members:
        for frame in member.received:
            if frame.event != "error":
                continue
            event = frame.payload.get("event")
            if event is None or event not in member.links[frame.link].sent:
                wrong.append((member.client_id, frame.payload))
    findings.check("every error names the event it answers", not wrong, wrong[:5])


async def history(meeting: Meeting) -> list[str]:
    """Every chatId of the room's history, oldest first (the admin route, paged back)."""
    chat_ids: list[str] = []
    before = ""
    while True:
        path = f"{ROOM_PATH}/messages?limit=100" + (f"&before={before}" if before else "")
        status, body, _ = await http_call(meeting.nodes[0], "GET", path, meeting.admin)
        assert status == 200, (status, body)
        page = [m["chatId"] for m in body["messages"]]
        chat_ids[:0] = page
        if not body["hasMore"] or not page:
            return chat_ids
        before = page[0]


async def check_history(
    meeting: Meeting, findings: Findings, in_doubt: Collection[str] = ()
) -> None:
    """The history against the ledgers. ``in_doubt``: chatIds that may have reached
    only their sender live (stored by a node that died before broadcasting them, then
    retried through another node: docs/architecture.md "Left"); they must be in the
    history and acknowledged, and are counted in a note."""
    bob = meeting.members["bob"]
    statuses = [
        (await http_call(node, "GET", f"{ROOM_PATH}/messages", bob.token))[0]
        for node in meeting.nodes
    ]
    findings.check(
        "the history route answers 200 to an admitted member", set(statuses) == {200}, statuses
    )
    stored = await history(meeting)
    members = list(meeting.members.values())
    acked = set().union(*(m.acknowledged() for m in members))
    received = set().union(*(m.chat_counts for m in members))
    twice = [c for c, n in Counter(stored).items() if n > 1]
    findings.check("no chatId twice in the history", not twice, twice[:10])
    lost = sorted(acked - set(stored))
    findings.check("every acknowledged message is in the history", not lost, lost[:10])
    unstored = sorted(received - set(stored))
    findings.check("every message received is in the history", not unstored, unstored[:10])
    doubled = {m.client_id: [c for c, n in m.chat_counts.items() if n > 1] for m in members}
    doubled = {k: v for k, v in doubled.items() if v}
    findings.check("no member received a chatId twice", not doubled, doubled)
    throughout = [
        m for n, m in meeting.members.items() if ROLES.get(n) in ADMITTED and len(m.links) == 1
    ]
    undelivered = {m.client_id: sorted(acked - set(m.chat_counts)) for m in throughout}
    excused = {k: [c for c in v if c in in_doubt] for k, v in undelivered.items()}
    excused = {k: v for k, v in excused.items() if v}
    if in_doubt:
        findings.note(f"in doubt at the kill, reached the sender only: {excused}")
    undelivered = {k: [c for c in v if c not in in_doubt][:10] for k, v in undelivered.items()}
    undelivered = {k: v for k, v in undelivered.items() if v}
    findings.check(
        "every message in doubt is acknowledged and in the history",
        set(in_doubt) <= acked & set(stored),
        sorted(set(in_doubt) - (acked & set(stored)))[:10],
    )
    findings.check(
        "every acknowledged message reached every member connected throughout",
        not undelivered,
        undelivered,
    )
    erin = meeting.members["erin"]
    findings.check("the waiting member got no chat", not erin.chat_counts, dict(erin.chat_counts))
    findings.note(f"history: {len(stored)} messages, {len(acked)} acknowledged")


def report(meeting: Meeting, findings: Findings) -> None:
    problems = {m.client_id: m.problems for m in meeting.members.values() if m.problems}
    findings.check("no member saw the protocol broken", not problems, problems)
    for name, member in meeting.members.items():
        errors = Counter(
            (f.payload.get("code"), f.payload.get("event"))
            for f in member.received
            if f.event == "error"
        )
        findings.note(
            f"{name}: closes {[link.close_code for link in member.links]}, "
            f"refused {member.refusals}, {member.retries} sent again, "
            f"role {member.role}, errors {dict(errors)}"
        )
