"""Statistics of the experiments' summaries: mean ± standard error over seeds and the trailing
mean of a curve. One copy of each, shared by every experiment, table and figure."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mean_se(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and standard error (``ddof = 0``, as the paper's Table 3) of per-seed values; NaN
    values propagate (a metric a run could not compute)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std() / np.sqrt(v.size))


def curve_mean_se(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise mean and standard error (``ddof = 0``) over seeds of ``curves``, shape
    ``(seeds, points, ...)``."""
    curves = np.asarray(curves, dtype=np.float64)
    return curves.mean(0), curves.std(0) / np.sqrt(curves.shape[0])


def trailing_mean(values: np.ndarray, k: int) -> np.ndarray:
    """Trailing moving average over ``k`` points (an expanding window for the first ``k − 1``)."""
    c = np.cumsum(np.insert(np.asarray(values, dtype=np.float64), 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - k, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def group_by(results: Sequence[dict], *fields: str) -> dict[tuple, list[dict]]:
    """Results grouped by the values of spec ``fields`` (e.g. ``"instance", "algorithm"``),
    groups and their runs in the order of ``results``."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault(tuple(r["spec"][f] for f in fields), []).append(r)
    return groups
