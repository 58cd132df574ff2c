"""A trial's metrics must be finite numbers before they count as a result.

A NaN AUROC logged to MLflow reads as a finished trial: the report and the dashboards average it,
plot it or silently drop it, and the study "succeeds". A non-finite metric means the trial broke
(NaN weights, an empty test class, a division by zero), so the trial must fail, be retried and,
if it keeps failing, be reported failed - never be logged as a result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["NonFiniteMetricError", "require_finite"]


class NonFiniteMetricError(ArithmeticError):
    """Metrics that are NaN, infinite or not numbers at all. A failure of the trial (exit code 1),
    not bad input."""


def require_finite(metrics: Mapping[str, float], what: str) -> None:
    """Raise unless every value in ``metrics`` is a finite real number.

    Args:
        metrics: metric name -> value (floats, ints, numpy scalars or 0-d tensors; ``bool`` and
            strings are refused: a flag or a text is not a measurement).
        what: names the producer in the message, e.g. ``"trial trial_0003 (repeat 0)"``.

    Raises:
        NonFiniteMetricError: listing every offending name and value (first 20).
    """
    if not isinstance(what, str) or not what:
        raise ValueError(f"what must be a non-empty string, got {what!r}")
    bad: list[str] = []
    for name, value in metrics.items():
        if isinstance(value, bool | str | bytes):  # float("0.5") would pass a string through
            bad.append(f"{name}={value!r:.60} (not a number)")
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            bad.append(f"{name}={value!r:.60} (not a number)")
            continue
        if not math.isfinite(number):
            bad.append(f"{name}={number!r}")
    if bad:
        shown = ", ".join(bad[:20]) + (f" and {len(bad) - 20} more" if len(bad) > 20 else "")
        raise NonFiniteMetricError(f"{what}: metric(s) not finite: {shown}")
