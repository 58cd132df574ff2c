"""What an nnU-Net v2 or MSD dataset folder holds: its cases, declared channels and labels.

:mod:`~salient.platform.cohort.nnunet` and :mod:`~salient.platform.cohort.msd` turn a folder
into a :class:`DatasetIndex` without reading any voxel; everything wrong with the layout
(missing dataset.json keys, an image without its label, a channel file missing ...) is a
:class:`~salient.platform.cohort.check.Problem` in the index, so ``cohort check`` lists all of
them. This module holds what both layouts share: the index types, reading dataset.json within
a budget, and resolving the study's ``lesion_label``/``channel`` (an id or a name) against it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from salient.platform.cohort.check import Problem

__all__ = [
    "DATASET_JSON_MAX_BYTES",
    "DatasetCase",
    "DatasetIndex",
    "read_dataset_json",
    "resolve_channel",
    "resolve_lesion_label",
]

#: dataset.json is metadata; a larger file is refused unread (nnU-Net's explicit ``dataset``
#: listing of 10^5 cases is a few MB).
DATASET_JSON_MAX_BYTES = 64 * 2**20
META = "(dataset.json)"  # the Problem.subject of problems that belong to no single case


@dataclass(frozen=True)
class DatasetCase:
    """One training case: the image file holding the channel used, and its label map.

    ``image``/``label`` are None when the layout lacks them (a problem of the index says so).
    ``channel_in_file`` indexes the 4th axis of a multi-channel (MSD) image; None for a 3D file.
    """

    case_id: str
    image: Path | None
    label: Path | None
    channel_in_file: int | None = None


@dataclass(frozen=True)
class DatasetIndex:
    """A dataset folder read from its dataset.json and file names (no voxel read)."""

    source: str  # "nnunet" or "msd"
    root: Path
    dataset_json: Path
    channel_names: Mapping[int, str]
    label_names: Mapping[int, str]  # every label id dataset.json declares (regions: their member ids)
    cases: tuple[DatasetCase, ...]
    problems: tuple[Problem, ...]
    lesion_label: int | None  # resolved id; None when it cannot be resolved (a problem says why)
    channel: int | None  # resolved channel index; None when it cannot be resolved

    def fingerprint(self) -> str:
        """dataset.json's bytes plus name, size and mtime of every file a case uses."""
        h = hashlib.sha256()
        try:
            h.update(self.dataset_json.read_bytes()[:DATASET_JSON_MAX_BYTES])
        except OSError:
            h.update(b"no dataset.json")
        for case in self.cases:
            h.update(f"case:{case.case_id}:{case.channel_in_file}".encode())
            for p in (case.image, case.label):
                try:
                    st = p.stat() if p is not None else None
                    h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode() if st else b"none")
                except OSError:
                    h.update(f"{p}:missing".encode())
        for problem in self.problems:
            h.update(str(problem).encode())
        return h.hexdigest()[:16]


def _no_duplicate_keys(duplicates: list[str]) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                duplicates.append(key)
            seen[key] = value
        return seen

    return hook


def read_dataset_json(root: Path, problems: list[Problem]) -> dict[str, Any]:
    """dataset.json as a dict; every reason it cannot be read is appended to ``problems``.

    Duplicate keys are reported (``json`` silently keeps the last one, so a case or label
    listed twice would otherwise vanish).
    """
    path = root / "dataset.json"
    if not path.is_file():
        problems.append(Problem(META, "dataset.json", f"no dataset.json in {root}"))
        return {}
    size = path.stat().st_size
    if size > DATASET_JSON_MAX_BYTES:
        problems.append(
            Problem(META, "dataset.json", f"{path} has {size:,} bytes, more than {DATASET_JSON_MAX_BYTES:,}; not read")
        )
        return {}
    duplicates: list[str] = []
    try:
        meta = json.loads(path.read_bytes().decode("utf-8-sig"), object_pairs_hook=_no_duplicate_keys(duplicates))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        problems.append(Problem(META, "dataset.json", f"cannot read {path}: {type(exc).__name__}: {exc}"[:500]))
        return {}
    if not isinstance(meta, dict):
        problems.append(Problem(META, "dataset.json", f"{path} must hold a JSON object, got {type(meta).__name__}"))
        return {}
    for key in sorted(set(duplicates)):
        problems.append(Problem(META, "duplicate key", f"{key!r} appears more than once in {path.name}"))
    return meta


