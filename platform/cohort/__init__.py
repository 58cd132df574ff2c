"""Cohorts: manifests, nnU-Net/MSD datasets, integrity checks, NIfTI vetting, MONAI preprocessing,
the phantom generator and the nnU-Net dataset writer.

Names are imported lazily (PEP 562): ``platform cohort check`` and the NIfTI guard need neither
torch nor MONAI, which only preprocessing imports, so importing one submodule stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_WHERE = {
    "CheckReport": "check",
    "check_cohort": "check",
    "Manifest": "manifest",
    "SubjectRecord": "manifest",
    "read_manifest": "manifest",
    "write_phantom_cohort": "phantom",
    "PreprocessedSubject": "preprocess",
    "SliceCache": "preprocess",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
