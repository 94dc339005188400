"""Running one RLHF spec: the leader's iterates scored every ``eval_every`` iterations by
:func:`evaluate`, independently of the leader; the reference models.

:func:`evaluate` gives the expected Bradley–Terry log-likelihood (labels averaged with the
teacher's probability: a Monte-Carlo estimate of ``J``) and the preference accuracy against
sampled teacher labels on fresh pairs from ``π*_x``, the exact true-reward regret of ``π*_x``,
and on ``tiny`` the exact ``J``. References (:func:`references`): ``x = 0`` (the start), the
annotator's true reward as the reward model, and on ``tiny`` the best of 16 L-BFGS-B starts on
the exact ``J``.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from typing import Any

import numpy as np

from bilevel_bench.experiments.rlhf.spec import ENV_ID, EXACT_INSTANCES, INSTANCES, RLHFSpec
from bilevel_bench.references import multistart_maximum
from bilevel_envs.validation import check_int

BEST_KNOWN_STARTS = 16  # L-BFGS-B starts for the best known exact J (tiny)


def make_problem(instance: str):
    """The :class:`~bilevel_envs.envs.rlhf.problem.RLHFProblem` of an instance name.

    Raises:
        ValueError: naming the instances, for an unknown name.
    """
    from bilevel_envs.envs.rlhf.problem import RLHFProblem

    if instance not in INSTANCES:
        raise ValueError(f"unknown instance {instance!r}; expected one of {sorted(INSTANCES)}")
    return RLHFProblem(**INSTANCES[instance])


def evaluate(problem, x: np.ndarray, n_pairs: int = 2000, seed: int = 0,
             exact: bool = False) -> dict[str, float]:
    """Score a reward model ``x`` on ``n_pairs`` fresh pairs per annotator from ``π*_x``.

    Returns the context-weighted ``log_likelihood`` (mean ``ℓ``, labels averaged with the
    teacher's probability) and ``preference_accuracy`` (against sampled teacher labels; ties of
    ``r_x`` count ½), each with its standard error (``*_se``; for the accuracy the binomial
    bound), the exact ``true_regret`` of ``π*_x`` and, with ``exact=True``, the enumerated
    ``exact_objective``. Same ``seed`` → same pairs and labels for the same ``x``.
    """
    from bilevel_envs.exact import exact_objective
    from bilevel_envs.followers import TabularPolicy
    from bilevel_envs.oracles import TabularOracle

    check_int("n_pairs", n_pairs, 2)
    rng = np.random.default_rng(seed)
    pi = problem.policy(x)
    H, S, A = pi.shape
    policy = TabularPolicy(pi.reshape(H * S, A))
    ell, accuracy, regret = [], [], []
    for context in range(problem.n_contexts):
        oracle = TabularOracle(problem, x, context, policy)
        pairs = problem.trajectory_pairs(oracle.rollout(rng, 2 * n_pairs, H))
        traj0, traj1 = pairs.traj0, pairs.traj1
        labels = problem.sample_labels(context, traj0, traj1, rng)
        ell.append(problem.pair_objective(x, context, traj0, traj1))
        accuracy.append(problem.preference_accuracy(x, context, traj0, traj1, labels))
        regret.append(problem.true_regret(x, context))
    w = problem.context_probs
    ell, accuracy = np.stack(ell), np.array(accuracy)  # (contexts, n_pairs), (contexts,)
    out = {"log_likelihood": float(w @ ell.mean(1)),
           "log_likelihood_se": float(np.sqrt(w**2 @ ell.var(1, ddof=1)) / np.sqrt(n_pairs)),
           "preference_accuracy": float(w @ accuracy),
           # binomial bound: ties (scored ½) only lower the variance
           "preference_accuracy_se": float(np.sqrt(w**2 @ (accuracy * (1 - accuracy)))
                                           / np.sqrt(n_pairs)),
           "true_regret": float(w @ np.array(regret))}
    if exact:
        out["exact_objective"] = float(exact_objective(problem, x))
    return out


def true_reward_model(problem) -> np.ndarray | None:
    """``x`` whose reward model equals the first annotator's true reward (least squares on the
    features, clipped to ``x_space``), or ``None`` if the features cannot represent it."""
    S, A, d = problem.features.shape
    phi = problem.features.reshape(S * A, d)
    target = problem.annotators[0].reward.ravel()
    x, *_ = np.linalg.lstsq(phi, target, rcond=None)
    if np.abs(phi @ x - target).max() > 1e-9:
        return None
    return np.clip(x, problem.x_space.low, problem.x_space.high)


def references(instance: str, n_pairs: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The metrics of ``x = 0`` and of the true reward model, and on exact instances the best
    of 16 L-BFGS-B starts on the enumerated ``J``."""
    problem = make_problem(instance)
    exact = instance in EXACT_INSTANCES
    out: dict[str, Any] = {"start": evaluate(problem, problem.x_init, n_pairs, seed, exact)}
    x_true = true_reward_model(problem)
    if x_true is not None:
        out["true_reward"] = evaluate(problem, x_true, n_pairs, seed, exact)
    if exact:
        rng = np.random.default_rng(0)
        starts = [problem.x_init] + [rng.normal(0.0, 0.3, problem.n_params)
                                     for _ in range(BEST_KNOWN_STARTS - 1)]
        value, x = multistart_maximum(problem.exact_value_and_grad, problem.x_space.low,
                                      problem.x_space.high, starts)
        out["best_known"] = {**evaluate(problem, x, n_pairs, seed, exact=True),
                             "exact_objective": value}
    return out


