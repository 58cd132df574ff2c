"""The platform's own error types.

Every error a user can cause (a bad study file, a broken cohort) is raised as a subclass of
:class:`PlatformError`, so the CLI can show a clear message and exit with code 2 instead of a
traceback. Anything else is a bug or an environment failure (exit code 1).

Error messages echo what the user wrote, and what the user wrote can be huge (a YAML alias bomb
expands to gigabytes; a grid can hold a million values). So every echoed value goes through
:func:`clip`, and a :class:`StudyError` lists a bounded number of issues: no error message can
be larger than a few hundred kilobytes, whatever the input.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "MAX_ECHO_CHARS",
    "MAX_LISTED_ISSUES",
    "CohortError",
    "InputTooComplexError",
    "Issue",
    "PlatformError",
    "StudyError",
    "clip",
    "input_limits",
]

#: Characters of a user value an error message repeats before it is cut.
MAX_ECHO_CHARS = 200
#: Issues a :class:`StudyError` message lists; the rest are counted (all stay in ``.issues``).
MAX_LISTED_ISSUES = 50
# Messages are ours but may embed a user value (e.g. "values must be distinct, got [...]").
_MAX_MESSAGE_CHARS = 4 * MAX_ECHO_CHARS


def clip(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """``text`` if it has at most ``limit`` characters, else its start and its full length.

    Args:
        text: what is about to be printed.
        limit: characters kept (> 0).
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit!r}")
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


class PlatformError(Exception):
    """Base class for errors caused by the user's input; the CLI exits with code 2."""

    exit_code = 2


@dataclass(frozen=True)
class Issue:
    """One problem found in an input file: where it is, what value is there, what rule it breaks.

    ``str()`` clips the key path and the value to :data:`MAX_ECHO_CHARS` characters each, so a
    huge value is named, not printed.
    """

    file: str
    path: str
    value: object
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {clip(self.path)}" if self.path else self.file
        return f"{where}: {clip(self.message, _MAX_MESSAGE_CHARS)} (got {clip(_safe_repr(self.value))})"


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except (RecursionError, MemoryError):  # a self-referencing or enormous value
        return f"<{type(value).__name__} too large to show>"


class StudyError(PlatformError):
    """A study or search-space file is invalid. Carries every issue found, not just the first;
    the message lists the first :data:`MAX_LISTED_ISSUES`."""

    def __init__(self, issues: list[Issue]):
        if not issues:
            raise ValueError("StudyError needs at least one issue")
        self.issues = list(issues)
        lines = [str(i) for i in self.issues[:MAX_LISTED_ISSUES]]
        if len(self.issues) > MAX_LISTED_ISSUES:
            lines.append(f"... and {len(self.issues) - MAX_LISTED_ISSUES} more problem(s)")
        header = f"{len(self.issues)} problem(s) in study configuration:" if len(self.issues) > 1 else ""
        super().__init__("\n".join([header, *lines]).strip())

    @classmethod
    def single(cls, file: str | Path, path: str, value: object, message: str) -> StudyError:
        return cls([Issue(str(file), path, value, message)])


class CohortError(PlatformError):
    """A cohort (manifest, NIfTI files) cannot be used."""


class InputTooComplexError(PlatformError):
    """Parsing an input file ran out of stack or memory: the input, not the platform, is at fault."""


@contextmanager
def input_limits(what: str | Path) -> Iterator[None]:
    """Turn a ``RecursionError`` or ``MemoryError`` raised while parsing ``what`` into a
    :class:`InputTooComplexError` naming it (exit code 2).

    Wrap only code that parses a user's file, so the same errors anywhere else stay failures
    (exit code 1, a bug) instead of being blamed on the input.

    Args:
        what: the file (or argument) being parsed, as the message should name it.
    """
    try:
        yield
    except RecursionError:
        raise InputTooComplexError(f"{what}: nested too deeply to parse") from None
    except MemoryError:
        raise InputTooComplexError(f"{what}: too large to parse (ran out of memory)") from None
