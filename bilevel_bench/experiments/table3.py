"""The paper's Four-Rooms Table 3 (and Fig. 1b, Fig. 2): specs, runs, aggregation, figures.

Table 3 metric (docs/reference.md §4 and §8): per run, the
mean of the exact context-averaged ``J(x_t)`` over the last 1,000 pre-update iterates; per cell
and algorithm, the best learning rate (and C) of the paper's grid by mean score; mean over seeds
± standard error with ``ddof=0``. The authors' variant (the sampled context's exact value only)
is reported beside it.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from bilevel_bench.runner import (
    ALGORITHM_COLOURS,
    ALGORITHM_LABELS,
    FieldCheck,
    add_runner_arguments,
    check_fields,
    pyplot,
    save_figure,
    spec_key,
    trailing_mean,
)

NAME = "table3"
ENV_ID = "bilevel/FourRoomsShaping-v0"
ALGORITHMS = ("hpgd", "amd", "zero_order")
TABLE3_CELLS = tuple((lam, beta) for lam in (0.001, 0.003, 0.005) for beta in (1.0, 3.0, 5.0))
LEARNING_RATES = (1.0, 0.5, 0.1, 0.05, 0.01)  # paper App. F.2.2
PERTURBATION_CONSTANTS = (0.1, 0.5, 1.0, 2.0, 5.0)  # paper App. F.2.2 (zero-order C)
#: Table 3 of the paper: (λ, β) -> algorithm -> (mean, standard error).
PAPER_TABLE3 = {
    (0.001, 1.0): {"hpgd": (0.91, 0.088), "amd": (0.58, 0.000), "zero_order": (0.59, 0.059)},
    (0.001, 3.0): {"hpgd": (0.51, 0.006), "amd": (0.51, 0.000), "zero_order": (0.50, 0.005)},
    (0.001, 5.0): {"hpgd": (0.46, 0.006), "amd": (0.46, 0.003), "zero_order": (0.46, 0.007)},
    (0.003, 1.0): {"hpgd": (0.95, 0.002), "amd": (1.00, 0.000), "zero_order": (0.91, 0.048)},
    (0.003, 3.0): {"hpgd": (0.73, 0.001), "amd": (0.39, 0.000), "zero_order": (0.40, 0.028)},
    (0.003, 5.0): {"hpgd": (0.29, 0.003), "amd": (0.32, 0.000), "zero_order": (0.32, 0.002)},
    (0.005, 1.0): {"hpgd": (1.17, 0.011), "amd": (1.28, 0.003), "zero_order": (1.15, 0.026)},
    (0.005, 3.0): {"hpgd": (1.01, 0.002), "amd": (1.13, 0.004), "zero_order": (1.02, 0.027)},
    (0.005, 5.0): {"hpgd": (0.87, 0.003), "amd": (0.97, 0.009), "zero_order": (0.79, 0.027)},
}
#: Everything else of a Table 3 run (paper App. F.2, docs/reference.md §2–3).
TABLE3_DEFAULTS: dict[str, Any] = {
    "experiment": "table3", "move_prob": 0.56, "iterations": 10_000, "n_envs": 5,
    "n_rollout_steps": 2_000, "estimator": "every_visit", "amd_inner": "exact",
    "max_grad_norm": 1.0, "eval_every": 10, "eval_last": 1_000, "spec_version": 1,
}
SELECTION_FILE = "table3_selected.json"


# ---------------------------------------------------------------------------- specs
def table3_spec(algorithm: str, lam: float, beta: float, seed: int, learning_rate: float,
                perturbation_constant: float | None = None, **overrides: Any) -> dict[str, Any]:
    """The plain-data spec of one Table 3 run."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}; got {algorithm!r}")
    spec = {**TABLE3_DEFAULTS, "algorithm": algorithm, "lam": float(lam), "beta": float(beta),
            "seed": int(seed), "learning_rate": float(learning_rate)}
    if algorithm == "zero_order":
        if perturbation_constant is None:
            raise ValueError("zero_order needs perturbation_constant (C)")
        spec["perturbation_constant"] = float(perturbation_constant)
    unknown = set(overrides) - set(TABLE3_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown spec fields {sorted(unknown)}; allowed overrides: "
                         f"{sorted(TABLE3_DEFAULTS)}")
    spec.update(overrides)
    validate_spec(spec)
    return spec


