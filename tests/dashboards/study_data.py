"""Hand-made study results with a known answer, and a helper that logs them to MLflow the way
`platform run` does (parent run tagged as a study, one child run per trial, per-subject scores).

Every trial's per-subject scores are drawn from one baseline per subject plus a lift of the
positives that depends on the dose (``LIFTS``); the trial's metrics are computed from those
scores, so results and scores agree. Seed size 6: 2x is a clear gain, 4x a clear loss; seed size
10: 1x is the best gain. ``NULL_LIFTS`` with ``noise`` makes a study where nothing is there: every
trial is the baseline plus its own noise, so the right answer is "no significant effect".
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from salient.dashboards.stats import auprc, auroc, prevalence_subsample

#: lift of every positive's score, per seed size and dose (0x: none)
LIFTS = {6: {0.0: 0.0, 1.0: 0.3, 2.0: 1.5, 4.0: -1.5}, 10: {0.0: 0.0, 1.0: 1.5, 2.0: 0.6, 4.0: -1.5}}
#: no effect at any dose (use with ``noise`` > 0: each trial then differs only by its own noise)
NULL_LIFTS = {6: {0.0: 0.0, 1.0: 0.0, 2.0: 0.0, 4.0: 0.0}}
PREVALENCES = (0.05, 0.2)
N_POS, N_NEG = 40, 160


def _subjects(rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for role in ("validation", "test"):
        labels = np.r_[np.ones(N_POS, int), np.zeros(N_NEG, int)]
        rows.append(
            pd.DataFrame(
                {
                    "role": role,
                    "subject": [f"{role[0]}{i:03d}" for i in range(len(labels))],
                    "label": labels,
                    "tvr": rng.uniform(0.001, 0.05, len(labels)) * labels,
                    "base": rng.normal(0, 1, len(labels)) + 0.8 * labels,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def _metrics(scores: pd.DataFrame, prefix: str) -> dict[str, float]:
    y, s = scores["label"].to_numpy(), scores["score"].to_numpy()
    out = {f"{prefix}auprc": auprc(y, s), f"{prefix}auroc": auroc(y, s)}
    for p in PREVALENCES:
        values = [auprc(y[i], s[i]) for i in (prevalence_subsample(y, p, seed=d) for d in range(3))]
        out[f"{prefix}auprc_p{p:g}"] = float(np.mean(values))
        if not prefix:
            out[f"auprc_p{p:g}_ci_low"] = float(np.min(values)) - 0.02
            out[f"auprc_p{p:g}_ci_high"] = float(np.max(values)) + 0.02
    return out


def make_study(
    seed_sizes: tuple[int, ...] = (6, 10),
    doses: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0),
    controls: bool = False,
    lifts: dict[int, dict[float, float]] | None = None,
    noise: float = 0.0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(results, scores)`` of a one-repeat study; with ``controls``, a ``real`` arm at every dose
    above 0 (its lift is the synthetic lift + 0.5). ``lifts`` replaces :data:`LIFTS`; ``noise``
    adds each trial's own N(0, noise) to every score."""
    lifts = LIFTS if lifts is None else lifts
    rng = np.random.default_rng(0)
    subjects = _subjects(rng)
    noise_rng = np.random.default_rng(1)
    rows, scores = [], []
    for seed in seed_sizes:
        arms = [("synthetic", 0.0)] + ([("real", 0.5)] if controls else [])
        for arm, extra in arms:
            for dose in doses:
                if arm != "synthetic" and dose == 0:
                    continue  # controls share the 0x trial
                trial = f"s{seed}_d{dose:g}" + ("" if arm == "synthetic" else f"_{arm}")
                lift = lifts[seed][dose] + (extra if dose > 0 else 0.0)
                score = subjects["base"] + lift * subjects["label"] + noise_rng.normal(0.0, noise, len(subjects))
                trial_scores = subjects.assign(trial=trial, score=score, max_slice=score).drop(columns="base")
                scores.append(trial_scores)
                row = {"trial": trial, "seed_size": seed, "dose": dose, "repeat": 0}
                if arm != "synthetic":
                    row["arm"] = arm
                for role, prefix in (("test", ""), ("validation", "val_")):
                    row.update(_metrics(trial_scores[trial_scores["role"] == role], prefix))
                row.update(
                    {
                        "attention_overlap": 0.3 + 0.05 * dose,
                        "n_added_slices": 10.0 * dose,
                        "auprc_tvr_small": 0.2 + 0.05 * dose,
                        "auprc_tvr_large": 0.6,
                    }
                )
                if dose > 0 and arm == "synthetic":
                    row.update(
                        {
                            "pool_mask_dice": 0.8 + rng.normal(0, 0.01),
                            "pool_ms_ssim": 0.4,
                            "pool_frechet_distance": 12.0,
                            "real_ll_std": 0.5,
                            "synthetic_ll_std": 0.45,
                            "real_hh_var": 0.01,
                            "synthetic_hh_var": 0.012,
                        }
                    )
                rows.append(row)
    return pd.DataFrame(rows), pd.concat(scores, ignore_index=True)


