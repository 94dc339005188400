"""Running one tax-design spec: the leader's Monte-Carlo welfare estimates ``J(x_t)`` (the
authors' ``V_UL``, sampled context), the taxes ``x_t``, and the exact welfare of ``x_t`` for
soft-optimal households on the asset grid (``J_grid``, follower-independent: it scores the
taxes, not the follower's training)."""

from __future__ import annotations

import copy
import os
import time
import warnings
from typing import Any

import numpy as np

from bilevel_bench.experiments.tax.spec import ENV_ID, TaxSpec
from bilevel_envs.follower_quality import DEFAULT_GAP_THRESHOLD, FollowerQualityWarning
from bilevel_envs.plain_data import to_plain_data


def make_leader(spec: TaxSpec):
    """Build the env and the leader a spec describes.

    Raises:
        KeyError: if the spec's follower is not registered.
    """
    import gymnasium as gym

    import bilevel_envs  # noqa: F401  (registers the ids and the tax followers)
    from bilevel_envs.followers import FOLLOWERS
    from leaders import HPGD, ZeroOrder

    if spec.follower not in FOLLOWERS:
        raise KeyError(f"follower {spec.follower!r} is not registered (known: "
                       f"{sorted(FOLLOWERS)})")
    env_kwargs: dict[str, Any] = {
        "variant": spec.variant, "lam": spec.lam, "tabular": spec.tabular,
        "follower": spec.follower, "follower_kwargs": copy.deepcopy(spec.follower_kwargs),
        "contexts": spec.contexts, "n_envs": spec.n_envs,
        "n_rollout_steps": spec.n_rollout_steps, "max_episode_steps": 10**9,
        "follower_quality": spec.follower_quality}
    if spec.observation_cells is not None:
        env_kwargs["observation_cells"] = spec.observation_cells
    env = gym.make(ENV_ID, **env_kwargs)
    problem = env.unwrapped.problem
    common = {"learning_rate": spec.learning_rate, "max_grad_norm": spec.max_grad_norm,
              "clip_groups": problem.tax_groups if spec.clip == "per_group" else None,
              "seed": spec.seed}
    if spec.algorithm == "hpgd":
        return HPGD(env, estimator=spec.estimator, **common)
    return ZeroOrder(env, perturbation_constant=spec.perturbation_constant, **common)


def run_spec(spec: TaxSpec) -> dict[str, Any]:
    """Run one spec; return the curves (MC welfare, taxes, exact grid welfare) and metrics."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    _one_torch_thread()
    leader = make_leader(spec)
    taxes = [leader.x.copy()]
    gaps: list[list[float]] = []  # per iteration: [context, gap, visited TV] of each follower

    def record(lead, _record) -> None:
        taxes.append(lead.x.copy())
        step = lead.env.unwrapped.last_step
        if step is not None and step.quality:
            gaps.extend([[int(f.context), q.gap, q.tv]
                         for f, q in zip(step.followers, step.quality)])

    start, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        # one warning per step would bury the progress bar: the gaps go into the result and
        # one summary warning below
        warnings.simplefilter("ignore", FollowerQualityWarning)
        leader.learn(spec.iterations, callback=record)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    quality = follower_quality_summary(gaps)
    n_far = sum(g[1] > DEFAULT_GAP_THRESHOLD for g in gaps)
    if n_far:
        warnings.warn(f"{spec.setup} seed {spec.seed}: households far from the soft optimum "
                      f"(soft-optimality gap > {DEFAULT_GAP_THRESHOLD:g}) at {n_far} of "
                      f"{len(gaps)} measured steps (gap median "
                      f"{quality['gap_median']:.3g}, max {quality['gap_max']:.3g}; per step in "
                      f"the result's follower_quality)", FollowerQualityWarning, stacklevel=2)
    history = leader.history
    taxes_arr = np.array(taxes)  # x_0 .. x_T (x_t is the iterate of iteration t)

    eval_start, eval_cpu = time.perf_counter(), time.process_time()
    evaluated = sorted(set(range(0, len(taxes_arr), spec.eval_every)) | {len(taxes_arr) - 1})
    grid_welfare = exact_grid_welfare(leader.problem, taxes_arr[evaluated], spec.grid_cells)
    eval_seconds = time.perf_counter() - eval_start
    eval_cpu_seconds = time.process_time() - eval_cpu

    mc = history["objective_estimate"]
    return {
        "seconds": seconds, "cpu_seconds": cpu_seconds,
        "eval_seconds": eval_seconds, "eval_cpu_seconds": eval_cpu_seconds,
        "hyperparameters": to_plain_data(leader.hyperparameters()),
        "metrics": {
            "welfare_gain_exact": float(grid_welfare[-1] / grid_welfare[0] - 1),
            "welfare_gain_mc": mc_welfare_gain(mc),
            "welfare_initial_exact": float(grid_welfare[0]),
            "welfare_final_exact": float(grid_welfare[-1]),
        },
        "curve": {"iteration": history["iteration"].tolist(), "welfare_mc": mc.tolist(),
                  "taxes": taxes_arr.tolist(), "exact_iteration": evaluated,
                  "welfare_exact": grid_welfare.tolist()},
        "x_final": leader.x.tolist(),
        "follower_quality": quality,
    }


def follower_quality_summary(gaps: list[list[float]]) -> dict[str, Any] | None:
    """The households' soft-optimality gaps over the run (one per leader step): the first, the
    median, the last and the largest, and the share of steps with a gap ≤ 5 %; None when not
    measured."""
    if not gaps:
        return None
    gap = np.array([g[1] for g in gaps])
    return {"context": [int(g[0]) for g in gaps], "gap": gap.tolist(),
            "visited_tv": [g[2] for g in gaps], "gap_first": float(gap[0]),
            "gap_median": float(np.median(gap)), "gap_last": float(gap[-1]),
            "gap_max": float(gap.max()),
            "share_within_5pct": float(np.mean(gap <= DEFAULT_GAP_THRESHOLD))}


def mc_welfare_gain(welfare_mc: Any) -> float | None:
    """The authors' ratio of Monte-Carlo welfare estimates, mean of the last ``k`` over the first
    ``k`` iterations, minus 1; ``k`` = 10 (of their 1,000 iterations), or 10 % of a shorter run.
    ``None`` when the first estimates are not positive (untrained followers deep in debt)."""
    mc = np.asarray(welfare_mc, dtype=np.float64)
    k = max(1, min(10, len(mc) // 10))
    first = mc[:k].mean()
    return float(mc[-k:].mean() / first - 1) if first > 0 else None


def exact_grid_welfare(problem, xs: np.ndarray, grid_cells: int) -> np.ndarray:
    """Exact context-averaged welfare ``J(x)`` of soft-optimal households on the asset grid
    (the tabular variant with the same household parameters) for each row of ``xs``."""
    from bilevel_envs.exact import ExactSolver

    solver = ExactSolver(problem.discretised(grid_cells))
    return np.array([solver.objective(x) for x in xs])


def _one_torch_thread() -> None:
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


