"""Progress you can follow: live bars (tqdm) on a terminal, periodic log lines elsewhere (SLURM logs, files).

`progress_bar(items, total=, desc=, unit=)` wraps an iterable. On a terminal it is a tqdm bar with count, rate and
ETA; when stderr is not a terminal, a line `desc: n/total unit (p%), rate, ETA` is logged every `every` seconds and
at the end, through the `kalm_eval` logger (so it also reaches the run's log file). Under torchrun each rank's
lines carry its label (Workers.label()). `progress=false` in the config turns it off."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("kalm_eval.progress")

LOG_EVERY_S = 30.0


def progress_bar(items: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it",
                 every: float = LOG_EVERY_S) -> Iterator[T]:
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(items, total=total, desc=desc, unit=unit, dynamic_ncols=True)
        return
    yield from _logged(items, total=total, desc=desc, unit=unit, every=every)


def _logged(items: Iterable[T], *, total: int | None, desc: str, unit: str, every: float) -> Iterator[T]:
    started = last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= every:
            log.info("%s", progress_line(desc, done, total, unit, now - started))
            last = now
    log.info("%s", progress_line(desc, done, total, unit, time.monotonic() - started))


def progress_line(desc: str, done: int, total: int | None, unit: str, elapsed: float) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    if total:
        eta = (total - done) / rate if rate > 0 else float("inf")
        return (f"{desc}: {done}/{total} {unit} ({100 * done / total:.0f}%), {rate:.2f} {unit}/s, "
                f"elapsed {_clock(elapsed)}, ETA {_clock(eta)}")
    return f"{desc}: {done} {unit}, {rate:.2f} {unit}/s, elapsed {_clock(elapsed)}"


def _clock(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
