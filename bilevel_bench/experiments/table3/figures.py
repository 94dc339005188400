"""Table 3 figures: learning curves (paper Fig. 1b / 4–11) and penalty maps with the
followers' most likely paths (paper Fig. 2 / 12–19)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bilevel_bench.experiments.table3.report import select_hyperparameters, selected_results
from bilevel_bench.experiments.table3.spec import ALGORITHMS, TABLE3_CELLS
from bilevel_bench.plotting import (
    ALGORITHM_COLOURS,
    ALGORITHM_LABELS,
    band_label,
    plot_band,
    pyplot,
    save_figure,
    smoothed_mean_se,
)


def plot_learning_curves(results: list[dict], path: str | os.PathLike,
                         cells=TABLE3_CELLS, window: int = 100) -> Path:
    """Exact ``J`` over iterations at the selected hyperparameters, one panel per (λ, β):
    mean over seeds ± s.e., both a trailing mean over ``window`` iterations (the legend says
    so)."""
    plt = pyplot()
    selection = select_hyperparameters(results)
    n = len(cells)
    cols = min(3, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    seed_counts = []
    for ax, (lam, beta) in zip(axes.ravel(), cells):
        for algorithm in ALGORITHMS:
            runs = selected_results(results, lam, beta, algorithm, selection)
            if not runs:
                continue
            every = runs[0]["spec"]["eval_every"]
            it = np.asarray(runs[0]["curve"]["iteration"])
            grid = it[(it % every) == 0]
            values = np.stack([np.interp(grid, r["curve"]["iteration"], r["curve"]["objective"])
                               for r in runs])
            mean, se = smoothed_mean_se(values, max(1, window // every))
            plot_band(ax, grid, mean, se, ALGORITHM_COLOURS[algorithm],
                      ALGORITHM_LABELS[algorithm])
            seed_counts.append(len(runs))
        ax.set_title(f"λ = {lam:g}, β = {beta:g}")
        ax.set_xlabel("outer iteration")
        ax.set_ylabel("upper-level objective J")
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    _figure_legend(fig, axes.ravel()[0], band_label(seed_counts, window))
    return save_figure(fig, path)


def _figure_legend(fig, ax, band: str) -> None:
    from matplotlib.patches import Patch

    handles, labels = ax.get_legend_handles_labels()
    handles.append(Patch(facecolor="grey", alpha=0.25, edgecolor="none"))
    labels.append(band.replace(";\n", "; "))
    fig.tight_layout()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=len(handles), frameon=False)


def most_likely_path(problem, x: np.ndarray, context: int, max_steps: int = 30) -> list[int]:
    """Follow the argmax action of the follower's π* and the intended move, from the start."""
    from bilevel_envs.envs.four_rooms import model
    from bilevel_envs.tabular import soft_policy_iteration

    solution = soft_policy_iteration(problem.tabular(x, context), problem.lam)
    return model.most_likely_path(solution.pi, model.GOAL_STATES[context], max_steps)


def plot_penalty_maps(results: list[dict], path: str | os.PathLike, lam: float,
                      beta: float) -> Path:
    """Each algorithm's penalties (seed 0 of the selected configuration) on the map, with both
    followers' most likely paths; a legend explains the marks."""
    plt = pyplot()
    from matplotlib.colors import SymLogNorm

    from bilevel_envs.envs.four_rooms.model import (
        CELLS,
        GOALS,
        MAP,
        START,
        TARGET,
        penalties,
        softmax,
    )
    from bilevel_envs.envs.four_rooms.problem import FourRoomsShaping

    selection = select_hyperparameters(results)
    algorithms = [a for a in ALGORITHMS if any(r["spec"]["algorithm"] == a for r in results)]
    fig, axes = plt.subplots(1, len(algorithms), figsize=(3.2 * len(algorithms) + 1.2, 3.9),
                             squeeze=False, layout="constrained")
    image = None
    for ax, algorithm in zip(axes[0], algorithms):
        runs = sorted(selected_results(results, lam, beta, algorithm, selection),
                      key=lambda r: r["spec"]["seed"])
        ax.set_title(ALGORITHM_LABELS[algorithm])
        ax.set_xticks([])
        ax.set_yticks([])
        if not runs:
            continue
        spec = runs[0]["spec"]
        x = np.asarray(runs[0]["x_final"])
        grid = np.full((len(MAP), len(MAP[0])), np.nan)
        for s, (r, c) in enumerate(CELLS):
            grid[r, c] = penalties(softmax(x))[s]
        image = ax.imshow(grid, cmap="Reds_r", norm=SymLogNorm(linthresh=1e-3, vmin=-0.2,
                                                               vmax=0.0))
        walls = np.array([[ch == "#" for ch in row] for row in MAP], dtype=float)
        ax.imshow(np.where(walls, 1.0, np.nan), cmap="Greys", vmin=0, vmax=1.2)
        problem = FourRoomsShaping(lam=spec["lam"], beta=spec["beta"], move_prob=spec["move_prob"])
        for context, style in ((0, "-"), (1, "--")):
            cells = np.array([CELLS[s] for s in most_likely_path(problem, x, context)])
            ax.plot(cells[:, 1], cells[:, 0], style, color="black", lw=1.5)
        for (r, c), label in ((START, "S"), (GOALS[0], "G1"), (GOALS[1], "G2"), (TARGET, "+1")):
            ax.text(c, r, label, ha="center", va="center", fontsize=8, color="navy",
                    fontweight="bold")
    if image is not None:
        fig.colorbar(image, ax=list(axes[0]), shrink=0.85, label="penalty r̃ per cell")
    fig.suptitle(f"Penalties (seed 0) and most likely paths, λ = {lam:g}, β = {beta:g}")
    fig.legend(handles=_map_legend(), loc="outside lower center", ncol=3, frameon=False,
               fontsize=8)
    return save_figure(fig, path)


def _map_legend() -> list:
    from matplotlib.lines import Line2D

    def mark(text: str, label: str) -> Line2D:
        return Line2D([], [], ls="none", marker=f"${text}$", color="navy", markersize=11,
                      label=label)

    return [mark("S", "start"),
            mark("G1", "goal of follower type 1"),
            mark("G2", "goal of follower type 2"),
            mark("+1", "target: the leader earns +1 per visit"),
            Line2D([], [], color="black", lw=1.5, label="most likely path to G1"),
            Line2D([], [], color="black", lw=1.5, ls="--", label="most likely path to G2")]
