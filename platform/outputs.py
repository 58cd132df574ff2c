"""Where the platform writes: checked before any work starts.

A study's output folder must be writable with room to spare (:func:`output_dir_problem`). Every
other output path a command is given is checked too (:func:`new_output_problem`):
``platform tune-guidance -o PATH`` used to run its whole search and only then find that PATH was
not writable, losing the result; ``platform synth`` into ``/proc`` failed after synthesising.
The nearest existing folder on the way to a new path must accept a new entry (probed by creating
and removing one, which also catches read-only mounts and pseudo file systems where permission
bits say yes), and an existing target must be of the right kind - replacing a device such as
``/dev/null`` with a report must not happen.

A study's output folder must also be the platform's to write (:func:`output_dir_owner_problem`):
an existing unrelated folder had its own ``results.csv`` overwritten, and ``output_dir: /etc`` was
filled without a word (issue #15 item 8). So the folder is resolved first (a symlink to ``/etc``
is ``/etc``), system folders are refused, and an existing folder is accepted only when it is
empty or carries the platform's marker file (:data:`MARKER`), which every folder the platform
takes is given. Nothing is written before these checks pass.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile
import time
from pathlib import Path

__all__ = [
    "BOOKKEEPING_PREFIXES",
    "MARKER",
    "MIN_FREE_BYTES",
    "SYSTEM_FOLDERS",
    "SYSTEM_TREES",
    "new_output_problem",
    "output_dir_owner_problem",
    "output_dir_problem",
    "system_folder",
]

MIN_FREE_BYTES = 200 * 2**20
#: The file that marks a folder as a SALIENT output folder (JSON: who created it, for which study).
MARKER = ".salient-output.json"
#: Entries the platform writes into an output folder before (or while) it marks it: the marker's
#: temporary name, the run lock and its holder record, the writability probe. A folder holding
#: only these counts as empty, so two runs racing on a fresh folder both see an empty one.
BOOKKEEPING_PREFIXES = (".salient-", ".write-test-")
#: Folders whose whole tree belongs to the operating system: never an output folder, nor inside one.
SYSTEM_TREES = ("/proc", "/sys", "/dev", "/etc", "/boot", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/usr")
#: Shared top-level folders: never an output folder themselves (a folder of one's own inside is
#: fine, e.g. /tmp/runs or /mnt/data/runs). The user's home folder is added at check time.
SYSTEM_FOLDERS = ("/", "/home", "/root", "/var", "/var/tmp", "/tmp", "/opt", "/srv", "/mnt", "/media", "/run")


def system_folder(path: Path) -> str | None:
    """The system folder ``path`` is (or lies in), or None; ``path`` must be resolved already.

    Args:
        path: an absolute path with symlinks resolved (``Path.resolve()``).
    """
    home = os.environ.get("HOME")
    folders = {*SYSTEM_FOLDERS, *([str(Path(home).resolve())] if home else [])}
    # /lib -> /usr/lib on merged-/usr systems: the resolved names count too; the outermost is named
    roots = {root for top in SYSTEM_TREES for root in (top, str(Path(top).resolve()))}
    inside = [root for root in roots if path == Path(root) or Path(root) in path.parents]
    if inside:
        return min(inside, key=len)
    return str(path) if str(path) in folders or any(path == Path(f).resolve() for f in folders) else None


def _foreign_entries(path: Path) -> list[str]:
    """Names in folder ``path`` that are not the platform's bookkeeping (sorted, at most 4)."""
    names = sorted(n for n in os.listdir(path) if not n.startswith(BOOKKEEPING_PREFIXES))
    return names[:4]


def output_dir_owner_problem(path: Path) -> str | None:
    """Why ``path`` is not the platform's to write, or None; writes nothing.

    Accepted: a folder that does not exist yet (its parents may not either), an empty one, or one
    carrying :data:`MARKER`. Refused: system folders and anything resolving into one (symlinks
    included), a path that exists but is not a folder, an unmarked folder holding other files.

    Args:
        path: the study's ``output_dir`` as written (relative paths are taken from the current folder).
    """
    resolved = Path(os.path.abspath(path)).resolve()
    shown = f"{path}" if resolved == Path(os.path.abspath(path)) else f"{path} (resolves to {resolved})"
    if (system := system_folder(resolved)) is not None:
        what = "a system folder" if str(resolved) == system else f"inside {system}, a system folder"
        return f"output_dir {shown} is {what}; choose a folder of your own (e.g. ./salient_runs)"
    if not os.path.lexists(resolved):
        return None
    if not resolved.is_dir():
        return f"output_dir {shown} exists and is not a folder"
    marker = resolved / MARKER
    if os.path.lexists(marker):
        if not stat.S_ISREG(os.lstat(marker).st_mode):
            return f"output_dir {shown}: {MARKER} is not a regular file; the folder is not the platform's"
        return None
    try:
        foreign = _foreign_entries(resolved)
    except OSError as exc:
        return f"output_dir {shown} cannot be listed: {exc.strerror or exc}"
    if foreign:
        listed = ", ".join(foreign)
        return (
            f"output_dir {shown} already holds files the platform did not write ({listed}, ...) and has no "
            f"{MARKER}; use a new or empty folder, or one an earlier `platform run` created"
        )
    return None


def _write_marker(path: Path, study: str | None) -> None:
    """Mark folder ``path`` as the platform's (once; an existing marker is kept as it is)."""
    marker = path / MARKER
    if os.path.lexists(marker):
        return
    record = {
        "salient_output_dir": 1,
        "created_by_study": study,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
    }
    tmp = path / f"{MARKER}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, marker)


def output_dir_problem(path: Path, study: str | None = None) -> str | None:
    """Why ``path`` cannot hold a study's outputs (checked before anything trains), or None.

    Checks ownership first (:func:`output_dir_owner_problem`, nothing written), then creates the
    folder, probes that it is writable with room to spare, and marks it as the platform's.

    Args:
        path: the study's ``output_dir``.
        study: the study's name, recorded in the marker of a folder marked now.
    """
    if (problem := output_dir_owner_problem(path)) is not None:
        return problem
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
    try:
        _write_marker(path, study)
    except OSError as exc:
        return f"output_dir {path}: cannot write {MARKER}: {exc.strerror or exc}"
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
