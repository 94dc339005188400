"""AMD — Adaptive Model Design (Chen et al. 2022), as modified for CB-RL in paper Alg. 9.

AMD has full access to the model: it carries four tables per context across outer iterations and
refines them with K synchronous Bellman sweeps of their coupled recursions (warm-started):

    for t = 0, 1, ...:
        ξ ~ P_ξ
        for k = 0 .. K−1:                                    (sweep, all tables at once)
            π = softmax(Q/λ);  V = λ logΣ exp(Q/λ);  ∂V = Σ_a π ∂Q;  ∂A = ∂Q − ∂V
            V̄ = Σ_a π Q̄;  Ā = Q̄ − V̄;  Ṽ = Σ_a π Q̃
            Q  ← r  + γ P V                  ∂Q ← ∂r + γ (P ∂V + ∂P·V)
            Q̄ ← r̄ + γ̄ P V̄                 Q̃  ← ∂r̄ + ∂A Ā/λ + γ̄ (P Ṽ + ∂P·V̄)
        ĝ = μ·Ṽ + ∂μ·V̄                       (= dJ_ξ/dx at the fixed point)
        x_{t+1} ← Π_X(x_t + α clip(ĝ))

(The paper's "π ← exp(λQ)" reads softmax(Q/λ); its "λ A ∇A" reads ``∂A Ā/λ``.) ``inner="exact"``
replaces the K sweeps by their limit: an exact soft policy iteration (warm-started) and the exact
adjoint hypergradient — the same gradient the authors' warm tables had converged to (reference
docs/reference.md §3.1), at a fraction of the cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from bilevel_envs.hypergradient import leader_values
from bilevel_envs.tabular import (
    TabularModel,
    expected_next,
    soft_max_value,
    soft_policy_iteration,
    softmax_policy,
)
from bilevel_envs.validation import check_choice, check_int
from leaders.base import Leader
from leaders.checkpoints import CheckpointError, check_array

INNER_MODES = ("sweeps", "exact")


@dataclass
class AMDTables:
    """AMD's warm-started tables for one context: soft ``Q``, ``∂Q``, leader ``Q̄``, ``Q̃``."""

    q: np.ndarray  # (S, A)
    dq: np.ndarray  # (S, A, d)
    q_bar: np.ndarray  # (S, A)
    q_tilde: np.ndarray  # (S, A, d)

    @classmethod
    def zeros(cls, model: TabularModel) -> AMDTables:
        S, A, d = model.n_states, model.n_actions, model.n_params
        return cls(np.zeros((S, A)), np.zeros((S, A, d)), np.zeros((S, A)), np.zeros((S, A, d)))


def amd_sweep(model: TabularModel, tables: AMDTables, lam: float) -> AMDTables:
    """One synchronous sweep of AMD's four recursions (paper Alg. 9, inner loop body)."""
    q, dq, q_bar, q_tilde = tables.q, tables.dq, tables.q_bar, tables.q_tilde
    pi = softmax_policy(q, lam)
    v = soft_max_value(q, lam)
    dv = np.einsum("sa,sad->sd", pi, dq)
    da = dq - dv[:, None, :]
    v_bar = (pi * q_bar).sum(-1)
    a_bar = q_bar - v_bar[:, None]
    v_tilde = np.einsum("sa,sad->sd", pi, q_tilde)
    gamma, lgamma = model.gamma, model.leader_gamma
    dq_next = model.dr + gamma * expected_next(model.P, dv)
    q_tilde_next = model.dr_leader + da * (a_bar / lam)[..., None] + lgamma * expected_next(
        model.P, v_tilde)
    if model.dP is not None:
        dq_next = dq_next + gamma * np.einsum("sapd,p->sad", model.dP, v)
        q_tilde_next = q_tilde_next + lgamma * np.einsum("sapd,p->sad", model.dP, v_bar)
    return AMDTables(q=model.r + gamma * expected_next(model.P, v), dq=dq_next,
                     q_bar=model.r_leader + lgamma * expected_next(model.P, v_bar),
                     q_tilde=q_tilde_next)


def amd_gradient(model: TabularModel, tables: AMDTables, lam: float) -> tuple[float, np.ndarray]:
    """The leader value ``μ·V̄`` and AMD's hypergradient ``μ·Ṽ + ∂μ·V̄`` from the tables."""
    pi = softmax_policy(tables.q, lam)
    v_bar = (pi * tables.q_bar).sum(-1)
    v_tilde = np.einsum("sa,sad->sd", pi, tables.q_tilde)
    grad = model.mu @ v_tilde
    if model.dmu is not None:
        grad = grad + model.dmu.T @ v_bar
    return float(model.mu @ v_bar), grad


