"""Every derivative a problem provides against central finite differences of what it
differentiates: the tabular model's ``dr``, ``dr_leader``, ``dP``, ``dmu``; the per-transition
``grad_*`` methods (and their ``weights=`` contractions); a pairwise objective's
``grad_pair_objective``; and the exact hypergradient against the exact objective.

Finite differences are deterministic: a check fails when the largest relative error,
``|analytic − numeric| / max(|analytic|, |numeric|, floor)``, exceeds ``rtol`` (default
``1e-4``). Central differences with step ``h`` are exact to ``O(h²)`` (``h = 1e-5`` for the
model and the per-transition terms, ``1e-4`` for the exact objective, whose solver is accurate to
``1e-12``; the largest error measured on the registered problems is 9e-7, tax design's
``dr_leader``), so any error of the analytic derivative above 0.01 % is caught. The floor,
``1e-4`` of the compared array's largest entry plus the round-off of the differences, keeps
near-zero entries from failing on round-off.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bilevel_envs.exact import ExactSolver
from bilevel_envs.exact import exact_hypergradient as exact_gradient_of
from bilevel_envs.exact import exact_objective as exact_objective_of
from bilevel_envs.problem import BilevelProblem, PairwiseObjective
from bilevel_envs.testing.report import CheckResult, skipped

#: default relative tolerance of every finite-difference check
FD_RTOL = 1e-4
#: step of the differences of the model and of the per-transition terms (units of x)
MODEL_STEP = 1e-5
#: step of the differences of the exact objective
OBJECTIVE_STEP = 1e-4
#: floor of the relative error, as a fraction of the compared array's largest entry
FLOOR = 1e-4
_EPS = np.finfo(np.float64).eps


def directions(d: int, k: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """The directions of the differences: the coordinate axes when ``d ≤ k`` (errors are then
    located to a coordinate), else ``k`` random unit vectors (any nonzero error of the gradient
    shows along a random direction with probability 1)."""
    if d <= k:
        return np.eye(d), [f"coordinate {i}" for i in range(d)]
    u = rng.normal(size=(k, d))
    return u / np.linalg.norm(u, axis=1, keepdims=True), [f"random direction {i}"
                                                          for i in range(k)]


class Worst:
    """The largest relative error of one check over contexts, directions and entries."""

    def __init__(self, name: str, of: str, against: str | None = None):
        self.name, self.of = name, of
        self.against = f"finite differences of {of}" if against is None else against
        self.error, self.where, self.values = 0.0, "", (0.0, 0.0)
        self.problems: list[str] = []
        self.compared = 0

    def update(self, analytic: np.ndarray, numeric: np.ndarray, value_scale: float, step: float,
               describe: Callable[[tuple[int, ...]], str]) -> None:
        """Compare ``analytic`` with ``numeric`` (same shapes); ``value_scale`` is the size of
        the differenced values (for the round-off floor)."""
        analytic, numeric = np.asarray(analytic, float), np.asarray(numeric, float)
        self.compared += analytic.size
        if not analytic.size:
            return
        big = np.maximum(np.abs(analytic), np.abs(numeric))
        floor = FLOOR * big.max() + 1e3 * _EPS * value_scale / step + 1e-300
        rel = np.abs(analytic - numeric) / np.maximum(big, floor)
        rel = np.where(np.isfinite(rel), rel, np.inf)
        i = int(np.argmax(rel))
        if rel.flat[i] > self.error or not self.where:
            index = np.unravel_index(i, rel.shape)
            self.error, self.where = float(rel.flat[i]), describe(index)
            self.values = (float(analytic.flat[i]), float(numeric.flat[i]))

    def result(self, rtol: float, seconds: float) -> CheckResult:
        if self.problems:
            return CheckResult(self.name, False, self.error, "; ".join(self.problems), seconds)
        a, n = self.values
        detail = (f"max rel. error {self.error:.3g} {self.where} ({a:.6g} vs {n:.6g}; "
                  f"{self.compared} values compared)")
        if self.error > rtol:
            return CheckResult(self.name, False, self.error,
                               f"{self.name} disagrees with {self.against}: {detail}", seconds)
        return CheckResult(self.name, True, self.error,
                           f"agrees with {self.against} within rtol {rtol:g}: {detail}", seconds)


def _scale(*arrays: np.ndarray) -> float:
    return max(float(np.abs(a).max()) if np.size(a) else 0.0 for a in arrays)


def _transition_text(context: int, obs, actions, next_obs) -> Callable:
    def describe(index: tuple[int, ...]) -> str:
        n = index[0]
        return (f"at context {context}, transition (s={_short(obs[n])}, a={_short(actions[n])}, "
                f"s'={_short(next_obs[n])})")
    return describe


def _short(value: Any) -> str:
    arr = np.asarray(value)
    return str(arr.item()) if arr.size == 1 else np.array2string(arr, precision=4)


# ---------------------------------------------------------------------------- weights=
def contraction_problem(name: str, method: Callable, grads: np.ndarray, n_params: int,
                        rng: np.random.Generator, *args: Any) -> str | None:
    """A message if ``method(*args)`` is not ``(N, d)`` or ``method(*args, weights=w)`` is not
    ``w @ method(*args)`` (the vector-Jacobian product the estimators call)."""
    n = len(args[-1])
    if grads.shape != (n, n_params):
        return f"{name} returned shape {grads.shape}, expected (N, d) = ({n}, {n_params})"
    w = rng.normal(size=n)
    contracted = np.asarray(method(*args, weights=w), dtype=np.float64)
    expected = w @ grads
    if contracted.shape != (n_params,):
        return f"{name}(weights=w) returned shape {contracted.shape}, expected ({n_params},)"
    tol = 1e-9 * (np.abs(w)[:, None] * np.abs(grads)).sum(0).max() + 1e-300
    if np.abs(contracted - expected).max() > tol:
        i = int(np.argmax(np.abs(contracted - expected)))
        return (f"{name}(weights=w) is not Σ_n w_n {name}(...)[n]: coordinate {i} is "
                f"{contracted[i]:.6g}, the contraction {expected[i]:.6g}")
    return None


# ---------------------------------------------------------------------------- objective
def exact_hypergradient_check(problem: BilevelProblem, x: np.ndarray, U: np.ndarray,
                              labels: list[str], rtol: float) -> CheckResult:
    """``dJ/dx`` of the exact layer against central differences of the exact ``J``, per
    context for decomposable problems (the problem's own ``exact_objective`` otherwise)."""
    start = time.perf_counter()
    worst = Worst("exact_hypergradient", "the exact objective J")
    h = OBJECTIVE_STEP
    if problem.decomposable:
        solver = ExactSolver(problem, tol=1e-12)
        values = solver.per_context(x, with_gradient=True)
        grads = values.gradient.reshape(problem.n_contexts, -1)
        for k, u in enumerate(U):
            plus = solver.per_context(x + h * u).objective
            minus = solver.per_context(x - h * u).objective
            worst.update(grads @ u, (plus - minus) / (2 * h), _scale(plus, minus), h,
                         lambda i, k=k: f"at context {i[0]}, {labels[k]}")
    else:
        try:
            grad = np.asarray(exact_gradient_of(problem, x)).ravel()
        except ValueError as exc:  # the problem's own exact layer declines (e.g. too large)
            return skipped("exact_hypergradient", f"no exact hypergradient: {exc}")
        for k, u in enumerate(U):
            plus, minus = exact_objective_of(problem, x + h * u), exact_objective_of(
                problem, x - h * u)
            worst.update(np.array([grad @ u]), np.array([(plus - minus) / (2 * h)]),
                         max(abs(plus), abs(minus)), h,
                         lambda i, k=k: f"over all contexts, {labels[k]}")
    return worst.result(rtol, time.perf_counter() - start)


def pair_objective_check(problem: PairwiseObjective, x: np.ndarray, pairs_by_context: dict,
                         U: np.ndarray, labels: list[str], rtol: float,
                         rng: np.random.Generator) -> CheckResult:
    """``grad_pair_objective`` against differences of ``pair_objective`` on sampled pairs."""
    start = time.perf_counter()
    worst = Worst("grad_pair_objective", "pair_objective")
    h = MODEL_STEP
    for c, (traj0, traj1) in pairs_by_context.items():
        grads = np.asarray(problem.grad_pair_objective(x, c, traj0, traj1), dtype=np.float64)
        problem_text = contraction_problem("grad_pair_objective", problem.grad_pair_objective,
                                           grads, problem.n_params, rng, x, c, traj0, traj1)
        if problem_text:
            worst.problems.append(f"{problem_text} at context {c}")
            continue
        for k, u in enumerate(U):
            plus = problem.pair_objective(x + h * u, c, traj0, traj1)
            minus = problem.pair_objective(x - h * u, c, traj0, traj1)
            worst.update(grads @ u, (plus - minus) / (2 * h), _scale(plus, minus), h,
                         lambda i, c=c, k=k: f"at context {c}, pair {i[0]}, {labels[k]}")
    return worst.result(rtol, time.perf_counter() - start)


# ---------------------------------------------------------------------------- per transition
REWARD_TERMS = (("grad_follower_reward", "follower_reward"),
                ("grad_leader_reward", "leader_reward"))


def reward_gradient_checks(problem: BilevelProblem, x: np.ndarray,
                           transitions: dict[int, tuple], U: np.ndarray, labels: list[str],
                           rtol: float, rng: np.random.Generator) -> list[CheckResult]:
    """``grad_follower_reward`` and ``grad_leader_reward`` against differences of
    ``follower_reward`` and ``leader_reward`` at the given transitions (per context:
    ``(obs, actions, next_obs)``)."""
    results = []
    h = MODEL_STEP
    for grad_name, value_name in REWARD_TERMS:
        start = time.perf_counter()
        worst = Worst(grad_name, value_name)
        grad_fn, value_fn = getattr(problem, grad_name), getattr(problem, value_name)
        for c, (obs, actions, next_obs) in transitions.items():
            grads = np.asarray(grad_fn(x, c, obs, actions, next_obs), dtype=np.float64)
            text = contraction_problem(grad_name, grad_fn, grads, problem.n_params, rng,
                                       x, c, obs, actions, next_obs)
            if text:
                worst.problems.append(f"{text} at context {c}")
                continue
            describe = _transition_text(c, obs, actions, next_obs)
            for k, u in enumerate(U):
                plus = value_fn(x + h * u, c, obs, actions, next_obs)
                minus = value_fn(x - h * u, c, obs, actions, next_obs)
                worst.update(grads @ u, (plus - minus) / (2 * h), _scale(plus, minus), h,
                             lambda i, d=describe, k=k: f"{d(i)}, {labels[k]}")
        results.append(worst.result(rtol, time.perf_counter() - start))
    return results
