"""Numba kernels of exact solves on a banded model (successor lists): the follower's soft
policy iteration, and the exact leader value — that iteration and the leader's policy
evaluation in one compiled call.

The metric of a leader run evaluates ``J(x_t)`` thousands of times (Table 3: every 10 iterations
and on each of the last 1,000); per context this is one warm-started solve of the follower
(:func:`soft_policy_iteration_sparse`) and one banded solve for ``V̄``.
As in :mod:`bilevel_envs._kernels`, the public entry validates shapes and index ranges before the
compiled code runs.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from bilevel_envs._kernels import (
    _banded_solve_inplace,
    _indices,
    _offset_range,
    _require,
    _shape,
    _soft_policy_iteration_sparse,
    policy_band,
    softmax_rows,
)


@nb.njit(cache=True, nogil=True)
def _policy_solve(next_states, probs, pi, gamma, lo, up, rhs, transpose, out):
    """Solve ``(I − γ P_π) y = rhs`` (the transposed system if ``transpose``) for the columns of
    ``rhs`` ``(S, k)`` into ``out``, the band built from the successor lists."""
    S = pi.shape[0]
    band = np.empty((S, lo + up + 1))
    policy_band(next_states, probs, pi, gamma, lo, band)
    if transpose:  # (A^T)[i, j] = A[j, i]: the band with lower and upper widths swapped
        band_t = np.zeros((S, lo + up + 1))
        for i in range(S):
            for j in range(max(0, i - up), min(S, i + lo + 1)):
                band_t[i, j - i + up] = band[j, i - j + lo]
        _banded_solve_inplace(band_t, rhs.copy(), up, lo, out)
    else:
        _banded_solve_inplace(band, rhs.copy(), lo, up, out)


@nb.njit(cache=True, nogil=True)
def _policy_leader_value(next_states, probs, pi, r_leader, mu, leader_gamma, lo, up, v_leader):
    """``V̄ = (I − γ̄ P_π)^{-1} Σ_a π r̄`` into ``v_leader``; returns ``μ·V̄``."""
    S, A = pi.shape
    r_pi = np.empty((S, 1))
    for s in range(S):
        acc = 0.0
        for a in range(A):
            acc += pi[s, a] * r_leader[s, a]
        r_pi[s, 0] = acc
    v2 = np.empty((S, 1))
    _policy_solve(next_states, probs, pi, leader_gamma, lo, up, r_pi, False, v2)
    value = 0.0
    for s in range(S):
        v_leader[s] = v2[s, 0]
        value += mu[s] * v2[s, 0]
    return value


@nb.njit(cache=True, nogil=True)
def _leader_value_sparse(next_states, probs, r, r_leader, mu, gamma, leader_gamma, lam, q,
                         threshold, max_iter, lo, up, v_leader):
    """Soft policy iteration from ``q`` (updated in place to the follower's soft Q-function),
    then :func:`_policy_leader_value` of ``π = softmax(q/λ)``.

    Returns ``(μ·V̄, iterations, residual)``.
    """
    it, residual = _soft_policy_iteration_sparse(next_states, probs, r, gamma, lam, q, threshold,
                                                 max_iter, lo, up)
    pi = np.empty(q.shape)
    softmax_rows(q, lam, pi)
    value = _policy_leader_value(next_states, probs, pi, r_leader, mu, leader_gamma, lo, up,
                                 v_leader)
    return value, it, residual


#: Read-only successor tables already validated, by identity (the entry keeps them alive, so an
#: identity is never reused): a model's tables are checked once, not on every solve.
_VALIDATED: dict[tuple[int, int, int, int], tuple[np.ndarray, np.ndarray]] = {}
_MAX_VALIDATED = 64


def _check_model(next_states, probs, lo, up, tables):
    """Shapes, successor indices and bandwidth (``tables``: more ``(name, array)`` of shape
    ``(S, A)``); returns ``S``."""
    key = (id(next_states), id(probs), lo, up)
    if key not in _VALIDATED:
        _check_transitions(next_states, probs, lo, up)
        if not (next_states.flags.writeable or probs.flags.writeable):
            if len(_VALIDATED) >= _MAX_VALIDATED:
                _VALIDATED.clear()
            _VALIDATED[key] = (next_states, probs)
    S, A, _ = next_states.shape
    for name, array in tables:
        _shape(name, array, (S, A), "f")
    return S


def _check_transitions(next_states, probs, lo, up) -> None:
    _shape("next_states", next_states, (None, None, None), "iu")
    _shape("probs", probs, next_states.shape, "f")
    _indices("next_states", next_states, 0, next_states.shape[0] - 1)
    low, high = _offset_range(next_states, probs)
    _require(lo >= 0 and up >= 0 and low >= -lo and high <= up,
             f"lo, up = {lo}, {up} do not cover the bandwidth of the transitions")


def soft_policy_iteration_sparse(next_states, probs, r, gamma, lam, q, threshold, max_iter,
                                 lo, up):
    """Soft policy iteration on a sparse banded model (validated; see
    :func:`bilevel_envs._kernels._soft_policy_iteration_sparse`); ``q`` (the warm start) is
    updated in place. Returns ``(iterations, residual)``."""
    _check_model(next_states, probs, lo, up, (("r", r), ("q (warm start)", q)))
    return _soft_policy_iteration_sparse(next_states, probs, r, gamma, lam, q, threshold,
                                         max_iter, lo, up)


def policy_leader_value(next_states, probs, pi, r_leader, mu, leader_gamma, lo, up):
    """The leader's exact value ``μ·V̄`` of a follower policy ``pi`` on a sparse banded model
    (validated; see :func:`_policy_leader_value`). Returns ``(μ·V̄, V̄)``."""
    S = _check_model(next_states, probs, lo, up, (("pi", pi), ("r_leader", r_leader)))
    _shape("mu", mu, (S,), "f")
    v_leader = np.empty(S)
    value = _policy_leader_value(next_states, probs, pi, r_leader, mu, leader_gamma, lo, up,
                                 v_leader)
    return value, v_leader


def leader_value_sparse(next_states, probs, r, r_leader, mu, gamma, leader_gamma, lam, q,
                        threshold, max_iter, lo, up):
    """The leader's exact value ``μ·V̄`` when the follower plays its soft best response, on a
    sparse banded model (validated; see :func:`_leader_value_sparse`). ``q`` (the warm start)
    is overwritten with the follower's soft Q-function.

    Returns ``(μ·V̄, V̄, iterations, residual)``.
    """
    S = _check_model(next_states, probs, lo, up,
                     (("r", r), ("r_leader", r_leader), ("q (warm start)", q)))
    _shape("mu", mu, (S,), "f")
    v_leader = np.empty(S)
    value, it, residual = _leader_value_sparse(next_states, probs, r, r_leader, mu, gamma,
                                               leader_gamma, lam, q, threshold, max_iter, lo, up,
                                               v_leader)
    return value, v_leader, it, residual


def policy_solver(next_states, probs, pi, lo, up):
    """``solve(γ, rhs, transpose=False)``: ``(I − γ P_π)^{-1} rhs`` (or ``^{-T}``) on a sparse
    banded model, the model and ``pi`` validated once (see :func:`_policy_solve`); ``rhs`` is
    ``(S,)`` or ``(S, k)``."""
    S = _check_model(next_states, probs, lo, up, (("pi", pi),))

    def solve(gamma, rhs, transpose=False):
        b = np.ascontiguousarray(np.reshape(rhs, (S, -1)), dtype=np.float64)
        _shape("rhs", b, (S, None), "f")
        out = np.empty(b.shape)
        _policy_solve(next_states, probs, pi, float(gamma), lo, up, b, bool(transpose), out)
        return out[:, 0] if np.ndim(rhs) == 1 else out

    return solve
