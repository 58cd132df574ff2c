"""Read an nnU-Net v2 raw dataset folder (``DatasetNNN_Name``) into a :class:`DatasetIndex`.

The layout (nnU-Net v2 ``documentation/dataset_format.md``)::

    DatasetNNN_Name/
      dataset.json   {"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1, "lesion": 2},
                      "numTraining": N, "file_ending": ".nii.gz"[, "dataset": {...}]}
      imagesTr/      CASE_0000.nii.gz [CASE_0001.nii.gz ...]   one file per channel
      labelsTr/      CASE.nii.gz                               multi-label map
      imagesTs/      (optional; not used: it has no labels)

``labels`` maps names to ids (or to tuples of ids: nnU-Net's region-based training); the
optional ``dataset`` key lists each case's ``images`` and ``label`` explicitly instead of the
folders (paths relative to the dataset folder, environment variables expanded, as nnU-Net does).
Only NIfTI (``file_ending`` ``.nii.gz`` or ``.nii``) is read. Hidden files (macOS ``._*``) are
skipped. Nothing here reads a voxel: the index lists the cases and every layout problem.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
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

__all__ = ["NNUNET_REQUIRED_KEYS", "index_nnunet", "parse_nnunet_labels"]

#: The keys nnU-Net v2's verify_dataset_integrity requires.
NNUNET_REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")
NIFTI_ENDINGS = (".nii.gz", ".nii")


def parse_nnunet_labels(value: Any, problems: list[Problem]) -> tuple[dict[int, str], dict[str, tuple[int, ...]]]:
    """``{"background": 0, "lesion": 1, "whole": [1, 2]}`` -> ids to names, and regions to ids."""
    names: dict[int, str] = {}
    regions: dict[str, tuple[int, ...]] = {}
    if not isinstance(value, dict) or not value:
        if value is not None:
            problems.append(Problem(META, "labels", f"labels must map names to label ids, got {value!r}"[:300]))
        return names, regions
    for name, ids in value.items():
        if isinstance(ids, int) and not isinstance(ids, bool) and ids >= 0:
            if ids in names:
                problems.append(Problem(META, "labels", f"label id {ids} is used by both {names[ids]!r} and {name!r}"))
            names[ids] = name
        elif isinstance(ids, list) and ids and all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            regions[name] = tuple(ids)
        else:
            problems.append(Problem(META, "labels", f"label {name!r} must be an id >= 0 or a list of ids, got {ids!r}"))
    for name, ids in regions.items():  # a region's members are labels too
        for i in ids:
            names.setdefault(i, f"{name}[{i}]")
    return names, regions


def _expand(root: Path, value: str) -> Path:
    p = Path(os.path.expandvars(value))
    return p if p.is_absolute() else root / p


def _listed_cases(
    root: Path, listing: Any, n_channels: int, channel: int | None, problems: list[Problem]
) -> tuple[list[DatasetCase], int]:
    """Cases from dataset.json's explicit ``dataset`` key."""
    if not isinstance(listing, dict):
        problems.append(
            Problem(META, "dataset", f"dataset must map case ids to {{images, label}}, got {listing!r}"[:300])
        )
        return [], 0
    cases = []
    for case_id, entry in listing.items():
        images = entry.get("images") if isinstance(entry, dict) else None
        label = entry.get("label") if isinstance(entry, dict) else None
        if not (isinstance(images, list) and all(isinstance(i, str) for i in images) and isinstance(label, str)):
            problems.append(
                Problem(str(case_id), "dataset entry", f"needs images: [paths] and label: path, got {entry!r}"[:300])
            )
            continue
        if n_channels and len(images) != n_channels:
            problems.append(
                Problem(
                    str(case_id), "channel count", f"{len(images)} image(s) listed, dataset.json declares {n_channels}"
                )
            )
        image = _expand(root, images[channel]) if channel is not None and channel < len(images) else None
        label_path = _expand(root, label)
        found: dict[str, Path | None] = {}
        for what, p in (("image", image), ("label", label_path)):
            if p is not None and not p.exists():
                problems.append(Problem(str(case_id), f"missing {what}", f"{p} listed in dataset.json does not exist"))
                p = None  # listed once here; the case is not read
            found[what] = p
        cases.append(DatasetCase(str(case_id), found["image"], found["label"]))
    return cases, len(listing)


def _visible_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file())


