"""``study-time migrate --store=URL``: upgrade a store written by an earlier version, then exit.

Opening a store upgrades it (a server does so on every start); this command
does only that, for an operator who wants the upgrade done and reported
before the servers start: with MongoDB it builds each learner's running
total per course from the stored sessions, once (docs/storage.md,
"Upgrades"). Running it again changes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from settings import program

from .backends import backend_for
from .base import StoreError


def main(argv: Sequence[str]) -> int:
    """Exit 2 for a ``--store`` that cannot be used (a usage error), 1 when the store cannot be upgraded."""
    prog = f"{program()} migrate"
    parser = argparse.ArgumentParser(
        prog=prog, description="Upgrade the study record store to this version's schema."
    )
    parser.add_argument("--store", required=True, help="the store URL the servers use (--store)")
    args = parser.parse_args(argv)
    try:
        store = backend_for(args.store).store(server=False)
    except StoreError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    try:
        built = asyncio.run(_upgrade(store))
    except StoreError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    print(f"store is up to date; running totals built: {built}")
    return 0


async def _upgrade(store) -> int:
    await store.open()  # upgrades (Store.upgrade)
    try:
        return getattr(store, "upgraded", 0) + await store.upgrade()
    finally:
        await store.close()
