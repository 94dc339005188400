"""The suite's leaderboard as Markdown: per track (sample-based and model-based, apart) one row
per leader with its aggregates and 95 % stratified-bootstrap intervals
(:mod:`bilevel_bench.suite.aggregate`), then the mean score of every leader on every task.

The text depends only on the records and the arguments (leaders ranked by IQM, then name; tasks
by application, then name), so a results folder always renders to the same file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bilevel_bench.suite.aggregate import (
    Interval,
    LeaderAggregate,
    SuiteAggregate,
    as_aggregate,
    task_order,
)

TRACK_TITLES = {"sample": "Sample-based track (no exact-model access)",
                "model": "Model-based track (exact-model queries)"}


def _interval(value: Interval) -> str:
    return f"{value.point:.2f} [{value.low:.2f}, {value.high:.2f}]"


def _leader_row(agg: LeaderAggregate) -> str:
    cells = [f"`{agg.leader}`", f"{agg.runs} ({agg.failed})", _interval(agg.iqm),
             _interval(agg.mean), _interval(agg.optimality_gap), _interval(agg.auc_iqm),
             f"{100 * agg.budget_fraction:.0f} %"]
    return "| " + " | ".join(cells) + " |"


def _task_table(leaders: Mapping[str, LeaderAggregate]) -> list[str]:
    apps = {t: s.application for a in leaders.values() for t, s in a.per_task.items()}
    tasks = task_order([{"task": t, "application": a} for t, a in apps.items()])
    lines = ["| task | application | " + " | ".join(f"`{n}`" for n in leaders) + " |",
             "|---|---|" + "---|" * len(leaders)]
    for task in tasks:
        cells = []
        for agg in leaders.values():
            s = agg.per_task.get(task)
            if s is None:
                cells.append("—")
            else:
                failed = f" ({s.failed} failed)" if s.failed else ""
                cells.append(f"{s.mean:.2f} ± {s.se:.2f}{failed}")
        lines.append(f"| `{task}` | {apps[task]} | " + " | ".join(cells) + " |")
    return lines


def render_leaderboard(agg: SuiteAggregate, command: str | None = None) -> str:
    """The Markdown leaderboard of already computed aggregates (see :func:`write_leaderboard`)."""
    seeds = ", ".join(str(s) for s in agg.seeds)
    level = f"{agg.confidence * 100:g} %"
    lines = [f"# Leaderboard: {agg.suite} v{agg.suite_version}", "",
             f"Seeds: {seeds}. Intervals: {level} stratified-bootstrap percentile intervals over "
             f"tasks × seeds ({agg.backend}, {agg.reps:,} resamples, bootstrap seed {agg.seed}).",
             ""]
    if command:
        fence = "``" if "`" in command else "`"  # a code span that may hold backticks
        lines += [f"Command: {fence}{command}{fence}", ""]
    lines += ["Normalised score: (J(x_final) − J(x_init)) / (J* − J(x_init)), 0 at the start "
              "point, 1 at the reference optimum J*. IQM: interquartile mean over all runs; "
              "mean: over the tasks' mean scores; optimality gap: 1 − mean of min(score, 1) over "
              "all runs; AUC: area under the normalised learning curve against the budget "
              "fraction. A failed run is a run: it scores 0. Budget used: median over runs of the "
              "share of the task's limit spent (transitions + follower updates on the "
              "sample-based track, exact-model queries on the model-based one; above 100 % when "
              "the last iteration went past the limit).", ""]
    for track, leaders in agg.tracks.items():
        lines += [f"## {TRACK_TITLES[track]}", ""]
        task_sets = {a.tasks for a in leaders.values()}
        if len(task_sets) > 1:
            lines += ["The leaders of this track ran on different task sets: their aggregates "
                      "are not comparable.", ""]
        lines += [f"| leader | runs (failed) | IQM [{level} CI] | mean [CI] | optimality gap "
                  "[CI] | AUC IQM [CI] | budget used |",
                  "|---|---|---|---|---|---|---|"]
        lines += [_leader_row(a) for a in leaders.values()]
        lines += ["", "Mean normalised score ± s.e. over seeds per task (failed runs count as 0):",
                  "", *_task_table(leaders), ""]
    return "\n".join(lines)


def write_leaderboard(records: Iterable[Mapping[str, Any]] | SuiteAggregate,
                      path: str | os.PathLike, *, command: str | None = None,
                      **aggregate_kwargs: Any) -> str:
    """Write the Markdown leaderboard of suite run records to ``path`` and return its text.

    Args:
        records: run records (format ``bilevel-suite-run/1``) or their :class:`SuiteAggregate`.
        path: the Markdown file (parent folders are created).
        command: the command that produced the records, quoted in the header.
        **aggregate_kwargs: passed to :func:`~bilevel_bench.suite.aggregate.aggregate`
            (``reps``, ``seed``, ``confidence``, ``backend``).

    Raises:
        ValueError: for invalid records or arguments (nothing is written).
    """
    if command is not None and (not isinstance(command, str) or "\n" in command):
        raise ValueError(f"command must be a one-line string or None; got {command!r}")
    agg = as_aggregate(records, **aggregate_kwargs)
    text = render_leaderboard(agg, command)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text