#: type and range of every spec field (checked by :func:`validate_spec`)
_FIELDS: dict[str, FieldCheck] = {
    "experiment": (str, lambda v: v == NAME),
    "algorithm": (str, lambda v: v in ALGORITHMS),
    "lam": ((int, float), lambda v: v > 0), "beta": ((int, float), lambda v: v >= 0),
    "seed": (int, lambda v: v >= 0), "learning_rate": ((int, float), lambda v: v > 0),
    "move_prob": ((int, float), lambda v: 0 <= v <= 1), "iterations": (int, lambda v: v >= 1),
    "n_envs": (int, lambda v: v >= 1), "n_rollout_steps": (int, lambda v: v >= 1),
    "estimator": (str, lambda v: v in ("paper", "every_visit")),
    "amd_inner": (str, lambda v: v in ("sweeps", "exact")),
    "max_grad_norm": ((int, float), lambda v: v > 0), "eval_every": (int, lambda v: v >= 1),
    "eval_last": (int, lambda v: v >= 0), "spec_version": (int, lambda v: v == 1),
}


def validate_spec(spec: Any) -> None:
    """Raise ``ValueError`` naming the field if ``spec`` is not a well-formed Table 3 spec."""
    checks = dict(_FIELDS)
    if isinstance(spec, dict) and spec.get("algorithm") == "zero_order":
        checks["perturbation_constant"] = ((int, float), lambda v: v > 0)
    check_fields(spec, checks, NAME)


def make_leader(spec: dict[str, Any]):
    """Build the env and the leader a Table 3 spec describes."""
    import gymnasium as gym

    import bilevel_envs  # noqa: F401  (registers the ids)
    from leaders import AMD, HPGD, ZeroOrder

    spec = {**TABLE3_DEFAULTS, **spec}
    env_kwargs = {"lam": spec["lam"], "beta": spec["beta"], "move_prob": spec["move_prob"],
                  "contexts": "sample", "horizon": 10**9}
    common = {"learning_rate": spec["learning_rate"], "max_grad_norm": spec["max_grad_norm"],
              "seed": spec["seed"]}
    algorithm = spec["algorithm"]
    if algorithm == "hpgd":
        env = gym.make(ENV_ID, follower="soft_vi", n_envs=spec["n_envs"],
                       n_rollout_steps=spec["n_rollout_steps"], **env_kwargs)
        return HPGD(env, estimator=spec["estimator"], **common)
    env = gym.make(ENV_ID, follower="soft_vi", objective="exact", n_rollout_steps=0,
                   **env_kwargs)
    if algorithm == "amd":
        return AMD(env, inner=spec["amd_inner"], **common)
    if algorithm == "zero_order":
        return ZeroOrder(env, perturbation_constant=spec["perturbation_constant"], **common)
    raise ValueError(f"algorithm must be one of {ALGORITHMS}; got {algorithm!r}")


# ---------------------------------------------------------------------------- one run
def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one spec and return its result (plain data)."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    spec = {**TABLE3_DEFAULTS, **spec}
    leader = make_leader(spec)
    n, every, last = spec["iterations"], spec["eval_every"], spec["eval_last"]
    start, cpu = time.perf_counter(), time.process_time()
    leader.learn(n, eval_every=lambda t: t % every == 0 or t >= n - last)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    history = leader.history
    evaluated = np.isfinite(history["exact_objective"])
    iterations = history["iteration"][evaluated]
    per_context = np.stack([history[f"exact_context_{i}"][evaluated]
                            for i in range(leader.problem.n_contexts)], axis=1)
    sampled = np.array([record["contexts"][0] for record in leader.records])[evaluated]
    tail = iterations >= n - last
    return {
        "key": spec_key(spec), "spec": spec, "seconds": seconds, "cpu_seconds": cpu_seconds,
        "hyperparameters": leader.hyperparameters(),
        "metrics": {
            "score": float(history["exact_objective"][evaluated][tail].mean()),
            "score_sampled_context": float(per_context[tail, :][np.arange(tail.sum()),
                                                                sampled[tail]].mean()),
            "final_objective": float(leader.exact_objective()),
        },
        "curve": {"iteration": iterations.tolist(),
                  "objective": history["exact_objective"][evaluated].tolist()},
        "x_final": leader.x.tolist(),
    }


