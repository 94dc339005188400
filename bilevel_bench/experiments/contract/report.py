"""The contract-design comparison from run results: the table and the figures."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from bilevel_bench.experiments.contract.run import make_problem
from bilevel_bench.experiments.contract.spec import ALGORITHMS, INSTANCES
from bilevel_bench.plotting import (
    ALGORITHM_LABELS,
    band_label,
    legend_with_band,
    plot_mean_curves,
    pyplot,
    save_figure,
)
from bilevel_bench.stats import group_by, mean_se


def table_rows(results: list[dict], references: dict[str, dict]) -> list[dict[str, Any]]:
    """Per instance and algorithm: final ``J`` mean ± s.e., gap to the reference in % (mean,
    worst seed), seconds per run."""
    rows = []
    for (instance, algorithm), runs in group_by(results, "instance", "algorithm").items():
        finals = np.array([r["metrics"]["final_objective"] for r in runs])
        ref = references[instance]["objective"]
        gaps = 100.0 * (1.0 - finals / ref)
        mean, se = mean_se(finals)
        rows.append({"instance": instance, "algorithm": algorithm, "n_seeds": len(runs),
                     "iterations": runs[0]["spec"]["iterations"], "mean": mean, "se": se,
                     "reference": ref, "reference_kind": references[instance]["kind"],
                     "gap_percent": float(gaps.mean()), "worst_gap_percent": float(gaps.max()),
                     "seconds": float(np.mean([r["seconds"] for r in runs]))})
    return rows


def table_markdown(rows: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table."""
    lines = ["| instance | λ | types | algorithm | final J (mean ± s.e.) | reference J | gap % "
             "(mean / worst seed) | s per run |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        kwargs = INSTANCES[r["instance"]]
        lines.append(
            f"| {r['instance']} | {kwargs['lam']:g} | {len(kwargs['cost_scales'])} | "
            f"{ALGORITHM_LABELS[r['algorithm']]} | {r['mean']:.4f} ± {r['se']:.4f} | "
            f"{r['reference']:.4f} | {r['gap_percent']:.2f} / {r['worst_gap_percent']:.2f} | "
            f"{r['seconds']:.1f} |")
    kinds = dict.fromkeys((r["instance"], r["reference_kind"]) for r in rows)
    n_seeds, iterations = (rows[0]["n_seeds"], rows[0]["iterations"]) if rows else (0, 0)
    lines.append("")
    lines.append("Reference J: " + "; ".join(f"{i}: {k}" for i, k in kinds) + f". {n_seeds} "
                 f"seeds, {iterations} iterations; every leader starts at half the revenue on "
                 "each transition; ± is the standard error over seeds (ddof = 0).")
    return "\n".join(lines)


def plot_learning_curves(results: list[dict], references: dict[str, dict],
                         path: str | os.PathLike) -> Path:
    """Exact ``J`` over iterations (mean ± s.e. over seeds, unsmoothed), one panel per
    instance, the reference dashed."""
    plt = pyplot()
    groups = group_by(results, "instance", "algorithm")
    instances = list(dict.fromkeys(r["spec"]["instance"] for r in results))
    cols = min(3, len(instances))
    rows = -(-len(instances) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.ravel()[len(instances):]:
        ax.axis("off")
    counts: list[int] = []
    for ax, instance in zip(axes.ravel(), instances):
        counts += plot_mean_curves(ax, {a: groups.get((instance, a), []) for a in ALGORITHMS},
                                   "objective")
        ref = references[instance]["objective"]
        ax.axhline(ref, color="black", ls="--", lw=1, label="reference J")
        ax.set_ylim(max(ax.get_ylim()[0], 0.8 * ref), ref + 0.03 * abs(ref))
        ax.set_title(instance)
        ax.set_xlabel("iteration")
        ax.set_ylabel("exact J")
    legend_with_band(axes[0, 0], band_label(counts), fontsize=8)
    return save_figure(fig, path)


def plot_payments(results: list[dict], references: dict[str, dict],
                  path: str | os.PathLike) -> Path:
    """The final payments of each algorithm (mean over seeds) beside the reference contract,
    one panel per instance; payable transitions on the x axis."""
    plt = pyplot()
    groups = group_by(results, "instance", "algorithm")
    instances = list(dict.fromkeys(r["spec"]["instance"] for r in results))
    fig, axes = plt.subplots(len(instances), 1, figsize=(10, 2.6 * len(instances)),
                             squeeze=False)
    for ax, instance in zip(axes[:, 0], instances):
        names = make_problem(instance).spec.payment_names()
        series = {a: np.mean([r["x_final"] for r in groups[(instance, a)]], axis=0)
                  for a in ALGORITHMS if groups.get((instance, a))}
        series["reference"] = np.asarray(references[instance]["x"])
        width = 0.8 / len(series)
        positions = np.arange(len(names))
        for k, (label, x) in enumerate(series.items()):
            ax.bar(positions + (k - (len(series) - 1) / 2) * width, x, width,
                   label=ALGORITHM_LABELS.get(label, label),
                   color=None if label != "reference" else "grey")
        ax.set_xticks(positions)
        ax.set_xticklabels(names, rotation=90 if len(names) > 8 else 0, fontsize=6)
        ax.set_ylabel("payment x(s, s')")
        ax.set_title(instance + (" (J depends on x(work→success) + γ x(success→work) only)"
                                 if instance.startswith("project") else ""))
    axes[0, 0].legend(fontsize=8, ncol=4, title="final payments, mean over seeds",
                      title_fontsize=8)
    return save_figure(fig, path)
