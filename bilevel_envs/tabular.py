"""Exact tabular layer on plain arrays: finite models, soft solvers, policy evaluation and the
model's derivatives; :mod:`bilevel_envs.hypergradient` builds the exact leader value and
hypergradient of a follower policy on them.

These functions are the ground truth every estimator in the library is tested against;
:mod:`bilevel_envs.exact` applies them to a whole :class:`~bilevel_envs.problem.BilevelProblem`.

Every function here works on a single :class:`TabularModel` or on a *stack* of models
(:meth:`TabularModel.stack`, arrays with leading batch axes, e.g. one entry per context), so that
all contexts are solved at once with batched LAPACK calls.

Conventions (paper §2–3, maximisation):

* Follower: ``Q(s,a) = r(s,a) + γ Σ_s' P(s'|s,a) V(s')``,
  ``V(s) = Σ_a π(a|s)(Q(s,a) − λ log π(a|s))``;
  the optimum is ``π* = softmax(Q*/λ)`` and ``V* = λ logΣexp(Q*/λ)``.
* Termination: rows of ``P`` may sum to less than one; the missing mass is the probability that
  the episode ends after ``(s, a)`` (an absorbing goal is a zero row — zero continuation).
* Leader: ``J(x) = E_ξ Σ_s μ(s) V̄_ξ(s)`` with ``V̄`` the (unregularised) value of ``r̄`` under π*.
* Hypergradient (Thm 1–2, Prop 1): ``dπ*/dx = π* ∂x A / λ`` where ``∂x Q`` (policy held fixed)
  solves ``∂Q = ∂r + γ ∂P·V + γ P Σ_a π ∂Q``; then
  ``dV̄ = Σ_a π (∂A Ā / λ + ∂r̄ + γ̄ ∂P·V̄) + γ̄ P_π dV̄`` and ``dJ = μ·dV̄ + ∂μ·V̄``.
  :func:`bilevel_envs.hypergradient.leader_values` evaluates this in adjoint form (occupancy
  weights, vector solves only).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bilevel_envs.validation import check_choice, check_float, check_int

#: Default accuracy of the soft solvers: a bound on ``‖V − V*‖∞``.
DEFAULT_TOL = 1e-10
#: safety cap on the improvement steps of soft policy iteration (a handful suffice)
SOFT_PI_MAX_ITER = 500


@dataclass(eq=False)
class TabularModel:
    """A finite MDP ``M_{x,ξ}`` plus its derivatives in ``x``.

    Arrays may carry leading batch axes (a stack of models, see :meth:`stack`); shapes below are
    for one model with ``S`` states, ``A`` actions and ``d`` leader parameters.

    Attributes:
        P: ``(S, A, S)`` transition probabilities ``P(s'|s,a)``; a row sum below one is the
            probability of termination after ``(s, a)``.
        r: ``(S, A)`` expected follower reward ``E[r(s,a,s')]``.
        r_leader: ``(S, A)`` expected leader reward.
        mu: ``(S,)`` initial-state distribution.
        gamma: follower discount factor.
        leader_gamma: leader discount factor.
        dr: ``(S, A, d)`` total derivative of ``r`` in ``x`` (including ``Σ_s' ∂P r`` if rewards
            depend on ``s'`` and ``P`` on ``x``).
        dr_leader: ``(S, A, d)`` total derivative of ``r_leader``.
        dP: ``(S, A, S, d)`` derivative of ``P``, or ``None`` when ``P`` does not depend on ``x``.
        dmu: ``(S, d)`` derivative of ``mu``, or ``None`` when ``mu`` does not depend on ``x``.
    """

    P: np.ndarray
    r: np.ndarray
    r_leader: np.ndarray
    mu: np.ndarray
    gamma: float
    leader_gamma: float
    dr: np.ndarray
    dr_leader: np.ndarray
    dP: np.ndarray | None = None
    dmu: np.ndarray | None = None
    #: shared, lazily-filled cache for x-independent derived tables (e.g. sampling tables);
    #: models built from the same ``P`` may share it (see :meth:`with_updates`).
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def n_states(self) -> int:
        return self.P.shape[-3]

    @property
    def n_actions(self) -> int:
        return self.P.shape[-2]

    @property
    def n_params(self) -> int:
        return self.dr.shape[-1]

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.P.shape[:-3]

    def with_updates(self, *, share_transition_cache: bool = True, **changes: Any) -> TabularModel:
        """A copy with some fields replaced; keeps the transition cache if ``P`` is unchanged."""
        cache = self.cache if share_transition_cache and "P" not in changes else {}
        return dataclasses.replace(self, cache=cache, **changes)

    @staticmethod
    def stack(models: list[TabularModel], derivatives: bool = True) -> TabularModel:
        """Stack models of equal shapes along a new leading axis (e.g. one per context).

        With ``derivatives=False`` the derivative fields are zero placeholders (no copies): use
        it for objective-only computations.
        """
        if len({(m.gamma, m.leader_gamma) for m in models}) != 1:
            raise ValueError("stacked models must share gamma and leader_gamma")
        first = models[0]
        batch = (len(models),)

        def stacked(name: str) -> np.ndarray | None:
            arrays = [getattr(m, name) for m in models]
            if all(a is None for a in arrays):
                return None
            if not derivatives:
                return np.broadcast_to(0.0, batch + _first_not_none(arrays).shape)
            return np.stack([np.zeros_like(_first_not_none(arrays)) if a is None else a
                             for a in arrays])

        return TabularModel(
            P=np.stack([m.P for m in models]), r=np.stack([m.r for m in models]),
            r_leader=np.stack([m.r_leader for m in models]), mu=np.stack([m.mu for m in models]),
            gamma=first.gamma, leader_gamma=first.leader_gamma,
            dr=stacked("dr"), dr_leader=stacked("dr_leader"), dP=stacked("dP"),
            dmu=stacked("dmu"),
        )

    def check(self, atol: float = 1e-9) -> None:
        """Raise ``ValueError`` if shapes disagree or ``P``/``mu`` are not (sub-)distributions."""
        S, A = self.n_states, self.n_actions
        batch = self.batch_shape
        d = self.n_params
        expected = {
            "P": batch + (S, A, S), "r": batch + (S, A), "r_leader": batch + (S, A),
            "mu": batch + (S,), "dr": batch + (S, A, d), "dr_leader": batch + (S, A, d),
            "dP": batch + (S, A, S, d), "dmu": batch + (S, d),
        }
        for name, shape in expected.items():
            value = getattr(self, name)
            if value is not None and value.shape != shape:
                raise ValueError(f"TabularModel.{name} has shape {value.shape}, expected {shape}")
        if (self.P < -atol).any() or (self.P.sum(-1) > 1 + atol).any():
            raise ValueError("TabularModel.P rows must be non-negative with sums <= 1")
        if (self.mu < -atol).any() or not np.allclose(self.mu.sum(-1), 1.0, atol=atol):
            raise ValueError("TabularModel.mu must be a probability distribution")
        for name, g in (("gamma", self.gamma), ("leader_gamma", self.leader_gamma)):
            if not 0.0 <= g < 1.0:
                raise ValueError(f"TabularModel.{name} must be in [0, 1); got {g}")


def _first_not_none(items):
    return next(a for a in items if a is not None)


def sparse_transitions(model: TabularModel) -> tuple[np.ndarray, np.ndarray, int, int]:
    """``(next_states, probs, lo, up)``: successor lists ``(S, A, K)`` of a single model (K = the
    most successors of any ``(s, a)``; padding has probability 0) and the lower/upper bandwidth
    of its transition pattern. Cached on the model's shared cache."""
    cached = model.cache.get("sparse_transitions")
    if cached is not None and cached[0] is model.P:
        return cached[1]
    P = np.asarray(model.P, dtype=np.float64)
    nonzero = P > 0
    K = max(int(nonzero.sum(-1).max()), 1)
    next_states = np.argsort(~nonzero, axis=-1, kind="stable")[..., :K].astype(np.int64)
    probs = np.ascontiguousarray(np.take_along_axis(P, next_states, axis=-1))
    s, _, t = np.nonzero(nonzero)
    lo = int(max(0, (s - t).max())) if s.size else 0
    up = int(max(0, (t - s).max())) if s.size else 0
    # Read-only: the compiled solvers validate a read-only table once (_exact_kernels).
    next_states.setflags(write=False)
    probs.setflags(write=False)
    tables = (next_states, probs, lo, up)
    model.cache["sparse_transitions"] = (model.P, tables)
    return tables


def max_bandwidth(n_states: int) -> int:
    """The widest band (``lo + up + 1``) the compiled banded solvers take for ``n_states``
    states; wider patterns go to dense LAPACK, faster there."""
    return max(n_states // 3, 8)


def banded_transitions(model: TabularModel) -> tuple[np.ndarray, np.ndarray, int, int] | None:
    """:func:`sparse_transitions` of a single model whose transition pattern is banded enough
    for the compiled sparse solvers (bandwidth ``lo + up + 1 ≤ max(S/3, 8)``, e.g. a gridworld in
    row-major state order); ``None`` for a stack of models or a wide pattern (dense path)."""
    if model.batch_shape:
        return None
    tables = sparse_transitions(model)
    _, _, lo, up = tables
    return tables if lo + up + 1 <= max_bandwidth(model.n_states) else None


@dataclass
class SoftSolution:
    """Result of a soft (entropy-regularised) solve.

    Attributes:
        q: ``(..., S, A)`` soft Q-function.
        v: ``(..., S)`` soft value ``λ logΣexp(q/λ)``.
        pi: ``(..., S, A)`` policy ``softmax(q/λ)``.
        iterations: number of improvement steps / sweeps performed.
        residual: final soft-Bellman residual ``‖T V − V‖∞`` (max over the batch).
    """

    q: np.ndarray
    v: np.ndarray
    pi: np.ndarray
    iterations: int
    residual: float


# ---------------------------------------------------------------------- small numerics
def softmax_policy(q: np.ndarray, lam: float) -> np.ndarray:
    """``softmax(q/λ)`` over the last axis, computed stably."""
    z = q / lam
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def soft_max_value(q: np.ndarray, lam: float) -> np.ndarray:
    """``λ logΣ_a exp(q/λ)`` over the last axis, computed stably."""
    m = q.max(axis=-1, keepdims=True)
    return (m + lam * np.log(np.exp((q - m) / lam).sum(axis=-1, keepdims=True)))[..., 0]


def policy_entropy(pi: np.ndarray) -> np.ndarray:
    """Shannon entropy ``H(π(·|s))`` over the last axis (``0 log 0 = 0``)."""
    safe = np.where(pi > 0, pi, 1.0)
    return -(pi * np.log(safe)).sum(axis=-1)


def policy_transitions(P: np.ndarray, pi: np.ndarray) -> np.ndarray:
    """``P_π(s'|s) = Σ_a π(a|s) P(s'|s,a)``, shape ``(..., S, S)``."""
    return np.einsum("...sap,...sa->...sp", P, pi)


def expected_next(P: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``Σ_s' P(s'|s,a) v(s', ...)`` for ``v`` of shape ``(..., S)`` or ``(..., S, k)``."""
    S, A = P.shape[-3], P.shape[-2]
    flat = P.reshape(P.shape[:-3] + (S * A, S))
    if v.ndim == P.ndim - 2:  # (..., S)
        return (flat @ v[..., None])[..., 0].reshape(P.shape[:-3] + (S, A))
    out = flat @ v
    return out.reshape(P.shape[:-3] + (S, A, v.shape[-1]))


def solve_bellman(P_pi: np.ndarray, gamma: float, rhs: np.ndarray,
                  transpose: bool = False) -> np.ndarray:
    """Solve ``(I − γ P_π) y = rhs`` (or the transposed system), batched over leading axes.

    ``rhs`` has shape ``(..., S)`` or ``(..., S, k)``. Banded ``P_π`` (e.g. gridworlds in
    row-major state order) take an ``O(S l u)`` elimination without pivoting — exact here
    because ``I − γ P_π`` is strictly diagonally dominant — the rest dense LAPACK.
    """
    from bilevel_envs._exact_kernels import solve_bellman_banded

    S = P_pi.shape[-1]
    vector = rhs.ndim == P_pi.ndim - 1
    b = rhs[..., None] if vector else rhs
    batch = P_pi.shape[:-2]
    if b.shape[:-2] != batch:
        b = np.broadcast_to(b, batch + b.shape[-2:])
    P3 = P_pi.reshape((-1, S, S))
    b3 = b.reshape((-1, S, b.shape[-1])).astype(np.float64, copy=False)
    out, ok = solve_bellman_banded(P3, float(gamma), b3, transpose, max_bandwidth(S))
    if not ok:
        M = np.eye(S) - gamma * P3
        out = np.linalg.solve(np.swapaxes(M, -1, -2) if transpose else M, b3)
    out = out.reshape(batch + b.shape[-2:])
    return out[..., 0] if vector else out


# ---------------------------------------------------------------------- solvers
def soft_value_iteration(
    model: TabularModel, lam: float, tol: float = DEFAULT_TOL, warm_start: np.ndarray | None = None,
    max_iter: int = 1_000_000,
) -> SoftSolution:
    """Soft value iteration (paper Alg. 3): ``V ← λ logΣexp((r + γ P V)/λ)`` until converged.

    Args:
        model: a model or a stack of models.
        lam: entropy weight λ > 0.
        tol: stop when ``‖V − V*‖∞ ≤ tol`` is guaranteed (sweep change ``≤ tol (1−γ)/γ``).
        warm_start: a previous soft Q-function ``(..., S, A)``; its soft value starts the sweeps.
        max_iter: safety cap on the number of sweeps.

    Note: a contraction with modulus γ; at γ = 0.99 it needs thousands of sweeps for a tight
    ``tol``. :func:`soft_policy_iteration` reaches the same fixed point in a handful of steps.
    """
    lam, tol, max_iter = _check_solver_arguments(lam, tol, max_iter)
    gamma = model.gamma
    v = (np.zeros(model.batch_shape + (model.n_states,)) if warm_start is None
         else soft_max_value(check_warm_start(model, warm_start), lam))
    threshold = tol * (1 - gamma) / max(gamma, 1e-12)
    delta = np.inf
    it = 0
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported below
        for it in range(1, max_iter + 1):
            q = model.r + gamma * expected_next(model.P, v)
            v_new = soft_max_value(q, lam)
            delta = float(np.max(np.abs(v_new - v)))
            v = v_new
            check_finite(delta, "soft value iteration")
            if delta <= threshold:
                break
    q = model.r + gamma * expected_next(model.P, v)
    check_finite(q, "soft value iteration")
    return SoftSolution(q=q, v=soft_max_value(q, lam), pi=softmax_policy(q, lam),
                        iterations=it, residual=delta)


def soft_policy_iteration(
    model: TabularModel, lam: float, tol: float = DEFAULT_TOL, warm_start: np.ndarray | None = None,
    max_iter: int = SOFT_PI_MAX_ITER,
) -> SoftSolution:
    """Soft policy iteration: ``π ← softmax(Q/λ)``, then evaluate ``π`` exactly; repeat.

    The same fixed point as :func:`soft_value_iteration` (Newton's method on the soft Bellman
    equation: quadratic convergence near the optimum), one dense linear solve per step. It stops
    when the soft Bellman residual guarantees ``‖V − V*‖∞ ≤ tol`` or when the residual stops
    decreasing at round-off level.

    Args:
        model: a model or a stack of models.
        lam: entropy weight λ > 0.
        tol: target accuracy of the value function (sup norm).
        warm_start: a previous soft Q-function ``(..., S, A)`` (e.g. at a nearby ``x``).
        max_iter: safety cap on the number of improvement steps.
    """
    lam, tol, max_iter = _check_solver_arguments(lam, tol, max_iter)
    gamma = model.gamma
    q = (np.zeros(model.batch_shape + (model.n_states, model.n_actions)) if warm_start is None
         else check_warm_start(model, warm_start))
    threshold = tol * (1 - gamma)
    banded = banded_transitions(model)
    if banded is not None:
        # Banded model (e.g. a gridworld): the same iteration, compiled, on successor lists.
        from bilevel_envs._exact_kernels import soft_policy_iteration_sparse

        next_states, probs, lo, up = banded
        r = np.ascontiguousarray(model.r, dtype=np.float64)
        it, residual = soft_policy_iteration_sparse(next_states, probs, r, gamma, lam, q,
                                                    threshold, max_iter, lo, up)
        check_finite(residual, "soft policy iteration")
        check_finite(q, "soft policy iteration")
        return SoftSolution(q=q, v=soft_max_value(q, lam), pi=softmax_policy(q, lam),
                            iterations=it, residual=residual)
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported below
        q, it, residual = _policy_iteration_loop(model, lam, q, threshold, max_iter)
    check_finite(q, "soft policy iteration")
    return SoftSolution(q=q, v=soft_max_value(q, lam), pi=softmax_policy(q, lam),
                        iterations=it, residual=residual)


def _policy_iteration_loop(model: TabularModel, lam: float, q: np.ndarray, threshold: float,
                           max_iter: int) -> tuple[np.ndarray, int, float]:
    """Dense NumPy soft policy iteration (any model, stacks too): the reference path."""
    gamma = model.gamma
    residual, previous = np.inf, np.inf
    it = 0
    for it in range(1, max_iter + 1):
        pi = softmax_policy(q, lam)
        P_pi = policy_transitions(model.P, pi)
        r_pi = (pi * model.r).sum(-1) + lam * policy_entropy(pi)
        v = solve_bellman(P_pi, gamma, r_pi)
        q = model.r + gamma * expected_next(model.P, v)
        residual = float(np.max(np.abs(soft_max_value(q, lam) - v)))
        check_finite(residual, "soft policy iteration")
        if residual <= threshold or (residual >= previous and residual < 1e-9):
            break
        previous = residual
    return q, it, residual


SOLVERS = {"policy_iteration": soft_policy_iteration, "value_iteration": soft_value_iteration}


def solve_follower(model: TabularModel, lam: float, tol: float = DEFAULT_TOL,
                   warm_start: np.ndarray | None = None,
                   method: str = "policy_iteration") -> SoftSolution:
    """Solve the follower's regularised MDP with the named method (see :data:`SOLVERS`)."""
    solver = SOLVERS[check_choice("method", method, sorted(SOLVERS))]
    return solver(model, lam, tol=tol, warm_start=warm_start)


def evaluate_policy(model: TabularModel, pi: np.ndarray, reward: np.ndarray | None = None,
                    gamma: float | None = None, lam: float = 0.0) -> np.ndarray:
    """Exact value ``V^π`` of ``reward`` (default: the follower's ``r``) by one linear solve.

    Args:
        model: a model or stack of models.
        pi: ``(..., S, A)`` policy.
        reward: ``(..., S, A)`` reward; ``model.r`` if omitted (``model.r_leader`` for the leader).
        gamma: discount; ``model.gamma`` if omitted.
        lam: entropy bonus weight (``λ`` gives the soft value ``V^π_λ``).
    """
    reward = model.r if reward is None else reward
    gamma = model.gamma if gamma is None else gamma
    r_pi = (pi * reward).sum(-1)
    if lam:
        r_pi = r_pi + lam * policy_entropy(pi)
    return solve_bellman(policy_transitions(model.P, pi), gamma, r_pi)


def _check_solver_arguments(lam: Any, tol: Any, max_iter: Any) -> tuple[float, float, int]:
    return (check_float("lam (entropy weight λ)", lam, 0.0, low_open=True),
            check_float("tol", tol, 0.0, low_open=True), check_int("max_iter", max_iter, 0))


def check_warm_start(model: TabularModel, warm_start: Any) -> np.ndarray:
    """A fresh float64 copy of a soft Q-function warm start for ``model``.

    Raises:
        ValueError: naming ``warm_start`` and the expected shape, for the wrong shape or
            non-finite values (the compiled solvers must never see a mis-shaped table).
    """
    shape = model.batch_shape + (model.n_states, model.n_actions)
    try:
        q = np.array(warm_start, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"warm_start must be a soft Q-function of shape {shape}; got "
                         f"{type(warm_start).__name__}") from exc
    if q.shape != shape or not np.all(np.isfinite(q)):
        raise ValueError(f"warm_start must be a finite soft Q-function of shape {shape}; got "
                         f"shape {q.shape}" + ("" if q.shape != shape else " with NaN or inf"))
    return q


def check_finite(value: float | np.ndarray, what: str) -> None:
    """Raise ``FloatingPointError`` naming ``what`` (a solver) if ``value`` has a non-finite
    entry."""
    if not np.all(np.isfinite(value)):
        raise FloatingPointError(f"{what} diverged (non-finite values); check rewards and lam")
