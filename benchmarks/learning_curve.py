"""How well does the platform's own detector learn the phantom task without synthetic data?

A learning curve at 0x over labeled seed sizes, through the platform's real trial code (split,
compute-matched detector, cross-fitted aggregator, evaluation), in-process and without Ray or
MLflow. It answers two questions before a dose study is designed (issue #14): is the detector
above chance at the demo's seed sizes, and is it still data-limited there (the regime where
synthetic data can matter)?

    python benchmarks/learning_curve.py --subjects 280 --positives 100 --seeds 3 6 10 20 --repeats 2

Prints one row per seed size: lesion slices, detector steps, test AUROC of the aggregator's and of
the max-slice score (mean over repeats, with a two-stage percentile bootstrap interval: repeats,
then subjects), AUPRC at the first prevalence, validation AUROC and seconds per trial.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from salient.dashboards.significance import combine_repeats
from salient.dashboards.stats import auroc_rows
from salient.platform.cohort.prepare import load_cohort
from salient.platform.stage_cache import StageCache
from salient.platform.stages.trial import plan_trial, run_trial
from salient.platform.study import load_study
from salient.platform.torch_runtime import configure_torch


def _study(args: argparse.Namespace, out: Path) -> dict:
    return {
        "name": "learning_curve",
        "seed": args.seed,
        "cohort": {
            "source": "phantom",
            "phantom": {
                "n_subjects": args.subjects,
                "n_positive": args.positives,
                "shape": args.shape,
                "spacing": args.spacing,
                "seed": args.phantom_seed,
            },
            "preprocessing": {"spacing": args.spacing, "hu_window": [-160, 240], "roi": args.roi},
        },
        "stages": {
            "preset": "tiny",
            "detector": {"steps": args.steps, **yaml.safe_load(args.detector or "{}")},
            **({"aggregator": {"epochs": args.aggregator_epochs}} if args.aggregator_epochs is not None else {}),
        },
        "search_space": {"dose": {"grid": [0.0]}, "seed_size": {"grid": list(args.seeds)}},
        "evaluation": {
            "prevalences": [args.prevalence],
            "test_fraction": args.test_fraction,
            "validation_fraction": args.validation_fraction,
            "bootstrap": 0,
            "prevalence_draws": 5,
        },
        "output_dir": str(out),
    }


def _boot_auroc(
    labels: list[np.ndarray], scores: list[np.ndarray], n: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile interval of the mean over repeats of the test AUROC: two-stage - resample the
    repeats, then each drawn repeat's subjects (stratified) - so it matches the printed point (the
    mean of per-repeat AUROCs) and holds the spread between repeats (one repeat: the plain
    stratified bootstrap)."""
    rng = np.random.default_rng(seed)
    per_repeat = []
    for y, s in zip(labels, scores, strict=True):
        pos, neg = np.nonzero(y == 1)[0], np.nonzero(y == 0)[0]
        idx = np.concatenate([rng.choice(pos, (n, len(pos))), rng.choice(neg, (n, len(neg)))], axis=1)
        per_repeat.append(auroc_rows(y[idx], s[idx]))
    lo, hi = np.quantile(combine_repeats(np.stack(per_repeat), rng), [0.025, 0.975])
    return float(lo), float(hi)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=280)
    parser.add_argument("--positives", type=int, default=100)
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 64, 24])
    parser.add_argument("--spacing", type=float, nargs=3, default=[6.0, 6.0, 8.0])
    parser.add_argument("--roi", type=int, nargs=3, default=[48, 48, 24])
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 6, 10, 20])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--steps", type=int, default=300, help="detector optimiser steps (matched schedule)")
    parser.add_argument("--detector", help="extra detector settings as YAML, e.g. '{lr: 0.002}'")
    parser.add_argument("--aggregator-epochs", type=int, help="default: the tiny preset's")
    parser.add_argument("--test-fraction", type=float, default=0.4)
    parser.add_argument("--validation-fraction", type=float, default=0.35)
    parser.add_argument("--prevalence", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--phantom-seed",
        type=int,
        default=1,
        help="not the demo's phantom (0): design choices made here must not see its test subjects",
    )
    parser.add_argument("--out", type=Path, help="output folder (default: a temporary one)")
    args = parser.parse_args()
    configure_torch(1)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        path = out / "learning_curve.yaml"
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(_study(args, out / "run")))
        study = load_study(path)
        t0 = time.perf_counter()
        cohort = load_cohort(study.cohort, study.output_dir)
        print(f"cohort: {len(cohort.subjects)} subjects in {time.perf_counter() - t0:.0f} s")
        cache = StageCache(out / "run" / "stage_cache")
        header = "| seed size | lesion slices | steps | test AUROC (aggregator) | test AUROC (max slice) |"
        header += f" test AUPRC@{args.prevalence:g} | val AUROC | s/trial |"
        print(header + "\n|" + "---|" * 8)
        for seed_size in args.seeds:
            rows, labels, agg, mx = [], [], [], []
            for repeat in range(args.repeats):
                start = time.perf_counter()
                plan = plan_trial(study, {"dose": 0.0, "seed_size": seed_size}, repeat, 0.0, cohort)
                result = run_trial(plan, cohort, cache)
                test = result.scores.of("test")  # type: ignore[union-attr]
                labels.append(test.label)
                agg.append(test.score)
                mx.append(test.max_slice)
                rows.append((plan.n_real_positive, result.metrics, time.perf_counter() - start))
            m = [r[1] for r in rows]
            lo, hi = _boot_auroc(labels, agg)
            lo_m, hi_m = _boot_auroc(labels, mx)
            mean = lambda key, m=m: float(np.mean([x[key] for x in m]))  # noqa: E731
            print(
                f"| {seed_size} | {np.mean([r[0] for r in rows]):.0f} | {mean('detector_steps'):.0f} "
                f"| {mean('auroc'):.3f} [{lo:.3f}, {hi:.3f}] | {mean('maxslice_auroc'):.3f} [{lo_m:.3f}, {hi_m:.3f}] "
                f"| {mean(f'auprc_p{args.prevalence:g}'):.3f} | {mean('val_auroc'):.3f} "
                f"| {np.mean([r[2] for r in rows]):.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
