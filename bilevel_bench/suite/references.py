"""The reference optima ``J*`` of the suite's tasks and the exact ``J(x)`` that scores a run.

``J*`` ships in ``bilevel_bench/data/cbrl_suite_v1_references.json`` beside ``x*`` and how it
was computed; ``bilevel-bench suite --compute-references`` regenerates it
(:func:`compute_references`):

* tabular tasks: multi-start gradient ascent on the exact ``J`` — L-BFGS-B (box-constrained
  quasi-Newton ascent) with the exact hypergradient (:class:`bilevel_envs.exact.ExactSolver`,
  or the problem's enumeration for a trajectory-level objective) from ``x_init`` and seeded
  random starts; the file records the starts, each start's value and iterations, and the spread
  of the values across starts; where a run of the reference leaderboard ended higher,
  L-BFGS-B from its final ``x`` gives the better ``J*`` (:func:`polish_with_runs`; the file
  records the run and the earlier value);
* other tasks (``rlhf/grid``): the best known — the best Monte-Carlo ``J`` among the annotator's
  true reward as the model and the final iterates of long HPGD runs (settings of
  ``bilevel-bench rlhf``), each estimated on :data:`MC_PAIRS` fresh pairs with its standard
  error. It is a lower bound on the optimum; a leader may score above 1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from bilevel_bench.suite.tasks import (
    SUITE_NAME,
    SUITE_VERSION,
    TASKS,
    Task,
    get_task,
    initial_x,
    make_problem,
)

REFERENCE_FILE = f"cbrl_suite_v{SUITE_VERSION}_references.json"
FORMAT = "bilevel-suite-references/1"
#: L-BFGS-B starts per application: many where J is cheap and rugged (the RLHF chain has many
#: local maxima), few for tax design (0.5 s per exact J and gradient)
STARTS = {"four_rooms": 24, "contract": 24, "rlhf": 256, "tax": 8}
SIGMAS = (0.3, 1.0, 3.0)  # start perturbations, in units of min(box width / 10, 1)
MAX_ITER = 500  # L-BFGS-B iterations per start
MC_PAIRS = 20_000  # trajectory pairs per Monte-Carlo J of the final x (per annotator)
CURVE_PAIRS = 2_000  # pairs per Monte-Carlo J on the learning curve
BEST_KNOWN_RUNS = 3  # long HPGD runs for the best known J of a Monte-Carlo task
BEST_KNOWN_ITERATIONS = 3_000


# ---------------------------------------------------------------------------- J(x)
class Evaluator:
    """The ``J(x)`` that scores a run of ``task``: exact where the task is tabular, else the
    Monte-Carlo log-likelihood of RLHF on fresh pairs (seeded, so the same ``x`` gets the same
    number). ``__call__(x, final)`` returns ``(J, standard error or None)``."""

    def __init__(self, task: Task):
        self.task = task
        self.problem = make_problem(task)
        self._solver = None
        if task.tabular and self.problem.decomposable:
            from bilevel_envs.exact import ExactSolver

            self._solver = ExactSolver(self.problem)

    def __call__(self, x: np.ndarray, final: bool = False) -> tuple[float, float | None]:
        if self._solver is not None:
            return float(self._solver.objective(x)), None
        if self.task.tabular:
            from bilevel_envs.exact import exact_objective

            return float(exact_objective(self.problem, x)), None
        from bilevel_bench.experiments.rlhf.run import evaluate

        out = evaluate(self.problem, x, n_pairs=MC_PAIRS if final else CURVE_PAIRS, seed=0)
        return out["log_likelihood"], out["log_likelihood_se"]


# ---------------------------------------------------------------------------- the file
def load_references(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Task id -> reference (``J_star``, ``x_star``, ``J_init``, ``kind``, ``method``) from
    ``path`` (default: the shipped file).

    Raises:
        ValueError: if the file is of another suite version or lacks a task of the suite.
    """
    if path is None:
        text = resources.files("bilevel_bench").joinpath("data", REFERENCE_FILE).read_text()
    else:
        text = Path(path).read_text()
    data = json.loads(text)
    if data.get("format") != FORMAT or data.get("suite") != SUITE_NAME \
            or data.get("suite_version") != SUITE_VERSION:
        raise ValueError(f"{path or REFERENCE_FILE}: not a {SUITE_NAME} v{SUITE_VERSION} "
                         f"reference file ({FORMAT})")
    missing = [t.id for t in TASKS if t.id not in data["tasks"]]
    if missing:
        raise ValueError(f"{path or REFERENCE_FILE}: no reference for {missing}")
    return data["tasks"]


