"""What the MongoDB store costs, counted by PyMongo command monitoring (``make bench-mongo``).

    python bench/mongo_cost.py [--learners=20] [--scale=60] [--json=PATH]

Counts, not timings: FerretDB's speed says nothing about MongoDB's, but the
commands, statements and documents the service sends are the same on both.
A :class:`pymongo.monitoring.CommandListener` registered globally before any
server client exists sees every command of the in-process server(s); the
bench's own reads go through a client made before it (unmonitored).

Scenarios (each against one FerretDB started here, its data in a temp folder):

* ``learner_hour``: N returning learners (one past session each) over real WebSockets each study one session
  of 30 minutes at a 30 s heartbeat and close it. Time is scaled down by
  ``--scale`` (every interval setting divided by it: at 60, a heartbeat every
  0.5 s, a session of 30 s), so the count of heartbeats, checkpoints and
  ends per session is the production one. Commands on the session path
  (sessions and lease/total documents) are divided by learner-hours
  (N x 0.5 h). Coordination commands are time-driven, not session-driven,
  so they are measured apart, at production settings (``idle``).
* ``opening``: learners with H = 1, 100, 2,000 past sessions (written
  before the server starts, as an older version would have) open a session;
  the documents the opening's commands read are counted. For an aggregation
  that ``$group``s, that is every document its ``$match`` selects (the server
  reads them all to answer), counted by the bench with ``count_documents``.
* ``idle``: two servers at production settings and no sessions for 30 s:
  commands per process per minute.
* ``takeover``: the same learner opens on process A, then on B: seconds
  until A's client gets 4409 (median of 5), at production settings.
* ``recovery``: a ``python server.py`` child with 20 sessions is SIGKILLed;
  two in-process survivors close the orphans: the update statements that
  close a session as ``server_lost`` per orphan, and every write statement
  of the recovery per orphan.
* ``one_course`` (only with ``--only=one_course``, so the default run's
  figures stay comparable): ``--overlap-policy=one-course``, N learners each
  with two courses open for 30 minutes at a 30 s heartbeat (half an
  interval apart), scaled as ``learner_hour``: first both courses in one
  process (``solo``), then course A in one process and B in another
  (``shared``): the commands on ``study_learner_clock`` and the clock
  notices, per learner-hour and per credit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import fields, replace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import bson  # noqa: E402
import tornado.netutil  # noqa: E402
from pymongo import MongoClient, monitoring  # noqa: E402

import server  # noqa: E402
from settings import Settings  # noqa: E402
from storage.mongodb.schema import SESSIONS, document_from_record  # noqa: E402
from tests.support.ferretdb import FerretDB, find_binary  # noqa: E402
from tests.support.helpers import Client  # noqa: E402
from tracking.session import SessionRecord  # noqa: E402

WRITES = {"insert": "documents", "update": "updates", "delete": "deletes"}
COORDINATION = {"study_processes", "study_takeovers", "study_meta"}


class Counting(monitoring.CommandListener):
    """Every command the server's clients send, with what it wrote and read."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self._started: dict[int, dict] = {}
        self.on = True

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if not self.on or event.command_name in ("hello", "isMaster", "ismaster", "endSessions"):
            return
        command = event.command
        name = event.command_name
        collection = command.get(name) if isinstance(command.get(name), str) else command.get("collection")
        statements = len(command.get(WRITES[name], ())) if name in WRITES else int(name == "findAndModify")
        entry = {
            "name": name,
            "collection": collection,
            "statements": statements,
            "bytes": len(bson.encode(command)),
            "read": 0,
            "written": 0,
            "command": command,
            "at": time.monotonic(),
        }
        self._started[event.request_id] = entry
        self.events.append(entry)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        entry = self._started.pop(event.request_id, None)
        if entry is None:
            return
        reply = event.reply
        cursor = reply.get("cursor") or {}
        batch = cursor.get("firstBatch", cursor.get("nextBatch", []))
        if entry["name"] in ("find", "getMore", "aggregate"):
            entry["read"] = len(batch)
        elif entry["name"] == "findAndModify":
            entry["read"] = int(reply.get("value") is not None)
            entry["written"] = int((reply.get("lastErrorObject") or {}).get("n", 0))
        elif entry["name"] in WRITES:
            entry["written"] = int(reply.get("nModified", reply.get("n", 0))) + len(reply.get("upserted", ()))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._started.pop(event.request_id, None)

    def since(self, mark: int) -> list[dict]:
        return self.events[mark:]


