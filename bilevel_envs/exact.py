"""Exact ``J(x)`` and ``dJ/dx`` of a tabular :class:`~bilevel_envs.problem.BilevelProblem`.

The problem-level solver on top of the array functions of :mod:`bilevel_envs.tabular`: it asks
the problem for each context's :class:`~bilevel_envs.tabular.TabularModel`, solves the
followers' regularised MDPs exactly (warm-started across calls) and combines the contexts'
exact leader values and hypergradients (paper Thm 1–2, Prop. 1).
"""

from __future__ import annotations

import numpy as np

from bilevel_envs._exact_kernels import leader_value_sparse
from bilevel_envs.hypergradient import LeaderValues, leader_values
from bilevel_envs.problem import BilevelProblem
from bilevel_envs.tabular import (
    DEFAULT_TOL,
    SOFT_PI_MAX_ITER,
    SOLVERS,
    SoftSolution,
    TabularModel,
    banded_transitions,
    check_finite,
    check_warm_start,
    solve_follower,
)
from bilevel_envs.validation import check_choice, check_float


class ExactSolver:
    """Exact ``J(x)``, per-context values and ``dJ/dx`` of a tabular problem, warm-started.

    Keeps the last soft Q-function of every context, so a sequence of nearby ``x`` (a leader's
    iterates) costs a few Newton steps per call. Contexts are solved one model at a time, which
    lets banded models use the compiled sparse solver and the problem's per-context caches
    (the array functions above also accept stacks of models).

    Args:
        problem: a problem whose :meth:`~bilevel_envs.problem.BilevelProblem.tabular` is defined.
        tol: accuracy of the follower solves (``‖V − V*‖∞``).
        method: ``"policy_iteration"`` (default) or ``"value_iteration"``.
    """

    def __init__(self, problem: BilevelProblem, tol: float = DEFAULT_TOL,
                 method: str = "policy_iteration"):
        if not problem.is_tabular:
            raise ValueError(f"{type(problem).__name__} has no tabular model; exact quantities "
                             "are available for tabular problems only")
        if not problem.decomposable:
            raise ValueError(f"{type(problem).__name__} has a trajectory-level objective; use "
                             "exact_objective(problem, x) / exact_hypergradient(problem, x)")
        self.problem = problem
        self.tol = check_float("tol", tol, 0.0, low_open=True)
        self.method = check_choice("method", method, sorted(SOLVERS))
        self._warm: dict[int, np.ndarray] = {}

    def _contexts(self, contexts) -> list[int]:
        if contexts is None:
            return list(range(self.problem.n_contexts))
        return [self.problem.context_index(c) for c in contexts]

    def solve(self, x: np.ndarray, contexts=None
              ) -> tuple[list[TabularModel], SoftSolution, list[int]]:
        """The models of ``contexts`` at ``x`` and the followers' solutions (stacked)."""
        x = self.problem.check_x(x)
        idx = self._contexts(contexts)
        models = self.problem.tabular_models(x, idx)
        solutions = []
        for c, model in zip(idx, models):
            solution = solve_follower(model, self.problem.lam, tol=self.tol,
                                      warm_start=self._warm.get(c), method=self.method)
            self._warm[c] = solution.q
            solutions.append(solution)
        stacked = SoftSolution(q=np.stack([s.q for s in solutions]),
                               v=np.stack([s.v for s in solutions]),
                               pi=np.stack([s.pi for s in solutions]),
                               iterations=max(s.iterations for s in solutions),
                               residual=max(s.residual for s in solutions))
        return models, stacked, idx

    def per_context(self, x: np.ndarray, contexts=None, with_gradient: bool = False
                       ) -> LeaderValues:
        """Per-context exact leader values (and gradients), in context order."""
        if not with_gradient and self.method == "policy_iteration":
            values = self._banded_values(x, contexts)
            if values is not None:
                return values
        models, solution, _ = self.solve(x, contexts)
        values = [leader_values(m, solution.pi[i], self.problem.lam, with_gradient)
                  for i, m in enumerate(models)]
        return LeaderValues(
            objective=np.array([float(v.objective) for v in values]),
            gradient=np.stack([v.gradient for v in values]) if with_gradient else None,
            v_leader=np.stack([v.v_leader for v in values]))

    def _banded_values(self, x: np.ndarray, contexts) -> LeaderValues | None:
        """Values only, when every context's model is banded: the follower's solve and the
        leader's evaluation in one compiled call each (the same fixed point and tolerance as
        :meth:`solve`, agreeing to round-off); ``None`` when a model does not qualify."""
        x = self.problem.check_x(x)
        idx = self._contexts(contexts)
        models = self.problem.tabular_models(x, idx)
        tables = [banded_transitions(m) for m in models]
        if any(t is None for t in tables):
            return None
        objective, v_leader = [], []
        for c, model, (next_states, probs, lo, up) in zip(idx, models, tables):
            warm = self._warm.get(c)
            q = (np.zeros((model.n_states, model.n_actions)) if warm is None
                 else check_warm_start(model, warm))
            value, v_bar, _, residual = leader_value_sparse(
                next_states, probs, np.ascontiguousarray(model.r, dtype=np.float64),
                np.ascontiguousarray(model.r_leader, dtype=np.float64),
                np.ascontiguousarray(model.mu, dtype=np.float64), model.gamma,
                model.leader_gamma, self.problem.lam, q, self.tol * (1 - model.gamma),
                SOFT_PI_MAX_ITER, lo, up)
            for result in (residual, value, q):
                check_finite(result, "soft policy iteration")
            self._warm[c] = q
            objective.append(value)
            v_leader.append(v_bar)
        return LeaderValues(objective=np.array(objective), gradient=None,
                            v_leader=np.stack(v_leader))

    def _weights(self, contexts) -> np.ndarray:
        idx = self._contexts(contexts)
        w = self.problem.context_probs[idx]
        return w / w.sum()

    def objective(self, x: np.ndarray, contexts=None) -> float:
        """``J(x) = Σ_ξ P(ξ) μ·V̄_ξ`` (renormalised over ``contexts`` if given)."""
        values = self.per_context(x, contexts)
        return float(self._weights(contexts) @ values.objective)

    def value_and_grad(self, x: np.ndarray, contexts=None) -> tuple[float, np.ndarray]:
        """``(J(x), dJ/dx)`` (renormalised over ``contexts`` if given)."""
        values = self.per_context(x, contexts, with_gradient=True)
        w = self._weights(contexts)
        grad = (w @ values.gradient.reshape(len(w), -1)).reshape(self.problem.x_space.shape)
        return float(w @ values.objective), grad