class AMD(Leader):
    """Adaptive Model Design (paper Alg. 9): exact-model hypergradients, one context per step.

    Track ``"model"``: one exact model per iteration (:meth:`~leaders.base.Leader.exact_model`,
    one ``model_queries`` of the env's budget); the sweeps or the solve on it are computation, not
    queries. AMD samples no follower transitions.

    Args:
        env: a leader env of a *tabular* problem (AMD never uses the env's followers).
        learning_rate: step size α.
        inner_iterations: K, Bellman sweeps per outer iteration (``inner="sweeps"``).
        inner: ``"sweeps"`` (Alg. 9 as written) or ``"exact"`` (the K → ∞ limit, solved).
        **kwargs: :class:`~leaders.base.Leader` arguments.

    Raises:
        ValueError: if the env's problem has no tabular model or a trajectory-level objective
            (RLHF): Alg. 9's recursions differentiate discounted leader rewards.
    """

    algorithm: ClassVar[str] = "amd"
    track: ClassVar[str] = "model"
    decomposable_only: ClassVar[bool] = True

    def __init__(self, env, learning_rate: float = 0.1, inner_iterations: int = 100,
                 inner: str = "sweeps", **kwargs: Any):
        super().__init__(env, learning_rate=learning_rate, **kwargs)
        if not self.problem.is_tabular:
            raise ValueError(f"AMD needs the exact model (problem.tabular), which "
                             f"{type(self.problem).__name__} does not provide; use HPGD or "
                             "ZeroOrder")
        if not self.problem.decomposable:
            raise ValueError(f"AMD (Alg. 9) differentiates a decomposable J (discounted leader "
                             f"rewards) through Bellman recursions; {type(self.problem).__name__} "
                             "has a trajectory-level objective: use HPGD (its trajectory "
                             "estimator) or ZeroOrder")
        self.inner = check_choice("inner", inner, INNER_MODES)
        self.inner_iterations = check_int("inner_iterations", inner_iterations, 1)
        self.tables: dict[int, AMDTables] = {}
        self._warm_q: dict[int, np.ndarray] = {}

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "inner": self.inner,
                "inner_iterations": self.inner_iterations}

    def estimate_gradient(self) -> tuple[np.ndarray, dict[str, Any]]:
        context = self.problem.sample_context(self.rng)
        model = self.exact_model(context)
        if self.inner == "sweeps":
            tables = self.tables.get(context) or AMDTables.zeros(model)
            for _ in range(self.inner_iterations):
                tables = amd_sweep(model, tables, self.problem.lam)
            self.tables[context] = tables
            value, grad = amd_gradient(model, tables, self.problem.lam)
        else:
            solution = soft_policy_iteration(model, self.problem.lam,
                                             warm_start=self._warm_q.get(context))
            self._warm_q[context] = solution.q
            exact = leader_values(model, solution.pi, self.problem.lam)
            value, grad = float(exact.objective), exact.gradient
        return grad, {"objective_estimate": value, "contexts": [context]}

    # ------------------------------------------------------------------ checkpoints
    def _extra_state(self):
        arrays = {}
        for context, tables in self.tables.items():
            for name in ("q", "dq", "q_bar", "q_tilde"):
                arrays[f"{name}_{context}"] = getattr(tables, name)
        for context, q in self._warm_q.items():
            arrays[f"warm_{context}"] = q
        return {"tables": sorted(self.tables), "warm": sorted(self._warm_q)}, arrays

    def _set_extra_state(self, data, arrays):
        S = self.problem.follower_observation_space.n
        A, d = self.problem.follower_action_space.n, self.problem.n_params
        shapes = {"q": (S, A), "dq": (S, A, d), "q_bar": (S, A), "q_tilde": (S, A, d)}
        if set(data) != {"tables", "warm"}:
            raise CheckpointError(f"AMD state must hold 'tables' and 'warm'; got {sorted(data)}")

        def contexts(key):
            values = data[key]
            if not isinstance(values, list):
                raise CheckpointError(f"AMD state {key!r} must be a list of contexts")
            return [check_int(f"AMD {key} context", c, 0, self.problem.n_contexts - 1)
                    for c in values]

        self.tables = {c: AMDTables(*(check_array(f"{n}_{c}", arrays.get(f"{n}_{c}"), shape)
                                      for n, shape in shapes.items()))
                       for c in contexts("tables")}
        self._warm_q = {c: check_array(f"warm_{c}", arrays.get(f"warm_{c}"), (S, A))
                        for c in contexts("warm")}
