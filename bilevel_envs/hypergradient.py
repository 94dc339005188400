"""Exact leader quantities of a follower policy on plain arrays: the leader's value ``J = μ·V̄``
and its hypergradient when the follower plays its regularised best response
(:func:`leader_values`), and the same hypergradient split into the paper's terms
(:func:`hypergradient_terms`), the ground truth of every estimator test.

Works on a single :class:`~bilevel_envs.tabular.TabularModel` or a stack of models, like
:mod:`bilevel_envs.tabular` (conventions in its docstring: paper §2–3, Thm 1–2, Prop 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bilevel_envs._exact_kernels import policy_leader_value, policy_solver
from bilevel_envs.tabular import (
    TabularModel,
    banded_transitions,
    evaluate_policy,
    expected_next,
    policy_transitions,
    solve_bellman,
)
from bilevel_envs.validation import check_float


@dataclass
class LeaderValues:
    """Exact leader quantities for a follower policy (batched like the model).

    Attributes:
        objective: ``(...)`` ``μ·V̄``, the leader's value in each model.
        gradient: ``(..., d)`` its total derivative in ``x`` (``None`` if not requested).
        v_leader: ``(..., S)`` leader value ``V̄``.
    """

    objective: np.ndarray
    gradient: np.ndarray | None
    v_leader: np.ndarray


def leader_values(model: TabularModel, pi: np.ndarray, lam: float,
                  with_gradient: bool = True) -> LeaderValues:
    """Exact ``J = μ·V̄`` (and ``dJ/dx``) when the follower plays ``pi = π*_{x,ξ}``.

    The gradient treats ``pi`` as the follower's regularised best response, i.e. it applies
    ``dπ/dx = π ∂x A/λ`` (paper Prop. 2); pass an accurate solution.

    It is computed in adjoint (reverse) form, with vector solves only: with the leader's
    discounted occupancy ``d̄ = (I − γ̄ P_π)^{-T} μ``,

    ``dJ = Σ_{s,a} w_f(s,a) (∂r + γ ∂P·V_λ)(s,a) + Σ_{s,a} w_l(s,a) (∂r̄ + γ̄ ∂P·V̄)(s,a) + ∂μ·V̄``

    where ``w_l = d̄(s) π(a|s)`` and ``w_f = w_l Ā/λ + γ z(s) π(a|s)``, ``z = (I − γ P_π)^{-T} P^T
    (w_l Ā/λ)`` carrying the best-response term through the follower's Bellman equation.
    """
    gamma, lgamma = model.gamma, model.leader_gamma
    if not with_gradient:
        banded = _banded_leader_value(model, pi)
        if banded is not None:
            return banded
    solve, v_bar = _leader_value(model, pi)
    objective = (model.mu * v_bar).sum(-1)
    if not with_gradient:
        return LeaderValues(objective=objective, gradient=None, v_leader=v_bar)

    w_leader, w_follower = _adjoint_weights(model, pi, lam, solve, v_bar)
    gradient = _contract(w_follower, model.dr) + _contract(w_leader, model.dr_leader)
    if model.dP is not None:
        v_soft = evaluate_policy(model, pi, lam=lam)
        gradient = gradient + np.einsum("...sapd,...sap->...d", model.dP,
                                        gamma * w_follower[..., None] * v_soft[..., None, None, :]
                                        + lgamma * w_leader[..., None]
                                        * v_bar[..., None, None, :])
    if model.dmu is not None:
        gradient = gradient + np.einsum("...sd,...s->...d", model.dmu, v_bar)
    return LeaderValues(objective=objective, gradient=gradient, v_leader=v_bar)


#: The terms of the hypergradient (paper Eq. 8, Prop. 1): ``"direct"`` — ``Σ γ̄^t ∂r̄`` along the
#: path; ``"best_response"`` — the follower's response ``∂A·Ā/λ`` (``∂A`` through ``∂r`` and,
#: Thm 2, ``∂log P``); ``"transition_score"`` — ``γ̄ ∂P·V̄`` of the leader's own value;
#: ``"initial_score"`` — ``∂μ·V̄``.
HYPERGRADIENT_TERMS = ("direct", "best_response", "transition_score", "initial_score")
#: ``(term, kind)``: the terms split by the derivative of the model they contract
#: (``"leader_reward"`` ∂r̄, ``"follower_reward"`` ∂r, ``"log_transition"`` ∂P,
#: ``"log_initial"`` ∂μ).
HYPERGRADIENT_COMPONENTS = (("direct", "leader_reward"), ("best_response", "follower_reward"),
                            ("best_response", "log_transition"),
                            ("transition_score", "log_transition"),
                            ("initial_score", "log_initial"))


def hypergradient_terms(model: TabularModel, pi: np.ndarray,
                        lam: float) -> dict[tuple[str, str], np.ndarray]:
    """The exact ``dJ/dx`` of :func:`leader_values` split into its components.

    With ``w_l = d̄ π`` (the leader's discounted occupancy of ``(s, a)``) and ``w_f`` (the weight
    of the follower's derivatives, see :func:`leader_values`):

    * ``("direct", "leader_reward")``: ``Σ w_l ∂r̄``;
    * ``("best_response", "follower_reward")``: ``Σ w_f ∂r`` and
      ``("best_response", "log_transition")``: ``γ Σ w_f ∂P·V_λ`` — together ``Σ w_l ∂A Ā/λ``;
    * ``("transition_score", "log_transition")``: ``γ̄ Σ w_l ∂P·V̄``;
    * ``("initial_score", "log_initial")``: ``∂μ·V̄``.

    They sum to ``leader_values(model, pi, lam).gradient`` (up to round-off); a component whose
    derivative is absent (``dP`` or ``dmu`` is ``None``) is zero. As in :func:`leader_values`,
    ``pi`` is taken as the follower's policy: for any ``pi`` each component is the mean of the
    matching component of HPGD's estimators (paper Alg. 5) run with that policy.

    Args:
        model: a model or a stack of models.
        pi: ``(..., S, A)`` the follower's policy.
        lam: the follower's entropy weight λ.

    Returns:
        ``{(term, kind): (..., d) array}`` for every entry of :data:`HYPERGRADIENT_COMPONENTS`.
    """
    lam = check_float("lam (entropy weight λ)", lam, 0.0, low_open=True)
    solve, v_bar = _leader_value(model, pi)
    w_leader, w_follower = _adjoint_weights(model, pi, lam, solve, v_bar)
    zero = np.zeros(model.batch_shape + (model.n_params,))
    out = {("direct", "leader_reward"): np.einsum("...sa,...sad->...d", w_leader,
                                                  model.dr_leader),
           ("best_response", "follower_reward"): np.einsum("...sa,...sad->...d", w_follower,
                                                           model.dr),
           ("best_response", "log_transition"): zero,
           ("transition_score", "log_transition"): zero,
           ("initial_score", "log_initial"): zero}
    if model.dP is not None:
        v_soft = evaluate_policy(model, pi, lam=lam)
        out["best_response", "log_transition"] = np.einsum(
            "...sapd,...sap->...d", model.dP,
            model.gamma * w_follower[..., None] * v_soft[..., None, None, :])
        out["transition_score", "log_transition"] = np.einsum(
            "...sapd,...sap->...d", model.dP,
            model.leader_gamma * w_leader[..., None] * v_bar[..., None, None, :])
    if model.dmu is not None:
        out["initial_score", "log_initial"] = np.einsum("...sd,...s->...d", model.dmu, v_bar)
    return out


def _banded_leader_value(model: TabularModel, pi: np.ndarray) -> LeaderValues | None:
    """``μ·V̄`` of a single banded model (gridworlds) in one compiled call on its successor lists
    (the same value as the dense path to round-off); ``None`` for other models."""
    banded = _banded_policy_model(model, pi)
    if banded is None:
        return None
    next_states, probs, lo, up = banded
    value, v_bar = policy_leader_value(
        next_states, probs, np.ascontiguousarray(pi, dtype=np.float64),
        np.ascontiguousarray(model.r_leader, dtype=np.float64),
        np.ascontiguousarray(model.mu, dtype=np.float64), model.leader_gamma, lo, up)
    return LeaderValues(objective=np.float64(value), gradient=None, v_leader=v_bar)


def _banded_policy_model(model: TabularModel, pi: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, int, int] | None:
    """:func:`~bilevel_envs.tabular.banded_transitions` when ``pi`` is one ``(S, A)`` policy of a
    single banded model (the compiled paths), else ``None``."""
    if np.shape(pi) != (model.n_states, model.n_actions):
        return None
    return banded_transitions(model)


def _contract(w: np.ndarray, derivative: np.ndarray) -> np.ndarray:
    """``Σ_{s,a} w(s,a) ∂(s,a,·)``, batched like the model; a single model's as one BLAS product
    (einsum walks a broadcast ``∂`` element by element, 4× slower on Four-Rooms)."""
    if w.ndim == 2:
        return np.tensordot(w, derivative, axes=([0, 1], [0, 1]))
    return np.einsum("...sa,...sad->...d", w, derivative)


def _policy_solver(model: TabularModel, pi: np.ndarray) -> Callable[..., np.ndarray]:
    """``solve(γ, rhs, transpose=False)``: ``(I − γ P_π)^{-1} rhs`` (or ``^{-T}``) for the
    follower's ``P_π``; compiled on the successor lists of a single banded model, else through
    the dense ``P_π`` (:func:`~bilevel_envs.tabular.solve_bellman`)."""
    banded = _banded_policy_model(model, pi)
    if banded is not None:
        next_states, probs, lo, up = banded
        return policy_solver(next_states, probs, np.ascontiguousarray(pi, dtype=np.float64),
                             lo, up)
    P_pi = policy_transitions(model.P, pi)
    return lambda gamma, rhs, transpose=False: solve_bellman(P_pi, gamma, rhs, transpose)


def _leader_value(model: TabularModel, pi: np.ndarray
                  ) -> tuple[Callable[..., np.ndarray], np.ndarray]:
    """``(solve, V̄)``: the solver of :func:`_policy_solver` and the leader's value under
    ``pi``."""
    solve = _policy_solver(model, pi)
    r_leader_pi = (pi * model.r_leader).sum(-1)
    return solve, solve(model.leader_gamma, r_leader_pi)


def _adjoint_weights(model: TabularModel, pi: np.ndarray, lam: float,
                     solve: Callable[..., np.ndarray], v_bar: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``(w_l, w_f)`` of :func:`leader_values`: the weights of the leader's and the follower's
    per-``(s, a)`` derivatives in ``dJ/dx``."""
    gamma, lgamma = model.gamma, model.leader_gamma
    occupancy = solve(lgamma, model.mu, transpose=True)
    a_bar = model.r_leader + lgamma * expected_next(model.P, v_bar) - v_bar[..., None]
    w_leader = occupancy[..., None] * pi
    c = w_leader * a_bar / lam  # weight of ∂Q(s, a) in the best-response term
    S, A = model.n_states, model.n_actions
    y = (c.reshape(c.shape[:-2] + (1, S * A)) @ model.P.reshape(model.P.shape[:-3] + (S * A, S))
         )[..., 0, :]
    z = solve(gamma, y, transpose=True)
    return w_leader, c + gamma * z[..., None] * pi
