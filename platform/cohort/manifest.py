"""The labels manifest of a cohort: a CSV with columns subject, image, mask, label[, split].

Paths are relative to the manifest's folder unless absolute. Extra columns (``tvr``,
``tvr_class``, ...) are kept per subject. :func:`read_manifest` is strict (raises on any
problem); :func:`parse_manifest` returns the rows it could read plus every problem, for
``platform cohort check``.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from salient.platform.errors import CohortError

__all__ = ["REQUIRED_COLUMNS", "Manifest", "SubjectRecord", "manifest_file", "parse_manifest", "read_manifest"]

REQUIRED_COLUMNS = ("subject", "image", "mask", "label")
SPLITS = ("", "train", "test", "unlabeled")


@dataclass(frozen=True)
class SubjectRecord:
    subject: str
    image: Path
    mask: Path
    label: int
    split: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def tvr(self) -> float | None:
        try:
            return float(self.extra["tvr"])
        except (KeyError, ValueError):
            return None


@dataclass(frozen=True)
class Manifest:
    path: Path
    records: tuple[SubjectRecord, ...]

    @property
    def n_positive(self) -> int:
        return sum(r.label for r in self.records)

    def fingerprint(self) -> str:
        """Identity of the cohort: the manifest text plus each file's size and mtime.

        Hashing every voxel of a large cohort would cost minutes per study, and size+mtime
        changes whenever a file is rewritten; the fingerprint keys the slice cache and is logged.
        """
        h = hashlib.sha256(self.path.read_bytes())
        for r in self.records:
            for p in (r.image, r.mask):
                try:
                    st = p.stat()
                    h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
                except OSError:
                    h.update(f"{p.name}:missing".encode())
        return h.hexdigest()[:16]


def manifest_file(path: str | Path) -> Path:
    """A cohort folder -> its ``labels.csv``; a manifest file as it is."""
    path = Path(path)
    return path / "labels.csv" if path.is_dir() else path


def parse_manifest(path: str | Path) -> tuple[list[SubjectRecord], list[str]]:
    """Read every row that can be read; return them with a list of human-readable problems."""
    path = Path(path)
    problems: list[str] = []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        return [], [f"{path}: cannot read manifest: {exc}"]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        return [], [f"{path}: missing column(s) {missing}; required: {list(REQUIRED_COLUMNS)}, found: {columns}"]
    records: list[SubjectRecord] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        subject = (row.get("subject") or "").strip()
        where = f"{path}:{line} (subject {subject!r})"
        if not subject:
            problems.append(f"{where}: empty subject id")
            continue
        if subject in seen:
            problems.append(f"{where}: duplicate subject (first on line {seen[subject]})")
            continue
        seen[subject] = line
        label_text = (row.get("label") or "").strip()
        if label_text not in ("0", "1"):
            problems.append(f"{where}: label must be 0 or 1, got {label_text!r}")
            continue
        split = (row.get("split") or "").strip()
        if split not in SPLITS:
            problems.append(f"{where}: split must be empty or one of {list(SPLITS[1:])}, got {split!r}")
            continue
        paths = []
        for col in ("image", "mask"):
            value = (row.get(col) or "").strip()
            if not value:
                problems.append(f"{where}: empty {col} path")
            p = Path(value)
            paths.append(p if p.is_absolute() else path.parent / p)
        if len(paths) != 2 or not all(str(p) for p in paths):
            continue
        extra = {k: v for k, v in row.items() if k not in (*REQUIRED_COLUMNS, "split") and k is not None}
        records.append(SubjectRecord(subject, paths[0], paths[1], int(label_text), split, extra))
    if not rows:
        problems.append(f"{path}: no subjects")
    return records, problems


def read_manifest(path: str | Path) -> Manifest:
    """Strict reading: any problem raises :class:`CohortError` listing all of them."""
    path = Path(path)
    if not path.is_file():
        raise CohortError(f"{path}: manifest not found")
    records, problems = parse_manifest(path)
    if problems:
        raise CohortError(f"{len(problems)} problem(s) in manifest:\n" + "\n".join(problems))
    return Manifest(path.resolve(), tuple(records))
