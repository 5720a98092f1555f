"""Which ``--overlap-policy`` recorded which time: the table ``overlap_policy_log``.

A server appends ``(at, policy)`` at start when its policy differs from the
last one logged (a database with no entry was recorded under the default,
``each-course``). Reports read it (``SQLiteReports.policies``) to say which
policy recorded a day. MongoDB keeps the same log in ``study_policy_log``
(``storage/mongodb/policylog.py``).
"""

from __future__ import annotations

import asyncio
import sqlite3

from ..base import StoreUnavailable

DEFAULT = "each-course"
SCHEMA = "CREATE TABLE IF NOT EXISTS overlap_policy_log (at REAL PRIMARY KEY, policy TEXT NOT NULL)"


def read(conn: sqlite3.Connection) -> list[tuple[float, str]]:
    """Every change of policy, oldest first (none in a database that never had one logged)."""
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'overlap_policy_log'")
    if exists.fetchone() is None:
        return []
    return [
        (float(at), str(policy))
        for at, policy in conn.execute("SELECT at, policy FROM overlap_policy_log ORDER BY at")
    ]


async def record(path: str, policy: str, now: float) -> None:
    """Log ``policy`` from ``now`` on, unless it is already the policy in force."""

    def write() -> None:
        conn = sqlite3.connect(path)
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            with conn:
                conn.execute(SCHEMA)
                log = read(conn)
                if (log[-1][1] if log else DEFAULT) != policy:
                    conn.execute("INSERT OR REPLACE INTO overlap_policy_log VALUES (?, ?)", (now, policy))
        finally:
            conn.close()

    try:
        await asyncio.get_running_loop().run_in_executor(None, write)
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"SQLite error: {exc}") from exc