LISTENER = Counting()


def settings_for(url: str, scale: float = 1.0, **overrides) -> Settings:
    """Production settings, every interval divided by ``scale`` (settings this version lacks skipped)."""
    known = {f.name for f in fields(Settings)}
    base = Settings()
    scaled = {
        name: getattr(base, name) / scale
        for name in (
            "heartbeat_interval",
            "heartbeat_timeout",
            "min_heartbeat_interval",
            "flush_interval",
            "checkpoint_interval",
            "sweep_interval",
            "process_timeout",
        )
        if name in known
    }
    values = {**scaled, "store": url, "flood_rate": 0.0, **overrides}
    settings = replace(base, **{k: v for k, v in values.items() if k in known})
    settings.validate()
    return settings


async def start(settings: Settings):
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    service = await server.start(settings, sockets)
    service.url = f"ws://127.0.0.1:{sockets[0].getsockname()[1]}"  # type: ignore[attr-defined]
    return service


def totals(events: list[dict]) -> dict:
    return {
        "commands": len(events),
        "write_statements": sum(e["statements"] for e in events),
        "documents_read": sum(e["read"] for e in events),
        "documents_written": sum(e["written"] for e in events),
        "bytes_sent": sum(e["bytes"] for e in events),
    }


async def learner_hour(url: str, db, learners: int, scale: float) -> dict:
    settings = settings_for(url, scale)
    for i in range(learners):  # returning learners: one earlier session each
        seed_history(db, f"learner{i}", 1)
    service = await start(settings)
    beats = 60  # 30 minutes at a 30 s heartbeat
    try:
        mark = len(LISTENER.events)
        started = time.monotonic()

        async def study(i: int) -> None:
            await asyncio.sleep(i * settings.heartbeat_interval / learners)  # spread like real learners
            client = await Client.connect(service.url, f"learner{i}", "c1")
            await client.connected()
            for _ in range(beats):
                await asyncio.sleep(settings.heartbeat_interval)
                reply = await client.heartbeat(timeout=10)
                assert reply["status"] == "success", reply
            await client.close()

        await asyncio.gather(*(study(i) for i in range(learners)))
        # Until every final snapshot is written and every lease released.
        deadline = time.monotonic() + 30
        while (service.writer.unsaved or getattr(service.coordinator, "_sessions", None)) and (
            time.monotonic() < deadline
        ):
            await asyncio.sleep(0.1)
        await asyncio.sleep(2 * settings.flush_interval + 1.0)
        elapsed = time.monotonic() - started
        events = LISTENER.since(mark)
    finally:
        await service.shutdown()
    session_path = [e for e in events if e["collection"] not in COORDINATION]
    for e in session_path:
        e["read"] = documents_read(e, db)
    hours = learners * beats * 30 / 3600
    minutes = learners * beats * 30 / 60
    per_hour = {k: round(v / hours, 1) for k, v in totals(session_path).items()}
    by_command = Counter(f"{e['name']} {e['collection']}" for e in session_path)
    return {
        "learners": learners,
        "scale": scale,
        "real_seconds": round(elapsed, 1),
        "per_learner_hour": per_hour,
        "write_statements_per_session_minute": round(sum(e["statements"] for e in session_path) / minutes, 2),
        "statements_by_command_per_learner_hour": {
            k: round(
                sum(e["statements"] or 1 for e in session_path if f"{e['name']} {e['collection']}" == k)
                / hours,
                1,
            )
            for k in sorted(by_command)
        },
        "update_bytes_per_checkpoint": _checkpoint_bytes(session_path),
    }