def exact_objective(problem: BilevelProblem, x: np.ndarray, tol: float = DEFAULT_TOL) -> float:
    """The exact leader objective ``J(x)`` of a tabular problem (cold-started solve).

    Problems with a trajectory-level objective (``problem.decomposable`` is False) compute it
    themselves: this calls ``problem.exact_objective(x)``.
    """
    if not problem.decomposable:
        check_float("tol", tol, 0.0, low_open=True)  # enumeration is exact: tol has no use
        return _trajectory_level(problem, "exact_objective")(x)
    return ExactSolver(problem, tol=tol).objective(x)


def exact_hypergradient(problem: BilevelProblem, x: np.ndarray,
                        tol: float = DEFAULT_TOL) -> np.ndarray:
    """The exact hypergradient ``dJ/dx`` of a tabular problem (implicit differentiation).

    For a trajectory-level objective this calls ``problem.exact_hypergradient(x)``.
    """
    if not problem.decomposable:
        check_float("tol", tol, 0.0, low_open=True)  # enumeration is exact: tol has no use
        return _trajectory_level(problem, "exact_hypergradient")(x)
    return ExactSolver(problem, tol=tol).value_and_grad(x)[1]


def _trajectory_level(problem: BilevelProblem, name: str):
    method = getattr(problem, name, None)
    if method is None:
        raise ValueError(f"{type(problem).__name__} has a trajectory-level objective and no "
                         f"{name}(x) method; no exact value is available")
    return method

