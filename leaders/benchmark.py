"""Experiments: plain-data run specs, the sweep runner, and the paper's Table 3 with its figures.

A *spec* is a JSON-serialisable dict that fully determines one run (algorithm, problem,
hyperparameters, seed, budget). Results are keyed by a hash of the spec and written atomically
(one JSON file per run) by the driver as runs finish, so an interrupted sweep restarted with the
same specs runs each unfinished spec exactly once and loses nothing. Runs execute in local
processes (default, one per core) or on a Ray cluster (``backend="ray"``).

Table 3 metric (reference notes §4, our decision in shared/reference/README.md): per run, the
mean of the exact context-averaged ``J(x_t)`` over the last 1,000 pre-update iterates; per cell
and algorithm, the best learning rate (and C) of the paper's grid by mean score; mean over seeds
± standard error with ``ddof=0``. The authors' variant (the sampled context's exact value only)
is reported beside it.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import multiprocessing
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

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
#: Everything else of a Table 3 run (paper App. F.2, reference notes §2–3).
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
    return spec


def spec_key(spec: dict[str, Any]) -> str:
    """A stable key of a spec: the first 16 hex digits of the SHA-256 of its canonical JSON."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


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
    start = time.perf_counter()
    leader.learn(n, eval_every=lambda t: t % every == 0 or t >= n - last)
    seconds = time.perf_counter() - start
    history = leader.history
    evaluated = np.isfinite(history["exact_objective"])
    iterations = history["iteration"][evaluated]
    per_context = np.stack([history[f"exact_context_{i}"][evaluated]
                            for i in range(leader.problem.n_contexts)], axis=1)
    sampled = np.array([record["contexts"][0] for record in leader._records])[evaluated]
    tail = iterations >= n - last
    return {
        "key": spec_key(spec), "spec": spec, "seconds": seconds,
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


# ---------------------------------------------------------------------------- many runs
def result_path(out_dir: Path, spec: dict[str, Any]) -> Path:
    return Path(out_dir) / "runs" / f"{spec_key({**TABLE3_DEFAULTS, **spec})}.json"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON via a temporary file and ``os.replace``: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_result(path: Path) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def run_specs(specs: Sequence[dict[str, Any]], out_dir: str | os.PathLike,
              backend: str = "local", workers: int | None = None, address: str | None = None,
              progress: bool = True,
              runner: Callable[[dict[str, Any]], dict[str, Any]] = run_spec) -> list[dict]:
    """Run every spec whose result file is missing; return all results in spec order.

    Args:
        specs: plain-data specs.
        out_dir: results directory (``runs/<key>.json`` per spec).
        backend: ``"local"`` (processes on this machine) or ``"ray"`` (``ray.init(address)``).
        workers: local processes (default: all cores).
        address: Ray cluster address (``None``: start a local Ray instance).
        progress: show a progress bar (tqdm) if available.
        runner: the function executed per spec (must be importable by the workers).
    """
    out_dir = Path(out_dir)
    specs = [dict(s) for s in specs]
    todo = [s for s in specs if load_result(result_path(out_dir, s)) is None]
    bar = _bar(len(todo), progress)

    def finished(spec, result):
        write_json_atomic(result_path(out_dir, spec), result)
        if bar is not None:
            bar.update(1)

    if todo:
        if backend == "local":
            _run_local(todo, runner, workers, finished)
        elif backend == "ray":
            _run_ray(todo, runner, address, finished)
        else:
            raise ValueError(f"backend must be 'local' or 'ray'; got {backend!r}")
    if bar is not None:
        bar.close()
    return [load_result(result_path(out_dir, s)) for s in specs]


def _run_local(todo, runner, workers, finished) -> None:
    workers = workers or os.cpu_count() or 1
    if workers == 1:
        for spec in todo:
            finished(spec, runner(spec))
        return
    # Spawned workers, one BLAS thread each: the parallelism is across runs.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    context = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(runner, spec): spec for spec in todo}
        for future in cf.as_completed(futures):
            finished(futures[future], future.result())


def _run_ray(todo, runner, address, finished) -> None:
    try:
        import ray
    except ImportError as exc:
        raise ImportError("backend='ray' needs Ray: pip install 'bilevel-envs[ray]'") from exc
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OPENBLAS_NUM_THREADS": "1"}})
    try:
        remote = ray.remote(num_cpus=1)(runner)
        pending = {remote.remote(spec): spec for spec in todo}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                finished(pending.pop(ref), ray.get(ref))
    finally:
        if started:
            ray.shutdown()


def _bar(total: int, enabled: bool):
    if not enabled or total == 0:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="run")


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
        text = resources.files("leaders").joinpath("data", SELECTION_FILE).read_text()
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
def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("plots need matplotlib: pip install 'bilevel-envs[plot]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


COLOURS = {"hpgd": "tab:blue", "amd": "tab:orange", "zero_order": "tab:green"}
LABELS = {"hpgd": "HPGD", "amd": "AMD", "zero_order": "Zero-Order"}


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
    plt = _pyplot()
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
            mean = _trailing_mean(values.mean(0), k)
            se = _trailing_mean(values.std(0) / np.sqrt(len(runs)), k)
            ax.plot(grid, mean, color=COLOURS[algorithm], label=LABELS[algorithm])
            ax.fill_between(grid, mean - se, mean + se, color=COLOURS[algorithm], alpha=0.25)
        ax.set_title(f"λ = {lam:g}, β = {beta:g}")
        ax.set_xlabel("outer iteration")
        ax.set_ylabel("upper-level objective J")
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    axes.ravel()[0].legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _trailing_mean(values: np.ndarray, k: int) -> np.ndarray:
    """Trailing moving average (expanding window for the first ``k − 1`` points)."""
    c = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - k, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def most_likely_path(problem, x: np.ndarray, context: int, max_steps: int = 30) -> list[int]:
    """Follow the argmax action of the follower's π* and the intended move, from the start."""
    from bilevel_envs.envs.four_rooms import GOAL_STATES, NEIGHBOURS, START_STATE
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
    plt = _pyplot()
    from matplotlib.colors import SymLogNorm

    from bilevel_envs.envs.four_rooms import (CELLS, GOALS, MAP, START, TARGET,
                                              FourRoomsShaping, penalties, softmax)

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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