def _checkpoint_bytes(events: list[dict]) -> float | None:
    """Bytes of one checkpoint statement (an update of one open session)."""
    sizes = [
        len(bson.encode(u))
        for e in events
        if e["name"] == "update" and e["collection"] == SESSIONS
        for u in e["command"].get("updates", ())
    ]
    return round(statistics.median(sizes)) if sizes else None


def documents_read(event: dict, db) -> int:
    """Documents a command reads: those it returns; for a ``$group``, all that its ``$match`` selects."""
    if event["name"] == "aggregate":
        stages = event["command"]["pipeline"]
        if any("$group" in stage for stage in stages) and "$match" in stages[0]:
            return db[event["collection"]].count_documents(stages[0]["$match"])
    return event["read"]


def seed_history(db, user: str, count: int) -> None:
    t0 = 1_700_000_000.0
    docs = []
    for i in range(count):
        record = SessionRecord(
            session_id=uuid.uuid4().hex,
            user_id=user,
            course_id="c1",
            started_at=t0 + i * 3600,
            credited_until=t0 + i * 3600 + 1800,
            seconds=1800.0,
            heartbeats=60,
            rev=62,
            ended_at=t0 + i * 3600 + 1800,
            end_reason="client_closed",
        )
        docs.append(document_from_record(record, "old-process"))
    db[SESSIONS].insert_many(docs)


async def opening(url: str, db, histories: tuple[int, ...]) -> dict:
    for h in histories:
        seed_history(db, f"past{h}", h)
    service = await start(settings_for(url))
    result = {}
    try:
        for h in histories:
            await asyncio.sleep(0.3)
            mark = len(LISTENER.events)
            client = await Client.connect(service.url, f"past{h}", "c1")
            hello = await client.connected()
            events = [e for e in LISTENER.since(mark) if e["collection"] not in COORDINATION]
            read = sum(documents_read(e, db) for e in events)
            assert hello["studyTime"] == 1800 * h, (h, hello)
            result[str(h)] = {
                "documents_read": read,
                "commands": len(events),
                "shapes": [f"{e['name']} {e['collection']}" for e in events],
            }
            await client.close()
    finally:
        await service.shutdown()
    return result


async def idle_and_takeover(url: str) -> dict:
    settings = settings_for(url)
    a, b = await start(settings), await start(settings)
    try:
        latencies = []
        for i in range(5):
            first = await Client.connect(a.url, f"taker{i}", "c1")
            await first.connected()
            await first.heartbeat()
            second = await Client.connect(b.url, f"taker{i}", "c1")
            began = time.monotonic()
            await second.connected()
            code, _, _ = await first.closed(timeout=10)
            assert code == 4409, code
            latencies.append(time.monotonic() - began)
            await second.close()
        await asyncio.sleep(3)  # leases released, prompt writes done
        mark = len(LISTENER.events)
        window = 30.0
        await asyncio.sleep(window)
        events = LISTENER.since(mark)
    finally:
        await a.shutdown()
        await b.shutdown()
    return {
        "takeover_seconds_median": round(statistics.median(latencies), 3),
        "takeover_seconds_max": round(max(latencies), 3),
        "idle_commands_per_process_per_minute": round(len(events) / 2 / (window / 60), 1),
        "idle_shapes": dict(Counter(f"{e['name']} {e['collection']}" for e in events)),
    }


