"""The project's expected failures. The CLI turns each into one line on stderr and exit code 2 (3 for a suite with
failed units, SuiteIncomplete); anything else that escapes is a bug and keeps its traceback."""

from __future__ import annotations


class KalmEvalError(Exception):
    """Base of every expected, user-facing failure."""


class ConfigError(KalmEvalError, ValueError):
    """A configuration knob has a wrong type, range or combination; the message names the knob and what it accepts."""


class DataError(KalmEvalError, ValueError):
    """Bad or missing input data; the message names the file (and line, where there is one)."""


class ScoreError(KalmEvalError, ValueError):
    """A score that is not a finite number (nan, inf, an overflow), made by a first stage or a reranker: it cannot be
    ranked, so it is refused before anything is written; the message names the pair and what made the score."""


class InvariantError(KalmEvalError, RuntimeError):
    """A check every run makes on its own work failed (e.g. a reranked query that does not hold exactly its own
    first-stage candidates): nothing is written; the message names the query and what differs."""


class GenerationMismatch(KalmEvalError, ValueError):
    """A result would be compared with a published row measured on another checkpoint generation (r1 vs r2)."""


class ResultError(KalmEvalError, ValueError):
    """A result directory that is unreadable, incomplete or of an unknown schema; the message names the file."""


class WriteFailed(KalmEvalError):
    """Writing a file failed (no space, quota, read-only file system, no permission); the message names the path
    and, for space, what is free and what the run needs. What was written before is complete; nothing is partial."""


class CheckpointUnavailable(KalmEvalError):
    """A checkpoint the run needs is neither in the local Hugging Face cache nor downloadable; the message names the
    model, its revision and the ways out (a local copy, a download command, HF_HUB_OFFLINE)."""


class SuiteIncomplete(KalmEvalError):
    """A suite ran every unit it could and wrote its summary, but some units failed (missing or invalid data).
    The CLI exits with SUITE_INCOMPLETE (3), so scripts and job schedulers see it."""

    exit_status = 3


def exit_with(error: Exception, program: str) -> None:
    """The command-line end of an expected failure: one line on stderr, exit status 2 (or the error's own
    `exit_status`: 3 for an incomplete suite)."""
    import sys

    print(f"{program}: error: {error}", file=sys.stderr)
    sys.exit(getattr(error, "exit_status", 2))
