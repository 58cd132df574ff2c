"""nnU-Net v2 and MSD datasets as cohorts: the same subject records a manifest gives.

A study with ``cohort.source: nnunet`` or ``msd`` names a dataset folder; the lesion is one
label id of its multi-label maps. Reading such a cohort:

1. :func:`index_dataset` lists the cases from dataset.json and the file names, with every
   layout problem (no voxel read);
2. :func:`scan_dataset` reads each case once - image (the chosen channel) and label map,
   both vetted by :mod:`~salient.platform.cohort.nifti_guard` - runs the checks of
   ``cohort check`` and derives the subject label: positive when the map contains the lesion
   label. Cases without it are negatives (``negatives: include``) or left out (``exclude``).
   TVR (lesion voxels / voxels above -500 HU) is computed for CT channels;
3. :func:`derived_manifest` writes the result as an ordinary manifest under
   ``OUTPUT_DIR/cohorts/<source>-<key>/labels.csv`` with ``lesion_label`` (and for 4D MSD images
   ``channel``) columns, keyed by the dataset's files (name, size, mtime) and the settings. The
   rest of the platform - slice cache, splits, stages - reads that manifest unchanged, and
   preprocessing turns each label map into the binary lesion mask (``label == lesion_label``).
   A dataset with any problem raises :class:`CohortError` before anything is written or trained.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from salient.platform.cohort.check import CheckReport, Problem, check_subject, problems_error
from salient.platform.cohort.layout import DatasetCase, DatasetIndex, read_dataset_json
from salient.platform.cohort.manifest import SubjectRecord
from salient.platform.cohort.msd import index_msd
from salient.platform.cohort.nifti_guard import NiftiError, read_header, resolve_max_voxels
from salient.platform.cohort.nnunet import index_nnunet
from salient.platform.errors import CohortError
from salient.platform.hashing import content_hash
from salient.platform.study.schema import CohortSpec

__all__ = [
    "DATASET_SOURCES",
    "check_dataset",
    "derived_manifest",
    "detect_source",
    "index_dataset",
    "scan_dataset",
]

DATASET_SOURCES = ("nnunet", "msd")
NEGATIVES = ("include", "exclude")


def _dataset_root(path: Path) -> Path:
    return path.parent if path.name == "dataset.json" and path.is_file() else path


def detect_source(path: str | Path) -> str:
    """``manifest``, ``nnunet`` or ``msd`` from what is at ``path``.

    A CSV, or a folder with labels.csv, is a manifest; a dataset.json with ``channel_names`` is
    nnU-Net v2, one with ``training`` or ``modality`` is MSD. Anything else is treated as a
    manifest, whose reading then says what is missing.
    """
    path = Path(path)
    root = _dataset_root(path)
    if not root.is_dir() or (root / "labels.csv").is_file() or not (root / "dataset.json").is_file():
        return "manifest"
    problems: list[Problem] = []
    meta = read_dataset_json(root, problems)
    if problems and not meta:
        raise CohortError(f"{root / 'dataset.json'}: {problems[0].detail}")
    if "channel_names" in meta:
        return "nnunet"
    if "training" in meta or "modality" in meta:
        return "msd"
    raise CohortError(
        f"{root / 'dataset.json'}: neither channel_names (nnU-Net v2) nor training/modality (MSD) is there, "
        f"found keys {sorted(meta)[:20]}; give the format (--format nnunet|msd)"
    )


def index_dataset(
    path: str | Path, source: str, lesion_label: int | str | None = None, channel: int | str = 0
) -> DatasetIndex:
    """Index a dataset folder of the given source (see :mod:`.nnunet`, :mod:`.msd`)."""
    root = _dataset_root(Path(path))
    if source == "nnunet":
        return index_nnunet(root, lesion_label, channel)
    if source == "msd":
        return index_msd(root, lesion_label, channel)
    raise CohortError(f"source must be one of {list(DATASET_SOURCES)}, got {source!r}")


def _channel_count_problem(index: DatasetIndex, case_id: str, image: Path, max_voxels: int | None) -> Problem | None:
    """An MSD image whose 4th axis does not hold the channels ``modality`` declares."""
    declared = len(index.channel_names)
    try:
        shape = read_header(image, max_voxels).shape
    except (OSError, NiftiError):
        return None  # unreadable: check_subject reports it with the other file problems
    found = shape[3] if len(shape) == 4 else 1
    if len(shape) <= 4 and found == declared:
        return None
    return Problem(
        case_id, "channel count", f"{image.name} has shape {shape} ({found} channel(s)); modality declares {declared}"
    )


def scan_dataset(
    index: DatasetIndex, negatives: str = "include", max_voxels: int | None = None, progress: bool = False
) -> tuple[list[SubjectRecord], list[Problem]]:
    """Read every case once: its problems, and a record with the derived label for each usable case.

    Args:
        index: from :func:`index_dataset`; its layout problems lead the list.
        negatives: ``include`` (cases without the lesion label are negatives) or ``exclude``.
        max_voxels: voxel cap per file.
        progress: show a progress bar.

    Returns:
        ``(records, problems)``; the records are those of the cases that could be read (label 1
        when the map contains the lesion label), in case order.
    """
    if negatives not in NEGATIVES:
        raise CohortError(f"negatives must be one of {list(NEGATIVES)}, got {negatives!r}")
    problems = list(index.problems)
    if index.lesion_label is None or index.channel is None:
        return [], problems  # nothing can be derived without them; the index says why
    label_ids = frozenset(index.label_names)
    is_ct = index.channel_names.get(index.channel, "").strip().casefold() == "ct"
    cases = [c for c in index.cases if c.image is not None and c.label is not None]
    items: Iterable[DatasetCase] = cases
    if progress:
        from rich.markup import escape
        from rich.progress import track

        items = track(cases, description=f"checking {escape(index.root.name)}")
    records: list[SubjectRecord] = []
    for case in items:
        assert case.image is not None and case.label is not None  # filtered above
        if index.source == "msd" and (p := _channel_count_problem(index, case.case_id, case.image, max_voxels)):
            problems.append(p)
            continue
        rec = SubjectRecord(
            case.case_id, case.image, case.label, 0, lesion_label=index.lesion_label, channel=case.channel_in_file
        )
        result = check_subject(rec, max_voxels, label_ids, label_is_declared=False)
        problems.extend(result.problems)
        if result.lesion_voxels is None:
            continue
        label = int(result.lesion_voxels > 0)
        if label == 0 and negatives == "exclude":
            continue
        extra = {}
        if is_ct and result.body_voxels:
            extra["tvr"] = f"{result.lesion_voxels / result.body_voxels:.6g}"
        records.append(replace(rec, label=label, extra=extra))
    return records, problems


def _check_command(index: DatasetIndex, lesion_label: int | str | None, channel: int | str) -> str:
    parts = ["platform cohort check", str(index.root), "--format", index.source]
    if lesion_label is not None:
        parts += ["--lesion-label", str(lesion_label)]
    if channel != 0:
        parts += ["--channel", str(channel)]
    return " ".join(parts)


def check_dataset(
    path: str | Path,
    source: str,
    *,
    lesion_label: int | str | None = None,
    channel: int | str = 0,
    negatives: str = "include",
    max_voxels: int | None = None,
    progress: bool = False,
) -> CheckReport:
    """``cohort check`` of a dataset folder: layout problems, then every case's file problems."""
    index = index_dataset(path, source, lesion_label, channel)
    records, problems = scan_dataset(index, negatives, max_voxels, progress)
    return CheckReport(index.dataset_json, len(records), sum(r.label for r in records), tuple(problems), source)


