"""Assignment 1 - Soft value iteration: the follower.   (starter file, version 1.0)

Fill in every part marked ``# TODO``. Keep the function names and signatures: the grader calls
them. Until you fill them in, the functions return placeholders (zeros, uniform policies) so the
grader can still run and tell you what is missing:

    python -m bilevel_teaching soft_vi examples/teaching/soft_vi/soft_vi.py

Rules: NumPy only (no calls into ``bilevel_envs.tabular`` solvers, that is what you are writing);
``model`` is a :class:`bilevel_envs.tabular.TabularModel` with ``model.P`` ``(S, A, S)``,
``model.r`` ``(S, A)`` and ``model.gamma``. Rows of ``P`` may sum to less than one: the missing
mass is the probability that the episode ends (the value after the end is 0).
"""

from __future__ import annotations

import numpy as np

from bilevel_envs.tabular import TabularModel


# ---------------------------------------------------------------------------- 2.1
def soft_max_value(q: np.ndarray, lam: float) -> np.ndarray:
    """The soft maximum of each row of ``q``: ``λ log Σ_a exp(q[s, a] / λ)``.

    Args:
        q: ``(S, A)`` array.
        lam: the temperature λ > 0.

    Returns:
        ``(S,)`` array. It must stay finite for ``|q|/λ`` in the hundreds of thousands.
    """
    # TODO (2.1): compute it stably (exp overflows beyond ~709).
    return np.zeros(q.shape[0])


# ---------------------------------------------------------------------------- 2.2
def policy_from_q(q: np.ndarray, lam: float) -> np.ndarray:
    """The Boltzmann policy ``π(a|s) = softmax(q[s, ·] / λ)[a]``, row by row.

    Returns:
        ``(S, A)`` array whose rows sum to one.
    """
    # TODO (2.2): compute it stably.
    return np.full(q.shape, 1.0 / q.shape[1])


# ---------------------------------------------------------------------------- 2.3
def q_from_v(model: TabularModel, v: np.ndarray) -> np.ndarray:
    """``Q(s, a) = r(s, a) + γ Σ_s' P(s'|s, a) V(s')``, shape ``(S, A)``."""
    # TODO (2.3): one line with np.einsum or a reshape and a matrix product.
    return np.zeros_like(model.r)


def soft_bellman_backup(model: TabularModel, v: np.ndarray, lam: float) -> np.ndarray:
    """One application of the soft Bellman optimality operator:
    ``(T_λ V)(s) = λ log Σ_a exp(Q(s, a) / λ)`` with ``Q = q_from_v(model, V)``.

    Returns:
        ``(S,)`` array.
    """
    # TODO (2.3)
    return np.zeros(model.n_states)


# ---------------------------------------------------------------------------- 2.4
def soft_value_iteration(model: TabularModel, lam: float, tol: float = 1e-8,
                         max_iter: int = 1_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Soft value iteration (paper Alg. 3) from ``V = 0``.

    Stop as soon as the returned ``V`` is guaranteed to satisfy ``‖V − V*‖∞ ≤ tol`` (question
    1.3 tells you when that is); raise ``RuntimeError`` if ``max_iter`` sweeps are not enough.

    Returns:
        ``(V, π)``: ``V`` ``(S,)`` and the policy ``π = softmax(Q/λ)`` ``(S, A)`` of the
        ``Q = q_from_v(model, V)`` of the returned ``V``.
    """
    v = np.zeros(model.n_states)
    # TODO (2.4): iterate the backup until your stopping rule holds.
    return v, policy_from_q(q_from_v(model, v), lam)


# ---------------------------------------------------------------------------- 2.5
def soft_policy_evaluation(model: TabularModel, pi: np.ndarray, lam: float) -> np.ndarray:
    """The soft value of a fixed policy,
    ``V^π_λ(s) = E[Σ_t γ^t (r(s_t, a_t) + λ H(π(·|s_t))) | s_0 = s]``, by one linear solve.

    ``π`` may contain zeros (a deterministic policy): ``0 log 0 = 0``.

    Returns:
        ``(S,)`` array.
    """
    # TODO (2.5): build r_π + λ H(π) and P_π, then solve (I − γ P_π) V = r_π + λ H(π).
    return np.zeros(model.n_states)


if __name__ == "__main__":
    # A quick look at your solver on a small random MDP (not graded).
    from bilevel_envs.envs.garnet import GarnetProblem

    problem = GarnetProblem(seed=0, lam=0.5, gamma=0.9)
    model = problem.tabular(problem.x_init, 0)
    v, pi = soft_value_iteration(model, problem.lam, tol=1e-8)
    print("V  =", np.round(v, 4))
    print("pi =", np.round(pi, 3), sep="\n")
