"""Rule 7 across processes (``--overlap-policy=one-course`` on MongoDB; FerretDB in the tests).

A learner with course A live on one server process and course B on another:
the learner's clock (``study_learner_clock``, storage/mongodb/learners.py)
makes the two processes share the wall time instead of each earning all of it.
Then what it costs, counted by PyMongo command monitoring: nothing with the
policy off, nothing per heartbeat for a learner live in one process, one
command per credit only for a learner live in two.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from storage.mongodb.schema import LEARNER_CLOCKS, LEASES, POLICY_LOG, SESSIONS
from tests.support.commands import serve
from tests.support.helpers import FAST, Client, ServerProcess, fast_settings, wait_for
from tracking.session import EndReason


def server_args(url: str, policy: str) -> list[str]:
    # A timeout far above the interval: a stalled machine must not end a session as a timeout.
    settings = {**FAST, "heartbeat_interval": 0.4, "heartbeat_timeout": 30.0, "overlap_policy": policy}
    return [f"--store={url}", *(f"--{k.replace('_', '-')}={v}" for k, v in settings.items())]


def settled(db, user: str, courses: tuple[str, ...]) -> bool:
    """Every session of the learner ended and added to its running total (so cut back first)."""
    docs = [db[LEASES].find_one({"_id": f"{user}/{course}"}) for course in courses]
    return all(d is not None and "seconds" in d and not d.get("open") for d in docs)


def clock_at(db, user: str) -> float | None:
    doc = db[LEARNER_CLOCKS].find_one({"_id": user})
    return None if doc is None else doc["at"]


async def checked(db, user: str, action):
    """Run ``action`` (a credit of the learner) and, with the learner on a clock, wait until the
    credit is checked against it (its instant moved).

    FerretDB 1.24 does not apply two concurrent updates of one document
    atomically (docs/storage.md), so the test lets no two credits of the
    learner be checked at once; on MongoDB ``$max`` is atomic and they may.
    """
    before = clock_at(db, user)
    result = await action()
    if before is not None:
        await wait_for(lambda: clock_at(db, user) > before, timeout=10, message="the credit checked")
    return result


async def interleave(db, first: Client, second: Client, rounds: int, gap: float) -> None:
    """Heartbeats of the two courses in turn, ``gap`` apart (each course every ``2 * gap``)."""
    answered: dict[Client, list[int]] = {first: [], second: []}
    for _ in range(rounds):
        for client in (first, second):
            await asyncio.sleep(gap)
            answered[client].append((await checked(db, "u1", client.heartbeat))["studyTime"])
    for answers in answered.values():  # credit taken back comes off later credits (docs/protocol.md)
        assert answers == sorted(answers), f"studyTime went back within a connection: {answers}"


@pytest.mark.gen_test(timeout=120)
@pytest.mark.parametrize("policy", ["each-course", "one-course"])
async def test_two_courses_on_two_processes_share_the_wall_time_under_one_course(policy, mongo_url, mongo_db):
    with (
        ServerProcess(*server_args(mongo_url, policy)) as a,
        ServerProcess(*server_args(mongo_url, policy)) as b,
    ):
        started = time.monotonic()
        first = await Client.connect(a.url, "u1", "A")
        await first.connected()
        second = await Client.connect(b.url, "u1", "B")
        await second.connected()
        if policy == "one-course":
            # B's process found A's and asked it to join; A joins at its next poll.
            await wait_for(
                lambda: (
                    (doc := mongo_db[LEARNER_CLOCKS].find_one({"_id": "u1"})) is not None
                    and doc["wait"] == []
                    and sorted(m["j"] for m in doc["p"].values()) == [1, 1]
                ),
                timeout=10,
                message="both processes on the learner's clock",
            )
        await interleave(mongo_db, first, second, rounds=10, gap=0.1)
        await checked(mongo_db, "u1", first.close)
        await second.close()
        wall = time.monotonic() - started
        await wait_for(lambda: settled(mongo_db, "u1", ("A", "B")), timeout=20, message="totals added")
        assert a.terminate() == 0 and b.terminate() == 0
    docs = {d["courseId"]: d for d in mongo_db[SESSIONS].find({"userId": "u1"})}
    assert set(docs) == {"A", "B"} and {d["endReason"] for d in docs.values()} == {"client_closed"}
    a_seconds, b_seconds = docs["A"]["seconds"], docs["B"]["seconds"]
    total = a_seconds + b_seconds
    if policy == "each-course":
        assert total > 1.5 * (wall - 0.5), f"each course earns its own time: {a_seconds} + {b_seconds}"
        assert mongo_db[LEARNER_CLOCKS].count_documents({}) == 0, "the default policy never touches it"
        return
    # Not double: at most the wall time. And exactly the time the learner had a course open
    # (server instants): each credit took the slice since the other course's, so they tile it.
    assert total <= wall, f"{a_seconds} + {b_seconds} = {total}s credited in {wall:.2f}s of wall time"
    opened = min(d["exact"]["startedAt"] for d in docs.values())
    closed = max(d["exact"]["endedAt"] for d in docs.values())
    assert total == pytest.approx(closed - opened, abs=0.005), (a_seconds, b_seconds, closed - opened)
    # Each heartbeat closed the slice since the other course's: about half each.
    assert min(a_seconds, b_seconds) >= 0.3 * total, (a_seconds, b_seconds)
    # The running totals hold the cut-back credit, as the sessions do.
    for course in ("A", "B"):
        lease = mongo_db[LEASES].find_one({"_id": f"u1/{course}"})
        assert lease["seconds"] == pytest.approx(docs[course]["seconds"], abs=1e-6)
    clock = mongo_db[LEARNER_CLOCKS].find_one({"_id": "u1"})
    assert clock["p"] == {} and clock["wait"] == [], "both processes left the learner's clock"
    last = max(d["exact"]["creditedUntil"] for d in docs.values())
    assert clock["at"] == pytest.approx(last, abs=0.01)


def clock_commands(commands) -> list[str]:
    return [name for name, target, _ in commands.take() if target == LEARNER_CLOCKS]


async def opened(url: str, user: str, course: str) -> Client:
    client = await Client.connect(url, user, course)
    await client.connected()
    return client


SLOW = {"heartbeat_interval": 5.0, "heartbeat_timeout": 10.0}


async def solo_learner(url: str, commands, policy: str) -> tuple[list[str], list[str], list[str]]:
    """A learner with two courses open in one process: the learner-clock commands at the
    openings, during ten heartbeats, and once both sessions have ended and been added."""
    service = await serve(fast_settings(store=url, overlap_policy=policy, **SLOW))
    try:
        commands.take()
        first = await opened(service.url, f"solo-{policy}", "A")
        second = await opened(service.url, f"solo-{policy}", "B")
        opening = clock_commands(commands)
        for client in (first, second) * 5:
            await asyncio.sleep(0.06)
            await client.heartbeat()
        beats = clock_commands(commands)
        await first.close()
        await second.close()
        coordinator = service.coordinator
        await wait_for(
            lambda: not coordinator._sessions and not (coordinator.clocks and coordinator.clocks._learners),
            timeout=10,
            message="sessions added to totals, the learner's clock left",
        )
        return opening, beats, clock_commands(commands)
    finally:
        await service.shutdown()


@pytest.mark.gen_test(timeout=90)
async def test_the_policy_off_and_a_learner_in_one_process_send_no_command_per_heartbeat(
    mongo_url, mongo_db, server_commands
):
    assert await solo_learner(mongo_url, server_commands, "each-course") == ([], [], [])
    assert mongo_db[LEARNER_CLOCKS].count_documents({}) == 0, "the default policy sends nothing more"
    # One statement when the learner's first session opens here, one when the last ends; none per heartbeat.
    assert await solo_learner(mongo_url, server_commands, "one-course") == (["findAndModify"], [], ["update"])
    # Which policy recorded the time: logged at start when it changed (once, here).
    assert [d["policy"] for d in mongo_db[POLICY_LOG].find().sort("at", 1)] == ["one-course"]


@pytest.mark.gen_test(timeout=90)
async def test_a_learner_live_in_two_processes_costs_one_command_per_credit(
    mongo_url, mongo_db, server_commands
):
    commands = server_commands
    settings = fast_settings(store=mongo_url, overlap_policy="one-course", **SLOW)
    x, y = await serve(settings), await serve(settings)
    try:
        commands.take()
        first = await opened(x.url, "u2", "A")
        second = await opened(y.url, "u2", "B")
        await wait_for(
            lambda: all(
                learner.joined for s in (x, y) for learner in s.coordinator.clocks._learners.values()
            ),
            timeout=10,
            message="both processes joined",
        )
        setup = Counter(clock_commands(commands))
        rounds = 6
        for _ in range(rounds):
            await asyncio.sleep(0.06)
            await first.heartbeat()
            await asyncio.sleep(0.06)
            await second.heartbeat()
        await wait_for(
            lambda: (
                not any(
                    learner.credits for s in (x, y) for learner in s.coordinator.clocks._learners.values()
                )
            ),
            message="credits checked",
        )
        beats = Counter(clock_commands(commands))
        await first.close()
        await second.close()
    finally:
        await x.shutdown()
        await y.shutdown()
    # Y registered (found X), marked itself and listed X as waiting, told X (a notice); X joined.
    assert setup == Counter({"findAndModify": 2, "update": 2}), setup
    # One findAndModify a credit (a batch if several were held), nothing else.
    assert set(beats) == {"findAndModify"} and beats["findAndModify"] <= 2 * rounds, beats
    assert beats["findAndModify"] >= rounds, beats


# The learner's clock between two coordinators, step by step (server times chosen by the test).


class Process:
    """One server process's counting rules and coordinator on the test database (no sockets)."""

    def __init__(self, url: str) -> None:
        from storage.mongodb.coordination import MongoCoordinator
        from storage.mongodb.store import MongoStore
        from storage.writer import SessionWriter
        from tracking.tracker import Tracker

        self.store = MongoStore(url)
        self.tracker = Tracker(heartbeat_timeout=60, min_heartbeat_interval=0, one_course_at_a_time=True)
        self.coordinator = MongoCoordinator(
            self.store, SessionWriter(self.store), heartbeat_interval=0.2, process_timeout=60, one_course=True
        )
        self.tracker.credit_listener = self.coordinator.credited

    async def start(self, now: float) -> Process:
        await self.store.open()
        await self.coordinator.start(now)
        return self

    async def open(self, user: str, course: str, now: float):
        session, _ = self.tracker.open(user, course, now, session_id=f"{course}-{now}")
        await self.coordinator.claim(session)
        return session

    async def poll(self, now: float) -> list:
        """Poll until the learner's credits are checked; apply what was taken back, as the service does."""
        clocks = self.coordinator.clocks
        taken = []
        for _ in range(100):
            result = await self.coordinator.poll(now)
            for session, seconds in result.overlaps:
                self.tracker.take_back(session, seconds)
                taken.append((session.course_id, round(seconds, 6)))
            learners = clocks._learners.values()
            busy = any(x.credits or x.rejoin or (x.task and not x.task.done()) for x in learners)
            if not busy and not clocks.overlaps:
                return taken
            await asyncio.sleep(0.02)
        raise AssertionError("credits never checked")

    async def stop(self) -> None:
        await self.coordinator.stop(saved=True)
        await self.store.close()


