"""The RLHF comparison from run results: the table and the metrics over iterations."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from bilevel_bench.experiments.rlhf.spec import ALGORITHMS, EXACT_INSTANCES
from bilevel_bench.plotting import (
    ALGORITHM_LABELS,
    band_label,
    legend_with_band,
    plot_mean_curves,
    pyplot,
    save_figure,
)
from bilevel_bench.stats import group_by, mean_se

METRICS = ("log_likelihood", "preference_accuracy", "true_regret")
METRIC_LABELS = {"log_likelihood": "expected BT log-likelihood",
                 "preference_accuracy": "preference accuracy (fresh pairs)",
                 "true_regret": "true-reward regret of π*_x", "exact_objective": "exact J"}


def table_rows(results: list[dict], refs: dict[str, dict]) -> list[dict[str, Any]]:
    """Per instance: the reference rows, then per algorithm the final metrics mean ± s.e."""
    rows = []
    groups = group_by(results, "instance", "algorithm")
    for instance in dict.fromkeys(r["spec"]["instance"] for r in results):
        for name, metrics in refs[instance].items():
            rows.append({"instance": instance, "row": name, "n_seeds": None,
                         **{k: (metrics[k], None) for k in (*METRICS, "exact_objective")
                            if k in metrics}})
        for algorithm in ALGORITHMS:
            runs = groups.get((instance, algorithm))
            if not runs:
                continue
            keys = [k for k in (*METRICS, "exact_objective") if k in runs[0]["metrics"]["final"]]
            rows.append({"instance": instance, "row": algorithm, "n_seeds": len(runs),
                         "iterations": runs[0]["spec"]["iterations"],
                         "seconds": float(np.mean([r["seconds"] for r in runs])),
                         **{k: mean_se([r["metrics"]["final"][k] for r in runs]) for k in keys}})
    return rows


def table_markdown(rows: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table."""
    names = {"start": "x = 0 (start)", "true_reward": "true reward as model",
             "best_known": "best known (16 L-BFGS-B starts, exact J)", **ALGORITHM_LABELS}

    def cell(value):
        if value is None:
            return "–"
        mean, se = value
        return f"{mean:.3f}" if se is None else f"{mean:.3f} ± {se:.3f}"

    lines = ["| instance | model | log-likelihood | accuracy | regret | exact J | seeds |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['instance']} | {names[r['row']]} | {cell(r.get('log_likelihood'))} "
                     f"| {cell(r.get('preference_accuracy'))} | {cell(r.get('true_regret'))} "
                     f"| {cell(r.get('exact_objective'))} | {r['n_seeds'] or '–'} |")
    runs = [r for r in rows if r["n_seeds"]]
    lines.append("")
    lines.append("Final iterates, scored on fresh pairs from π*_x (log-likelihood: labels "
                 "averaged with the teacher's probability; accuracy: against sampled labels); "
                 "regret and exact J are exact. "
                 + (f"{runs[0]['iterations']} iterations; " if runs else "")
                 + "± is the standard error over seeds (ddof = 0).")
    return "\n".join(lines)


def plot_metrics(results: list[dict], refs: dict[str, dict], path: str | os.PathLike) -> Path:
    """The metrics over iterations (mean ± s.e. over seeds, unsmoothed): one row per
    instance, one column per metric; the true-reward model (dotted) and best known J (dashed)
    as references."""
    plt = pyplot()
    groups = group_by(results, "instance", "algorithm")
    instances = list(dict.fromkeys(r["spec"]["instance"] for r in results))
    keys = list(METRICS) + (["exact_objective"] if any(i in EXACT_INSTANCES
                                                       for i in instances) else [])
    fig, axes = plt.subplots(len(instances), len(keys), figsize=(3.8 * len(keys),
                                                                 3.0 * len(instances)),
                             squeeze=False)
    counts: list[int] = []
    for row, instance in zip(axes, instances):
        for ax, key in zip(row, keys):
            if key == "exact_objective" and instance not in EXACT_INSTANCES:
                ax.axis("off")
                continue
            counts += plot_mean_curves(ax, {a: groups.get((instance, a), [])
                                            for a in ALGORITHMS}, key)
            for name, style in (("true_reward", ":"), ("best_known", "--")):
                if key in refs[instance].get(name, {}):
                    ax.axhline(refs[instance][name][key], color="black", ls=style, lw=1,
                               label=name.replace("_", " "))
            ax.set_title(f"{instance}: {METRIC_LABELS[key]}", fontsize=9)
            ax.set_xlabel("iteration")
    for row in axes:  # one legend per instance: its references differ
        legend_with_band(row[0], band_label(counts), fontsize=7)
    return save_figure(fig, path)


