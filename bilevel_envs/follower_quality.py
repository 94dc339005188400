"""How good is a follower? Its soft-optimality gap and its distance to ``π*``, measured exactly.

On a problem with an exact finite model ``M_{x,ξ}`` (or a tabular twin, see
:meth:`~bilevel_envs.BilevelProblem.tabular_twin`) any follower policy ``π`` can be compared with
the regularised best response ``π* = softmax(Q*/λ)`` of the same model (paper §2–3):

* the **soft-optimality gap** ``(V*_λ − V^π_λ) / |V*_λ|`` with ``V_λ = μ·V_λ(s)`` the
  entropy-regularised value at the initial distribution: ``π*`` by the exact soft solver
  (:func:`~bilevel_envs.tabular.solve_follower`), both values by exact policy evaluation
  (:func:`~bilevel_envs.tabular.evaluate_policy` with the entropy bonus). It is ``≥ 0`` (up to
  round-off) and 0 exactly for ``π*``;
* the **visited total variation** ``Σ_s w(s) TV(π(·|s), π*(·|s))``, ``TV(p, q) = ½ Σ_a |p − q|``,
  with ``w`` the follower's visit frequencies (or, without visits, its normalised discounted
  occupancy ``∝ (I − γ P_π)^{-T} μ``): how differently it acts where it actually goes.

A follower whose gap exceeds a threshold is flagged with a :class:`FollowerQualityWarning`
(:func:`warn_if_far`), so that a poor best response does not silently feed a hypergradient
(the paper's bounds assume a ``δ``-accurate oracle, Assumption 3.2).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from bilevel_envs.tabular import (
    DEFAULT_TOL,
    SoftSolution,
    TabularModel,
    evaluate_policy,
    policy_transitions,
    solve_bellman,
    solve_follower,
)
from bilevel_envs.validation import check_array, check_bool, check_float

#: Floor of probabilities in ``λ log π`` (a finite warm start where ``π`` has zeros).
_TINY = 1e-300
#: Default relative soft-optimality gap above which a follower is reported as far from optimal.
DEFAULT_GAP_THRESHOLD = 0.05


class FollowerQualityWarning(UserWarning):
    """A follower's policy is far from the regularised best response (its soft-optimality gap
    exceeds the threshold): the leader's hypergradient estimates rest on a poor oracle."""


@dataclass(frozen=True)
class FollowerQuality:
    """The exact quality of one follower policy in one model.

    Attributes:
        gap: relative soft-optimality gap ``(V* − V^π)/|V*|`` (see :func:`soft_optimality_gap`).
        tv: visited total variation to ``π*`` (see :func:`visited_total_variation`).
        v_star: ``μ·V*_λ``, the optimal regularised value.
        v_pi: ``μ·V^π_λ``, the regularised value of the follower's policy.
    """

    gap: float
    tv: float
    v_star: float
    v_pi: float

    def as_stats(self) -> dict[str, float]:
        """The plain-data entries of ``info["follower_stats"]``."""
        return {"soft_optimality_gap": self.gap, "visited_tv": self.tv,
                "soft_value_optimal": self.v_star, "soft_value_follower": self.v_pi}


def policy_table(model: TabularModel, policy: Any, observations: Any = None) -> np.ndarray:
    """``π(·|s)`` for every state of ``model`` as a checked ``(S, A)`` array.

    Args:
        model: a single tabular model.
        policy: an ``(S, A)`` array, or an object with ``action_probs(obs)`` (a follower policy).
        observations: what ``policy.action_probs`` is queried with, one per state in state order
            (default: the state indices; a tabular twin passes
            :meth:`~bilevel_envs.BilevelProblem.twin_observations`).

    Raises:
        ValueError: if the table is not finite, of shape ``(S, A)``, with rows summing to one.
    """
    if model.batch_shape:
        raise ValueError("model must be a single model, not a stack")
    S, A = model.n_states, model.n_actions
    if hasattr(policy, "action_probs"):
        policy = policy.action_probs(np.arange(S) if observations is None else observations)
    table = check_array("policy (π(a|s) per state)", policy, (S, A), 0.0)
    if not np.allclose(table.sum(-1), 1.0, atol=1e-8):
        raise ValueError(f"policy rows must sum to 1; the worst row sums to "
                         f"{table.sum(-1)[np.argmax(np.abs(table.sum(-1) - 1))]!r}")
    return table


def discounted_occupancy(model: TabularModel, pi: np.ndarray) -> np.ndarray:
    """``d^π = (I − γ P_π)^{-T} μ``: the expected discounted visits ``Σ_t γ^t P(s_t = s)`` of
    each state under the ``(S, A)`` policy table ``pi`` from ``μ`` (summing to ``1/(1 − γ)``)."""
    return solve_bellman(policy_transitions(model.P, pi), model.gamma, model.mu, transpose=True)


