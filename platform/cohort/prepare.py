"""Make a study's cohort ready for trials: write the phantom if needed, preprocess once, load.

The phantom cohort is written under ``OUTPUT_DIR/cohorts/phantom-<spec hash>/``; its
``phantom.json`` is written last, so a folder without it is an interrupted write and is redone.
Preprocessed subjects live in the slice cache (``OUTPUT_DIR/slice_cache``), so only the first
study on a cohort decodes NIfTI.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from salient.platform.cohort.manifest import Manifest, SubjectRecord, read_manifest
from salient.platform.cohort.phantom import write_phantom_cohort
from salient.platform.cohort.preprocess import PreprocessedSubject, SliceCache
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
    digest = hashlib.sha256(json.dumps(spec.phantom.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:12]
    folder = output_dir / "cohorts" / f"phantom-{digest}"
    if not (folder / "phantom.json").is_file():
        write_phantom_cohort(spec.phantom, folder, progress=progress)
    return read_manifest(folder / "labels.csv")


def load_cohort(spec: CohortSpec, output_dir: Path, progress: bool = False) -> LoadedCohort:
    manifest = cohort_manifest(spec, output_dir, progress)
    cache = SliceCache(output_dir / "slice_cache", manifest, spec.preprocessing)
    subjects = {s.subject: s for s in cache.load_all(progress=progress)}
    return LoadedCohort(manifest.records, subjects, manifest.fingerprint())