async def recovery(url: str, db, orphans: int = 20) -> dict:
    timeout = 2.0
    # A generous heartbeat timeout: connecting 20 clients one by one on a busy machine.
    args = settings_for(url, 30, process_timeout=timeout, heartbeat_timeout=20.0)
    cli = [
        f"--{f.name.replace('_', '-')}={getattr(args, f.name)}"
        for f in fields(Settings)
        if f.name
        in (
            "heartbeat_interval",
            "heartbeat_timeout",
            "min_heartbeat_interval",
            "flush_interval",
            "checkpoint_interval",
            "process_timeout",
            "flood_rate",
        )
    ]
    victim = subprocess.Popen(
        [sys.executable, "server.py", "--port=0", f"--store={url}", *cli],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        port = None
        deadline = time.monotonic() + 20
        while port is None and time.monotonic() < deadline:
            line = victim.stdout.readline()  # type: ignore[union-attr]
            if "listening on http://" in line:
                port = int(line.rsplit(":", 1)[1].split()[0].strip("/"))
        assert port, "the victim did not start"
        survivors = [await start(args), await start(args)]
        clients = []
        for i in range(orphans):
            client = await Client.connect(f"ws://127.0.0.1:{port}", f"orphan{i}", "c1")
            await client.connected()
            clients.append(client)
        # Heartbeats until a checkpoint of every session with credit is stored.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            await asyncio.sleep(args.heartbeat_interval)
            for client in clients:
                await client.heartbeat()
            stored = {"userId": {"$regex": "^orphan"}, "endedAt": None, "heartbeats": {"$gte": 1}}
            if db[SESSIONS].count_documents(stored) == orphans:
                break
        mark = len(LISTENER.events)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(5)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if (
                db[SESSIONS].count_documents({"userId": {"$regex": "^orphan"}, "endReason": "server_lost"})
                == orphans
            ):
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(2 * timeout)  # any late attempts by the other survivor
        events = LISTENER.since(mark)
        for survivor in survivors:
            await survivor.shutdown()
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait(5)
    closed = db[SESSIONS].count_documents({"userId": {"$regex": "^orphan"}, "endReason": "server_lost"})
    attempts = sum(
        1
        for e in events
        if e["name"] == "update" and e["collection"] == SESSIONS
        for u in e["command"]["updates"]
        if (u.get("u", {}).get("$set") or {}).get("endReason") == "server_lost"
    ) + sum(
        1
        for e in events
        if e["name"] == "findAndModify"
        and e["collection"] == SESSIONS
        and ((e["command"].get("update") or {}).get("$set") or {}).get("endReason") == "server_lost"
    )
    writes = [e for e in events if e["statements"] and e["collection"] not in ("study_processes",)]
    return {
        "orphans": orphans,
        "closed_as_server_lost": closed,
        "close_attempts_per_orphan": round(attempts / orphans, 2),
        "recovery_write_statements_per_orphan": round(sum(e["statements"] for e in writes) / orphans, 2),
    }


async def one_course(url: str, db, learners: int, scale: float) -> dict:
    """The learner clock's commands under --overlap-policy=one-course: one process, then two."""
    settings = settings_for(url, scale, overlap_policy="one-course")
    beats = 60  # 30 minutes at a 30 s heartbeat
    results = {}
    for case in ("solo", "shared"):
        x = await start(settings)
        y = await start(settings) if case == "shared" else x
        try:
            mark = len(LISTENER.events)

            async def course(service, user: str, name: str, offset: float) -> int:
                await asyncio.sleep(offset)
                client = await Client.connect(service.url, user, name)
                await client.connected()
                for _ in range(beats):
                    await asyncio.sleep(settings.heartbeat_interval)
                    await client.heartbeat(timeout=10)
                await client.close()
                return beats + 1  # the heartbeats and the close's tail

            spread = settings.heartbeat_interval / learners
            credits = await asyncio.gather(
                *(course(x, f"{case}{i}", "A", i * spread) for i in range(learners)),
                *(
                    course(y, f"{case}{i}", "B", i * spread + settings.heartbeat_interval / 2)
                    for i in range(learners)
                ),
            )
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(
                s.coordinator.clocks._learners or s.coordinator._sessions for s in {x, y}
            ):
                await asyncio.sleep(0.1)
            events = LISTENER.since(mark)
        finally:
            await x.shutdown()
            if y is not x:
                await y.shutdown()
        clock = [e for e in events if e["collection"] == "study_learner_clock"]
        hours = learners * beats * 30 / 3600
        results[case] = {
            "learner_clock_commands_per_learner_hour": round(len(clock) / hours, 1),
            "learner_clock_statements_per_learner_hour": round(
                sum(e["statements"] or 1 for e in clock) / hours, 1
            ),
            "learner_clock_commands_per_credit": round(len(clock) / sum(credits), 3),
            "clock_notices": sum(
                1
                for e in events
                if e["name"] == "insert"
                and e["collection"] == "study_takeovers"
                and str(e["command"].get("documents", [{}])[0].get("_id", "")).startswith("clock:")
            ),
            "by_command": dict(Counter(e["name"] for e in clock)),
        }
    return results


def table(results: dict) -> str:
    lh = results["learner_hour"]["per_learner_hour"]
    op = results["opening"]
    it = results["idle_and_takeover"]
    rc = results["recovery"]
    rows = [
        ("commands per learner-hour (session path)", lh["commands"]),
        ("write statements per learner-hour", lh["write_statements"]),
        (
            "write statements per live session-minute",
            results["learner_hour"]["write_statements_per_session_minute"],
        ),
        ("documents read per learner-hour", lh["documents_read"]),
        ("documents written per learner-hour", lh["documents_written"]),
        ("bytes sent per learner-hour", lh["bytes_sent"]),
        ("bytes of one checkpoint statement", results["learner_hour"]["update_bytes_per_checkpoint"]),
        *((f"documents an opening reads, H = {h}", v["documents_read"]) for h, v in op.items()),
        ("commands per idle process per minute", it["idle_commands_per_process_per_minute"]),
        (
            "takeover to 4409, median s (max)",
            f"{it['takeover_seconds_median']} ({it['takeover_seconds_max']})",
        ),
        ("server_lost close attempts per orphan (2 survivors)", rc["close_attempts_per_orphan"]),
        ("recovery write statements per orphan", rc["recovery_write_statements_per_orphan"]),
        ("orphans closed / orphans", f"{rc['closed_as_server_lost']} / {rc['orphans']}"),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"| {name:<{width}} | {value} |" for name, value in rows)


async def main(args: argparse.Namespace) -> dict:
    binary = find_binary()
    if binary is None:
        raise SystemExit("bench-mongo needs FerretDB: run scripts/ensure-ferretdb.sh (make ferretdb)")
    ferret = FerretDB(binary).start()
    plain = MongoClient(ferret.url, tz_aware=True)  # made before the listener: not counted
    monitoring.register(LISTENER)
    results = {}
    try:
        for name, run in (
            ("learner_hour", lambda url, db: learner_hour(url, db, args.learners, args.scale)),
            ("opening", lambda url, db: opening(url, db, (1, 100, 2000))),
            ("idle_and_takeover", lambda url, db: idle_and_takeover(url)),
            ("recovery", lambda url, db: recovery(url, db)),
            ("one_course", lambda url, db: one_course(url, db, args.learners, args.scale)),
        ):
            if name == "one_course" and not (args.only and name in args.only.split(",")):
                continue  # only when asked for: the default run's figures stay comparable
            if args.only and name not in args.only.split(","):
                continue
            database = f"bench_{name}_{uuid.uuid4().hex[:6]}"
            print(f"{name}...", file=sys.stderr, flush=True)
            results[name] = await run(f"{ferret.url}/{database}", plain[database])
            print(json.dumps(results[name], default=str), file=sys.stderr, flush=True)
    finally:
        plain.close()
        ferret.stop()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--learners", type=int, default=20)
    parser.add_argument("--scale", type=float, default=60.0)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--only", help="run only these scenarios (comma-separated; no table)")
    options = parser.parse_args()
    if os.environ.get("BENCH_LOG"):
        import logging

        logging.basicConfig(level=logging.INFO)
    outcome = asyncio.run(main(options))
    if not options.only:
        print(table(outcome))
    if options.json:
        with open(options.json, "w") as f:
            json.dump(outcome, f, indent=1, default=str)
