"""Read a Medical Segmentation Decathlon task folder (``TaskNN_Name``) into a :class:`DatasetIndex`.

The layout (medicaldecathlon.com; nnU-Net's ``convert_MSD_dataset`` reads the same)::

    TaskNN_Name/
      dataset.json   {"modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver", "2": "cancer"},
                      "numTraining": N, "training": [{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}],
                      "test": [...]}
      imagesTr/      x.nii.gz   3D, or 4D (x, y, z, channel) when ``modality`` has several entries
      labelsTr/      x.nii.gz   multi-label map

Cases come from the ``training`` list (paths relative to the task folder; a path that leaves
the folder is a problem). Files in ``labelsTr`` that no training entry names are reported (a
label without its image); hidden files (the ``._*`` files of the macOS-made MSD archives) are
skipped. The 4D channel count is checked against ``modality`` when the images are read.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

from salient.platform.cohort.check import Problem
from salient.platform.cohort.layout import (
    META,
    DatasetCase,
    DatasetIndex,
    parse_channel_names,
    read_dataset_json,
    resolve_channel,
    resolve_lesion_label,
)

__all__ = ["MSD_REQUIRED_KEYS", "index_msd", "parse_msd_labels"]

MSD_REQUIRED_KEYS = ("modality", "labels", "training")


def parse_msd_labels(value: Any, problems: list[Problem]) -> dict[int, str]:
    """``{"0": "background", "1": "liver"}`` -> ``{0: "background", 1: "liver"}``."""
    if not isinstance(value, dict) or not value:
        if value is not None:
            problems.append(Problem(META, "labels", f"labels must map label ids to names, got {value!r}"[:300]))
        return {}
    out: dict[int, str] = {}
    for k, v in value.items():
        if isinstance(k, str) and k.isascii() and k.isdigit() and isinstance(v, str):
            out[int(k)] = v
        else:
            problems.append(Problem(META, "labels", f'labels entry {k!r}: {v!r} must be "<id>": "<name>"'[:300]))
    return out


def _case_id(name: str) -> str:
    for ending in (".nii.gz", ".nii"):
        if name.endswith(ending):
            return name[: -len(ending)]
    return name


def _inside(root: Path, value: str) -> Path | None:
    """``root / value`` if ``value`` is a relative path that stays inside ``root`` (symlinks allowed)."""
    rel = PurePosixPath(value.replace("\\", "/"))
    if rel.is_absolute() or os.path.normpath(rel).startswith(".."):
        return None
    return root / os.path.normpath(rel)


def index_msd(root: str | Path, lesion_label: int | str | None = None, channel: int | str = 0) -> DatasetIndex:
    """Index an MSD task folder (no voxel is read).

    Args:
        root: the ``TaskNN_Name`` folder.
        lesion_label: the lesion's label id or name (None: the only foreground label).
        channel: the channel used, an index or a name from ``modality``.
    """
    root = Path(root)
    problems: list[Problem] = []
    meta = read_dataset_json(root, problems)
    if meta:
        missing = [k for k in MSD_REQUIRED_KEYS if k not in meta]
        if missing:
            hint = (
                "; it has 'channel_names': an nnU-Net v2 dataset? (--format nnunet)" if "channel_names" in meta else ""
            )
            problems.append(
                Problem(
                    META, "dataset.json", f"missing key(s) {missing}; an MSD task needs {list(MSD_REQUIRED_KEYS)}{hint}"
                )
            )
    channel_names = parse_channel_names(meta.get("modality"), "modality", problems)
    label_names = parse_msd_labels(meta.get("labels"), problems)
    lesion = resolve_lesion_label(lesion_label, label_names, {}, problems)
    chan = resolve_channel(channel, channel_names, problems)
    training = meta.get("training", [])
    if not isinstance(training, list):
        problems.append(
            Problem(META, "training", f"training must be a list of {{image, label}}, got {training!r}"[:300])
        )
        training = []
    cases: list[DatasetCase] = []
    first: dict[str, int] = {}
    listed_labels: set[str] = set()
    for i, entry in enumerate(training):
        image = entry.get("image") if isinstance(entry, dict) else None
        label = entry.get("label") if isinstance(entry, dict) else None
        if not (isinstance(image, str) and isinstance(label, str)):
            problems.append(
                Problem(META, "training entry", f"training[{i}] needs image and label paths, got {entry!r}"[:300])
            )
            continue
        case_id = _case_id(PurePosixPath(image.replace("\\", "/")).name)
        if case_id in first:
            problems.append(Problem(case_id, "duplicate case", f"training[{i}] repeats training[{first[case_id]}]"))
            continue
        first[case_id] = i
        paths: dict[str, Path | None] = {}
        for what, value in (("image", image), ("label", label)):
            p = _inside(root, value)
            if p is None:
                problems.append(Problem(case_id, f"bad {what} path", f"training[{i}].{what} {value!r} leaves {root}"))
            else:
                if what == "label":
                    listed_labels.add(os.path.normpath(p))
                if not p.exists():
                    problems.append(
                        Problem(case_id, f"missing {what}", f"training[{i}].{what} {value!r}: no such file")
                    )
                    p = None  # listed once here; the case is not read
            paths[what] = p
        n_channels = len(channel_names)
        cases.append(DatasetCase(case_id, paths["image"], paths["label"], chan if n_channels > 1 else None))
    labels_dir = root / "labelsTr"
    if labels_dir.is_dir():
        for f in sorted(labels_dir.iterdir()):
            if f.is_file() and not f.name.startswith(".") and os.path.normpath(f) not in listed_labels:
                problems.append(
                    Problem(
                        _case_id(f.name), "missing image", f"labelsTr/{f.name} is in no training entry of dataset.json"
                    )
                )
    n_training = meta.get("numTraining")
    if "numTraining" in meta and (
        not isinstance(n_training, int) or isinstance(n_training, bool) or n_training != len(training)
    ):
        problems.append(
            Problem(META, "numTraining", f"dataset.json numTraining is {n_training!r}, training lists {len(training)}")
        )
    return DatasetIndex(
        "msd", root, root / "dataset.json", channel_names, label_names, tuple(cases), tuple(problems), lesion, chan
    )
