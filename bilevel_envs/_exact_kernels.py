"""Numba kernels of exact solves on banded models: ``(I − γ P_π) y = b`` by elimination inside
the band (for dense ``P_π`` and for successor lists), the follower's soft policy iteration, and
the exact leader value — that iteration and the leader's policy evaluation in one compiled call.

The metric of a leader run evaluates ``J(x_t)`` thousands of times (Table 3: every 10 iterations
and on each of the last 1,000); per context this is one warm-started solve of the follower
(:func:`soft_policy_iteration_sparse`) and one banded solve for ``V̄``.
As in :mod:`bilevel_envs._kernels`, the public entry validates shapes and index ranges before the
compiled code runs.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from bilevel_envs._kernels import _indices, _offset_range, _require, _shape


@nb.njit(cache=True, nogil=True)
def _bandwidth(P):
    l = 0
    u = 0
    S = P.shape[0]
    for i in range(S):
        for j in range(S):
            if P[i, j] != 0.0:
                if i - j > l:
                    l = i - j
                if j - i > u:
                    u = j - i
    return l, u


@nb.njit(cache=True, nogil=True)
def _solve_bellman_banded(P_pi, gamma, rhs, transpose, max_band):
    """Solve ``(I − γ P_π) y = rhs`` (transposed if ``transpose``) for a batch of banded ``P_π``.

    ``P_pi``: ``(B, S, S)``; ``rhs``: ``(B, S, k)``. ``I − γ P_π`` is strictly diagonally
    dominant by rows (its transpose by columns) for sub-stochastic ``P_π`` and ``γ < 1``, so
    Gaussian elimination needs no pivoting and fill-in stays inside the band: ``O(S · l · u)``
    work. Returns ``(y, ok)``; ``ok`` is False (nothing solved) when a band is wider than
    ``max_band``.
    """
    B, S, _ = P_pi.shape
    k = rhs.shape[2]
    out = np.empty((B, S, k))
    for b in range(B):
        lo, up = _bandwidth(P_pi[b])
        if transpose:
            lo, up = up, lo
        if lo + up + 1 > max_band:
            return out, False
        A = np.zeros((S, lo + up + 1))  # A[i, j − i + lo] = (I − γ P_π)[i, j] (or [j, i])
        for i in range(S):
            for j in range(max(0, i - lo), min(S, i + up + 1)):
                A[i, j - i + lo] = -gamma * (P_pi[b, j, i] if transpose else P_pi[b, i, j])
            A[i, lo] += 1.0
        _banded_solve_inplace(A, rhs[b].copy(), lo, up, out[b])
    return out, True


@nb.njit(cache=True, nogil=True)
def _banded_solve_inplace(A, y, lo, up, out):
    """Solve the banded system stored as ``A[i, j − i + lo]`` for the columns of ``y`` (S, k)
    into ``out``, by elimination without pivoting (``A`` and ``y`` are overwritten)."""
    S = A.shape[0]
    k = y.shape[1]
    for p in range(S):  # forward elimination inside the band
        pivot = A[p, lo]
        for i in range(p + 1, min(S, p + lo + 1)):
            f = A[i, p - i + lo] / pivot
            if f != 0.0:
                for j in range(p + 1, min(S, p + up + 1)):
                    A[i, j - i + lo] -= f * A[p, j - p + lo]
                for c in range(k):
                    y[i, c] -= f * y[p, c]
    for i in range(S - 1, -1, -1):  # back substitution
        for c in range(k):
            acc = y[i, c]
            for j in range(i + 1, min(S, i + up + 1)):
                acc -= A[i, j - i + lo] * out[j, c]
            out[i, c] = acc / A[i, lo]


@nb.njit(cache=True, nogil=True)
def softmax_rows(q, lam, pi):
    """``π = softmax(q/λ)`` row by row into ``pi`` (``(S, A)``)."""
    S, A = q.shape
    for s in range(S):
        m = q[s, 0]
        for a in range(1, A):
            m = max(m, q[s, a])
        z = 0.0
        for a in range(A):
            pi[s, a] = np.exp((q[s, a] - m) / lam)
            z += pi[s, a]
        for a in range(A):
            pi[s, a] /= z


@nb.njit(cache=True, nogil=True)
def policy_band(next_states, probs, pi, gamma, lo, band):
    """The band of ``I − γ P_π`` (``band[s, s' − s + lo]``) from successor lists."""
    S, A, K = probs.shape
    band[:, :] = 0.0
    for s in range(S):
        band[s, lo] += 1.0
        for a in range(A):
            for k in range(K):
                w = pi[s, a] * probs[s, a, k]
                if w != 0.0:
                    band[s, next_states[s, a, k] - s + lo] -= gamma * w


@nb.njit(cache=True, nogil=True)
def _soft_policy_iteration_sparse(next_states, probs, r, gamma, lam, q, threshold, max_iter,
                                 lo, up):
    """Soft policy iteration on a sparse model with banded ``P_π`` (see ``tabular.py``).

    ``next_states``/``probs``: ``(S, A, K)`` successor lists; ``q``: ``(S, A)`` start (updated in
    place). Each step: ``π = softmax(q/λ)``; solve ``(I − γ P_π) v = Σ_a π r + λ H(π)`` by banded
    elimination; ``q = r + γ P v``. Stops when ``max_s |λ logΣexp(q/λ) − v| ≤ threshold`` or when
    that residual stops decreasing below 1e-9. Returns ``(iterations, residual)``.
    """
    S, A, K = probs.shape
    pi = np.empty((S, A))
    r_pi = np.empty((S, 1))
    v2 = np.empty((S, 1))
    band = np.empty((S, lo + up + 1))
    residual = np.inf
    previous = np.inf
    it = 0
    for it in range(1, max_iter + 1):
        softmax_rows(q, lam, pi)
        for s in range(S):  # r_π = Σ_a π r + λ H(π)
            acc = 0.0
            for a in range(A):
                if pi[s, a] > 0.0:
                    acc += pi[s, a] * (r[s, a] - lam * np.log(pi[s, a]))
            r_pi[s, 0] = acc
        policy_band(next_states, probs, pi, gamma, lo, band)
        _banded_solve_inplace(band, r_pi, lo, up, v2)
        v = v2[:, 0]
        residual = 0.0
        for s in range(S):  # q = r + γ P v, residual of the soft Bellman operator
            m = -np.inf
            for a in range(A):
                acc = 0.0
                for k in range(K):
                    acc += probs[s, a, k] * v[next_states[s, a, k]]
                q[s, a] = r[s, a] + gamma * acc
                m = max(m, q[s, a])
            z = 0.0
            for a in range(A):
                z += np.exp((q[s, a] - m) / lam)
            gap = abs(m + lam * np.log(z) - v[s])
            residual = max(residual, gap) if np.isfinite(gap) else np.inf
        if not np.isfinite(residual):
            break
        if residual <= threshold or (residual >= previous and residual < 1e-9):
            break
        previous = residual
    return it, residual


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
    :func:`_soft_policy_iteration_sparse`); ``q`` (the warm start) is
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


def solve_bellman_banded(P_pi, gamma, rhs, transpose, max_band):
    """Banded solve of ``(I − γ P_π) y = rhs`` for a batch (validated; see
    :func:`_solve_bellman_banded`)."""
    _shape("P_pi", P_pi, (None, None, None), "f")
    B, S, S2 = P_pi.shape
    _require(S == S2, f"P_pi must be square in its last two axes; got {P_pi.shape}")
    _shape("rhs", rhs, (B, S, None), "f")
    return _solve_bellman_banded(P_pi, gamma, rhs, transpose, max_band)
