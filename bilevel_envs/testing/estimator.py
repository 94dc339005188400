"""A sampling-based hypergradient estimator against the exact hypergradient, in measured
standard errors.

The estimators live in the algorithms' layer (``leaders``), which this layer never imports:
the check takes the estimator as an argument, any callable of the
:class:`HypergradientEstimator` protocol (HPGD's is ``leaders.testing.hpgd_estimator``).
"""

from __future__ import annotations

import inspect
import time
from typing import Protocol

import numpy as np

from bilevel_envs.hypergradient import leader_values
from bilevel_envs.oracles import TrajectoryOracle, make_oracle
from bilevel_envs.policies import TabularPolicy
from bilevel_envs.problem import BilevelProblem
from bilevel_envs.tabular import solve_follower
from bilevel_envs.testing.report import CheckResult, skipped
from bilevel_envs.testing.statistics import bonferroni_z, z_scores

#: a coordinate is tested on its own when at least this many estimates are nonzero in it
MIN_TOUCHED = 30


class HypergradientEstimator(Protocol):
    """Draws ``n_samples`` i.i.d. estimates of ``dJ_ξ/dx`` at ``x`` for one context, from the
    follower trajectories of ``oracle`` (the follower's exact policy) only."""

    def __call__(self, problem: BilevelProblem, x: np.ndarray, context: int,
                 oracle: TrajectoryOracle, rng: np.random.Generator,
                 n_samples: int) -> np.ndarray:
        """``(n_samples, d)`` estimates whose mean is ``dJ_ξ/dx``."""
        ...


def _exact_context_gradient(problem: BilevelProblem, x: np.ndarray, context: int, model, pi
                            ) -> np.ndarray | None:
    if problem.decomposable:
        return leader_values(model, pi, problem.lam, with_gradient=True).gradient.ravel()
    method = getattr(problem, "exact_hypergradient", None)
    if method is None:
        return None
    if "contexts" in inspect.signature(method).parameters:
        return np.asarray(method(x, contexts=[context]), dtype=np.float64).ravel()
    if problem.n_contexts == 1:
        return np.asarray(method(x), dtype=np.float64).ravel()
    return None


def estimator_check(problem: BilevelProblem, x: np.ndarray, estimator: HypergradientEstimator,
                    n_samples: int, alpha: float, rng: np.random.Generator) -> CheckResult:
    """The mean of ``n_samples`` estimates per context against the exact ``dJ_ξ/dx``: z along
    every coordinate that at least :data:`MIN_TOUCHED` estimates touch and along the exact
    gradient's direction (:func:`~bilevel_envs.testing.statistics.z_scores`), the |z| threshold
    Bonferroni-corrected so that the false-alarm rate of the whole check is ``alpha``."""
    start = time.perf_counter()
    name = "hypergradient estimator"
    n_tests = problem.n_contexts * (problem.n_params + 1)
    threshold = bonferroni_z(alpha, n_tests)
    worst, where, untested = 0.0, "", 0
    for c in range(problem.n_contexts):
        model = problem.tabular(x, c)
        pi = solve_follower(model, problem.lam, tol=1e-12).pi
        try:
            exact = _exact_context_gradient(problem, x, c, model, pi)
        except ValueError as exc:  # the problem's own exact layer declines (e.g. too large)
            return skipped(name, f"no exact hypergradient: {exc}")
        if exact is None:
            return skipped(name, "the problem's exact_hypergradient(x) has no contexts "
                                 "argument: no exact value per context")
        oracle = make_oracle(problem, x, c, TabularPolicy(pi), model=model)
        samples = np.asarray(estimator(problem, x, c, oracle, rng, n_samples), dtype=np.float64)
        if samples.ndim != 2 or samples.shape[1] != problem.n_params:
            return CheckResult(name, False, None, f"the estimator returned shape "
                               f"{samples.shape}, expected (n_samples, {problem.n_params})",
                               time.perf_counter() - start)
        z = np.abs(z_scores(samples, exact))
        # The mean of a coordinate that few estimates touch is far from normal (its measured
        # s.e. comes from a handful of values): the direction's z covers it.
        rare = np.flatnonzero((samples != 0).sum(axis=0) < MIN_TOUCHED)
        z[rare] = 0.0
        untested = max(untested, rare.size)
        i = int(np.argmax(z))
        if z[i] > worst or not where:
            se = samples.std(axis=0, ddof=1) / np.sqrt(len(samples))
            along = "the exact gradient's direction" if i == problem.n_params else \
                f"coordinate {i}"
            mean = samples.mean(axis=0)
            detail = "" if i == problem.n_params else (
                f" (mean {mean[i]:.4g}, exact {exact[i]:.4g}, s.e. {se[i]:.2g})")
            worst, where = float(z[i]), (f"at context {c}, along {along}{detail}, "
                                         f"{len(samples)} estimates")
    seconds = time.perf_counter() - start
    if untested:
        where += (f"; up to {untested} coordinates touched by fewer than {MIN_TOUCHED} estimates "
                  "tested along the direction only")
    if worst > threshold:
        return CheckResult(name, False, worst,
                           f"the estimator's mean disagrees with the exact hypergradient: "
                           f"|z| = {worst:.2f} > {threshold:.2f} {where}; a term the estimator "
                           "reads (grad_*, rewards, flags, sampler) is inconsistent with the "
                           "model", seconds)
    return CheckResult(name, True, worst,
                       f"the estimator's mean is within {threshold:.2f} standard errors of the "
                       f"exact hypergradient (false-alarm rate {alpha:g}): max |z| = "
                       f"{worst:.2f} {where}", seconds)
