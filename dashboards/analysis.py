"""Dose-response tables: pure functions over a study's results table (paper 4.3, Table 1).

The input is the trial table every study produces (``results.csv``, or MLflow child runs via
:mod:`salient.platform.results`): one row per trained detector with its values (``dose``,
``seed_size``, ``repeat``, ``arm`` ...) and metrics per prevalence (``auprc_p0.05``,
``auprc_p0.05_ci_low``, ``val_auprc_p0.05`` ...).

These tables *describe* the curves: per arm, seed size, prevalence and dose, the mean test metric
over repeats with an interval (the t interval across repeats with two or more, otherwise the
trial's own bootstrap interval) and its difference from 0x. Whether a dose helps or harms is not
decided here: that is a paired, multiplicity-aware question answered from per-subject scores by
:mod:`salient.dashboards.significance` (chosen on validation, reported on test).

Arms: ``synthetic`` is the dose curve; controls (``real``, ``shuffled``) share the 0x trial of
their seed size and repeat, which is drawn as the first point of every arm's curve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from salient.dashboards import names
from salient.dashboards.links import RUN_COLUMN
from salient.dashboards.significance import Finding

__all__ = [
    "ablation_table",
    "best_per_cell",
    "curve_table",
    "dose_shift",
    "long_metrics",
    "natural_order",
    "prevalences",
    "table1",
    "table1_markdown",
    "tvr_gains",
    "with_cell",
]


def prevalences(results: pd.DataFrame) -> list[float]:
    """The test prevalences a results table holds metrics for, ascending."""
    found = {parsed[1] for c in results.columns if (parsed := names.parse_prevalence_metric(str(c)))}
    return sorted(found)


def _require(results: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in results.columns]
    if missing:
        raise ValueError(f"results table lacks column(s) {missing}; it has {sorted(map(str, results.columns))}")


def with_cell(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` with ``arm``, ``seed_size`` and ``repeat`` columns filled in where the study
    has no such axis (``synthetic``, ``"all"``, 0)."""
    arm = results[names.PARAM_ARM].fillna("synthetic") if names.PARAM_ARM in results.columns else "synthetic"
    return results.assign(
        arm=arm,
        seed_size=results["seed_size"] if "seed_size" in results.columns else "all",
        repeat=results["repeat"] if "repeat" in results.columns else 0,
    )


CELL = ("arm", "seed_size", "dose", "repeat")


def long_metrics(results: pd.DataFrame, metric: str = "auprc") -> pd.DataFrame:
    """One row per (trial, prevalence): ``arm, seed_size, dose, repeat, prevalence, value, ci_low,
    ci_high`` (test metrics), and ``run_id`` when the table has it (so a point can link to its run).

    The table must hold one trial per (arm, seed size, dose, repeat); a study that also varies
    other settings is analysed per setting (filter it, or use :func:`best_per_cell`).
    """
    if metric not in names.PREVALENCE_METRICS:
        raise ValueError(f"metric must be one of {names.PREVALENCE_METRICS}, got {metric!r}")
    _require(results, ["dose"])
    frame = with_cell(results)
    if frame.duplicated(subset=list(CELL)).any():
        raise ValueError(
            f"several trials share a ({', '.join(CELL)}) cell: the study varies other settings too; "
            "analyse one setting at a time (filter the table) or take best_per_cell(...)"
        )
    frames = []
    for p in prevalences(results):
        col = names.metric_name(metric, p)
        _require(results, [col])  # prevalences() reads every metric's columns; this one may lack p
        frames.append(
            pd.DataFrame(
                {
                    **{c: frame[c] for c in ("arm", "seed_size", "repeat")},
                    "dose": frame["dose"].astype(float),
                    "prevalence": p,
                    "value": frame[col].astype(float),
                    "ci_low": frame.get(names.metric_name(metric, p, "ci_low"), frame[col]).astype(float),
                    "ci_high": frame.get(names.metric_name(metric, p, "ci_high"), frame[col]).astype(float),
                    **({RUN_COLUMN: frame[RUN_COLUMN].astype(str)} if RUN_COLUMN in frame.columns else {}),
                }
            )
        )
    if not frames:
        raise ValueError(f"results table has no {metric}_p<prevalence> column")
    return pd.concat(frames, ignore_index=True).dropna(subset=["value"])