def soft_optimality_gap(model: TabularModel, lam: float, policy: Any, *,
                        observations: Any = None, solution: SoftSolution | None = None,
                        tol: float = DEFAULT_TOL) -> float:
    """The relative soft-optimality gap ``(V*_λ − V^π_λ) / |V*_λ|`` of ``policy`` at ``μ``.

    Args:
        model: the exact model ``M_{x,ξ}`` (one model).
        lam: entropy weight λ > 0.
        policy: ``(S, A)`` array or a follower policy (see :func:`policy_table`).
        observations: how to query a policy object, one observation per state.
        solution: the model's soft optimum if already solved (else solved here to ``tol``).
        tol: accuracy of the soft solve (``‖V − V*‖∞``).

    Returns ``0.0`` when ``V* = V^π = 0`` and ``inf`` when only ``V* = 0`` (relative gap
    undefined).
    """
    return follower_quality(model, lam, policy, observations=observations, solution=solution,
                            tol=tol)[0].gap


def gap_by_state(model: TabularModel, lam: float, policy: Any, *, observations: Any = None,
                 solution: SoftSolution | None = None, tol: float = DEFAULT_TOL) -> np.ndarray:
    """Where a follower loses its soft value: ``(S,)`` contributions that sum to ``V*_λ − V^π_λ``
    at ``μ`` (the numerator of :func:`soft_optimality_gap`).

    The soft performance-difference identity: with ``π* = exp((Q* − V*)/λ)``,
    ``V*_λ(μ) − V^π_λ(μ) = Σ_s d^π(s) λ KL(π(·|s) ‖ π*(·|s))``, where
    ``d^π = (I − γ P_π)^{-T} μ`` is the policy's discounted occupancy (summing to
    ``1/(1 − γ)``); entry ``s`` is ``d^π(s) λ KL(π(·|s) ‖ π*(·|s))``. A state costs much when
    the follower goes there often and acts unlike ``π*`` there — mostly by taking actions that
    ``π*`` avoids.

    Args: as for :func:`soft_optimality_gap`.
    """
    lam = check_float("lam (entropy weight λ)", lam, 0.0, low_open=True)
    pi = policy_table(model, policy, observations)
    if solution is None:
        solution = solve_follower(model, lam, tol=tol)
    occupancy = discounted_occupancy(model, pi)
    # λ log π* = Q* − V*, exact for the solver's own Q (π* is its softmax)
    log_ratio = np.log(np.where(pi > 0, pi, 1.0)) - (solution.q - solution.v[:, None]) / lam
    return occupancy * lam * np.sum(np.where(pi > 0, pi * log_ratio, 0.0), axis=1)


def visited_total_variation(model: TabularModel, lam: float, policy: Any, visits: Any = None,
                            *, observations: Any = None, solution: SoftSolution | None = None,
                            tol: float = DEFAULT_TOL) -> float:
    """``Σ_s w(s) TV(π(·|s), π*(·|s))`` over the states the follower visits.

    Args:
        model, lam, policy, observations, solution, tol: as for :func:`soft_optimality_gap`.
        visits: ``(S,)`` non-negative visit counts or a state distribution (normalised here);
            ``None``: the policy's discounted occupancy ``(I − γ P_π)^{-T} μ``, normalised.

    Raises:
        ValueError: if ``visits`` has the wrong shape, a negative entry or sums to 0.
    """
    return follower_quality(model, lam, policy, visits, observations=observations,
                            solution=solution, tol=tol)[0].tv


def follower_quality(model: TabularModel, lam: float, policy: Any, visits: Any = None, *,
                     observations: Any = None, solution: SoftSolution | None = None,
                     warm_start: np.ndarray | None = None, tol: float = DEFAULT_TOL
                     ) -> tuple[FollowerQuality, SoftSolution]:
    """Gap, visited TV and both values in one pass (one soft solve, two linear solves).

    Arguments as for :func:`visited_total_variation`; ``warm_start`` (a soft Q-function of a
    nearby model) speeds up the soft solve. Returns the quality and the soft solution (pass its
    ``q`` as the next ``warm_start``).
    """
    lam = check_float("lam (entropy weight λ)", lam, 0.0, low_open=True)
    pi = policy_table(model, policy, observations)
    if solution is None:
        solution = solve_follower(model, lam, tol=tol, warm_start=warm_start)
    # The exact value of softmax(Q/λ) is within O(‖Q − Q*‖²) of V* (V is stationary at π*),
    # sharper than the solver's own O(‖Q − Q*‖) soft value, and exactly V^π when π is π*.
    v_star = float(model.mu @ evaluate_policy(model, solution.pi, lam=lam))
    v_pi = float(model.mu @ evaluate_policy(model, pi, lam=lam))
    if v_star != 0:
        gap = (v_star - v_pi) / abs(v_star)
    else:
        gap = 0.0 if v_pi == v_star else np.inf
    if visits is None:
        weights = discounted_occupancy(model, pi)
    else:
        weights = check_array("visits (per-state counts or distribution)", visits,
                              (model.n_states,), 0.0)
    total = weights.sum()
    if not total > 0:
        raise ValueError("visits must have a positive sum")
    tv_per_state = 0.5 * np.abs(pi - solution.pi).sum(-1)
    tv = float(weights @ tv_per_state / total)
    return FollowerQuality(gap=float(gap), tv=tv, v_star=v_star, v_pi=v_pi), solution


