"""Make a study's cohort ready for trials: write the phantom if needed, preprocess once, load.

The phantom cohort is written under ``OUTPUT_DIR/cohorts/phantom-<spec hash>/``; its
``phantom.json`` is written last, so a folder without it is an interrupted write and is redone.
An nnU-Net or MSD dataset is checked and turned into a manifest under
``OUTPUT_DIR/cohorts/<source>-<key>/`` (:mod:`salient.platform.cohort.dataset`).
Preprocessed subjects live in the slice cache (``OUTPUT_DIR/slice_cache``), so only the first
study on a cohort decodes NIfTI.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from salient.platform.cohort.check import check_cohort, problems_error
from salient.platform.cohort.dataset import DATASET_SOURCES, derived_manifest
from salient.platform.cohort.manifest import Manifest, SubjectRecord, read_manifest
from salient.platform.cohort.phantom import write_phantom_cohort
from salient.platform.cohort.preprocess import PreprocessedSubject, SliceCache
from salient.platform.hashing import content_hash
from salient.platform.study.schema import CohortSpec

__all__ = ["LoadedCohort", "cohort_manifest", "load_cohort"]


@dataclass(frozen=True)
class LoadedCohort:
    """A cohort ready for trials: manifest rows, preprocessed subjects by id, file fingerprint."""

    records: tuple[SubjectRecord, ...]
    subjects: Mapping[str, PreprocessedSubject]
    fingerprint: str


def cohort_manifest(spec: CohortSpec, output_dir: Path, progress: bool = False) -> Manifest:
    """The manifest of the study's cohort, writing the phantom cohort first if it is the source."""
    if spec.source == "manifest":
        assert spec.manifest is not None  # the schema guarantees it
        return read_manifest(spec.manifest)
    if spec.source in DATASET_SOURCES:
        return read_manifest(derived_manifest(spec, output_dir, progress))
    digest = content_hash(spec.phantom.model_dump(mode="json"), 12)
    folder = output_dir / "cohorts" / f"phantom-{digest}"
    if not (folder / "phantom.json").is_file():
        write_phantom_cohort(spec.phantom, folder, progress=progress)
    return read_manifest(folder / "labels.csv")


def load_cohort(spec: CohortSpec, output_dir: Path, progress: bool = False) -> LoadedCohort:
    """Preprocess (once) and load every subject.

    A manifest cohort with subjects not yet in the slice cache is checked first (the checks of
    ``platform cohort check``): a truncated or non-NIfTI file, a 2D volume, NaN voxels, masks
    with labels other than 0/1 or a grid other than the image's, duplicate subjects ... raise a
    :class:`~salient.platform.errors.CohortError` naming every problem before anything is
    preprocessed or trained. An nnunet/msd dataset is checked the same way when its manifest is
    derived. Every NIfTI header is vetted against ``cohort.max_voxels`` before it is decoded.
    """
    manifest = cohort_manifest(spec, output_dir, progress)
    cache = SliceCache(output_dir / "slice_cache", manifest, spec.preprocessing, max_voxels=spec.max_voxels)
    if spec.source == "manifest" and not all(cache.has(r.subject) for r in manifest.records):
        report = check_cohort(manifest.path, progress=progress, source="manifest", max_voxels=spec.max_voxels)
        if not report.ok:
            raise problems_error(manifest.path, report.problems, f"platform cohort check {manifest.path}")
    subjects = {s.subject: s for s in cache.load_all(progress=progress)}
    return LoadedCohort(manifest.records, subjects, manifest.fingerprint())
