"""The project's expected failures. The CLI turns each into one line on stderr and exit code 2; anything else that
escapes is a bug and keeps its traceback."""

from __future__ import annotations


class KalmEvalError(Exception):
    """Base of every expected, user-facing failure."""


class ConfigError(KalmEvalError, ValueError):
    """A configuration knob has a wrong type, range or combination; the message names the knob and what it accepts."""


class DataError(KalmEvalError, ValueError):
    """Bad or missing input data; the message names the file (and line, where there is one)."""


class GenerationMismatch(KalmEvalError, ValueError):
    """A result would be compared with a published row measured on another checkpoint generation (r1 vs r2)."""


class ResultError(KalmEvalError, ValueError):
    """A result directory that is unreadable, incomplete or of an unknown schema; the message names the file."""


def exit_with(error: Exception, program: str) -> None:
    """The command-line end of an expected failure: one line on stderr, exit status 2."""
    import sys

    print(f"{program}: error: {error}", file=sys.stderr)
    sys.exit(2)
