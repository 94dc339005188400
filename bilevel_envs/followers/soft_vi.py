"""Exact follower: soft value iteration (paper Alg. 3) on the tabular model."""

from __future__ import annotations

from typing import Any

from bilevel_envs.budget import Budget
from bilevel_envs.followers.base import Follower, FollowerResponse
from bilevel_envs.policies import TabularPolicy
from bilevel_envs.tabular import DEFAULT_TOL, SOLVERS, solve_follower
from bilevel_envs.validation import check_array, check_choice, check_float


class SoftValueIteration(Follower):
    """The regularised best response ``π* = softmax(Q*/λ)``, solved on the exact model.

    Satisfies the paper's oracle assumption with ``δ`` set by ``tol``. Warm-started from the
    previous soft Q-function, a small change of ``x`` costs a few Newton steps.

    Budget (:attr:`~bilevel_envs.followers.FollowerResponse.cost`): one follower update per
    solve, no transitions.

    Args:
        tol: accuracy of the solve, a bound on ``‖V − V*‖∞``.
        method: ``"policy_iteration"`` (default: soft policy iteration, the same fixed point as
            Alg. 3 in a handful of linear solves) or ``"value_iteration"`` (Alg. 3 sweeps as
            written; thousands of sweeps at γ = 0.99).
    """

    name = "soft_vi"
    exact = True

    def __init__(self, tol: float = DEFAULT_TOL, method: str = "policy_iteration"):
        self.tol = check_float("tol", tol, 0.0, low_open=True)
        self.method = check_choice("method", method, sorted(SOLVERS))

    def supports(self, problem) -> bool:
        return problem.is_tabular

    def check_warm_start(self, problem, context, warm_start):
        """A soft Q-function of the problem's model: finite, of shape ``(S, A)``."""
        return check_array(f"the warm start of context {context}", warm_start,
                           (problem.follower_observation_space.n, problem.follower_action_space.n))

    def respond(self, problem, x, context, seed=None, warm_start=None) -> FollowerResponse:
        if not problem.is_tabular:
            raise ValueError(f"follower 'soft_vi' needs a tabular problem; {problem!r} has no "
                             "tabular model (use 'soft_dqn' or 'sb3')")
        model = problem.tabular(x, context)
        solution = solve_follower(model, problem.lam, tol=self.tol, warm_start=warm_start,
                                  method=self.method)
        # Plain, deterministic data only (wall time would break seeded reproducibility of info).
        stats: dict[str, Any] = {"iterations": solution.iterations,
                                 "residual": solution.residual}
        # Budget: one follower update per exact best-response solve, whatever its iterations
        # (computation on the model, not samples); no transitions.
        return FollowerResponse(policy=TabularPolicy(solution.pi), warm_start=solution.q,
                                stats=stats, model=model, cost=Budget(follower_updates=1))

    def __repr__(self) -> str:
        return f"SoftValueIteration(tol={self.tol:g}, method={self.method!r})"
