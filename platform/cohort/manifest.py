"""The labels manifest of a cohort: a CSV with columns subject, image, mask, label[, split].

Paths are relative to the manifest's folder unless absolute. Two optional columns describe
multi-label data (the nnU-Net and MSD sources write them into the manifest they derive):
``lesion_label`` (the mask is a label map and the lesion is this id) and ``channel`` (the image
is 4D and this is the channel used). Extra columns (``tvr``, ``tvr_class``, ...) are kept per
subject. The file is UTF-8, with or without the byte-order mark Excel writes ("CSV UTF-8").
:func:`read_manifest` is strict (raises on any problem); :func:`parse_manifest` returns the rows
it could read plus every problem, for ``platform cohort check``.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

from salient.platform.errors import CohortError

__all__ = [
    "OPTIONAL_INT_COLUMNS",
    "REQUIRED_COLUMNS",
    "Manifest",
    "SubjectRecord",
    "manifest_file",
    "parse_manifest",
    "read_manifest",
]

REQUIRED_COLUMNS = ("subject", "image", "mask", "label")
#: Optional integer columns that become :class:`SubjectRecord` fields, with their minimum.
OPTIONAL_INT_COLUMNS = {"lesion_label": 1, "channel": 0}
SPLITS = ("", "train", "validation", "test", "unlabeled")


@dataclass(frozen=True)
class SubjectRecord:
    subject: str
    image: Path
    mask: Path
    label: int
    split: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    #: The mask is a multi-label map and the lesion is ``mask == lesion_label``; None: a 0/1 mask.
    lesion_label: int | None = None
    #: The image is 4D (x, y, z, channel) and this channel is used; None: a 3D image.
    channel: int | None = None

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
        raw = path.read_bytes()
    except OSError as exc:
        return [], [f"{path}: cannot read manifest: {exc.strerror or exc}"]
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return [], [f"{path}: the manifest is UTF-16 text (Excel 'Unicode Text'); save it as 'CSV UTF-8' instead"]
    try:
        text = raw.decode("utf-8-sig")  # the BOM Excel's "CSV UTF-8" writes is dropped
    except UnicodeDecodeError as exc:
        return [], [
            f"{path}: the manifest is not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start}); "
            "save it as UTF-8 (Excel: 'CSV UTF-8')"
        ]
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        columns = reader.fieldnames or []
        rows = list(reader)
    except csv.Error as exc:
        return [], [f"{path}: cannot read manifest: {exc}"]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        hint = next(
            (
                f"; the header looks {name}-separated, a manifest is comma-separated"
                for sep, name in ((";", "semicolon"), ("\t", "tab"))
                if len(columns) == 1 and sep in columns[0]
            ),
            "",
        )
        return [], [f"{path}: missing column(s) {missing}; required: {list(REQUIRED_COLUMNS)}, found: {columns}{hint}"]
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
        optional: dict[str, int | None] = {}
        for col, minimum in OPTIONAL_INT_COLUMNS.items():
            value = (row.get(col) or "").strip()
            if value and not (value.isascii() and value.isdigit() and int(value) >= minimum):
                problems.append(f"{where}: {col} must be empty or an integer >= {minimum}, got {value!r}")
            else:
                optional[col] = int(value) if value else None
        if len(optional) != len(OPTIONAL_INT_COLUMNS):
            continue
        known = (*REQUIRED_COLUMNS, "split", *OPTIONAL_INT_COLUMNS)
        extra = {k: v for k, v in row.items() if k not in known and k is not None}
        records.append(
            SubjectRecord(
                subject,
                paths[0],
                paths[1],
                int(label_text),
                split,
                extra,
                lesion_label=optional["lesion_label"],
                channel=optional["channel"],
            )
        )
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
