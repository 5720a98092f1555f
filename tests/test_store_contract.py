"""The store contract: what every store must do, run against each real store.

A store that passes this suite can back the service: it persists study
records idempotently, never lets an older snapshot win, derives totals
from the records, and closes what a crash left open.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from storage.backends import backend_for
from tests.support.records import T0, record
from tests.support.stored import study_records


@pytest.mark.gen_test
async def test_round_trip_keeps_every_field(store):
    saved = record(seconds=12.375)
    await store.save([saved])
    assert await study_records(store, user_id="u1", course_id="c1") == [saved]


@pytest.mark.gen_test
async def test_totals_sum_the_sessions_of_one_user_and_course_with_fractions(store):
    await store.save(
        [
            record(seconds=0.25),
            record(seconds=0.5, started=T0 + 100),
            record(seconds=1.125, started=T0 + 200, ended=False),
            record(user="u2", seconds=100),
            record(course="c2", seconds=200),
        ]
    )
    assert await store.total_seconds("u1", "c1") == pytest.approx(1.875)
    assert await store.total_seconds("u2", "c1") == pytest.approx(100)
    assert await store.total_seconds("nobody", "c1") == 0


@pytest.mark.gen_test
async def test_a_total_read_at_once_is_the_same_total_or_not_offered(store):
    # Store.total_seconds_now: what an opening reads without waiting, where the store can.
    await store.save([record(seconds=0.25), record(seconds=1.5, started=T0 + 100), record(user="u2")])
    for user in ("u1", "u2", "nobody"):
        assert store.total_seconds_now(user, "c1") in (None, await store.total_seconds(user, "c1"))


@pytest.mark.gen_test
async def test_a_retried_write_never_counts_twice(store):
    first = record(seconds=30)
    await store.save([first])
    await store.save([first])
    await store.save([first, first])
    assert await store.total_seconds("u1", "c1") == pytest.approx(30)
    assert len(await study_records(store, user_id="u1")) == 1


@pytest.mark.gen_test
async def test_checkpoints_replace_the_snapshot_and_an_older_one_never_wins(store):
    start = record(seconds=0, rev=1, ended=False)
    checkpoint = replace(start, seconds=20, credited_until=T0 + 20, heartbeats=2, rev=3)
    final = replace(
        checkpoint, seconds=25, credited_until=T0 + 25, rev=4, ended_at=T0 + 25, end_reason="client_closed"
    )
    await store.save([start])
    await store.save([checkpoint])
    await store.save([final])
    # A delayed retry of an earlier checkpoint arrives last: it must not win.
    await store.save([checkpoint])
    assert await study_records(store, user_id="u1") == [final]
    assert await store.total_seconds("u1", "c1") == pytest.approx(25)


@pytest.mark.gen_test
async def test_recover_closes_open_sessions_at_their_last_checkpoint(store):
    open_one = record(seconds=42.5, ended=False, rev=5)
    closed = record(seconds=10, started=T0 + 1000)
    await store.save([open_one, closed])
    recovered = await store.recover(T0 + 5000)
    assert [r.session_id for r in recovered] == [open_one.session_id]
    (lost,) = recovered
    assert lost.end_reason == "server_lost"
    assert lost.ended_at == open_one.credited_until
    assert lost.seconds == pytest.approx(42.5)
    stored = {r.session_id: r for r in await study_records(store, user_id="u1")}
    assert stored[open_one.session_id].end_reason == "server_lost"
    assert stored[open_one.session_id].ended_at == open_one.credited_until
    assert stored[closed.session_id] == closed
    assert await store.total_seconds("u1", "c1") == pytest.approx(52.5)
    assert await store.recover(T0 + 6000) == []


@pytest.mark.gen_test
async def test_a_late_checkpoint_cannot_reopen_a_recovered_session(store):
    open_one = record(seconds=5, ended=False, rev=2)
    await store.save([open_one])
    await store.recover(T0 + 100)
    await store.save([open_one])  # the same snapshot, retried after recovery
    (stored,) = await study_records(store, user_id="u1")
    assert stored.end_reason == "server_lost"


@pytest.mark.gen_test
async def test_sessions_filter_by_user_and_course_oldest_first(store):
    a = record(started=T0 + 10)
    b = record(started=T0)
    c = record(user="u2", started=T0 + 5)
    d = record(course="c2", started=T0 + 7)
    await store.save([a, b, c, d])
    assert [r.session_id for r in await study_records(store, user_id="u1", course_id="c1")] == [
        b.session_id,
        a.session_id,
    ]
    assert [r.session_id for r in await study_records(store, course_id="c1")] == [
        b.session_id,
        c.session_id,
        a.session_id,
    ]
    assert len(await study_records(store)) == 4


@pytest.mark.gen_test
async def test_a_large_batch_is_written_whole(store):
    batch = [record(user=f"user{i}", seconds=1.5) for i in range(500)]
    await store.save(batch)
    assert len(await study_records(store)) == 500
    assert await store.total_seconds("user499", "c1") == pytest.approx(1.5)


@pytest.mark.gen_test
async def test_open_is_idempotent_and_data_survives_reopening(store, store_url):
    await store.save([record(seconds=7)])
    await store.close()
    again = backend_for(store_url).store()
    await again.open()
    try:
        await again.ping()
        assert await again.total_seconds("u1", "c1") == pytest.approx(7)
    finally:
        await again.close()
    await store.open()  # the fixture closes it again


@pytest.mark.gen_test
async def test_expire_deletes_only_records_of_sessions_ended_before_the_horizon(store):
    old = record(seconds=10, started=T0)  # ended at T0 + 11
    recent = record(seconds=5, started=T0 + 10_000)
    still_open = record(seconds=2, started=T0, ended=False)
    await store.save([old, recent, still_open])
    assert await store.expire(T0 + 5000) == 1
    assert await store.expire(T0 + 5000) == 0
    assert await store.expire(T0 + 100_000) == 1  # the recent one; an open session never
    assert await store.recover(T0 + 100_000) != []  # the open one is still there


@pytest.mark.gen_test
async def test_retain_says_whether_the_database_expires_old_records_itself(store, store_kind):
    """``--keep-sessions-days``: a TTL index where the server has one (MongoDB), else False and
    the writer deletes hourly (SQLite, FerretDB); keep-forever never leaves anything expiring."""
    expires = await store.retain(30 * 86400)
    assert isinstance(expires, bool)
    if store_kind == "sqlite":
        assert expires is False
    assert await store.retain(0) is False
    assert await store.retain(0) is False  # idempotent
    recent = record(seconds=5, started=T0)
    await store.save([recent])
    assert await study_records(store, user_id="u1") == [recent]