# ---------------------------------------------------------------------------- Table 3
def grid_specs(seeds: Iterable[int], cells=TABLE3_CELLS, algorithms=ALGORITHMS,
               **overrides: Any) -> list[dict[str, Any]]:
    """The paper's hyperparameter grid: every learning rate (and C) × cell × algorithm × seed."""
    specs = []
    for lam, beta in cells:
        for algorithm in algorithms:
            for lr in LEARNING_RATES:
                constants = PERTURBATION_CONSTANTS if algorithm == "zero_order" else (None,)
                for c in constants:
                    for seed in seeds:
                        specs.append(table3_spec(algorithm, lam, beta, seed, lr, c, **overrides))
    return specs


def selected_specs(selection: dict, seeds: Iterable[int], cells=TABLE3_CELLS,
                   algorithms=ALGORITHMS, **overrides: Any) -> list[dict[str, Any]]:
    """One spec per cell × algorithm × seed at the selected hyperparameters."""
    specs = []
    for lam, beta in cells:
        for algorithm in algorithms:
            try:
                chosen = selection[cell_name(lam, beta)][algorithm]
            except KeyError:
                raise KeyError(f"no selected hyperparameters for {algorithm} at lambda={lam}, "
                               f"beta={beta}; run `bilevel-bench table3 --grid` first") from None
            for seed in seeds:
                specs.append(table3_spec(algorithm, lam, beta, seed, **chosen, **overrides))
    return specs


def cell_name(lam: float, beta: float) -> str:
    return f"lambda={lam:g},beta={beta:g}"


def _group_key(spec: dict[str, Any]) -> tuple:
    return (spec["lam"], spec["beta"], spec["algorithm"], spec["learning_rate"],
            spec.get("perturbation_constant"))


def _scores(results: list[dict], metric: str = "score") -> dict[tuple, np.ndarray]:
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in results:
        groups[_group_key(r["spec"])].append(r["metrics"][metric])
    return {k: np.asarray(v) for k, v in groups.items()}


