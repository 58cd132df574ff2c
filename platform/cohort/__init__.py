"""Cohorts: the labels manifest, integrity checks, MONAI preprocessing, the phantom generator."""

from salient.platform.cohort.check import CheckReport, check_cohort
from salient.platform.cohort.manifest import Manifest, SubjectRecord, read_manifest
from salient.platform.cohort.phantom import write_phantom_cohort
from salient.platform.cohort.preprocess import PreprocessedSubject, SliceCache

__all__ = [
    "CheckReport",
    "Manifest",
    "PreprocessedSubject",
    "SliceCache",
    "SubjectRecord",
    "check_cohort",
    "read_manifest",
    "write_phantom_cohort",
]