@pytest.mark.gen_test(timeout=60)
async def test_credits_a_process_gave_before_it_joined_go_first_and_the_rest_follows_rule_7(mongo_url):
    t = time.time()
    a, b = await Process(mongo_url).start(t), await Process(mongo_url).start(t)
    try:
        on_a = await a.open("u3", "A", t)
        on_b = await b.open("u3", "B", t + 10)  # B finds A: the learner is shared, A is told
        assert b.coordinator.clocks._learners["u3"].shared
        b.tracker.heartbeat(on_b, t + 25)  # [t+10, t+25]: held until A has joined
        a.tracker.heartbeat(on_a, t + 30)  # [t, t+30]: A does not know yet
        assert await a.poll(t + 30) == []  # A reads the notice and joins: its t+30 is on the clock
        assert await b.poll(t + 30) == [("B", 15)], "A had credited [t+10, t+25] already"
        b.tracker.heartbeat(on_b, t + 40)  # [t+25, t+40], of which A had up to t+30
        assert await b.poll(t + 40) == [("B", 5)]
        a.tracker.heartbeat(on_a, t + 50)  # [t+30, t+50], of which B had up to t+40
        assert await a.poll(t + 50) == [("A", 10)]
        # Open sessions pay from their next credits (what their clients see never decreases).
        assert (on_a.seconds, on_b.seconds) == (50, 15)
        a.tracker.end(on_a, t + 50, EndReason.CLIENT_CLOSED)  # nothing left to credit: pays from its own
        b.tracker.end(on_b, t + 50, EndReason.CLIENT_CLOSED)  # its tail [t+40, t+50] was A's
        assert await b.poll(t + 50) == [("B", 10)]
        assert (on_a.seconds, on_b.seconds) == (40, 10), "the wall time [t, t+50] once, in turn"
    finally:
        await a.stop()
        await b.stop()


@pytest.mark.gen_test(timeout=60)
async def test_held_credits_go_on_once_the_other_process_has_left(mongo_url, mongo_db):
    t = time.time()
    a, b = await Process(mongo_url).start(t), await Process(mongo_url).start(t)
    try:
        on_a = await a.open("u4", "A", t)
        a.tracker.heartbeat(on_a, t + 20)
        on_b = await b.open("u4", "B", t + 10)
        b.tracker.heartbeat(on_b, t + 30)  # held: A has not joined
        await a.stop()  # A leaves without reading its notice: its t+20 goes on the clock
        assert await b.poll(t + 30) == [("B", 10)]
        b.tracker.end(on_b, t + 30, EndReason.CLIENT_CLOSED)
        assert on_b.seconds == 10
        assert mongo_db[LEARNER_CLOCKS].find_one({"_id": "u4"})["at"] == pytest.approx(t + 30)
    finally:
        await b.stop()