def _write_manifest(folder: Path, records: list[SubjectRecord], provenance: dict[str, object]) -> Path:
    """labels.csv (+ source.json) written to temporary names and renamed: never half a manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    columns = ["subject", "image", "mask", "label", "split", "lesion_label", "channel", "tvr"]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow(
            {
                "subject": r.subject,
                "image": str(r.image.resolve()),
                "mask": str(r.mask.resolve()),
                "label": r.label,
                "split": r.split,
                "lesion_label": r.lesion_label,
                "channel": "" if r.channel is None else r.channel,
                "tvr": r.extra.get("tvr", ""),
            }
        )
    for name, content in (("source.json", json.dumps(provenance, indent=2) + "\n"), ("labels.csv", text.getvalue())):
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(content)
        os.replace(tmp, folder / name)  # labels.csv last: its presence means the folder is complete
    return folder / "labels.csv"


def derived_manifest(spec: CohortSpec, output_dir: Path, progress: bool = False) -> Path:
    """The manifest of an nnunet/msd cohort, deriving (and checking) it on first use.

    Raises:
        CohortError: the dataset has problems (all listed by ``platform cohort check``), or no case.
    """
    if spec.source not in DATASET_SOURCES or spec.dataset is None:
        raise CohortError(f"cohort source {spec.source!r} is not an nnunet/msd dataset")
    index = index_dataset(spec.dataset, spec.source, spec.lesion_label, spec.channel)
    cap = resolve_max_voxels(spec.max_voxels)
    settings = {
        "source": spec.source,
        "dataset": str(index.root.resolve()),
        "lesion_label": index.lesion_label,
        "channel": index.channel,
        "negatives": spec.negatives,
        "max_voxels": cap,
    }
    key = content_hash({**settings, "files": index.fingerprint()}, 12)
    folder = output_dir / "cohorts" / f"{spec.source}-{key}"
    if (folder / "labels.csv").is_file():
        return folder / "labels.csv"
    records, problems = scan_dataset(index, spec.negatives, cap, progress)
    if problems:
        raise problems_error(index.root, problems, _check_command(index, spec.lesion_label, spec.channel))
    if not records:
        raise CohortError(f"cohort {index.root}: no case to use ({len(index.cases)} in dataset.json/folders)")
    label_name = index.label_names.get(index.lesion_label or 0, "")
    provenance = {
        **settings,
        "lesion_label_name": label_name,
        "channel_name": index.channel_names.get(index.channel or 0, ""),
        "ignored_labels": {str(i): n for i, n in sorted(index.label_names.items()) if i not in (0, index.lesion_label)},
        "cases": len(index.cases),
        "subjects": len(records),
        "positive": sum(r.label for r in records),
    }
    return _write_manifest(folder, records, provenance)