def select_hyperparameters(results: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Best learning rate (and C) per cell and algorithm by mean score over seeds."""
    best: dict[tuple, tuple[float, tuple]] = {}
    for key, scores in _scores(results).items():
        cell_alg = key[:3]
        if cell_alg not in best or scores.mean() > best[cell_alg][0]:
            best[cell_alg] = (float(scores.mean()), key)
    selection: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for (lam, beta, algorithm), (_, key) in sorted(best.items()):
        chosen = {"learning_rate": key[3]}
        if key[4] is not None:
            chosen["perturbation_constant"] = key[4]
        selection[cell_name(lam, beta)][algorithm] = chosen
    return dict(selection)


def load_selection(path: str | os.PathLike | None = None) -> dict:
    """The shipped Table 3 hyperparameter selection (or one written by ``--grid``)."""
    if path is not None:
        text = Path(path).read_text()
    else:
        text = resources.files("bilevel_bench").joinpath("data", SELECTION_FILE).read_text()
    return json.loads(text)["selection"]


def table3_rows(results: list[dict]) -> list[dict[str, Any]]:
    """One row per cell and algorithm: selected hyperparameters, mean ± s.e. (ddof=0)."""
    scores, sampled = _scores(results), _scores(results, "score_sampled_context")
    selection = select_hyperparameters(results)
    rows = []
    for lam, beta in TABLE3_CELLS:
        for algorithm in ALGORITHMS:
            chosen = selection.get(cell_name(lam, beta), {}).get(algorithm)
            if chosen is None:
                continue
            key = (lam, beta, algorithm, chosen["learning_rate"],
                   chosen.get("perturbation_constant"))
            s, s2 = scores[key], sampled[key]
            paper_mean, paper_se = PAPER_TABLE3[(lam, beta)][algorithm]
            se = float(s.std() / np.sqrt(len(s)))
            rows.append({"lam": lam, "beta": beta, "algorithm": algorithm, "selected": chosen,
                         "n_seeds": len(s), "mean": float(s.mean()), "se": se,
                         "mean_sampled_context": float(s2.mean()),
                         "se_sampled_context": float(s2.std() / np.sqrt(len(s2))),
                         "paper_mean": paper_mean, "paper_se": paper_se,
                         "agrees": bool(abs(s.mean() - paper_mean)
                                        <= max(0.05, 2 * np.hypot(se, paper_se)))})
    return rows


def table3_markdown(rows: list[dict[str, Any]]) -> str:
    """The reproduced Table 3 beside the paper's numbers."""
    names = {"hpgd": "HPGD", "amd": "AMD", "zero_order": "Zero-Order"}
    lines = ["| λ | β | algorithm | ours (context-averaged J) | paper | ours, authors' metric "
             "(sampled context) | selected | agrees¹ |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        chosen = ", ".join(f"{'lr' if k == 'learning_rate' else 'C'}={v:g}"
                           for k, v in r["selected"].items())
        lines.append(
            f"| {r['lam']:g} | {r['beta']:g} | {names[r['algorithm']]} | {r['mean']:.2f} ± "
            f"{r['se']:.3f} | {r['paper_mean']:.2f} ± {r['paper_se']:.3f} | "
            f"{r['mean_sampled_context']:.2f} ± {r['se_sampled_context']:.3f} | {chosen} | "
            f"{'yes' if r['agrees'] else 'no'} |")
    lines.append("")
    lines.append("¹ within 0.05 or 2 combined standard errors of the paper's value. "
                 f"{rows[0]['n_seeds'] if rows else 0} seeds per cell; ± is the standard error "
                 "(ddof = 0).")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- figures
COLOURS, LABELS = ALGORITHM_COLOURS, ALGORITHM_LABELS


def _selected_results(results, lam, beta, algorithm, selection):
    chosen = selection.get(cell_name(lam, beta), {}).get(algorithm)
    if chosen is None:
        return []
    key = (lam, beta, algorithm, chosen["learning_rate"], chosen.get("perturbation_constant"))
    return [r for r in results if _group_key(r["spec"]) == key]


def plot_learning_curves(results: list[dict], path: str | os.PathLike,
                         cells=TABLE3_CELLS, window: int = 100) -> Path:
    """Paper Fig. 1b / 4–11: exact J over iterations, mean over seeds ± s.e., trailing
    moving average over ``window`` iterations, one panel per (λ, β)."""
    plt = pyplot()
    selection = select_hyperparameters(results)
    n = len(cells)
    cols = min(3, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (lam, beta) in zip(axes.ravel(), cells):
        for algorithm in ALGORITHMS:
            runs = _selected_results(results, lam, beta, algorithm, selection)
            if not runs:
                continue
            it = np.asarray(runs[0]["curve"]["iteration"])
            grid = it[(it % runs[0]["spec"]["eval_every"]) == 0]
            values = np.stack([np.interp(grid, r["curve"]["iteration"], r["curve"]["objective"])
                               for r in runs])
            k = max(1, window // runs[0]["spec"]["eval_every"])
            mean = trailing_mean(values.mean(0), k)
            se = trailing_mean(values.std(0) / np.sqrt(len(runs)), k)
            ax.plot(grid, mean, color=COLOURS[algorithm], label=LABELS[algorithm])
            ax.fill_between(grid, mean - se, mean + se, color=COLOURS[algorithm], alpha=0.25)
        ax.set_title(f"λ = {lam:g}, β = {beta:g}")
        ax.set_xlabel("outer iteration")
        ax.set_ylabel("upper-level objective J")
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    axes.ravel()[0].legend()
    return save_figure(fig, path)


def most_likely_path(problem, x: np.ndarray, context: int, max_steps: int = 30) -> list[int]:
    """Follow the argmax action of the follower's π* and the intended move, from the start."""
    from bilevel_envs.envs.four_rooms.model import GOAL_STATES, NEIGHBOURS, START_STATE
    from bilevel_envs.tabular import soft_policy_iteration

    solution = soft_policy_iteration(problem.tabular(x, context), problem.lam)
    path = [START_STATE]
    while len(path) <= max_steps and path[-1] != GOAL_STATES[context]:
        path.append(int(NEIGHBOURS[path[-1], int(np.argmax(solution.pi[path[-1]]))]))
    return path


def plot_penalty_maps(results: list[dict], path: str | os.PathLike, lam: float,
                      beta: float) -> Path:
    """Paper Fig. 2 / 12–19: each algorithm's penalties (seed 0 of the selected configuration)
    on the map, with both followers' most likely paths."""
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
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    image = None
    for ax, algorithm in zip(axes, ALGORITHMS):
        runs = sorted(_selected_results(results, lam, beta, algorithm, selection),
                      key=lambda r: r["spec"]["seed"])
        ax.set_title(LABELS[algorithm])
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
        fig.colorbar(image, ax=list(axes), shrink=0.8, label="penalty r̃")
    fig.suptitle(f"Penalties and most likely paths (solid: G1, dashed: G2), "
                 f"λ = {lam:g}, β = {beta:g}")
    return save_figure(fig, path, tight=False)


# ---------------------------------------------------------------------------- command line
def register(subparsers) -> None:
    """Add ``bilevel-bench table3``."""
    p = subparsers.add_parser(
        NAME, help="reproduce the paper's Four-Rooms Table 3 (with Fig. 1b and Fig. 2)",
        description="Runs the 9 (λ, β) cells × HPGD, AMD, zero-order × seeds at the selected "
                    "learning rates (shipped in bilevel_bench/data/table3_selected.json, or found "
                    "with "
                    "--grid), then writes table3.md/json, learning curves and penalty maps.")
    p.add_argument("--seeds", type=int, default=10, help="seeds per cell (default 10)")
    p.add_argument("--iterations", type=int, default=None,
                   help="outer iterations per run (default 10,000; 3,000 with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="a few-minute version: 2 seeds × 3,000 iterations")
    p.add_argument("--grid", action="store_true",
                   help="first search the paper's grid (lr × C) on held-out seeds, select the best "
                        "per cell and algorithm, save the selection, then run the table")
    p.add_argument("--grid-seeds", type=int, default=3,
                   help="held-out seeds (100, 101, ...) per grid point for --grid (default 3)")
    p.add_argument("--selection", default=None,
                   help="a selection JSON written by --grid (default: the shipped one)")
    add_runner_arguments(p, None)  # default: results/table3 (or results/table3-quick)
    p.set_defaults(func=main)


def main(args) -> int:
    out = Path(args.out or ("results/table3-quick" if args.quick else "results/table3"))
    iterations = args.iterations or (3_000 if args.quick else TABLE3_DEFAULTS["iterations"])
    seeds = range(2 if args.quick else args.seeds)
    overrides = {"iterations": iterations,
                 "eval_last": min(TABLE3_DEFAULTS["eval_last"], iterations)}
    from bilevel_bench.runner import run_specs, write_json_atomic, write_summary

    run = {"backend": args.backend, "workers": args.workers, "address": args.address}
    if args.grid:
        grid_seeds = range(100, 100 + args.grid_seeds)
        specs = grid_specs(grid_seeds, **overrides)
        print(f"grid search: {len(specs)} runs ({len(LEARNING_RATES)} learning rates, "
              f"{len(PERTURBATION_CONSTANTS)} zero-order constants, seeds "
              f"{list(grid_seeds)}, {iterations} iterations)")
        start = time.time()
        grid_results = run_specs(specs, out, **run)
        grid_wall = time.time() - start
        selection = select_hyperparameters(grid_results)
        meta = {"seeds": list(grid_seeds), "iterations": iterations, "runs": len(specs),
                "wall_seconds": grid_wall,
                "run_seconds": float(sum(r["seconds"] for r in grid_results)),
                "run_cpu_seconds": float(sum(r.get("cpu_seconds", np.nan)
                                             for r in grid_results)),
                "command": "bilevel-bench table3 --grid"}
        write_json_atomic(out / SELECTION_FILE, {"selection": selection, "grid": meta})
        print(f"grid search done in {grid_wall / 60:.1f} min wall; selection written to "
              f"{out / SELECTION_FILE}")
    else:
        selection = load_selection(args.selection)

    specs = selected_specs(selection, seeds, **overrides)
    print(f"Table 3: {len(specs)} runs ({len(TABLE3_CELLS)} cells × {len(ALGORITHMS)} "
          f"algorithms × {len(seeds)} seeds, {iterations} iterations each) in {out}")
    start = time.time()
    results = run_specs(specs, out, **run)
    wall = time.time() - start
    rows = table3_rows(results)
    markdown = table3_markdown(rows)
    timing = _timing_summary(results, wall)
    write_summary(out, NAME, markdown, timing, rows=rows)
    if not args.no_plots:
        figures = [plot_learning_curves(results, out / "learning_curves.png")]
        for lam, beta in TABLE3_CELLS:
            figures.append(plot_penalty_maps(results, out / f"penalties_lambda{lam:g}_beta"
                                                            f"{beta:g}.png", lam, beta))
        print("figures: " + ", ".join(str(f) for f in figures))
    return 0


def _timing_summary(results: list[dict], wall: float) -> str:
    per_algorithm = defaultdict(list)
    for r in results:
        per_algorithm[r["spec"]["algorithm"]].append(r["seconds"] / r["spec"]["iterations"])
    parts = ", ".join(f"{LABELS[a]} {1e3 * np.mean(v):.2f} ms" for a, v in per_algorithm.items())
    return (f"Wall time of this invocation: {wall / 60:.1f} min for {len(results)} runs "
            f"(runs already on disk are not rerun). Mean time per outer iteration: {parts} "
            f"(including the exact evaluations for the metric).")