def reference(task_id: str) -> dict[str, Any]:
    """The shipped reference of one task (see :func:`load_references`)."""
    return load_references()[get_task(task_id).id]


# ---------------------------------------------------------------------------- computing
def _ascent(value_and_grad: Callable, low: np.ndarray, high: np.ndarray,
            start: np.ndarray) -> dict[str, Any]:
    """L-BFGS-B ascent from ``start`` on the box: its value, ``x`` and iteration count."""
    from scipy.optimize import minimize

    def negative(x):
        value, grad = value_and_grad(x)
        return -value, -np.asarray(grad, dtype=np.float64).ravel()

    result = minimize(negative, np.clip(start, low, high), jac=True, method="L-BFGS-B",
                      bounds=list(zip(low.ravel(), high.ravel())),
                      options={"maxiter": MAX_ITER})
    return {"value": float(-result.fun), "x": np.asarray(result.x), "iterations": int(result.nit),
            "converged": bool(result.success)}


def starts_of(task: Task, problem, n: int) -> list[np.ndarray]:
    """``x_init`` and ``n − 1`` seeded perturbations of it (numpy seed 0), ``N(0, σ²)`` per
    coordinate with ``σ`` cycling through :data:`SIGMAS` × ``min(box width / 10, 1)``, clipped to
    the box. Wide starts matter: at small λ the Four-Rooms ``J`` has many local maxima."""
    x0 = initial_x(task, problem)
    low, high = problem.x_space.low.astype(float), problem.x_space.high.astype(float)
    scale = np.minimum(0.1 * (high - low), 1.0)
    rng = np.random.default_rng(0)
    return [x0] + [np.clip(x0 + SIGMAS[k % len(SIGMAS)] * scale * rng.standard_normal(x0.shape),
                           low, high) for k in range(n - 1)]


def exact_reference(task: Task) -> dict[str, Any]:
    """``J*`` of a tabular task by multi-start L-BFGS-B on the exact ``J`` (module docstring)."""
    n_starts = STARTS[task.application]
    problem = make_problem(task)
    if problem.decomposable:
        from bilevel_envs.exact import ExactSolver

        value_and_grad = ExactSolver(problem).value_and_grad
    else:
        value_and_grad = problem.exact_value_and_grad
    low, high = problem.x_space.low.astype(float), problem.x_space.high.astype(float)
    start = time.perf_counter()
    runs = [_ascent(value_and_grad, low, high, x) for x in starts_of(task, problem, n_starts)]
    values = np.array([r["value"] for r in runs])
    best = runs[int(values.argmax())]
    j_init = float(Evaluator(task)(initial_x(task, problem))[0])
    return {"J_star": best["value"], "J_star_se": None, "x_star": best["x"].tolist(),
            "J_init": j_init, "kind": "exact",
            "method": {"name": "multi-start L-BFGS-B on the exact J with the exact "
                               "hypergradient", "starts": n_starts,
                       "start_rule": f"x_init, then x_init + N(0, σ²) clipped to the box, σ "
                                     f"cycling {SIGMAS} × min(box width / 10, 1), numpy "
                                     f"seed 0",
                       "max_iterations": MAX_ITER, "start_values": values.tolist(),
                       "start_iterations": [r["iterations"] for r in runs],
                       "converged": [r["converged"] for r in runs],
                       "spread": float(values.max() - values.min()),
                       "seconds": time.perf_counter() - start}}


def best_known_reference(task: Task) -> dict[str, Any]:
    """The best known ``J`` of ``rlhf/grid`` (module docstring), Monte-Carlo with its s.e."""
    import gymnasium as gym

    from bilevel_bench.experiments.rlhf.run import true_reward_model
    from bilevel_bench.experiments.rlhf.spec import HYPERPARAMETERS
    from leaders import HPGD

    evaluate = Evaluator(task)
    problem = evaluate.problem
    start = time.perf_counter()
    candidates: dict[str, np.ndarray] = {"x_init": initial_x(task, problem)}
    x_true = true_reward_model(problem)
    if x_true is not None:
        candidates["true_reward"] = x_true
    for seed in range(BEST_KNOWN_RUNS):
        env = gym.make(task.env_id, max_episode_steps=10**9, **task.env_kwargs)
        leader = HPGD(env, seed=seed, x0=initial_x(task, problem), **HYPERPARAMETERS["hpgd"])
        candidates[f"hpgd_seed{seed}"] = leader.learn(BEST_KNOWN_ITERATIONS).x
    scored = {name: evaluate(x, final=True) for name, x in candidates.items()}
    best = max((name for name in scored if name != "x_init"), key=lambda n: scored[n][0])
    return {"J_star": scored[best][0], "J_star_se": scored[best][1],
            "x_star": candidates[best].tolist(), "J_init": scored["x_init"][0],
            "kind": "best known (Monte Carlo)",
            "method": {"name": "best Monte-Carlo J among the true reward as the model and the "
                               f"final x of {BEST_KNOWN_RUNS} HPGD runs of "
                               f"{BEST_KNOWN_ITERATIONS} iterations (bilevel-bench rlhf "
                               f"settings, seeds 0..{BEST_KNOWN_RUNS - 1})",
                       "pairs_per_annotator": MC_PAIRS, "best": best,
                       "candidates": {n: {"J": v, "se": se} for n, (v, se) in scored.items()},
                       "seconds": time.perf_counter() - start}}