def _by_name(names: Mapping[int, str], wanted: str) -> list[int]:
    exact = [i for i, n in names.items() if n == wanted]
    return exact or [i for i, n in names.items() if n.casefold() == wanted.casefold()]


def resolve_lesion_label(
    wanted: int | str | None, names: Mapping[int, str], regions: Mapping[str, tuple[int, ...]], problems: list[Problem]
) -> int | None:
    """The lesion's label id: ``wanted`` as an id or a name; None -> the only foreground label.

    Args:
        wanted: ``lesion_label`` from the study or ``--lesion-label``.
        names: label id -> name, as dataset.json declares them.
        regions: nnU-Net region labels (name -> member ids); they cannot be the lesion.
        problems: where a reason it cannot be resolved is appended.
    """
    listing = ", ".join(f"{i}={n!r}" for i, n in sorted(names.items())) or "none"
    if not names:
        return None  # dataset.json's labels are missing or unreadable: that problem is listed already
    if wanted is None:
        foreground = [i for i in names if i != 0]
        if len(foreground) == 1:
            return foreground[0]
        problems.append(
            Problem(
                META,
                "lesion label",
                f"dataset.json declares labels {listing}; say which one is the lesion "
                "(cohort.lesion_label in the study, --lesion-label for cohort check)",
            )
        )
        return None
    if isinstance(wanted, str):
        if wanted in regions or wanted.casefold() in {r.casefold() for r in regions}:
            problems.append(
                Problem(
                    META,
                    "lesion label",
                    f"{wanted!r} is an nnU-Net region {list(regions.get(wanted, ()))}; give one label id",
                )
            )
            return None
        found = _by_name(names, wanted)
        if len(found) != 1:
            problems.append(
                Problem(META, "lesion label", f"no label named {wanted!r}; dataset.json declares {listing}")
            )
            return None
        wanted = found[0]
    if wanted == 0 or wanted not in names:
        problems.append(
            Problem(
                META,
                "lesion label",
                f"lesion label {wanted} is not a foreground label; dataset.json declares {listing}",
            )
        )
        return None
    return wanted


def resolve_channel(wanted: int | str, names: Mapping[int, str], problems: list[Problem]) -> int | None:
    """The channel index: ``wanted`` as an index or a name from dataset.json."""
    if not names:
        return None  # missing or unreadable channel list: listed already
    listing = ", ".join(f"{i}={n!r}" for i, n in sorted(names.items()))
    if isinstance(wanted, str):
        found = _by_name(names, wanted)
        if len(found) != 1:
            problems.append(Problem(META, "channel", f"no channel named {wanted!r}; dataset.json declares {listing}"))
            return None
        return found[0]
    if wanted not in names:
        problems.append(Problem(META, "channel", f"channel {wanted} does not exist; dataset.json declares {listing}"))
        return None
    return wanted


def parse_channel_names(value: Any, key: str, problems: list[Problem]) -> dict[int, str]:
    """``{"0": "CT", "1": "PET"}`` -> ``{0: "CT", 1: "PET"}``; indices must be 0..n-1."""
    if not isinstance(value, dict) or not value:
        if value is not None:
            problems.append(Problem(META, key, f"{key} must map channel indices to names, got {value!r}"[:300]))
        return {}
    out: dict[int, str] = {}
    for k, v in value.items():
        if not (isinstance(k, str) and k.isascii() and k.isdigit()) or not isinstance(v, str):
            problems.append(Problem(META, key, f'{key} entry {k!r}: {v!r} must be "<index>": "<name>"'[:300]))
            continue
        out[int(k)] = v
    if out and sorted(out) != list(range(len(out))):
        problems.append(Problem(META, key, f"{key} indices must be 0..{len(out) - 1}, got {sorted(out)}"))
    return out
