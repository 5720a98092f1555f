"""Per-module scores of the last `mutmut run`, and the survivors nobody has explained yet.

Reads mutmut's result files (``mutants/**/*.py.meta``) and prints, for each
mutated module, how many mutants there were, how many the tests killed
(a timeout counts as killed: the mutant hung the tests), how many survived
and the score. Survivors listed in ``docs/mutation-survivors.md`` (equivalent
mutants, log-message-only changes) are expected; any other survivor is
printed and makes the exit status 1, so a new gap stands out.

Usage: ``python scripts/mutation_scores.py`` after ``mutmut run`` (``make mutation`` runs both).
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ACCEPTED = ROOT / "docs" / "mutation-survivors.md"

# mutmut's exit codes (mutmut/stats.py): 1 and 3 killed, 0 survived, 5 and 33 no tests,
# 36, 24, 152, 255 and -24 timed out.
KILLED = {1, 3}
TIMEOUT = {36, 24, 152, 255, -24}
SURVIVED = {0}
NO_TESTS = {5, 33}


def accepted_survivors() -> set[str]:
    """The mutant names listed (in backticks) in docs/mutation-survivors.md."""
    if not ACCEPTED.exists():
        return set()
    return set(re.findall(r"`([\w.ǁ]+__mutmut_\d+)`", ACCEPTED.read_text(encoding="utf-8")))


def main() -> int:
    metas = sorted((ROOT / "mutants").rglob("*.py.meta"))
    if not metas:
        print("no mutmut results under mutants/: run `make mutation` first", file=sys.stderr)
        return 2
    accepted = accepted_survivors()
    unexplained: list[str] = []
    not_checked = 0
    print(f"| {'module':<22} | mutants | killed | timeout | survived | no tests | score |")
    print(f"|{'-' * 24}|---------|--------|---------|----------|----------|-------|")
    for meta in metas:
        module = str(meta.relative_to(ROOT / "mutants"))[: -len(".meta")]
        codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
        counts = Counter()
        for name, code in codes.items():
            if code in KILLED:
                counts["killed"] += 1
            elif code in TIMEOUT:
                counts["timeout"] += 1
            elif code in SURVIVED:
                counts["survived"] += 1
                if name not in accepted:
                    unexplained.append(name)
            elif code in NO_TESTS:
                counts["no tests"] += 1
            elif code is None:
                counts["not checked"] += 1
            else:
                counts["other"] += 1
        total = len(codes)
        not_checked += counts["not checked"]
        score = (counts["killed"] + counts["timeout"]) / total if total else 1.0
        print(
            f"| {module:<22} | {total:>7} | {counts['killed']:>6} | {counts['timeout']:>7} "
            f"| {counts['survived']:>8} | {counts['no tests']:>8} | {score:6.1%} |"
        )
    if not_checked:
        print(f"\nthe run did not finish: {not_checked} mutants were not checked")
    if unexplained:
        print(f"\n{len(unexplained)} survivors not explained in {ACCEPTED.relative_to(ROOT)}:")
        for name in sorted(unexplained):
            print(f"  {name}    (mutmut show {name})")
        return 1
    print(f"\nEvery survivor is explained in {ACCEPTED.relative_to(ROOT)}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
