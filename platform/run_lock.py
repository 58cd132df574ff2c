"""One study run at a time per output folder: an exclusive lock that says who holds it.

Why: two ``platform run`` of the same study started together raced on a fresh folder (MLflow's
schema creation: ``duplicate column name: step``, exit 1) and, on an existing store, logged a
trial twice (issue #15 item 4). Everything a run writes - the stage cache, Tune's state, the
embedded MLflow store, ``results.csv`` - lives in the output folder, so the folder is the unit of
exclusion.

The lock is ``flock`` on ``OUTPUT_DIR/.salient-run.lock`` (:mod:`filelock`): the kernel releases
it when its holder exits, however it exits, so a run killed with ``kill -9`` never blocks the
next one. Beside it, ``.salient-run.json`` records the holder (host, pid, user, start time,
command), so a refused run can say who is running; it is removed on release. A record left by a
holder that died is taken over with a message when the holder was on this host (the free lock
proves it is gone). A record from another host is not taken over: where a shared file system
keeps ``flock`` per host, a free lock proves nothing about a run on another host, so the message
says how to clear it once that run is known to be over.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock, Timeout
from salient.platform.errors import PlatformError, clip
from salient.platform.outputs import output_dir_owner_problem, output_dir_problem

__all__ = [
    "HOLDER_FILE",
    "LOCK_FILE",
    "Holder",
    "OutputDirError",
    "OutputDirInUseError",
    "hold_output_dir",
    "read_holder",
]

log = logging.getLogger(__name__)

LOCK_FILE = ".salient-run.lock"
HOLDER_FILE = ".salient-run.json"
#: How long a refused run waits for the holder's record to appear (the holder writes it right
#: after taking the lock, so only a run that lost the race by microseconds ever waits).
RECORD_WAIT_S = 2.0


class OutputDirError(PlatformError):
    """The output folder cannot be used: not the platform's, a system folder, not writable or full."""


class OutputDirInUseError(PlatformError):
    """Another run holds the output folder."""


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) an output folder's lock."""

    host: str
    pid: int
    user: str
    started: str
    command: str

    @classmethod
    def me(cls, command: str) -> Holder:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (containers) and no $USER
            user = str(os.getuid())
        return cls(socket.gethostname(), os.getpid(), user, time.strftime("%Y-%m-%d %H:%M:%S %Z"), command)

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host} (user {self.user}) since {self.started}: {clip(self.command)}"


def read_holder(folder: Path) -> Holder | None:
    """The holder record in ``folder``, or None when there is none or it is unreadable."""
    try:
        data = json.loads((folder / HOLDER_FILE).read_text())
        return Holder(
            str(data["host"]), int(data["pid"]), str(data["user"]), str(data["started"]), str(data["command"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _in_use_message(folder: Path) -> str:
    deadline = time.monotonic() + RECORD_WAIT_S
    holder = read_holder(folder)
    while holder is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the winner writes its record right after taking the lock
        holder = read_holder(folder)
    who = holder.describe() if holder is not None else "another process (it has not recorded who it is)"
    return f"output folder {folder} is in use by {who}; wait for it or use another output_dir"


def _take_over_stale(folder: Path, me: Holder) -> None:
    """We hold the lock; deal with a record a previous holder left behind."""
    old = read_holder(folder)
    if old is None and not (folder / HOLDER_FILE).exists():
        return
    if old is not None and old.host != me.host:
        raise OutputDirInUseError(
            f"output folder {folder} was taken by {old.describe()}; this host cannot tell whether that run is still "
            f"going. If it is over, delete {folder / HOLDER_FILE} and rerun; otherwise wait for it or use another "
            "output_dir"
        )
    if old is None:
        log.warning("output folder %s: taking over an unreadable lock record left by an earlier run", folder)
    else:
        state = "still exists but no longer holds the lock" if _pid_alive(old.pid) else "is no longer running"
        log.warning(
            "output folder %s: taking over the lock of %s; that process %s (stopped without releasing it)",
            folder,
            old.describe(),
            state,
        )


def _write_holder(folder: Path, me: Holder) -> None:
    tmp = folder / f"{HOLDER_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(asdict(me), indent=2) + "\n")
    os.replace(tmp, folder / HOLDER_FILE)


@contextmanager
def hold_output_dir(folder: Path, study: str, command: str | None = None) -> Iterator[Holder]:
    """Hold ``folder`` for one study run: checks it is the platform's (nothing written before),
    takes its lock, then checks it is writable with room to spare and marks it.

    Raises :class:`OutputDirError` (exit 2) for a folder that is not the platform's or cannot be
    written, :class:`OutputDirInUseError` (exit 2) while another run holds it. On exit - normal,
    exception or Ctrl-C - the record is removed and the lock released.

    Args:
        folder: the study's ``output_dir``.
        study: the study's name (recorded in the folder's marker when it is marked now).
        command: what the holder record says is running (default: this process's command line).
    """
    if (problem := output_dir_owner_problem(folder)) is not None:
        raise OutputDirError(problem)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(f"output_dir {folder} is not writable: {exc.strerror or exc}") from None
    me = Holder.me(command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]))
    lock = FileLock(str(folder / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise OutputDirInUseError(_in_use_message(folder)) from None
    except OSError as exc:
        raise OutputDirError(f"output_dir {folder} is not writable: {exc.strerror or exc}") from None
    try:
        _take_over_stale(folder, me)
        if (problem := output_dir_problem(folder, study)) is not None:
            raise OutputDirError(problem)
        _write_holder(folder, me)
        yield me
    finally:
        try:
            if read_holder(folder) == me:
                (folder / HOLDER_FILE).unlink()
        finally:
            lock.release()
