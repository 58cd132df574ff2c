"""Finished trials as plain files the platform wrote itself: ``OUTPUT_DIR/trials/<trial key>/``.

Why this exists: a rerun must recognise finished trials without unpickling anything from the
output folder (issue #15 item 1: Ray Tune's ``Tuner.restore`` unpickled a planted ``tuner.pkl``
there and ran its payload). A finished trial is its result JSON (metrics, values, stage keys,
stage events) plus the artifacts MLflow gets (plan and split JSON, a PNG, an ``.npz`` preview read
back only by ``numpy.load(allow_pickle=False)``); nothing in an entry is ever unpickled.

An entry is written into a temporary folder and renamed into place, so a killed process never
leaves half an entry that a rerun would take as finished. The result JSON is checked when it is
read (a malformed or foreign file is ignored and the trial is run again, with a warning).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from salient.dashboards import names
from salient.platform.outcome import TrialOutcome

__all__ = ["TrialStore"]

log = logging.getLogger(__name__)
_KEY_RE = re.compile(r"^[0-9a-f]{8,64}$")


def _check_key(trial_key: str) -> str:
    if not _KEY_RE.match(trial_key):  # a key is a hex digest: never a path component with '/' or '..'
        raise ValueError(f"trial_key must be 8-64 lowercase hex digits, got {trial_key!r}")
    return trial_key


class TrialStore:
    """Finished trials under ``root`` (one folder per trial key).

    Args:
        root: the store folder, ``OUTPUT_DIR/trials``; created on the first write.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def entry(self, trial_key: str) -> Path:
        return self.root / _check_key(trial_key)

    def has(self, trial_key: str) -> bool:
        return (self.entry(trial_key) / names.ARTIFACT_RESULT).is_file()

    def write(self, trial_key: str, fill: Callable[[Path], None]) -> Path:
        """Create the entry of a finished trial: ``fill(folder)`` writes its files into a temporary
        folder that is then renamed into place (an existing entry is replaced). Returns the entry."""
        final = self.entry(trial_key)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{trial_key}."))
        try:
            fill(tmp)
            if not (tmp / names.ARTIFACT_RESULT).is_file():
                raise ValueError(f"a trial entry needs {names.ARTIFACT_RESULT}; {fill!r} did not write it")
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def outcome(self, trial_key: str, trial_id: str, repeat: int) -> TrialOutcome | None:
        """The finished trial as the driver logs it, or None if there is no valid entry."""
        folder = self.entry(trial_key)
        path = folder / names.ARTIFACT_RESULT
        if not path.is_file():
            return None
        try:
            saved = json.loads(path.read_text())
            problem = _result_problem(saved, trial_key)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problem = f"unreadable ({exc})"
        if problem is not None:
            log.warning("ignoring trial entry %s: %s; the trial runs again", folder, problem)
            return None
        return TrialOutcome(
            trial_id,
            trial_key,
            repeat,
            saved["params"],
            {k: float(v) for k, v in saved["metrics"].items()},
            saved["stage_keys"],
            saved["stages"],
            str(folder),
            saved.get("trial_seconds"),
            saved.get("split"),
            saved.get("settings", {}),
        )


def _result_problem(saved: Any, trial_key: str) -> str | None:
    """Why ``saved`` is not a result the platform wrote for ``trial_key`` (None if it is)."""
    if not isinstance(saved, dict):
        return "not a JSON object"
    if saved.get("trial_key") != trial_key:
        return f"written for trial {saved.get('trial_key')!r}"
    for field, kind in (("params", dict), ("metrics", dict), ("stage_keys", dict), ("stages", list)):
        if not isinstance(saved.get(field), kind):
            return f"{field} is not a {kind.__name__}"
    for name, value in saved["metrics"].items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"metric {name!r} is not a number"
    if not saved["metrics"]:
        return "no metrics"
    return None
