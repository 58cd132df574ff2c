"""Dose-response analysis: pure functions over a study's results table (paper 4.3, Table 1).

The input is the trial table every study produces (``results.csv``, or MLflow child runs via
:mod:`salient.platform.results`): one row per trained detector with its search-space values
(``dose``, ``seed_size``, ``repeat`` ...) and metrics per test prevalence
(``auprc_p0.05``, ``auprc_p0.05_ci_low``, ``auprc_p0.05_ci_high``, ``auroc_p0.05`` ...).

Definitions (per seed size and prevalence, on the mean curve over repeats):

* **curve**: mean AUPRC per dose. Its interval is the t interval of the mean across repeats
  when there are at least two repeats, otherwise the trial's own bootstrap interval.
* **therapeutic dose**: the dose with the highest mean; ties go to the smallest dose (less
  synthesis for the same result). Its uncertainty: the *plausible optima*, every dose whose
  interval reaches the best dose's interval (not significantly worse than the best), and, with
  repeats, the share of repeats whose own best dose is the therapeutic dose.
* **therapeutic window**: plausible optima whose mean is above the 0x baseline.
* **toxic dose**: the smallest dose above the therapeutic dose whose mean falls below the 0x
  baseline; ``None`` when no dose does (or there is no 0x baseline).
* **delta**: a dose's mean minus the 0x mean; with repeats, the mean of per-repeat differences
  (paired by repeat, which shares the split).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from salient.dashboards import names

__all__ = [
    "DoseSummary",
    "ablation_table",
    "best_per_cell",
    "curve_table",
    "dose_shift",
    "dose_summaries",
    "long_metrics",
    "natural_order",
    "prevalences",
    "table1",
    "table1_markdown",
    "tvr_gains",
]

GROUP = ("seed_size", "prevalence")


def prevalences(results: pd.DataFrame) -> list[float]:
    """The test prevalences a results table holds metrics for, ascending."""
    found = {parsed[1] for c in results.columns if (parsed := names.parse_prevalence_metric(str(c)))}
    return sorted(found)


def _require(results: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in results.columns]
    if missing:
        raise ValueError(f"results table lacks column(s) {missing}; it has {sorted(map(str, results.columns))}")


def long_metrics(results: pd.DataFrame, metric: str = "auprc") -> pd.DataFrame:
    """One row per (trial, prevalence): ``seed_size, dose, repeat, prevalence, value, ci_low, ci_high``.

    A study without a ``seed_size`` axis gets ``seed_size = "all"``; without repeats, ``repeat = 0``.
    The table must hold one trial per (seed size, dose, repeat); a study that also varies other
    settings is analysed per setting (filter it, or use :func:`best_per_cell`).
    """
    if metric not in ("auprc", "auroc"):
        raise ValueError(f"metric must be 'auprc' or 'auroc', got {metric!r}")
    _require(results, ["dose"])
    cell = [c for c in ("seed_size", "dose", "repeat") if c in results.columns]
    if results.duplicated(subset=cell).any():
        raise ValueError(
            f"several trials share a ({', '.join(cell)}) cell: the study varies other settings too; "
            "analyse one setting at a time (filter the table) or take best_per_cell(...)"
        )
    frames = []
    for p in prevalences(results):
        col = names.metric_name(metric, p)
        if col not in results.columns:
            continue
        frames.append(
            pd.DataFrame(
                {
                    "seed_size": results["seed_size"] if "seed_size" in results.columns else "all",
                    "dose": results["dose"].astype(float),
                    "repeat": results["repeat"] if "repeat" in results.columns else 0,
                    "prevalence": p,
                    "value": results[col].astype(float),
                    "ci_low": results.get(names.metric_name(metric, p, "ci_low"), results[col]).astype(float),
                    "ci_high": results.get(names.metric_name(metric, p, "ci_high"), results[col]).astype(float),
                }
            )
        )
    if not frames:
        raise ValueError(f"results table has no {metric}_p<prevalence> column")
    return pd.concat(frames, ignore_index=True).dropna(subset=["value"])


def best_per_cell(results: pd.DataFrame, objective: str, maximise: bool = True) -> pd.DataFrame:
    """One trial per (seed size, dose, repeat): the one with the best ``objective`` (for studies
    that also sample other settings: the dose curve of the best configuration found per cell)."""
    cell = [c for c in ("seed_size", "dose", "repeat") if c in results.columns]
    _require(results, [*cell, objective])
    order = results.sort_values(objective, ascending=not maximise, kind="stable")
    return order.drop_duplicates(subset=cell, keep="first").sort_index()


def _t_quantile(n: int, level: float = 0.95) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, n - 1))


def curve_table(results: pd.DataFrame, metric: str = "auprc", level: float = 0.95) -> pd.DataFrame:
    """The dose curves: one row per (seed_size, prevalence, dose) with ``mean, ci_low, ci_high,
    n_repeats`` and ``delta`` (vs the 0x dose of the same seed size and prevalence; NaN without one)."""
    long = long_metrics(results, metric)
    rows = []
    for (seed, prev, dose), g in long.groupby(["seed_size", "prevalence", "dose"], sort=True):
        n = len(g)
        mean = float(g["value"].mean())
        if n >= 2:
            half = _t_quantile(n, level) * float(g["value"].std(ddof=1)) / math.sqrt(n)
            lo, hi = mean - half, mean + half
        else:
            lo, hi = float(g["ci_low"].iloc[0]), float(g["ci_high"].iloc[0])
        rows.append(
            {
                "seed_size": seed,
                "prevalence": prev,
                "dose": dose,
                "mean": mean,
                "ci_low": lo,
                "ci_high": hi,
                "n_repeats": n,
            }
        )
    curves = pd.DataFrame(rows)
    curves["delta"] = np.nan
    for (seed, prev), g in long.groupby(["seed_size", "prevalence"]):
        base = g[g["dose"] == 0.0].set_index("repeat")["value"]
        if base.empty:
            continue
        for dose, gd in g.groupby("dose"):
            paired = gd.set_index("repeat")["value"].sub(base).dropna()
            delta = float(paired.mean()) if len(paired) else float(gd["value"].mean() - base.mean())
            sel = (curves["seed_size"] == seed) & (curves["prevalence"] == prev) & (curves["dose"] == dose)
            curves.loc[sel, "delta"] = delta
    return curves


@dataclass(frozen=True)
class DoseSummary:
    """Therapeutic and toxic dose of one (seed size, prevalence) curve (see the module docstring)."""

    seed_size: object
    prevalence: float
    baseline: float | None  # mean at 0x, None without a 0x dose
    therapeutic_dose: float
    therapeutic_value: float
    plausible_optima: tuple[float, ...]
    window: tuple[float, ...]
    toxic_dose: float | None
    optimum_stability: float | None  # share of repeats whose best dose is the therapeutic dose


def _summarise(curve: pd.DataFrame, long: pd.DataFrame, seed: object, prev: float) -> DoseSummary:
    curve = curve.sort_values("dose")
    doses = curve["dose"].to_numpy(float)
    means = curve["mean"].to_numpy(float)
    lows, highs = curve["ci_low"].to_numpy(float), curve["ci_high"].to_numpy(float)
    best = int(np.flatnonzero(means == means.max())[0])  # ties -> smallest dose
    plausible = tuple(float(d) for d, h in zip(doses, highs, strict=True) if h >= lows[best])
    baseline = float(means[doses == 0.0][0]) if (doses == 0.0).any() else None
    window: tuple[float, ...] = ()
    toxic = None
    if baseline is not None:
        window = tuple(d for d in plausible if float(means[doses == d][0]) > baseline)
        above = [(d, m) for d, m in zip(doses, means, strict=True) if d > doses[best] and m < baseline]
        toxic = float(above[0][0]) if above else None
    stability = None
    repeats = long["repeat"].unique()
    if len(repeats) >= 2:
        wins = 0
        for _, g in long.groupby("repeat"):
            g = g.sort_values("dose")
            vals = g["value"].to_numpy(float)
            wins += int(float(g["dose"].to_numpy(float)[np.flatnonzero(vals == vals.max())[0]]) == doses[best])
        stability = wins / len(repeats)
    return DoseSummary(
        seed, prev, baseline, float(doses[best]), float(means[best]), plausible, window, toxic, stability
    )


def dose_summaries(results: pd.DataFrame, metric: str = "auprc", level: float = 0.95) -> list[DoseSummary]:
    """Therapeutic dose, window and toxic dose of every (seed size, prevalence) curve."""
    curves = curve_table(results, metric, level)
    long = long_metrics(results, metric)
    out = []
    for (seed, prev), g in curves.groupby(["seed_size", "prevalence"], sort=True):
        sel = long[(long["seed_size"] == seed) & (long["prevalence"] == prev)]
        out.append(_summarise(g, sel, seed, float(prev)))
    return out


def dose_shift(summaries: Sequence[DoseSummary]) -> pd.DataFrame:
    """Therapeutic dose per seed size and prevalence, and its shift from the smallest seed size."""
    if not summaries:
        return pd.DataFrame(columns=["prevalence", "seed_size", "therapeutic_dose", "shift"])
    frame = pd.DataFrame(
        [
            {"prevalence": s.prevalence, "seed_size": s.seed_size, "therapeutic_dose": s.therapeutic_dose}
            for s in summaries
        ]
    )
    frame = frame.sort_values(["prevalence", "seed_size"], key=natural_order).reset_index(drop=True)
    first = frame.groupby("prevalence")["therapeutic_dose"].transform("first")
    frame["shift"] = frame["therapeutic_dose"] - first
    return frame


def natural_order(col: pd.Series) -> pd.Series:
    """Sort numbers numerically even when a column mixes them with labels like 'all'."""
    return col.map(lambda v: (0, float(v), "") if _is_number(v) else (1, 0.0, str(v)))


def _is_number(v: object) -> bool:
    try:
        float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def tvr_gains(results: pd.DataFrame) -> pd.DataFrame:
    """AUPRC per tumour-volume-ratio stratum (``auprc_tvr_small`` ...) and its delta vs 0x, per
    seed size and dose (whole test set: strata are too small to subsample by prevalence)."""
    cols = [c for c in results.columns if str(c).startswith("auprc_tvr_")]
    if not cols:
        return pd.DataFrame(columns=["seed_size", "dose", "stratum", "auprc", "delta"])
    frame = results.assign(seed_size=results["seed_size"] if "seed_size" in results.columns else "all")
    long = frame[["seed_size", "dose", *cols]].melt(
        id_vars=["seed_size", "dose"], value_vars=cols, var_name="stratum", value_name="auprc"
    )
    long["stratum"] = long["stratum"].str.removeprefix("auprc_tvr_")
    long = long.dropna(subset=["auprc"]).groupby(["seed_size", "dose", "stratum"], as_index=False)["auprc"].mean()
    base = long[long["dose"] == 0.0].set_index(["seed_size", "stratum"])["auprc"]
    long["delta"] = [row.auprc - base.get((row.seed_size, row.stratum), np.nan) for row in long.itertuples(index=False)]
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
    for value, g in results.groupby(column):
        c = curve_table(g, metric)[["seed_size", "prevalence", "dose", "mean"]]
        parts.append(c.rename(columns={"mean": f"{metric} ({column}={value})"}))
    table = parts[0]
    for p in parts[1:]:
        table = table.merge(p, on=["seed_size", "prevalence", "dose"], how="outer")
    guided = [c for c in table.columns if c.endswith("=True)")]
    unguided = [c for c in table.columns if c.endswith("=False)")]
    if guided and unguided:
        table["difference"] = table[guided[0]] - table[unguided[0]]
    return table


def table1(results: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Paper-Table-1-style table: one row per (seed size, dose); per prevalence the AUPRC with
    its interval and the delta vs 0x; AUROC on the whole test set."""
    curves = curve_table(results, "auprc", level)
    rows: dict[tuple[object, float], dict[str, object]] = {}
    for r in curves.itertuples(index=False):
        row = rows.setdefault((r.seed_size, r.dose), {"seed_size": r.seed_size, "dose": r.dose})
        row[f"AUPRC@{r.prevalence:g}"] = f"{r.mean:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"
        row[f"dAUPRC@{r.prevalence:g}"] = "" if math.isnan(r.delta) else f"{r.delta:+.3f}"
    if "auroc" in results.columns:
        frame = results.assign(seed_size=results["seed_size"] if "seed_size" in results.columns else "all")
        for (seed, dose), g in frame.groupby(["seed_size", "dose"]):
            if (seed, float(dose)) in rows:
                rows[(seed, float(dose))]["AUROC"] = f"{g['auroc'].astype(float).mean():.3f}"
    table = pd.DataFrame(list(rows.values()))
    return table.sort_values(["seed_size", "dose"], key=natural_order).reset_index(drop=True)


def table1_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown rendering of :func:`table1` (no extra dependency)."""
    cols = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join("" if v is None else str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"