def make_leader(spec: RLHFSpec):
    """The env and leader a spec describes (both start at the zero reward model)."""
    import gymnasium as gym

    import bilevel_envs  # noqa: F401  (registers the ids)
    from leaders import HPGD, ZeroOrder

    env = gym.make(ENV_ID, n_pairs=spec.n_pairs, max_episode_steps=10**9,
                   **INSTANCES[spec.instance])
    common = {"learning_rate": spec.learning_rate, "max_grad_norm": spec.max_grad_norm,
              "seed": spec.seed}
    if spec.algorithm == "hpgd":
        return HPGD(env, coupled_restarts=spec.coupled_restarts, **common)
    return ZeroOrder(env, perturbation_constant=spec.perturbation_constant, **common)


def run_spec(spec: RLHFSpec) -> dict[str, Any]:
    """Run one spec, scoring the iterates every ``eval_every`` iterations with :func:`evaluate`
    (its own generator: the same evaluation pairs' randomness at every point of the curve)."""
    from leaders.callbacks import Callback

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    leader = make_leader(spec)
    exact = spec.instance in EXACT_INSTANCES
    eval_seed = 10_000 + spec.seed
    curve: dict[str, list] = defaultdict(list)
    evaluation_seconds = [0.0]

    def record(x: np.ndarray, iteration: int) -> None:
        start = time.perf_counter()
        metrics = evaluate(leader.problem, x, spec.eval_pairs, eval_seed, exact)
        curve["iteration"].append(iteration)
        for key, value in metrics.items():
            curve[key].append(value)
        evaluation_seconds[0] += time.perf_counter() - start

    class Evaluate(Callback):
        def on_step(self, leader, record_):
            if leader.num_iterations % spec.eval_every == 0:
                record(leader.x, leader.num_iterations)
            return True

    n = spec.iterations
    record(leader.x, 0)
    start, cpu = time.perf_counter(), time.process_time()
    leader.learn(n, callback=Evaluate())
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    if curve["iteration"][-1] != n:
        record(leader.x, n)
    return {
        "seconds": seconds - evaluation_seconds[0],
        "cpu_seconds": cpu_seconds, "hyperparameters": leader.hyperparameters(),
        "metrics": {"initial": {k: v[0] for k, v in curve.items() if k != "iteration"},
                    "final": {k: v[-1] for k, v in curve.items() if k != "iteration"}},
        "curve": dict(curve), "x_final": leader.x.tolist(),
    }
