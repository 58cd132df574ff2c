"""Where the platform writes: checked before any work starts.

A study's output folder must be writable with room to spare (:func:`output_dir_problem`). Every
other output path a command is given is checked too (:func:`new_output_problem`):
``platform tune-guidance -o PATH`` used to run its whole search and only then find that PATH was
not writable, losing the result; ``platform synth`` into ``/proc`` failed after synthesising.
The nearest existing folder on the way to a new path must accept a new entry (probed by creating
and removing one, which also catches read-only mounts and pseudo file systems where permission
bits say yes), and an existing target must be of the right kind - replacing a device such as
``/dev/null`` with a report must not happen.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

__all__ = ["MIN_FREE_BYTES", "new_output_problem", "output_dir_problem"]

MIN_FREE_BYTES = 200 * 2**20


def output_dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot hold a study's outputs (checked before anything trains), or None."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        return f"output_dir {path} is not writable: {exc.strerror or exc}"
    free = shutil.disk_usage(path).free
    if free < MIN_FREE_BYTES:
        return (
            f"output_dir {path} has only {free / 2**20:.0f} MiB free; at least {MIN_FREE_BYTES / 2**20:.0f} MiB needed"
        )
    return None


def _nearest_existing(path: Path) -> Path:
    current = path
    while not os.path.lexists(current) and current != current.parent:
        current = current.parent
    return current


def new_output_problem(path: Path, what: str, *, folder: bool) -> str | None:
    """Why ``path`` cannot be written as a new file (or folder), or None if it can.

    Nothing is left behind: the probe entry is removed at once, and missing parent folders are
    not created.

    Args:
        path: the output file or folder, as given by the user.
        what: how the message names it, e.g. ``"-o"`` or ``"OUT_DIR"``.
        folder: True for an output folder (an existing folder is fine: the caller decides whether
            it must be empty), False for an output file (an existing regular file is replaced).
    """
    target = Path(os.path.abspath(path))
    if os.path.lexists(target):
        try:
            mode = target.stat().st_mode
        except OSError as exc:
            return f"{what} {path}: cannot be inspected ({exc.strerror or exc})"
        if folder and not stat.S_ISDIR(mode):
            return f"{what} {path} exists and is not a folder"
        if not folder and stat.S_ISDIR(mode):
            return f"{what} {path} is a folder; give a file name"
        if not folder and not stat.S_ISREG(mode):
            return f"{what} {path} exists and is not a regular file (a device, pipe or socket is never replaced)"
    base = target.parent if os.path.lexists(target) else _nearest_existing(target.parent)
    if not base.is_dir():
        return f"{what} {path}: {base} is not a folder"
    try:
        probe = tempfile.mkdtemp(dir=base, prefix=".salient-write-test-")
        os.rmdir(probe)
    except OSError as exc:
        return f"{what} {path} is not writable: cannot create entries in {base} ({exc.strerror or exc})"
    return None
