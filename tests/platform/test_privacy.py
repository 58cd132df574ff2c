"""What the platform writes about a cohort: hashed ids, no manifest path, no real images by default."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from salient.platform.artifacts import write_preview
from salient.platform.privacy import real_images_allowed, redact_resolved_study, subject_token
from salient.platform.stages.trial import TrialResult
from salient.platform.study.schema import CohortSpec, Study, TrackingSpec


def _study(tmp_path: Path, **tracking: bool) -> Study:
    manifest = tmp_path / "secret_site" / "labels.csv"
    return Study(
        name="p",
        cohort=CohortSpec(source="manifest", manifest=manifest),
        tracking=TrackingSpec(**tracking),
        output_dir=tmp_path,
    )


def test_subject_ids_are_hashed_unless_opted_in() -> None:
    assert subject_token("patient_0012") == hashlib.sha256(b"patient_0012").hexdigest()[:16]
    assert subject_token("patient_0012", raw=True) == "patient_0012"


def test_manifest_path_is_reduced_to_its_file_name(tmp_path: Path) -> None:
    study = _study(tmp_path)
    resolved = study.model_dump(mode="json")
    logged = redact_resolved_study(resolved, study)
    assert "secret_site" not in str(logged) and logged["cohort"]["manifest"].startswith("labels.csv")
    assert "secret_site" in str(resolved)  # the caller's copy is untouched
    opted_in = _study(tmp_path, log_subject_ids=True)
    assert "secret_site" in str(redact_resolved_study(opted_in.model_dump(mode="json"), opted_in))


def test_real_slices_only_for_the_phantom_or_when_opted_in(tmp_path: Path) -> None:
    assert not real_images_allowed(_study(tmp_path))
    assert real_images_allowed(_study(tmp_path, log_real_images=True))
    assert real_images_allowed(Study(name="p", output_dir=tmp_path))  # phantom cohort: nobody's scan
    real = {"image": torch.zeros(2, 1, 8, 8), "mask": torch.ones(2, 1, 8, 8)}
    result = TrialResult({}, {}, "", 1, 0, real_preview=real)
    with np.load(write_preview(result, (-160, 240), tmp_path / "a.npz", real=False)) as z:
        assert "real_image" not in z.files and list(z["hu_window"]) == [-160, 240]
    with np.load(write_preview(result, (-160, 240), tmp_path / "b.npz", real=True)) as z:
        assert z["real_image"].shape == (2, 8, 8)
