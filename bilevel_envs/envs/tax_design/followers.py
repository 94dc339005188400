"""A grid follower of tax design: households that play the exact soft-optimal policy of the
discretised economy."""

from __future__ import annotations

from typing import Any

import numpy as np

from bilevel_envs.budget import Budget
from bilevel_envs.envs.tax_design import model as hh
from bilevel_envs.envs.tax_design.problem import DEFAULT_ASSET_CELLS, TaxDesign, TaxDesignTabular
from bilevel_envs.followers.base import Follower, FollowerResponse
from bilevel_envs.policies import sample_rows
from bilevel_envs.problem import BilevelProblem
from bilevel_envs.tabular import DEFAULT_TOL, SOLVERS, policy_entropy, solve_follower
from bilevel_envs.validation import check_array


class GridPolicy:
    """A policy table over asset cells, evaluated at any observation of a tax problem.

    Args:
        table: ``(S, A)`` action probabilities per cell of ``grid``.
        grid: the discretised problem that defines the cells.
        source: the problem whose observations are passed to :meth:`action_probs` (continuous
            assets or cell indices).
    """

    def __init__(self, table: np.ndarray, grid: TaxDesignTabular, source: TaxDesign):
        self.table = np.asarray(table, dtype=np.float64)
        self.n_actions = self.table.shape[1]
        self.grid, self.source = grid, source
        self._entropy = policy_entropy(self.table)

    def cells(self, obs: Any) -> np.ndarray:
        return self.grid.obs_of(self.source.assets_of(obs))

    def action_probs(self, obs: Any) -> np.ndarray:
        return self.table[self.cells(obs)]

    def entropy(self, obs: Any) -> np.ndarray:
        """``H(π(·|s))`` per observation (precomputed per cell)."""
        return self._entropy[self.cells(obs)]

    def sample(self, obs: Any, rng: np.random.Generator) -> np.ndarray:
        probs = self.action_probs(obs)
        return sample_rows(probs, rng.random(probs.shape[0]))


class GridSoftVI(Follower):
    """Households that play the exact soft-optimal policy of the discretised economy.

    Solves :class:`TaxDesignTabular` (``asset_cells`` cells, same parameters) exactly and applies
    the policy of the cell holding the current assets. On the continuous problem it is a cheap,
    deterministic approximate best response (the discretisation is the only error); on the
    tabular variant with the same grid it equals ``"soft_vi"``. Budget: one follower update per
    solve, like ``"soft_vi"``.

    Args:
        asset_cells: size of the asset grid.
        tol: accuracy of the soft solve (``‖V − V*‖∞``).
        method: ``"policy_iteration"`` or ``"value_iteration"``.
    """

    name = "grid_soft_vi"

    def __init__(self, asset_cells: int = DEFAULT_ASSET_CELLS, tol: float = DEFAULT_TOL,
                 method: str = "policy_iteration"):
        hh.uniform_asset_edges(asset_cells, hh.make_params())  # validates asset_cells
        if not tol > 0:
            raise ValueError(f"tol must be positive; got {tol}")
        if method not in SOLVERS:
            raise ValueError(f"method must be one of {sorted(SOLVERS)}; got {method!r}")
        self.asset_cells, self.tol, self.method = int(asset_cells), float(tol), method

    def supports(self, problem: BilevelProblem) -> bool:
        return isinstance(problem, TaxDesign)

    def check_warm_start(self, problem, context, warm_start):
        """A soft Q-function of the problem's discretised model: finite, of shape ``(S, A)``."""
        return check_array(f"the warm start of context {context}", warm_start,
                           (self.asset_cells, problem.follower_action_space.n))

    def respond(self, problem, x, context, seed=None, warm_start=None) -> FollowerResponse:
        if not isinstance(problem, TaxDesign):
            raise ValueError(f"follower 'grid_soft_vi' solves tax-design problems only; got "
                             f"{problem!r}")
        grid = problem.discretised(self.asset_cells)
        solution = solve_follower(grid.tabular(x, context), problem.lam, tol=self.tol,
                                  warm_start=warm_start, method=self.method)
        return FollowerResponse(policy=GridPolicy(solution.pi, grid, problem),
                                warm_start=solution.q,
                                stats={"iterations": solution.iterations,
                                       "residual": solution.residual},
                                cost=Budget(follower_updates=1))  # one exact solve

    def __repr__(self) -> str:
        return f"GridSoftVI(asset_cells={self.asset_cells}, tol={self.tol:g})"