def _folder_cases(
    root: Path, ending: str, channel_names: dict[int, str], channel: int | None, problems: list[Problem]
) -> tuple[list[DatasetCase], int]:
    """Cases from imagesTr/CASE_XXXX<ending> and labelsTr/CASE<ending>, and how many have images."""
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            problems.append(Problem(META, "layout", f"missing folder {folder.name}/ in {root}"))
    other_ending = next(e for e in NIFTI_ENDINGS if e != ending)
    pattern = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})" + re.escape(ending) + "$")
    by_case: dict[str, dict[int, Path]] = {}
    for f in _visible_files(images_dir) if images_dir.is_dir() else []:
        if f.name.endswith(ending) and (m := pattern.match(f.name)):
            by_case.setdefault(m["case"], {})[int(m["channel"])] = f
        elif f.name.endswith(ending):
            problems.append(Problem(META, "image file name", f"imagesTr/{f.name} is not named CASE_XXXX{ending}"))
        elif f.name.endswith(other_ending) or f.name.endswith(NIFTI_ENDINGS):
            problems.append(Problem(META, "file ending", f"imagesTr/{f.name}: dataset.json file_ending is {ending!r}"))
    labels: dict[str, Path] = {}
    for f in _visible_files(labels_dir) if labels_dir.is_dir() else []:
        if f.name.endswith(ending):
            labels[f.name[: -len(ending)]] = f
        elif f.name.endswith(NIFTI_ENDINGS):
            problems.append(Problem(META, "file ending", f"labelsTr/{f.name}: dataset.json file_ending is {ending!r}"))
    cases = []
    expected = set(range(len(channel_names)))
    for case_id in sorted(set(by_case) | set(labels)):
        files = by_case.get(case_id, {})
        if not files:
            problems.append(
                Problem(case_id, "missing image", f"labelsTr/{case_id}{ending} has no imagesTr/{case_id}_XXXX{ending}")
            )
        elif case_id not in labels:
            problems.append(
                Problem(case_id, "missing label", f"imagesTr/{case_id}_XXXX{ending} has no labelsTr/{case_id}{ending}")
            )
        if files and expected and set(files) != expected:
            names = ", ".join(f"{i}={n!r}" for i, n in sorted(channel_names.items()))
            problems.append(
                Problem(
                    case_id,
                    "channel count",
                    f"channel files {sorted(files)} in imagesTr, dataset.json declares channels {names}",
                )
            )
        image = files.get(channel) if channel is not None else None
        cases.append(DatasetCase(case_id, image, labels.get(case_id)))
    return cases, len(by_case)


def index_nnunet(root: str | Path, lesion_label: int | str | None = None, channel: int | str = 0) -> DatasetIndex:
    """Index an nnU-Net v2 raw dataset folder (no voxel is read).

    Args:
        root: the ``DatasetNNN_Name`` folder.
        lesion_label: the lesion's label id or name (None: the only foreground label).
        channel: the channel used, an index or a name from ``channel_names``.
    """
    root = Path(root)
    problems: list[Problem] = []
    meta = read_dataset_json(root, problems)
    if meta:
        missing = [k for k in NNUNET_REQUIRED_KEYS if k not in meta]
        if missing:
            hint = "; it has 'modality'/'training': an MSD task? (--format msd)" if "training" in meta else ""
            problems.append(
                Problem(
                    META,
                    "dataset.json",
                    f"missing key(s) {missing}; nnU-Net v2 requires {list(NNUNET_REQUIRED_KEYS)}{hint}",
                )
            )
    channel_names = parse_channel_names(meta.get("channel_names"), "channel_names", problems)
    label_names, regions = parse_nnunet_labels(meta.get("labels"), problems)
    ending = meta.get("file_ending", ".nii.gz")
    if ending not in NIFTI_ENDINGS:
        problems.append(
            Problem(META, "file_ending", f"file_ending {ending!r}: only NIfTI ({', '.join(NIFTI_ENDINGS)}) is read")
        )
        ending = ".nii.gz"
    lesion = resolve_lesion_label(lesion_label, label_names, regions, problems)
    chan = resolve_channel(channel, channel_names, problems)
    if "dataset" in meta:
        cases, n_found = _listed_cases(root, meta["dataset"], len(channel_names), chan, problems)
    else:
        cases, n_found = _folder_cases(root, ending, channel_names, chan, problems)
    n_training = meta.get("numTraining")
    if "numTraining" in meta and (
        not isinstance(n_training, int) or isinstance(n_training, bool) or n_training != n_found
    ):
        problems.append(
            Problem(META, "numTraining", f"dataset.json numTraining is {n_training!r}, the dataset has {n_found} cases")
        )
    return DatasetIndex(
        "nnunet", root, root / "dataset.json", channel_names, label_names, tuple(cases), tuple(problems), lesion, chan
    )
