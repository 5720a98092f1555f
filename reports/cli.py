"""``python server.py report ...``: the reports on the command line, for administrators with shell access.

It reads the configured store (``--store`` or ``STUDY_TIME_STORE``, like the
server) through a read-only report connection, so it works while a server is
running on the same SQLite file. Every server setting is accepted (only
``--store`` and ``--report-timezone`` matter here). Output is an aligned
table or CSV with a header row; the rows are those of the HTTP endpoints.

    python server.py report learner USER_ID [--from=...] [--to=...]
    python server.py report course COURSE_ID [--limit=N] [--offset=N]
    python server.py report daily [--user=USER_ID] [--course=COURSE_ID] [--tz=Asia/Shanghai]
    python server.py report sessions [--user=USER_ID] [--course=COURSE_ID] [--limit=N]

Exit status: 0, 2 for bad arguments, 1 when the store cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Sequence
from typing import TextIO

import settings as settings_module
from settings import SettingsError
from storage.backends import backend_for
from storage.base import StoreError, StoreUnavailable

from . import params, rows
from .params import ParameterError
from .service import Reports
from .source import Scope


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="server.py report",
        description="Print study-time reports from the configured store (--store).",
        epilog="Server settings such as --store and --report-timezone are accepted too.",
    )
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="REPORT")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--from", dest="start", metavar="TIME", help="ISO 8601 date or time (inclusive)")
    common.add_argument(
        "--to", dest="end", metavar="TIME", help="ISO 8601 date (inclusive) or time (exclusive)"
    )
    common.add_argument("--tz", help="IANA time zone for days and times (default --report-timezone)")
    common.add_argument("--format", choices=("table", "csv"), default="table")
    learner = kinds.add_parser("learner", parents=[common], help="a learner's total per course")
    learner.add_argument("user_id", metavar="USER_ID")
    course = kinds.add_parser("course", parents=[common], help="a course's leaderboard")
    course.add_argument("course_id", metavar="COURSE_ID")
    course.add_argument("--limit", help="at most this many learners (default all)")
    course.add_argument("--offset", help="skip this many learners first")
    for name, what in (("daily", "seconds per calendar day"), ("sessions", "the study records")):
        sub = kinds.add_parser(name, parents=[common], help=what)
        sub.add_argument("--user", dest="user_id", metavar="USER_ID")
        sub.add_argument("--course", dest="course_id", metavar="COURSE_ID")
        if name == "sessions":
            sub.add_argument("--limit", help="at most this many sessions (default all)")
            sub.add_argument("--offset", help="skip this many sessions first")
    return parser


def main(argv: Sequence[str], out: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    parser = build_parser()
    args, rest = parser.parse_known_args(list(argv))
    try:
        settings = settings_module.load(rest)
    except SettingsError as exc:
        print(f"server.py report: error: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(run(args, settings.store, settings.report_timezone, out))
    except ParameterError as exc:
        option = {"from": "--from", "to": "--to", "userId": "--user", "courseId": "--course"}
        print(
            f"server.py report: error: {option.get(exc.parameter, '--' + exc.parameter)}: {exc.message}",
            file=sys.stderr,
        )
        return 2
    except (StoreError, StoreUnavailable) as exc:
        print(f"server.py report: error: cannot read the store: {exc}", file=sys.stderr)
        return 1


async def run(args: argparse.Namespace, store_url: str, default_tz: str, out: TextIO) -> int:
    tz = params.timezone(args.tz or default_tz)
    window = params.window(args.start, args.end, tz)
    reports = Reports(backend_for(store_url).report_source())
    try:
        if args.kind == "learner":
            user_id = params.identifier(args.user_id, "userId")
            found = [
                rows.learner_course(user_id, t, tz) for t in await reports.learner_courses(user_id, window)
            ]
            await emit(out, args.format, rows.LEARNER_COURSES, listed(found))
        elif args.kind == "course":
            course_id = params.identifier(args.course_id, "courseId")
            limit, offset = cli_page(args)
            board, _ = await reports.course_learners(course_id, window, limit, offset)
            found = [rows.course_learner(offset + i + 1, course_id, t, tz) for i, t in enumerate(board)]
            await emit(out, args.format, rows.COURSE_LEARNERS, listed(found))
        else:
            scope = Scope(
                params.identifier(args.user_id, "userId", required=False),
                params.identifier(args.course_id, "courseId", required=False),
            )
            if scope.user_id is None and scope.course_id is None:
                raise ParameterError("userId", "give --user, --course or both")
            if args.kind == "daily":
                days = await reports.daily(scope, window, tz)
                await emit(out, args.format, rows.DAILY, listed([rows.day(d) for d in days]))
            else:
                limit, offset = cli_page(args)

                async def sessions() -> AsyncIterator[list[dict]]:
                    left = limit
                    async for batch in reports.session_batches(scope, window, offset):
                        if left is not None:
                            batch, left = batch[:left], left - min(left, len(batch))
                        yield [rows.session(r, tz) for r in batch]
                        if left == 0:
                            return

                await emit(out, args.format, rows.SESSIONS, sessions())
    finally:
        await reports.close()
    return 0


def cli_page(args: argparse.Namespace) -> tuple[int | None, int]:
    offset = params.count(args.offset, "offset", default=0, minimum=0, maximum=params.MAX_OFFSET)
    if args.limit is None:
        return None, offset
    return params.count(args.limit, "limit", default=0, minimum=1, maximum=10**9), offset


async def listed(items: list[dict]) -> AsyncIterator[list[dict]]:
    yield items


async def emit(out: TextIO, fmt: str, columns: Sequence[str], batches: AsyncIterator[list[dict]]) -> None:
    """CSV is written batch by batch; a table needs every row first to align its columns."""
    if fmt == "csv":
        out.write(rows.csv_text(columns, [], header=True))
        async for batch in batches:
            out.write(rows.csv_text(columns, batch, header=False))
        return
    table = [list(columns)]
    async for batch in batches:
        table += [
            [
                "" if row[c] is None else str(row[c]).lower() if isinstance(row[c], bool) else str(row[c])
                for c in columns
            ]
            for row in batch
        ]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        out.write(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() + "\n"
        )
    if len(table) == 1:
        out.write("(no study time found)\n")