def best_per_cell(results: pd.DataFrame, objective: str, maximise: bool = True) -> pd.DataFrame:
    """One trial per (arm, seed size, dose, repeat): the one with the best ``objective`` - a
    validation metric (for studies that also sample other settings: the dose curve of the best
    configuration found per cell, chosen without looking at the test set)."""
    if not names.is_validation_metric(objective):
        raise ValueError(f"selection uses validation metrics (val_...); got {objective!r}")
    _require(results, [objective])
    frame = with_cell(results)
    order = frame.sort_values(objective, ascending=not maximise, kind="stable")
    keep = order.drop_duplicates(subset=list(CELL), keep="first").index
    return results.loc[sorted(keep)]


def _t_quantile(n: int, level: float = 0.95) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, n - 1))


def curve_table(results: pd.DataFrame, metric: str = "auprc", level: float = 0.95) -> pd.DataFrame:
    """The dose curves (test metric): one row per (arm, seed_size, prevalence, dose) with ``mean,
    ci_low, ci_high, n_repeats``, ``delta`` (mean over repeats of the difference from the 0x
    trial of the same repeat; NaN without one) and ``runs`` (the trials' run ids by repeat; empty
    without a ``run_id`` column). Every arm's curve starts at the shared 0x point."""
    long = long_metrics(results, metric)
    base = long[long["dose"] == 0.0]
    arms = sorted(long["arm"].unique())
    # the 0x trial is every arm's first point
    long = pd.concat([long[long["dose"] > 0.0]] + [base.assign(arm=a) for a in arms], ignore_index=True)
    rows = []
    for (arm, seed, prev, dose), g in long.groupby(["arm", "seed_size", "prevalence", "dose"], sort=True):
        n = len(g)
        mean = float(g["value"].mean())
        if n >= 2:
            half = _t_quantile(n, level) * float(g["value"].std(ddof=1)) / math.sqrt(n)
            lo, hi = mean - half, mean + half
        else:
            lo, hi = float(g["ci_low"].iloc[0]), float(g["ci_high"].iloc[0])
        reference = base[(base["seed_size"] == seed) & (base["prevalence"] == prev)].set_index("repeat")["value"]
        paired = g.set_index("repeat")["value"].sub(reference).dropna()
        rows.append(
            {
                "arm": arm,
                "seed_size": seed,
                "prevalence": prev,
                "dose": dose,
                "mean": mean,
                "ci_low": lo,
                "ci_high": hi,
                "n_repeats": n,
                "delta": float(paired.mean()) if len(paired) else np.nan,
                "runs": tuple(g.sort_values("repeat")[RUN_COLUMN]) if RUN_COLUMN in g.columns else (),
            }
        )
    return pd.DataFrame(rows)


def dose_shift(findings: Sequence[Finding]) -> pd.DataFrame:
    """The therapeutic dose chosen on validation per seed size (``None``: no significant gain),
    per arm and prevalence, and its shift from the smallest seed size's."""
    columns = ["arm", "prevalence", "seed_size", "therapeutic_dose", "shift"]
    if not findings:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(
        [
            {"arm": f.arm, "prevalence": f.prevalence, "seed_size": f.seed_size, "therapeutic_dose": f.therapeutic_dose}
            for f in findings
        ]
    )
    frame = frame.sort_values(["arm", "prevalence", "seed_size"], key=natural_order).reset_index(drop=True)
    # relative to the smallest seed size's choice (NaN when that had no significant gain)
    first = frame.groupby(["arm", "prevalence"], dropna=False)["therapeutic_dose"].transform(lambda s: s.iloc[0])
    frame["shift"] = frame["therapeutic_dose"] - first
    return frame[columns]


def natural_order(col: pd.Series) -> pd.Series:
    """Sort numbers numerically even when a column mixes them with labels like 'all'."""
    return col.map(lambda v: (0, float(v), "") if _is_number(v) else (1, 0.0, str(v)))