def make_results(
    seed_sizes: tuple[int, ...] = (6, 10), doses: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0)
) -> pd.DataFrame:
    return make_study(seed_sizes, doses)[0]


STUDY_PARAMS = {"objective": "val_auprc", "mode": "max", "ci": 0.95, "bootstrap": 300, "prevalence_draws": 3, "seed": 0}


def train_histories(results: pd.DataFrame) -> pd.DataFrame:
    """Hand-made training-loss histories, as trial runs log them (``train_loss.<stage>``, one value
    per step): a detector history of its own per trial, and one mask_vae history per seed size that
    every trial of that seed size shares (the stage trained once, reused from the cache).
    Columns: ``trial, stage, step, value``."""
    rows = []
    for trial, seed, dose in zip(results["trial"], results["seed_size"], results["dose"], strict=True):
        rows += [(trial, "mask_vae", step, v / seed) for step, v in enumerate([20.0, 12.0, 9.0, 8.5])]
        rows += [(trial, "detector", step, (1.0 + 0.1 * dose) * v) for step, v in enumerate([0.7, 0.5, 0.42])]
    return pd.DataFrame(rows, columns=["trial", "stage", "step", "value"])


def log_study(
    client: MlflowClient,
    experiment: str,
    name: str,
    results: pd.DataFrame,
    scores: pd.DataFrame | None = None,
    histories: pd.DataFrame | None = None,
) -> str:
    """Log ``results`` (and each trial's ``scores.csv`` and training-loss ``histories``) like
    ``platform run`` does; returns the parent run id."""
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    parent = client.create_run(exp_id, run_name=name, tags={"salient.kind": "study"}).info.run_id
    client.log_batch(parent, params=[Param(k, str(v)) for k, v in STUDY_PARAMS.items()])
    axes = [c for c in ("seed_size", "dose", "repeat", "arm") if c in results.columns]
    for row in results.to_dict("records"):
        child = client.create_run(exp_id, run_name=row["trial"], tags={"mlflow.parentRunId": parent}).info.run_id
        params = [Param(k, str(row[k])) for k in axes if pd.notna(row.get(k))]
        metrics = [Metric(k, float(v), 0, 0) for k, v in row.items() if k not in ("trial", *axes) and pd.notna(v)]
        if histories is not None:
            mine = histories[histories["trial"] == row["trial"]]
            metrics += [
                Metric(f"train_loss.{h.stage}", float(h.value), 0, int(h.step)) for h in mine.itertuples(index=False)
            ]
        client.log_batch(child, metrics=metrics, params=params, tags=[RunTag("salient.trial_key", row["trial"])])
        if scores is not None:
            with tempfile.TemporaryDirectory() as d:
                path = Path(d) / "scores.csv"
                scores[scores["trial"] == row["trial"]].drop(columns="trial").to_csv(path, index=False)
                client.log_artifact(child, str(path))
        client.set_terminated(child)
    client.set_terminated(parent)
    return parent
