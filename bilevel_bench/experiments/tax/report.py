"""The tax-design summary from run results: welfare gains and final taxes per set-up and
algorithm (mean ± s.e. over seeds), Fig. 3a (welfare) and Fig. 3b (tax rates)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from bilevel_bench.experiments.tax.run import mc_welfare_gain
from bilevel_bench.experiments.tax.spec import ALGORITHMS
from bilevel_bench.plotting import (
    ALGORITHM_COLOURS,
    ALGORITHM_LABELS,
    band_label,
    legend_with_band,
    plot_band,
    pyplot,
    save_figure,
    seeds_text,
)
from bilevel_bench.stats import curve_mean_se, group_by, mean_se, trailing_mean
from bilevel_envs.follower_quality import DEFAULT_GAP_THRESHOLD

TAX_NAMES = ("income tax", "VAT good 1", "VAT good 2", "VAT good 3")  # goods indexed from 1
#: The set-up with exact soft-optimal households: the reference of the paired comparison.
EXACT_SETUP = "tabular"
#: Spec fields that must agree for two runs to have the same leader budget and settings (the
#: follower, its set-up and the iteration count may differ).
LEADER_FIELDS = ("algorithm", "seed", "n_envs", "n_rollout_steps", "learning_rate",
                 "perturbation_constant", "max_grad_norm", "clip", "estimator", "contexts",
                 "variant", "lam", "grid_cells")


def summary_rows(results: list[dict]) -> list[dict[str, Any]]:
    """One row per (set-up, algorithm): welfare gains and final taxes (mean ± s.e. over seeds),
    mean wall and CPU seconds per run."""
    rows = []
    for (setup, algorithm), runs in sorted(group_by(results, "setup", "algorithm").items()):
        final = np.array([r["x_final"] for r in runs])
        spec = runs[0]["spec"]
        rows.append({
            "setup": setup, "algorithm": algorithm, "follower": spec["follower"],
            "n_seeds": len(runs), "iterations": spec["iterations"],
            "welfare_gain_exact": mean_se([r["metrics"]["welfare_gain_exact"] for r in runs]),
            "welfare_gain_mc": mean_se([np.nan if g is None else g for g in (
                mc_welfare_gain(r["curve"]["welfare_mc"]) for r in runs)]),
            "welfare_initial_exact": runs[0]["metrics"]["welfare_initial_exact"],
            "welfare_final_exact": mean_se([r["metrics"]["welfare_final_exact"]
                                             for r in runs]),
            "final_taxes": [mean_se(final[:, i]) for i in range(final.shape[1])],
            "gain_vs_exact": gain_vs_exact(runs, results),
            "households_gap": households_gap(runs),
            "seconds": float(np.mean([r["seconds"] for r in runs])),
            "cpu_seconds": float(np.mean([r["cpu_seconds"] for r in runs])),
            "total_seconds": float(sum(r["seconds"] + r["eval_seconds"] for r in runs)),
            "total_cpu_seconds": float(sum(r["cpu_seconds"] + r["eval_cpu_seconds"]
                                           for r in runs)),
        })
    return rows


def gain_vs_exact(runs: list[dict], results: list[dict]) -> tuple[float, float] | None:
    """Paired comparison with exact households: per seed, the run's exact welfare gain minus
    the gain of the exact-household run (:data:`EXACT_SETUP`) with the same leader settings
    (:data:`LEADER_FIELDS`: algorithm, seed, batch, step size, ...) after the same number of
    iterations, read off that run's exact-welfare curve; mean ± s.e. over the paired seeds.
    ``None`` for the exact set-up itself or when no run pairs up (the exact run must be at
    least as long and evaluated at the iteration)."""
    if runs[0]["spec"]["setup"] == EXACT_SETUP:
        return None
    exact = {tuple(r["spec"][f] for f in LEADER_FIELDS): r
             for r in results if r["spec"]["setup"] == EXACT_SETUP}
    differences = []
    for run in runs:
        reference = exact.get(tuple(run["spec"][f] for f in LEADER_FIELDS))
        if reference is None:
            continue
        curve = reference["curve"]
        iterations = run["spec"]["iterations"]
        if iterations not in curve["exact_iteration"]:
            continue
        welfare = curve["welfare_exact"]
        exact_gain = welfare[curve["exact_iteration"].index(iterations)] / welfare[0] - 1
        differences.append(run["metrics"]["welfare_gain_exact"] - exact_gain)
    return mean_se(differences) if differences else None


def households_gap(runs: list[dict]) -> dict[str, Any] | None:
    """The households' soft-optimality gaps of a group of runs (``follower_quality``): each
    run's median and last gap (mean ± s.e. over seeds) and the steps within 5 % of all measured
    steps; ``None`` if the runs did not measure them."""
    qualities = [r.get("follower_quality") for r in runs]
    if not qualities or any(q is None for q in qualities):
        return None
    gaps = np.concatenate([q["gap"] for q in qualities])
    return {"median": mean_se([q["gap_median"] for q in qualities]),
            "last": mean_se([q["gap_last"] for q in qualities]),
            "within_5pct": int(np.sum(gaps <= DEFAULT_GAP_THRESHOLD)), "measured": int(gaps.size)}


def summary_markdown(rows: list[dict[str, Any]]) -> str:
    """The Markdown summary: welfare gain of each algorithm over the initial taxes (0.3 each),
    final tax rates, time."""
    def pm(pair, scale=1.0, digits=2, unit=""):
        if not np.isfinite(pair[0]):
            return "n/a"
        return f"{scale * pair[0]:.{digits}f} ± {scale * pair[1]:.{digits}f}{unit}"

    def paired(pair):
        return "—" if pair is None else f"{100 * pair[0]:+.1f} ± {100 * pair[1]:.1f} pp"

    lines = ["| set-up (follower) | algorithm | seeds × iterations | welfare gain, exact¹ | "
             "welfare gain, MC² | vs exact households³ | income tax | VAT 1 | VAT 2 | VAT 3 | "
             "wall / CPU per run |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        taxes = " | ".join(pm(t) for t in r["final_taxes"])
        lines.append(
            f"| {r['setup']} ({r['follower']}) | {ALGORITHM_LABELS[r['algorithm']]} | "
            f"{r['n_seeds']} × "
            f"{r['iterations']} | {pm(r['welfare_gain_exact'], 100, 1, ' %')} | "
            f"{pm(r['welfare_gain_mc'], 100, 1, ' %')} | {paired(r['gain_vs_exact'])} | "
            f"{taxes} | {_duration(r['seconds'])} / "
            f"{_duration(r['cpu_seconds'])} |")
    lines += [
        "| paper (Fig. 3, soft DQN) | HPGD | 10 × 1,000 | ≈ +25 % | | | up | | low | high "
        "(1.9) | ≈ 170 h⁴ |",
        "",
        "Initial taxes 0.3 each; ± is the standard error over seeds (ddof = 0). "
        "¹ `J(x_T)/J(x_0) − 1` with `J` the exact welfare of soft-optimal households on the "
        "41-cell asset grid (scores the taxes, independent of the follower's training). "
        "² the authors' ratio: mean of the last 10 over the first 10 Monte-Carlo welfare "
        "estimates of the run (10 % of the iterations for runs shorter than 100; sampled "
        "preference group, the follower's own policy). "
        "³ paired by seed: the exact welfare gain minus that of the exact-household run "
        f"({EXACT_SETUP!r} set-up) with the same leader settings after as many iterations, in "
        "percentage points (—: the exact set-up itself, or no such run evaluated at that "
        "iteration in this folder). "
        "⁴ docs/reference.md §6: ≈600 s per leader iteration with their follower budget.",
    ]
    measured = [r for r in rows if r.get("households_gap")]
    if measured:
        lines += ["", "Households' soft-optimality gap per leader step on the 41-cell grid "
                      "economy (each run's median and last step, mean ± s.e. over seeds):"]
        for r in measured:
            g = r["households_gap"]
            lines.append(f"- {r['setup']}, {ALGORITHM_LABELS[r['algorithm']]}: median "
                         f"{pm(g['median'])}, last {pm(g['last'])}; within 5 % at "
                         f"{g['within_5pct']} of {g['measured']} steps")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"



def plot_welfare(results: list[dict], path: str | os.PathLike, window: int = 10) -> Path:
    """Paper Fig. 3a: social welfare over leader iterations, one panel per set-up. Solid with a
    band: the exact grid welfare of ``x_t``, mean ± s.e. over seeds; dashed: the runs' MC
    estimates, mean over seeds, trailing mean over ``window`` iterations."""
    plt = pyplot()
    groups = group_by(results, "setup", "algorithm")
    setups = sorted({s for s, _ in groups})
    fig, axes = plt.subplots(1, len(setups), figsize=(5 * len(setups), 3.6), squeeze=False)
    for ax, setup in zip(axes[0], setups):
        counts = []
        for algorithm in ALGORITHMS:
            runs = groups.get((setup, algorithm))
            if not runs:
                continue
            colour = ALGORITHM_COLOURS[algorithm]
            mean, se = curve_mean_se([r["curve"]["welfare_exact"] for r in runs])
            plot_band(ax, np.asarray(runs[0]["curve"]["exact_iteration"]), mean, se, colour,
                      f"{ALGORITHM_LABELS[algorithm]}, exact J(x_t)")
            mc = np.mean([r["curve"]["welfare_mc"] for r in runs], axis=0)
            ax.plot(runs[0]["curve"]["iteration"], trailing_mean(mc, window), color=colour,
                    lw=0.8, ls="--", alpha=0.8,
                    label=f"{ALGORITHM_LABELS[algorithm]}, MC estimate (trailing mean over "
                          f"{window} iterations)")
            counts.append(len(runs))
        follower = next(runs[0]["spec"]["follower"] for (s, _), runs in groups.items()
                        if s == setup)
        ax.set_title(f"{setup} set-up ({follower} households)")
        ax.set_xlabel("leader iteration")
        ax.set_ylabel("discounted social welfare")
        legend_with_band(ax, f"band: exact J, mean ± s.e. over {seeds_text(counts)}", fontsize=7)
    return save_figure(fig, path)


def plot_taxes(results: list[dict], path: str | os.PathLike) -> Path:
    """Paper Fig. 3b: each tax rate over leader iterations (goods indexed from 1), one row per
    set-up; mean over seeds ± s.e. (unsmoothed)."""
    plt = pyplot()
    groups = group_by(results, "setup", "algorithm")
    setups = sorted({s for s, _ in groups})
    fig, axes = plt.subplots(len(setups), 4, figsize=(14, 3.0 * len(setups)), squeeze=False,
                             sharey=True)
    for index, (row, setup) in enumerate(zip(axes, setups)):
        counts = []
        for algorithm in ALGORITHMS:
            runs = groups.get((setup, algorithm))
            if not runs:
                continue
            mean, se = curve_mean_se([r["curve"]["taxes"] for r in runs])  # (T+1, 4)
            it = np.arange(mean.shape[0])
            for i, ax in enumerate(row):
                plot_band(ax, it, mean[:, i], se[:, i], ALGORITHM_COLOURS[algorithm],
                          ALGORITHM_LABELS[algorithm])
            counts.append(len(runs))
        for i, ax in enumerate(row):
            ax.set_title(f"{TAX_NAMES[i]} ({setup})", fontsize=9)
            if index == len(setups) - 1:  # lower rows' titles would overlap upper x labels
                ax.set_xlabel("leader iteration")
        row[0].set_ylabel("tax rate")
        legend_with_band(row[0], band_label(counts), fontsize=7)
    return save_figure(fig, path)
