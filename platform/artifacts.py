"""A finished trial's files (its MLflow artifacts): the result, the resolved plan, the split, a
sample grid of synthetic pairs (PNG, written with Pillow) and the preview arrays the dashboards
draw galleries and HU histograms from. Names: :mod:`salient.dashboards.names`."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from salient.dashboards import names
from salient.platform.privacy import real_images_allowed, subject_tokens

if TYPE_CHECKING:
    from salient.platform.stages.trial import TrialPlan, TrialResult

__all__ = ["sample_grid_png", "write_preview", "write_trial_artifacts"]


def _to_rgb(image: torch.Tensor, mask: torch.Tensor | None, colour: tuple[int, int, int]) -> np.ndarray:
    """(H, W) image in [-1, 1] -> (H, W, 3) uint8; ``mask`` outlines are drawn in ``colour``."""
    grey = ((image.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if mask is not None:
        m = mask.bool().numpy()
        edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
        rgb[edge] = colour
    return rgb


def sample_grid_png(pool: Mapping[str, torch.Tensor], path: Path, n: int = 8, scale: int = 3) -> Path | None:
    """Rows: synthetic slice | with its conditioning mask (green) | with the UCMT pseudo-label (red).

    Returns None when the pool is empty.
    """
    k = min(n, len(pool["image"]))
    if k == 0:
        return None
    rows = []
    for i in range(k):
        img = pool["image"][i, 0]
        rows.append(
            np.concatenate(
                [
                    _to_rgb(img, None, (0, 0, 0)),
                    _to_rgb(img, pool["cond_mask"][i, 0], (0, 220, 0)),
                    _to_rgb(img, pool["pseudo_mask"][i, 0], (230, 0, 0)),
                ],
                axis=1,
            )
        )
    grid = np.concatenate(rows, axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.Resampling.NEAREST).save(path)
    return path


def write_preview(result: Any, hu_window: tuple[float, float], path: Path, real: bool = True) -> Path:
    """Save a trial's preview slices as (N, H, W) float16/uint8 arrays: ``real_image``,
    ``real_mask`` (seed lesion slices, only if ``real``) and, with synthetic data, ``synthetic_image``,
    ``synthetic_mask`` (the UCMT pseudo-label it trained with) and ``synthetic_condition`` (the
    MaskVAE3D mask it was synthesised for); ``hu_window`` maps [-1, 1] to HU."""
    arrays: dict[str, np.ndarray] = {"hu_window": np.asarray(hu_window, dtype=np.float32)}
    if real and result.real_preview is not None:  # see salient.platform.privacy
        arrays["real_image"] = result.real_preview["image"][:, 0].numpy().astype(np.float16)
        arrays["real_mask"] = result.real_preview["mask"][:, 0].numpy().astype(np.uint8)
    if result.preview is not None and len(result.preview["image"]):
        arrays["synthetic_image"] = result.preview["image"][:, 0].numpy().astype(np.float16)
        arrays["synthetic_mask"] = result.preview["pseudo_mask"][:, 0].numpy().astype(np.uint8)
        arrays["synthetic_condition"] = result.preview["cond_mask"][:, 0].numpy().astype(np.uint8)
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
    return path


def write_trial_artifacts(
    folder: Path, plan: TrialPlan, result: TrialResult, events: Sequence[Mapping[str, Any]], trial_seconds: float
) -> None:
    """Write every artifact of a finished trial into ``folder`` (names in :mod:`salient.dashboards.names`)."""
    study = plan.study
    payload = {
        "metrics": result.metrics,
        "params": plan.params,
        "settings": plan.settings(),
        "stage_keys": result.stage_keys,
        "trial_key": plan.trial_key,
        "stages": list(events),
        "split": result.split_fingerprint,
        # the whole trainable (planning, slicing, stages, result files): for the overhead benchmark
        "trial_seconds": trial_seconds,
    }
    (folder / names.ARTIFACT_RESULT).write_text(json.dumps(payload, indent=1, default=str))
    (folder / names.ARTIFACT_PLAN).write_text(json.dumps(plan.to_json(), indent=1, default=str))
    if result.preview is not None:
        sample_grid_png(result.preview, folder / names.ARTIFACT_SAMPLES)
    write_preview(
        result, study.cohort.preprocessing.hu_window, folder / names.ARTIFACT_PREVIEW, real=real_images_allowed(study)
    )
    raw = study.tracking.log_subject_ids
    ids = {role: subject_tokens(getattr(plan.split, role), raw) for role in plan.split.ROLES}
    (folder / names.ARTIFACT_SPLIT).write_text(json.dumps({"hashed": not raw, **ids}, indent=1))
    if result.scores is not None:  # subjects only as the same tokens split.json uses
        rows = [{**row, "subject": subject_tokens([row["subject"]], raw)[0]} for row in result.scores.rows()]
        with (folder / names.ARTIFACT_SCORES).open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
