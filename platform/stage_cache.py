"""Content-addressed cache of stage outputs.

A stage output is stored under ``ROOT/<stage>/<key>/`` where ``key`` hashes everything that
determines it: the stage's config, the data split, the upstream stages' keys and the code
version. A rerun, a resumed study or a second study that shares a stage finds the finished
output and trains nothing.

Writes are atomic (a temporary folder renamed into place), so a killed process never leaves a
half-written entry that would later be read as finished. Two trials that need the same stage at
the same time serialise on a file lock: the first trains, the second waits and reuses.
Partial training state (``checkpoint.pt`` next to the entry) lets a retried stage continue from
its last checkpoint instead of from scratch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from salient.platform.hashing import content_hash

__all__ = [
    "CODE_VERSION",
    "EVALUATION_VERSION",
    "VERSIONED_PACKAGES",
    "StageCache",
    "StageKey",
    "code_version",
    "source_version",
    "stage_key",
]


#: The packages whose source determines what a stage computes: the models and the stages (with
#: their slicing and generator glue). Every ``.py`` file in them is hashed, so a new module can
#: never be forgotten. Splits are not here: a changed split changes the subject ids in the key.
VERSIONED_PACKAGES = ("salient.models", "salient.platform.stages")


def code_version() -> str:
    """Hash of the sources of :data:`VERSIONED_PACKAGES`: editing any of them invalidates cached outputs."""
    h = hashlib.sha256()
    for package in VERSIONED_PACKAGES:
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.submodule_search_locations is not None
        for folder in spec.submodule_search_locations:
            for path in sorted(Path(folder).rglob("*.py")):
                h.update(path.relative_to(folder).as_posix().encode())
                h.update(path.read_bytes())
    return h.hexdigest()[:12]


CODE_VERSION = code_version()

#: The modules that turn a trial's scores into its metrics (outside the stage packages, so not in
#: :data:`CODE_VERSION`); their source is part of a trial's identity (see ``TrialPlan.trial_key``).
EVALUATION_MODULES = ("salient.platform.evaluation", "salient.dashboards.stats")


def source_version(modules: tuple[str, ...]) -> str:
    """Hash of the source files of ``modules``."""
    h = hashlib.sha256()
    for module in modules:
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin is not None
        h.update(module.encode())
        h.update(Path(spec.origin).read_bytes())
    return h.hexdigest()[:12]


EVALUATION_VERSION = source_version(EVALUATION_MODULES)


@dataclass(frozen=True)
class StageKey:
    stage: str
    key: str

    def __str__(self) -> str:
        return f"{self.stage}/{self.key}"


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return repr(value)


def stage_key(stage: str, config: Any, upstream: tuple[StageKey, ...] = (), **data: Any) -> StageKey:
    """The cache key of a stage: config + data identity + upstream keys + code version."""
    payload = {
        "stage": stage,
        "config": _canonical(config),
        "data": _canonical(data),
        "upstream": [str(u) for u in upstream],
        "code": CODE_VERSION,
    }
    return StageKey(stage, content_hash(payload, 20))


class StageCache:
    """Finished stage outputs (``output.pt`` + ``meta.json``) under one root folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        #: seconds this instance spent waiting for another process's lock (a stage it needed was
        #: being computed elsewhere); the orchestration records it per trial
        self.lock_wait_s = 0.0

    def entry(self, key: StageKey) -> Path:
        return self.root / key.stage / key.key

    def has(self, key: StageKey) -> bool:
        return (self.entry(key) / "meta.json").is_file()

    def load(self, key: StageKey) -> Any:
        return torch.load(self.entry(key) / "output.pt", weights_only=True)

    def meta(self, key: StageKey) -> dict[str, Any]:
        return json.loads((self.entry(key) / "meta.json").read_text())

    def checkpoint_path(self, key: StageKey) -> Path:
        return self.root / key.stage / f"{key.key}.checkpoint.pt"

    def save_checkpoint(self, key: StageKey, state: Any) -> None:
        path = self.checkpoint_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        torch.save(state, tmp)
        os.replace(tmp, path)

    def load_checkpoint(self, key: StageKey) -> Any | None:
        path = self.checkpoint_path(key)
        return torch.load(path, weights_only=True) if path.is_file() else None

    def _store(self, key: StageKey, output: Any, meta: dict[str, Any]) -> None:
        final = self.entry(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key.key}."))
        torch.save(output, tmp / "output.pt")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        if final.exists():  # an unfinished leftover (no meta.json): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        self.checkpoint_path(key).unlink(missing_ok=True)

    def get_or_compute(self, key: StageKey, compute: Callable[[], tuple[Any, dict[str, Any]]]) -> tuple[Any, bool]:
        """Return ``(output, reused)``; ``compute`` returns ``(output, meta)`` and runs at most once.

        ``output`` must be made of tensors, numbers, strings, lists and dicts (it is saved with
        ``torch.save`` and read back with ``weights_only=True``).
        """
        if self.has(key):
            return self.load(key), True
        (self.root / key.stage).mkdir(parents=True, exist_ok=True)
        asked = time.perf_counter()
        with FileLock(str(self.root / key.stage / f"{key.key}.lock")):
            self.lock_wait_s += time.perf_counter() - asked
            if self.has(key):  # another trial finished it while we waited
                return self.load(key), True
            started = time.perf_counter()
            output, meta = compute()
            # compute seconds: measured stage costs for `platform plan` (salient.platform.cost_model)
            meta = {"compute_seconds": time.perf_counter() - started, **meta}  # unless compute measured it
            self._store(key, output, {**meta, "stage": key.stage, "key": key.key})
            return output, False