def visit_counts(states: Any, n_states: int) -> np.ndarray:
    """Visit counts ``(n_states,)`` of a flat batch of state indices."""
    states = np.asarray(states, dtype=np.int64).reshape(-1)
    return np.bincount(states, minlength=n_states).astype(np.float64)


def warn_if_far(quality: FollowerQuality, threshold: float = DEFAULT_GAP_THRESHOLD,
                where: str = "", stacklevel: int = 2) -> bool:
    """Issue a :class:`FollowerQualityWarning` if ``quality.gap > threshold``; return whether it
    did. ``where`` names the follower in the message (e.g. ``"context 2"``)."""
    threshold = check_float("threshold", threshold, 0.0)
    if not quality.gap > threshold:
        return False
    place = f" ({where})" if where else ""
    warnings.warn(f"follower far from the soft optimum{place}: soft-optimality gap "
                  f"{quality.gap:.3g} > {threshold:g} (V* = {quality.v_star:.6g}, "
                  f"V^π = {quality.v_pi:.6g}, visited TV to π* = {quality.tv:.3g})",
                  FollowerQualityWarning, stacklevel=stacklevel + 1)
    return True


class QualityMonitor:
    """Measures every follower of a leader step on the exact (twin) model and warns about the
    poor ones — the machinery behind ``LeaderEnv(..., follower_quality=...)``.

    Each reference solve starts from the follower's own policy (``Q₀ = λ log π``: one Newton
    step for an exact follower, deterministic, so the same seed gives the same numbers) and it
    warns at most once per context until :meth:`reset` (a new episode).

    Args:
        problem: a problem with a :meth:`~bilevel_envs.BilevelProblem.tabular_twin`.
        threshold: gap above which a :class:`FollowerQualityWarning` is issued.
    """

    def __init__(self, problem: Any, threshold: float = DEFAULT_GAP_THRESHOLD):
        twin = problem.tabular_twin()
        if twin is None:
            raise ValueError(f"{problem!r} has no exact model or tabular twin to measure its "
                             "followers on")
        self.problem, self.twin = problem, twin
        self.threshold = check_float("quality_threshold", threshold, 0.0)
        self._observations = problem.twin_observations(twin)
        self._warned: set[int] = set()

    @classmethod
    def for_env(cls, problem: Any, follower: Any, follower_quality: bool | None,
                threshold: float = DEFAULT_GAP_THRESHOLD) -> QualityMonitor | None:
        """The monitor of a :class:`~bilevel_envs.LeaderEnv`, or ``None`` when it is off.

        ``follower_quality=None`` (the default): on for tabular problems (one soft solve and
        three linear solves per follower and step on the model the step already has, about
        5 ms on Four-Rooms) unless ``follower.exact`` (e.g. ``"soft_vi"``, whose gap is the
        solver's tolerance); ``True``: always (on a problem with a tabular twin, e.g. continuous
        tax design, the twin's model is built each step); ``False``: off.

        Raises:
            ValueError: for a non-bool ``follower_quality``, a negative ``threshold``, or
                ``True`` on a problem with neither a model nor a tabular twin.
        """
        check_float("quality_threshold", threshold, 0.0)
        if follower_quality is None:
            on = problem.is_tabular and not getattr(follower, "exact", False)
        else:
            on = check_bool("follower_quality", follower_quality)
        if on and problem.tabular_twin() is None:
            raise ValueError(f"follower_quality=True needs a tabular problem or one with a "
                             f"tabular twin; {problem!r} has neither")
        return cls(problem, threshold) if on else None

    def reset(self) -> None:
        """A new episode: warn again."""
        self._warned = set()

    def measure(self, x: np.ndarray, followers: Any) -> tuple[FollowerQuality, ...]:
        """The quality of each :class:`~bilevel_envs.step_record.FollowerStep` at ``x``; visits
        are the follower's rollout states (its discounted occupancy without rollouts)."""
        if self.twin is self.problem:
            models = [f.model for f in followers]
        else:
            models = self.twin.tabular_models(x, [f.context for f in followers])
        qualities = []
        for f, model in zip(followers, models):
            visits = None
            if f.rollouts is not None and f.rollouts.n_transitions:
                states = self.problem.twin_states(self.twin, f.rollouts.obs[f.rollouts.mask])
                visits = visit_counts(states, model.n_states)
            pi = policy_table(model, f.response.policy, self._observations)
            start = self.problem.lam * np.log(np.maximum(pi, _TINY))
            quality, _ = follower_quality(model, self.problem.lam, pi, visits, warm_start=start)
            if f.context not in self._warned and warn_if_far(
                    quality, self.threshold, f"context {f.context}", stacklevel=4):
                self._warned.add(f.context)
            qualities.append(quality)
        return tuple(qualities)
