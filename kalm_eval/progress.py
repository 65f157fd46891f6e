"""Progress you can follow: live bars (tqdm) on a terminal, periodic log lines elsewhere (SLURM logs, files).

    bar = progress_bar(total=n, desc="score pairs", unit="pair")   # or progress_bar(items, ...) to wrap an iterable
    bar.update(k); bar.close()

On a terminal it is a tqdm bar with count, rate and ETA. When stderr is not a terminal, a line
`desc: n/total unit (p%), rate unit/s, elapsed, ETA` goes to the `kalm_eval.progress` logger every `every` seconds
and at the end (so it also reaches the run's log file). Under torchrun each rank's lines carry its label
("[rank 1/4] ..."). `progress=false` in the config turns every bar off (`enabled=False`)."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

log = logging.getLogger("kalm_eval.progress")

LOG_EVERY_S = float(os.environ.get("KALM_EVAL_PROGRESS_SECONDS", 30))  # between log lines when not on a terminal


class LoggedBar:
    """The non-terminal bar: periodic log lines instead of a redrawn line."""

    def __init__(self, total: int | None, desc: str, unit: str, every: float):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.done = 0
        self.started = self.last = time.monotonic()
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            log.info("%s", progress_line(self.desc, self.done, self.total, self.unit, now - self.started))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            log.info("%s", progress_line(self.desc, self.done, self.total, self.unit, time.monotonic() - self.started))


class NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(items: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 every: float = LOG_EVERY_S, enabled: bool = True) -> Any:
    """A bar (update/close), or, given `items`, an iterator over them that advances the bar."""
    if not enabled:
        bar: Any = NoBar()
    elif sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
    else:
        bar = LoggedBar(total, desc, unit, every)
    return bar if items is None else _iterate(items, bar)


def _iterate(items: Iterable, bar: Any) -> Iterator:
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()


def progress_line(desc: str, done: int, total: int | None, unit: str, elapsed: float) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    if total:
        eta = (total - done) / rate if rate > 0 else float("inf")
        return (f"{desc}: {done}/{total} {unit} ({100 * done / total:.0f}%), {rate:.1f} {unit}/s, "
                f"elapsed {_clock(elapsed)}, ETA {_clock(eta)}")
    return f"{desc}: {done} {unit}, {rate:.1f} {unit}/s, elapsed {_clock(elapsed)}"


def _clock(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
