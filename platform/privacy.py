"""What leaves the machine about the cohort: subject ids as hashes, no cohort file paths, no
real image data unless the study opts in.

MLflow stores (and servers) are shared more widely than the cohort itself, so by default:

* subject ids are logged as ``sha256(id)[:16]`` (pseudonyms: an id that is short and predictable,
  like a running number, can be recovered by hashing candidates - use opaque ids in manifests);
* the manifest path in the logged study copy is reduced to its file name;
* real CT slices (the gallery's "real" row) are logged only for the built-in phantom cohort.

``tracking.log_subject_ids: true`` logs raw ids and paths; ``tracking.log_real_images: true``
logs real lesion slices of a manifest cohort.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import PurePath
from typing import Any

from salient.platform.study.schema import Study

__all__ = ["real_images_allowed", "redact_resolved_study", "subject_token", "subject_tokens"]


def subject_token(subject: str, raw: bool = False) -> str:
    """How a subject id is written to MLflow and shared outputs."""
    return subject if raw else hashlib.sha256(subject.encode()).hexdigest()[:16]


def subject_tokens(subjects: Iterable[str], raw: bool = False) -> list[str]:
    return [subject_token(s, raw) for s in subjects]


def real_images_allowed(study: Study) -> bool:
    return study.cohort.source == "phantom" or study.tracking.log_real_images


def redact_resolved_study(resolved: dict[str, Any], study: Study) -> dict[str, Any]:
    """The study as logged: the cohort manifest or dataset path kept only as its last name unless opted in."""
    paths = [k for k in ("manifest", "dataset") if getattr(study.cohort, k) is not None]
    if study.tracking.log_subject_ids or not paths:
        return resolved
    cohort = dict(resolved.get("cohort", {}))
    for key in paths:
        cohort[key] = PurePath(str(cohort.get(key, ""))).name + " (path not logged: tracking.log_subject_ids)"
    return {**resolved, "cohort": cohort}
