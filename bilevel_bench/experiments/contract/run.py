"""Running one contract-design spec, and the reference optima it is compared with."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from bilevel_bench.experiments.contract.spec import ENV_ID, INSTANCES, ContractSpec
from bilevel_bench.references import multistart_maximum

REFERENCE_STARTS = 4  # L-BFGS-B starts for instances without a closed form
X0_SHARE = ContractSpec.field_default("x0_share")


def make_problem(instance: str):
    """The :class:`~bilevel_envs.envs.contract_design.problem.ContractDesign` of an instance
    name.

    Raises:
        ValueError: naming the instances, for an unknown name.
    """
    from bilevel_envs.envs.contract_design.problem import ContractDesign

    if instance not in INSTANCES:
        raise ValueError(f"unknown instance {instance!r}; expected one of {sorted(INSTANCES)}")
    return ContractDesign(**INSTANCES[instance])


def revenue_share(problem, share: float) -> np.ndarray:
    """The contract paying ``share`` of the principal's revenue ``r(s, s')`` on each payable
    transition (clipped to ``x_max``): a leader's starting point.

    Raises:
        ValueError: unless ``share`` is in [0, 1].
    """
    return problem.revenue_share(share)


def reference_optimum(instance: str, starts: int = REFERENCE_STARTS) -> dict[str, Any]:
    """The exact optimum of a project instance, or the best of ``starts`` L-BFGS-B runs (from
    the revenue share and seeded uniform contracts on ``[0, 2]``) on the exact ``J`` otherwise.
    Returns ``{"objective", "x", "kind"}`` (and ``"u"``, the success pay, for projects)."""
    from bilevel_envs.envs.contract_design.closed_forms import project_optimum
    from bilevel_envs.exact import ExactSolver

    problem = make_problem(instance)
    if problem.instance == "project":
        opt = project_optimum(problem)
        return {"objective": opt.objective, "x": opt.x.tolist(), "u": opt.success_pay,
                "kind": "exact optimum (1-d search)"}
    solver = ExactSolver(problem)
    rng = np.random.default_rng(0)
    points = [revenue_share(problem, X0_SHARE)]
    points += [rng.uniform(0.0, 2.0, problem.n_params) for _ in range(starts - 1)]
    value, x = multistart_maximum(solver.value_and_grad, problem.x_space.low,
                                  problem.x_space.high, points)
    return {"objective": value, "x": x.tolist(),
            "kind": f"best of {starts} L-BFGS-B starts (exact J)"}


def make_leader(spec: ContractSpec):
    """The env and leader a spec describes (every leader starts at :func:`revenue_share`)."""
    import gymnasium as gym

    import bilevel_envs  # noqa: F401  (registers the ids)
    from leaders import AMD, HPGD, ZeroOrder

    problem_kwargs = INSTANCES[spec.instance]
    x0 = revenue_share(make_problem(spec.instance), spec.x0_share)
    common = {"learning_rate": spec.learning_rate, "max_grad_norm": spec.max_grad_norm,
              "seed": spec.seed, "x0": x0}
    if spec.algorithm == "hpgd":
        env = gym.make(ENV_ID, contexts="all", n_envs=spec.n_envs,
                       n_rollout_steps=spec.n_rollout_steps, max_episode_steps=10**9,
                       **problem_kwargs)
        return HPGD(env, estimator=spec.estimator, **common)
    if spec.algorithm == "amd":
        return AMD(gym.make(ENV_ID, max_episode_steps=10**9, **problem_kwargs), inner=spec.inner,
                   **common)
    env = gym.make(ENV_ID, contexts="all", objective="exact", n_rollout_steps=0,
                   max_episode_steps=10**9, **problem_kwargs)
    return ZeroOrder(env, perturbation_constant=spec.perturbation_constant, **common)


def run_spec(spec: ContractSpec) -> dict[str, Any]:
    """Run one spec; the exact ``J`` every ``eval_every`` iterations and at the end."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    leader = make_leader(spec)
    n, every = spec.iterations, spec.eval_every
    start, cpu = time.perf_counter(), time.process_time()
    leader.learn(n, eval_every=every)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    history = leader.history
    evaluated = np.isfinite(history.get("exact_objective", np.zeros(0)))
    final = leader.exact_objective()
    return {
        "seconds": seconds, "cpu_seconds": cpu_seconds,
        "hyperparameters": leader.hyperparameters(),
        "metrics": {"final_objective": final},
        "curve": {"iteration": history["iteration"][evaluated].tolist() + [n],
                  "objective": history["exact_objective"][evaluated].tolist() + [final]},
        "x_final": leader.x.tolist(),
    }
