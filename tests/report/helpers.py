"""Reading rendered Markdown tables back in tests."""

from __future__ import annotations


def md_rows(md: str) -> list[list[str]]:
    """Every row of every pipe table in `md`, as stripped cells."""
    return [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in md.splitlines() if line.startswith("|")]


def row_starting(md: str, *first: str) -> list[str]:
    """The first table row whose leading cells are `first`."""
    return next(row for row in md_rows(md) if row[: len(first)] == list(first))