def _problem_key(task: Task) -> str:
    """Tasks with equal keys have the same problem and start, hence the same ``J*``."""
    return json.dumps([task.env_id, dict(task.env_kwargs), task.x_init], sort_keys=True)


def compute_references(task_ids: list[str] | None = None,
                       out: str | Path | None = None) -> dict[str, Any]:
    """Compute the references of ``task_ids`` (default: every task) and write them to ``out``
    (default: return only). Tasks not recomputed keep the entries of the shipped file."""
    tasks = [get_task(t) for t in task_ids] if task_ids is not None else list(TASKS)
    try:
        entries = load_references()
    except (OSError, ValueError, KeyError):
        entries = {}
    done: dict[str, dict[str, Any]] = {}
    for task in tasks:
        same = _problem_key(task)
        print(f"reference of {task.id} ...", flush=True)
        if same not in done:  # tasks that differ only in their budget share J*
            done[same] = exact_reference(task) if task.tabular else best_known_reference(task)
        entries[task.id] = done[same]
        print(f"  J* = {entries[task.id]['J_star']:.6f} ({entries[task.id]['kind']}), "
              f"J(x_init) = {entries[task.id]['J_init']:.6f}", flush=True)
    data = {"format": FORMAT, "suite": SUITE_NAME, "suite_version": SUITE_VERSION,
            "command": "bilevel-bench suite --compute-references",
            "tasks": {t.id: entries[t.id] for t in TASKS if t.id in entries}}
    if out is not None:
        from bilevel_bench.storage import write_atomic

        write_atomic(Path(out), lambda f: f.write(json.dumps(data, indent=1) + "\n"))
    return data


def polish_with_runs(records: list[dict[str, Any]], top: int = 3,
                     out: str | Path | None = None) -> dict[str, Any]:
    """Improve the shipped ``J*`` of tabular tasks with run results: L-BFGS-B on the exact ``J``
    from the ``top`` best final ``x`` of ``records`` per task; a better value replaces ``J*``
    (the method records which run it came from and the earlier value). Writes ``out`` if given;
    rescore the records afterwards (:func:`~bilevel_bench.suite.evaluate.rescore`)."""
    from bilevel_envs.exact import ExactSolver

    entries = dict(load_references())
    for task in TASKS:
        same = [t.id for t in TASKS if _problem_key(t) == _problem_key(task)]
        if same[0] != task.id:  # tasks that differ only in their budget share J*
            entries[task.id] = entries[same[0]]
            continue
        runs = sorted((r for r in records if r["task"] in same and r["status"] == "ok"
                       and task.tabular), key=lambda r: -r["J_final"])[:top]
        if not runs:
            continue
        problem = make_problem(task)
        value_and_grad = ExactSolver(problem).value_and_grad if problem.decomposable else \
            problem.exact_value_and_grad
        low, high = problem.x_space.low.astype(float), problem.x_space.high.astype(float)
        for r in runs:
            result = _ascent(value_and_grad, low, high, np.asarray(r["x_final"]))
            if result["value"] > entries[task.id]["J_star"] + 1e-12:
                previous = entries[task.id]
                entries[task.id] = {
                    **previous, "J_star": result["value"], "x_star": result["x"].tolist(),
                    "method": {**previous["method"], "polished": {
                        "from": f"final x of {r['leader']} seed {r['seed']}",
                        "iterations": result["iterations"],
                        "previous_J_star": previous["J_star"]}}}
    data = {"format": FORMAT, "suite": SUITE_NAME, "suite_version": SUITE_VERSION,
            "command": "bilevel-bench suite --compute-references, then polish_with_runs on "
                       "the baseline records",
            "tasks": {t.id: entries[t.id] for t in TASKS}}
    if out is not None:
        from bilevel_bench.storage import write_atomic

        write_atomic(Path(out), lambda f: f.write(json.dumps(data, indent=1) + "\n"))
    return data
