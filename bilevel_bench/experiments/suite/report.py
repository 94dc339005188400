"""The summary of a ``bilevel-bench suite`` invocation: per leader and task the mean score
± standard error over seeds, the mean AUC and the failed runs; then the aggregate leaderboard
(IQM, optimality gap, profiles with bootstrap intervals) of :mod:`bilevel_bench.suite.leaderboard`
and its figures."""

from __future__ import annotations

import shlex
import sys
from collections import defaultdict
from typing import Any

import numpy as np

from bilevel_bench.stats import mean_se


def summary_rows(results: list[dict]) -> list[dict[str, Any]]:
    """One row per (track, leader, task): seeds, failed runs, score and AUC mean ± s.e. over the
    seeds (a failed run counts as score 0, the start's value), budget used and seconds."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        groups[(r["track"] or "?", r["leader"], r["task"])].append(r)
    rows = []
    for (track, leader, task), runs in groups.items():
        ok = [r for r in runs if r["status"] == "ok"]
        scores = [r["score"] if r["status"] == "ok" else 0.0 for r in runs]
        aucs = [r["auc"] if r["status"] == "ok" else 0.0 for r in runs]
        score, score_se = mean_se(scores)
        auc, auc_se = mean_se(aucs)
        rows.append({"track": track, "leader": leader, "task": task, "seeds": len(runs),
                     "failed": len(runs) - len(ok), "score": score, "score_se": score_se,
                     "auc": auc, "auc_se": auc_se, "J_star": runs[0]["J_star"],
                     "limit": runs[0]["budget"]["limit"],
                     "seconds": float(np.mean([r["wall_seconds"] for r in runs])),
                     "errors": sorted({r["error"] for r in runs if r["error"]})[:3]})
    return sorted(rows, key=lambda r: (r["track"], r["leader"], r["task"]))


def summary_markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table, then the errors of failed runs (first of each kind)."""
    lines = ["| track | leader | task | seeds | failed | score (mean ± s.e.) | AUC | budget | "
             "s per run |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['track']} | {r['leader']} | {r['task']} | {r['seeds']} | "
                     f"{r['failed']} | {r['score']:.3f} ± {r['score_se']:.3f} | "
                     f"{r['auc']:.3f} ± {r['auc_se']:.3f} | {r['limit']:,} | "
                     f"{r['seconds']:.1f} |")
    lines.append("")
    lines.append("Score: (J(x_final) − J(x_init)) / (J* − J(x_init)), 1 = the reference optimum; "
                 "AUC: the area under the normalised score against the budget fraction; a "
                 "failed run counts as 0; ± is the standard error over seeds (ddof = 0). "
                 "Budget: sample-cost units (sample track) or exact-model queries (model track).")
    errors = [(r["leader"], r["task"], e) for r in rows for e in r["errors"]]
    if errors:
        lines.append("")
        lines.append("Failed runs:")
        lines += [f"- {leader} on {task}: {error[:200]}" for leader, task, error in errors]
    return "\n".join(lines)


def write_aggregate(request, results: list[dict]) -> None:
    """The aggregate leaderboard Markdown and, unless ``--no-plots``, its figures (one bootstrap
    serves both)."""
    from bilevel_bench.suite.aggregate import aggregate
    from bilevel_bench.suite.leaderboard import write_leaderboard

    records = [{k: v for k, v in r.items() if k not in ("key", "spec")} for r in results]
    agg = aggregate(records)
    command = "bilevel-bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]) \
        if sys.argv and sys.argv[0].endswith("bilevel-bench") else None
    write_leaderboard(agg, request.out / "leaderboard.md", command=command)
    print(f"leaderboard: {request.out / 'leaderboard.md'}")
    if request.plots:
        from bilevel_bench.suite.plots import write_plots

        figures = write_plots(agg, request.out)
        print(f"figures: {figures}")
