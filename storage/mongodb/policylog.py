"""Which ``--overlap-policy`` recorded which time: the collection ``study_policy_log``.

The counterpart of SQLite's ``overlap_policy_log`` (``storage/sqlite/policylog.py``):
a server process adds ``{at, policy}`` at start when its policy differs from
the last one logged (a database with no entry was recorded under the default,
``each-course``). Reports read it (``MongoReports.policies``) to say which
policy recorded a day. One read at start, and one insert only when the policy
changes; two processes starting at once may both add the same change, which
the reports merge (consecutive periods of one policy are one).
"""

from __future__ import annotations

from pymongo.asynchronous.database import AsyncDatabase

from .schema import POLICY_LOG
from .store import errors

DEFAULT = "each-course"


async def read(db: AsyncDatabase) -> list[tuple[float, str]]:
    """Every change of policy, oldest first (none in a database that never had one logged)."""
    async with errors():
        return [(float(d["at"]), str(d["policy"])) async for d in db[POLICY_LOG].find({}).sort("at", 1)]


async def record(db: AsyncDatabase, policy: str, now: float) -> None:
    """Log ``policy`` from ``now`` on, unless it is already the policy in force."""
    async with errors():
        last = await db[POLICY_LOG].find_one({}, sort=[("at", -1)])
        if (last["policy"] if last else DEFAULT) != policy:
            await db[POLICY_LOG].insert_one({"at": now, "policy": policy})
