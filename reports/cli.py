"""``python server.py report ...``: the reports on the command line, for administrators with shell access.

It reads the configured store (``--store`` or ``STUDY_TIME_STORE``, like the
server) through a read-only report connection, so it works while a server is
running on the same SQLite file. Every server setting is accepted (only
``--store`` and ``--report-timezone`` matter here). The request goes through
the same :meth:`reports.usecase.ReportDesk.answer` as the HTTP endpoints, as
an administrator's: whoever can run this command can read the store anyway.
This module imports nothing from ``storage/``: ``server.py`` hands it the
way to a store (:class:`StoreAccess`).

``--format=table`` (the default) is for people: durations such as
``2h 03m 10s``, times to the second, aligned columns, and control characters
in stored ids shown escaped (``\\x1b``), so an id cannot move the cursor or
recolour the terminal. ``--format=csv`` and ``--format=json`` are for
scripts: exactly what the HTTP endpoint answers for the same request (the
same rows, :mod:`reports.responses` bodies, JSON paged like the endpoint).
A progress line (sessions read, rows so far) goes to stderr while sessions
stream when stderr is a terminal or with ``--progress``; never otherwise, so
pipes and scripts see nothing extra.

    python server.py report learner USER_ID [--from=...] [--to=...]
    python server.py report course COURSE_ID [--limit=N] [--offset=N]
    python server.py report daily [--user=USER_ID] [--course=COURSE_ID] [--tz=Asia/Shanghai]
    python server.py report sessions [--user=USER_ID] [--course=COURSE_ID] [--limit=N]
    python server.py report learner -- -USER_ID   (an id that starts with "-")

Exit status: 0, 2 for bad arguments (a bad ``--store`` too), 1 when the store cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

import settings as settings_module
from auth.base import ADMIN, Identity
from settings import SettingsError
from tracking.session import SessionRecord
from xapi.statements import config_from

from . import params, responses, rows
from .params import ParameterError, Window
from .source import GroupBy, GroupSum, ReportSource, Scope, Span
from .usecase import ReportDesk, ReportRequest

#: Who asks, for the one authorisation of every report: the command is for administrators.
OPERATOR = Identity("server.py report", roles=frozenset({ADMIN}))
#: The report each subcommand asks for.
KINDS = {"learner": "learner-courses", "course": "course-learners", "daily": "daily", "sessions": "sessions"}
#: The command's option for each parameter a ParameterError names.
OPTIONS = {"from": "--from", "to": "--to", "userId": "--user", "courseId": "--course"}
IDS_EPILOG = "An id that starts with '-' goes after '--' (report learner -- -u1), or as --user=-u1."


@dataclass(frozen=True)
class StoreAccess:
    """How the command reaches a store, given by ``server.py`` so that this module imports no storage.

    ``connect`` returns the read-only report source of a ``--store`` URL and
    raises ``invalid`` for a URL that cannot be used (exit 2); a source
    raises one of ``unavailable`` when the store cannot be read (exit 1).
    """

    connect: Callable[[str], ReportSource]
    invalid: type[Exception]
    unavailable: tuple[type[Exception], ...]


def prog() -> str:
    """This command as the user ran it (``study-time report`` when installed), for usage and errors."""
    return f"{settings_module.program()} report"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog(),
        description="Print study-time reports from the configured store (--store).",
        epilog="Server settings such as --store and --report-timezone are accepted too. " + IDS_EPILOG,
    )
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="REPORT")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--from", dest="start", metavar="TIME", help="ISO 8601 date or time (inclusive)")
    common.add_argument(
        "--to", dest="end", metavar="TIME", help="ISO 8601 date (inclusive) or time (exclusive)"
    )
    common.add_argument("--tz", help="IANA time zone for days and times (default --report-timezone)")
    common.add_argument(
        "--format",
        choices=("table", "csv", "json", "xapi"),
        default="table",
        help="table (default): for people; csv, json: what the HTTP endpoint answers;"
        " xapi (sessions only): a JSON array of the ended sessions' xAPI statements, for a backfill"
        " (needs --xapi-home-page; docs/xapi.md)",
    )
    common.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="a progress line on stderr while sessions are read (default: when stderr is a terminal)",
    )
    learner = kinds.add_parser(
        "learner", parents=[common], help="a learner's total per course", epilog=IDS_EPILOG
    )
    learner.add_argument("user_id", metavar="USER_ID")
    course = kinds.add_parser("course", parents=[common], help="a course's leaderboard", epilog=IDS_EPILOG)
    course.add_argument("course_id", metavar="COURSE_ID")
    course.add_argument("--limit", help="at most this many learners (default all)")
    course.add_argument("--offset", help="skip this many learners first")
    for name, what in (("daily", "seconds per calendar day"), ("sessions", "the study records")):
        sub = kinds.add_parser(name, parents=[common], help=what, epilog=IDS_EPILOG)
        sub.add_argument("--user", dest="user_id", metavar="USER_ID")
        sub.add_argument("--course", dest="course_id", metavar="COURSE_ID")
        if name == "sessions":
            sub.add_argument(
                "--limit", help="at most this many sessions (default all; json: 100, as the endpoint)"
            )
            sub.add_argument("--offset", help="skip this many sessions first")
    return parser


def main(
    argv: Sequence[str], access: StoreAccess, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    args, rest = build_parser().parse_known_args(list(argv))
    try:
        settings = settings_module.load(rest)
        if args.format == "xapi" and settings.xapi_home_page is None:
            raise SettingsError("--format=xapi needs --xapi-home-page (the statements' actor account)")
        request = cli_request(args, settings.report_timezone)
        source = access.connect(settings.store)
    except (SettingsError, access.invalid) as exc:
        print(f"{prog()}: error: {exc}", file=err)
        return 2
    except ParameterError as exc:
        option = OPTIONS.get(exc.parameter, "--" + exc.parameter)
        print(f"{prog()}: error: {option}: {exc.message}", file=err)
        return 2
    # Progress only where a person watches (a terminal), or when asked: a pipe stays clean.
    wanted = err.isatty() if args.progress is None else args.progress
    progress = Progress(err) if wanted else None
    desk = ReportDesk(
        source if progress is None else Counted(source, progress),
        clock=time.time,
        zone=settings.report_timezone,
        xapi=config_from(settings),
    )
    try:
        asyncio.run(run(desk, request, out, progress))
    except access.unavailable as exc:
        print(f"{prog()}: error: cannot read the store: {exc}", file=err)
        return 1
    finally:
        if progress is not None:
            progress.done()
    return 0


def cli_request(args: argparse.Namespace, default_tz: str) -> ReportRequest:
    """The report request of the command line (``ParameterError`` names what is wrong)."""
    tz = params.timezone(args.tz or default_tz)
    window = params.window(args.start, args.end, tz)
    fmt = args.format
    if fmt == "xapi" and args.kind != "sessions":
        raise ParameterError("format", "xapi is for the sessions report only")
    # JSON is paged as the endpoint pages it (limit 1-1000, default 100), so that it is the
    # endpoint's body; a table or CSV without --limit is the whole list, as the endpoint's CSV is.
    limit, offset = (None, 0)
    if args.kind in ("course", "sessions"):
        limit, offset = params.page(args.limit, args.offset) if fmt == "json" else cli_page(args)
    return ReportRequest(KINDS[args.kind], cli_scope(args), window, tz, fmt, limit, offset)  # type: ignore[arg-type]


def cli_scope(args: argparse.Namespace) -> Scope:
    if args.kind == "learner":
        return Scope(params.identifier(args.user_id, "userId"), None)
    if args.kind == "course":
        return Scope(None, params.identifier(args.course_id, "courseId"))
    scope = Scope(
        params.identifier(args.user_id, "userId", required=False),
        params.identifier(args.course_id, "courseId", required=False),
    )
    if scope.user_id is None and scope.course_id is None:
        raise ParameterError("userId", "give --user, --course or both")
    return scope


async def run(
    desk: ReportDesk, request: ReportRequest, out: TextIO, progress: Progress | None = None
) -> None:
    """Answer ``request`` as the operator, and print it."""
    try:
        answer = await desk.answer(OPERATOR, request)
        if answer.body is not None:
            out.write(responses.json_text(answer.body) + "\n")
        else:
            assert answer.rows is not None
            await emit(out, request.fmt, answer.columns, answer.rows, progress)
    finally:
        await desk.close()


def cli_page(args: argparse.Namespace) -> tuple[int | None, int]:
    offset = params.count(args.offset, "offset", default=0, minimum=0, maximum=params.MAX_OFFSET)
    if args.limit is None:
        return None, offset
    return params.count(args.limit, "limit", default=0, minimum=1, maximum=10**9), offset


async def emit(
    out: TextIO,
    fmt: str,
    columns: Sequence[str],
    batches: AsyncIterator[list[dict]],
    progress: Progress | None = None,
) -> None:
    """CSV and xAPI are written batch by batch; a table needs every row first to align its columns."""
    if fmt == "xapi":
        await emit_statements(out, batches, progress)
        return
    if fmt == "csv":
        out.write(rows.csv_text(columns, [], header=True))
        async for batch in batches:
            out.write(rows.csv_text(columns, batch, header=False))
            if progress is not None:
                progress.add(rows=len(batch))
        return
    shown = [c for c in columns if c not in TABLE_HIDDEN]
    table = [[TABLE_HEADERS.get(c, c) for c in shown]]
    async for batch in batches:
        table += [[table_cell(c, row[c]) for c in shown] for row in batch]
        if progress is not None:
            progress.add(rows=len(batch))
    widths = [max(len(line[i]) for line in table) for i in range(len(shown))]
    for line in table:
        cells = (
            cell.rjust(width) if column in TABLE_NUMBERS else cell.ljust(width)
            for cell, width, column in zip(line, widths, shown, strict=True)
        )
        out.write("  ".join(cells).rstrip() + "\n")
    if len(table) == 1:
        out.write("(no study time found)\n")


async def emit_statements(out: TextIO, batches: AsyncIterator[list[dict]], progress: Progress | None) -> None:
    """A JSON array of statements, one per line: what ``POST /statements`` takes, written as it is read."""
    out.write("[")
    first = True
    async for batch in batches:
        for item in batch:
            out.write(
                ("\n" if first else ",\n") + json.dumps(item, separators=(",", ":"), ensure_ascii=False)
            )
            first = False
        if progress is not None:
            progress.add(rows=len(batch))
    out.write("\n]\n")


# The table: for people. The figures are those of the rows; only their presentation differs.

#: ``secondsExact`` is for machines (CSV, JSON); the table shows the whole seconds as a duration.
TABLE_HIDDEN = frozenset({"secondsExact"})
TABLE_HEADERS = {"seconds": "time"}
#: Right-aligned, as numbers are (durations too: their units line up).
TABLE_NUMBERS = frozenset({"rank", "seconds", "sessions", "heartbeats", "learners"})
TABLE_TIMES = frozenset({"firstStudiedAt", "lastStudiedAt", "startedAt", "creditedUntil", "endedAt"})


def table_cell(column: str, value: object) -> str:
    if value is None:
        return ""
    if column == "seconds" and isinstance(value, int):
        return duration(value)
    if column in TABLE_TIMES and isinstance(value, str):
        # The row's ISO time, already in the report's zone: cut to the second (not rounded,
        # as whole seconds are), with the offset kept so a time in a DST change is unambiguous.
        return datetime.fromisoformat(value).isoformat(sep=" ", timespec="seconds")
    if isinstance(value, bool):
        return "yes" if value else "no"
    return printable(str(value))


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on shown escaped, as Python writes it.

    Ids are stored as sent; one with an ESC (an ANSI sequence), a carriage
    return or a newline would otherwise move the cursor, recolour or
    overwrite the table. CSV and JSON keep them exact.
    """
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def duration(seconds: int) -> str:
    """Whole seconds for people: ``2h 03m 10s``, ``4m 05s``, ``45s``, ``0s`` (hours do not roll into days)."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


# Progress on stderr.


class Progress:
    """Sessions read and rows so far, as a line on ``stream`` at most every ``interval`` seconds.

    On a terminal the line is rewritten in place (``\\r``); elsewhere (``--progress``
    into a file or pipe) each update is a line of its own. :meth:`done` writes the
    final counts, so even a short run shows where it ended.
    """

    def __init__(
        self, stream: TextIO, interval: float = 0.25, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stream, self.interval, self.clock = stream, interval, clock
        self.overwrite = stream.isatty()
        self.read = self.rows = 0
        self._shown = -math.inf
        self._finished = False

    def add(self, *, read: int = 0, rows: int = 0) -> None:
        self.read += read
        self.rows += rows
        now = self.clock()
        if now - self._shown >= self.interval:
            self._shown = now
            self._show()

    def done(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._show()
        if self.overwrite:
            self.stream.write("\n")
        self.stream.flush()

    def _show(self) -> None:
        text = f"{prog()}: {self.read:,} sessions read, {self.rows:,} rows so far"
        self.stream.write(f"\r{text}\x1b[K" if self.overwrite else text + "\n")
        self.stream.flush()


class Counted(ReportSource):
    """A report source that counts the sessions streamed through it into a :class:`Progress`.

    Only the streams are counted (:meth:`spans` for the daily report,
    :meth:`record_batches` for the sessions): the totals are summed inside the
    database, which reports no progress.
    """

    def __init__(self, source: ReportSource, progress: Progress) -> None:
        self.source, self.progress = source, progress

    async def contained(self, scope: Scope, window: Window, by: GroupBy) -> list[GroupSum]:
        return await self.source.contained(scope, window, by)

    async def extents(
        self, scope: Scope, window: Window, by: GroupBy, keys: list[str]
    ) -> dict[str, tuple[float, float]]:
        return await self.source.extents(scope, window, by, keys)

    async def learners(self, scope: Scope, window: Window) -> dict[str, int]:
        return await self.source.learners(scope, window)

    async def crossing(self, scope: Scope, window: Window) -> list[Span]:
        return await self.source.crossing(scope, window)

    async def spans(self, scope: Scope, window: Window, batch: int = 10_000) -> AsyncIterator[list[Span]]:
        async with aclosing(self.source.spans(scope, window, batch)) as inner:  # closed with this one
            async for found in inner:
                self.progress.add(read=len(found))
                yield found

    async def records(self, scope: Scope, window: Window, limit: int, offset: int) -> list[SessionRecord]:
        found = await self.source.records(scope, window, limit, offset)
        self.progress.add(read=len(found))
        return found

    async def record_batches(
        self, scope: Scope, window: Window, offset: int = 0, batch: int = 1000
    ) -> AsyncIterator[list[SessionRecord]]:
        async with aclosing(self.source.record_batches(scope, window, offset, batch)) as inner:
            async for found in inner:
                self.progress.add(read=len(found))
                yield found

    async def close(self) -> None:
        await self.source.close()
