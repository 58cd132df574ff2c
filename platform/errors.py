"""The platform's own error types.

Every error a user can cause (a bad study file, a broken cohort) is raised as a subclass of
:class:`PlatformError`, so the CLI can show a clear message and exit with code 2 instead of a
traceback. Anything else is a bug or an environment failure (exit code 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["CohortError", "Issue", "PlatformError", "StudyError"]


class PlatformError(Exception):
    """Base class for errors caused by the user's input; the CLI exits with code 2."""

    exit_code = 2


@dataclass(frozen=True)
class Issue:
    """One problem found in an input file: where it is, what value is there, what rule it breaks."""

    file: str
    path: str
    value: object
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        return f"{where}: {self.message} (got {self.value!r})"


class StudyError(PlatformError):
    """A study or search-space file is invalid. Carries every issue found, not just the first."""

    def __init__(self, issues: list[Issue]):
        if not issues:
            raise ValueError("StudyError needs at least one issue")
        self.issues = list(issues)
        lines = [str(i) for i in self.issues]
        header = f"{len(lines)} problem(s) in study configuration:" if len(lines) > 1 else ""
        super().__init__("\n".join([header, *lines]).strip())

    @classmethod
    def single(cls, file: str | Path, path: str, value: object, message: str) -> StudyError:
        return cls([Issue(str(file), path, value, message)])


class CohortError(PlatformError):
    """A cohort (manifest, NIfTI files) cannot be used."""
