"""Hand-made study results and a helper that logs them to MLflow the way `platform run` does
(parent run tagged as a study, one child run per trial)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient


def make_results(
    seed_sizes: tuple[int, ...] = (6, 10), doses: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0)
) -> pd.DataFrame:
    """A study's results table with a known shape: AUPRC peaks at 2x for seed 6 and 1x for 10."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in seed_sizes:
        peak = 2.0 if seed == 6 else 1.0
        for dose in doses:
            row = {"trial": f"s{seed}_d{dose:g}", "seed_size": seed, "dose": dose, "repeat": 0}
            for p in (0.05, 0.2):
                v = 0.3 + p + 0.1 * np.exp(-((dose - peak) ** 2)) - (0.15 if dose >= 4 else 0.0)
                row.update({f"auprc_p{p:g}": v, f"auprc_p{p:g}_ci_low": v - 0.03, f"auprc_p{p:g}_ci_high": v + 0.03})
            row.update(
                {
                    "auroc": 0.7 + 0.02 * dose,
                    "auprc": 0.5,
                    "attention_overlap": 0.3 + 0.05 * dose,
                    "n_synthetic": 10.0 * dose,
                    "auprc_tvr_small": 0.2 + 0.05 * dose,
                    "auprc_tvr_large": 0.6,
                }
            )
            if dose > 0:
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
    return pd.DataFrame(rows)


def log_study(client: MlflowClient, experiment: str, name: str, results: pd.DataFrame) -> str:
    """Log ``results`` like ``platform run`` does; returns the parent run id."""
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    parent = client.create_run(exp_id, run_name=name, tags={"salient.kind": "study"}).info.run_id
    client.log_batch(parent, params=[Param("objective", "auprc"), Param("mode", "max")])
    for row in results.to_dict("records"):
        child = client.create_run(exp_id, run_name=row["trial"], tags={"mlflow.parentRunId": parent}).info.run_id
        params = [Param(k, str(row[k])) for k in ("seed_size", "dose", "repeat")]
        metrics = [
            Metric(k, float(v), 0, 0)
            for k, v in row.items()
            if k not in ("trial", "seed_size", "dose", "repeat") and pd.notna(v)
        ]
        client.log_batch(child, metrics=metrics, params=params, tags=[RunTag("salient.trial_key", row["trial"])])
        client.set_terminated(child)
    client.set_terminated(parent)
    return parent