def _is_number(v: object) -> bool:
    try:
        float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def tvr_gains(results: pd.DataFrame, metric: str = "auprc") -> pd.DataFrame:
    """Test ``metric`` per target-to-volume-ratio stratum (``auprc_tvr_small`` ...: each stratum's
    positives with every negative, at the study's ``evaluation.tvr_prevalence``) and its delta vs
    0x, per arm, seed size and dose (mean over repeats)."""
    prefix = f"{metric}_tvr_"
    cols = [c for c in results.columns if str(c).startswith(prefix)]
    if not cols:
        return pd.DataFrame(columns=["arm", "seed_size", "dose", "stratum", metric, "delta"])
    frame = with_cell(results)
    keys = ["arm", "seed_size", "dose"]
    long = frame[[*keys, *cols]].melt(id_vars=keys, value_vars=cols, var_name="stratum", value_name=metric)
    long["stratum"] = long["stratum"].str.removeprefix(prefix)
    long = long.dropna(subset=[metric]).groupby([*keys, "stratum"], as_index=False)[metric].mean()
    base = long[long["dose"] == 0.0].set_index(["seed_size", "stratum"])[metric]
    long["delta"] = [
        getattr(row, metric) - base.get((row.seed_size, row.stratum), np.nan) for row in long.itertuples(index=False)
    ]
    return long


def ablation_table(
    results: pd.DataFrame, column: str = "detector.mask_guidance", metric: str = "auprc"
) -> pd.DataFrame:
    """Mask-guidance ablation: mean metric per (seed_size, prevalence, dose) for each value of
    ``column`` side by side, and their difference (guided - unguided). Empty if the study did
    not vary ``column``."""
    if column not in results.columns or results[column].nunique() < 2:
        return pd.DataFrame()
    parts = []
    keys = ["arm", "seed_size", "prevalence", "dose"]
    for value, g in results.groupby(column):
        c = curve_table(g, metric)[[*keys, "mean"]]
        parts.append(c.rename(columns={"mean": f"{metric} ({column}={value})"}))
    table = parts[0]
    for p in parts[1:]:
        table = table.merge(p, on=keys, how="outer")
    guided = [c for c in table.columns if c.endswith("=True)")]
    unguided = [c for c in table.columns if c.endswith("=False)")]
    if guided and unguided:
        table["difference"] = table[guided[0]] - table[unguided[0]]
    return table


def table1(results: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Paper-Table-1-style table (test set): one row per (arm, seed size, dose); per prevalence the
    AUPRC with its interval and the delta vs 0x (descriptive: significance is in the findings);
    AUROC on the whole test set."""
    curves = curve_table(results, "auprc", level)
    rows: dict[tuple[object, object, float], dict[str, object]] = {}
    for r in curves.itertuples(index=False):
        row = rows.setdefault((r.arm, r.seed_size, r.dose), {"arm": r.arm, "seed_size": r.seed_size, "dose": r.dose})
        row[f"AUPRC@{r.prevalence:g}"] = f"{r.mean:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"
        row[f"dAUPRC@{r.prevalence:g}"] = "" if math.isnan(r.delta) else f"{r.delta:+.3f}"
    if "auroc" in results.columns:
        frame = with_cell(results)
        for (arm, seed, dose), g in frame.groupby(["arm", "seed_size", "dose"]):
            for key in (
                [(arm, seed, float(dose))] if float(dose) > 0 else [(a, seed, 0.0) for a in frame["arm"].unique()]
            ):
                if key in rows:
                    rows[key]["AUROC"] = f"{g['auroc'].astype(float).mean():.3f}"
    table = pd.DataFrame(list(rows.values()))
    return table.sort_values(["arm", "seed_size", "dose"], key=natural_order).reset_index(drop=True)


def table1_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown rendering of :func:`table1` (no extra dependency)."""
    cols = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in table.itertuples(index=False):
        lines.append(
            "| "
            + " | ".join("" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in row)
            + " |"
        )
    return "\n".join(lines) + "\n"
