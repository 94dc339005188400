"""The suite's figures (matplotlib, Agg, cropped PNGs), one panel row or column per track:

* ``aggregate_intervals.png``: each leader's IQM, mean, median, optimality gap and AUC IQM as a
  horizontal 95 % interval with a tick at the point estimate (the style of Agarwal et al., 2021);
* ``performance_profiles.png``: fraction of runs with normalised score > τ against τ, with its
  interval as a band;
* ``sample_efficiency.png``: IQM of the normalised score against the fraction of the budget
  spent, with its interval as a band.

All intervals are the stratified-bootstrap ones of :mod:`bilevel_bench.suite.aggregate`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bilevel_bench.plotting import ALGORITHM_COLOURS, ALGORITHM_LABELS, pyplot, save_figure
from bilevel_bench.suite.aggregate import SuiteAggregate, as_aggregate

TRACK_NAMES = {"sample": "sample-based track", "model": "model-based track"}
INTERVAL_METRICS = (("iqm", "IQM"), ("mean", "mean"), ("median", "median"),
                    ("optimality_gap", "optimality gap"), ("auc_iqm", "AUC IQM"))
FIGURES = ("aggregate_intervals", "performance_profiles", "sample_efficiency")


def leader_colours(agg: SuiteAggregate) -> dict[str, str]:
    """One colour per leader over all tracks and figures: the project's colour for a built-in
    algorithm, otherwise the next unused one of matplotlib's ``tab10`` in name order."""
    names = sorted({name for leaders in agg.tracks.values() for name in leaders})
    palette = [f"tab:{c}" for c in ("blue", "orange", "green", "red", "purple", "brown", "pink",
                                    "gray", "olive", "cyan")]
    free = [c for c in palette if c not in ALGORITHM_COLOURS.values()]
    colours = {}
    for name in names:
        colours[name] = ALGORITHM_COLOURS.get(name) or free[len(colours) % len(free)]
    return colours


def _label(name: str) -> str:
    return ALGORITHM_LABELS.get(name, name)


def plot_intervals(agg: SuiteAggregate, path: str | os.PathLike) -> Path:
    """``aggregate_intervals.png``: rows are tracks, columns the metrics."""
    plt = pyplot()
    colours = leader_colours(agg)
    tracks = list(agg.tracks)
    n_rows = max(len(leaders) for leaders in agg.tracks.values())
    fig, axes = plt.subplots(len(tracks), len(INTERVAL_METRICS), squeeze=False,
                             figsize=(2.6 * len(INTERVAL_METRICS),
                                      0.9 + 0.45 * n_rows * len(tracks)))
    for row, track in enumerate(tracks):
        leaders = list(agg.tracks[track].values())[::-1]  # best at the top
        for col, (metric, title) in enumerate(INTERVAL_METRICS):
            ax = axes[row, col]
            for y, a in enumerate(leaders):
                value = getattr(a, metric)
                ax.barh(y, value.high - value.low, left=value.low, height=0.6,
                        color=colours[a.leader], alpha=0.75, label=_label(a.leader))
                ax.vlines(value.point, y - 0.3, y + 0.3, color="black", linewidth=1.5)
            ax.set_yticks(range(len(leaders)))
            ax.set_yticklabels([_label(a.leader) for a in leaders] if col == 0 else [])
            ax.set_ylim(-0.6, len(leaders) - 0.4)
            ax.set_title(title if row == 0 else "", fontsize=10)
            ax.set_xlabel({"auc_iqm": "AUC (normalised)",
                           "optimality_gap": "gap to J* (lower is better)"}.get(
                metric, "normalised score"))
            ax.grid(axis="x", alpha=0.3)
        axes[row, 0].set_ylabel(TRACK_NAMES[track])
    handles = {_label(n): plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.75)
               for n, c in colours.items()}
    handles["point estimate"] = plt.Line2D([], [], color="black", linewidth=1.5)
    fig.suptitle(f"{agg.suite} v{agg.suite_version}: {agg.confidence * 100:g} % stratified "
                 "bootstrap intervals over tasks × seeds", fontsize=11)
    fig.tight_layout()
    fig.legend(handles.values(), handles.keys(), loc="upper center", ncol=min(6, len(handles)),
               bbox_to_anchor=(0.5, 0.0), frameon=False, fontsize=9)
    return save_figure(fig, path)


def _band_panels(agg: SuiteAggregate, path: str | os.PathLike, attr: str, xattr: str,
                 xlabel: str, ylabel: str) -> Path:
    plt = pyplot()
    colours = leader_colours(agg)
    tracks = list(agg.tracks)
    fig, axes = plt.subplots(1, len(tracks), squeeze=False, figsize=(4.6 * len(tracks), 3.4))
    for ax, track in zip(axes[0], tracks):
        for a in agg.tracks[track].values():
            x, (point, low, high) = getattr(a, xattr), getattr(a, attr)
            ax.plot(x, point, color=colours[a.leader], label=_label(a.leader))
            ax.fill_between(x, low, high, color=colours[a.leader], alpha=0.2, linewidth=0)
        ax.set_title(TRACK_NAMES[track], fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title=f"band: {agg.confidence * 100:g} % CI", title_fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_profiles(agg: SuiteAggregate, path: str | os.PathLike) -> Path:
    """``performance_profiles.png``: fraction of runs with score > τ against τ, per track."""
    return _band_panels(agg, path, "profile", "taus", "threshold τ (normalised score)",
                        "fraction of runs with score > τ")


def plot_efficiency(agg: SuiteAggregate, path: str | os.PathLike) -> Path:
    """``sample_efficiency.png``: IQM of the normalised score against the budget fraction."""
    return _band_panels(agg, path, "efficiency", "fractions", "fraction of the budget spent",
                        "IQM normalised score")


def write_plots(records: Iterable[Mapping[str, Any]] | SuiteAggregate,
                folder: str | os.PathLike, **aggregate_kwargs: Any) -> dict[str, Path]:
    """Write the three figures to ``folder``; returns ``{figure name: path}``.

    Args:
        records: run records (format ``bilevel-suite-run/1``) or their :class:`SuiteAggregate`.
        folder: where the PNGs go (created if missing).
        **aggregate_kwargs: passed to :func:`~bilevel_bench.suite.aggregate.aggregate`.
    """
    agg = as_aggregate(records, **aggregate_kwargs)
    folder = Path(folder)
    plots = {"aggregate_intervals": plot_intervals, "performance_profiles": plot_profiles,
             "sample_efficiency": plot_efficiency}
    return {name: fn(agg, folder / f"{name}.png") for name, fn in plots.items()}
