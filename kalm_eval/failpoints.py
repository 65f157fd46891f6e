"""Named moments at which a process can be made to die with SIGKILL, for failure injection.

A random kill rarely lands inside a unit's rename, a merge or a record's commit: they take milliseconds. With
`KALM_EVAL_KILL_AT=<point>:<n>` in its environment, a process sends itself SIGKILL the n-th time it reaches `point`
(scripts/failure_injection.py --targeted; tests/test_failpoints.py). Unset, `reach` is one comparison.

The points, in the order a run meets them (each where it is reached, so the list stays true):
    run.write           a run file (the first stage's cached run, a record's run) written to its temporary file,
                        not yet renamed into place
    unit.scored         a rerank unit encoded and scored, nothing of it written
    unit.write          a unit's temporary file written, not yet renamed into place
    unit.done           a unit in place, its in-flight marker not yet removed
    merge               one more unit read back by the merge (n: after the n-th unit)
    record.stage        a record's files staged in its temporary directory, the record itself not yet written
    record.rename       between a commit's two renames: the old record moved aside, the new not yet in place
    suite.ledger        the suite ledger about to be rewritten after a unit
"""

from __future__ import annotations

import os
import signal

ENVIRONMENT = "KALM_EVAL_KILL_AT"
POINTS = ("run.write", "unit.scored", "unit.write", "unit.done", "merge", "record.stage", "record.rename",
          "suite.ledger")


def _parse(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    point, _, count = spec.partition(":")
    if point not in POINTS or not (count or "1").isdigit() or int(count or 1) < 1:
        raise ValueError(f"{ENVIRONMENT}={spec!r}: expected <point>[:<n>], n >= 1, point one of {', '.join(POINTS)}")
    return point, int(count or 1)


_TARGET = _parse(os.environ.get(ENVIRONMENT))
_reached = 0


def reach(point: str) -> None:
    """Die here with SIGKILL if this is the armed point and its n-th reach."""
    global _reached
    if _TARGET is None or _TARGET[0] != point:
        return
    _reached += 1
    if _reached == _TARGET[1]:
        os.kill(os.getpid(), signal.SIGKILL)
