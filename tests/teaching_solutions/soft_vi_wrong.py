"""A deliberately wrong solution of assignment 1: ordinary (hard-max) value iteration with the
naive stopping rule and no entropy bonus. The grader must fail it (tests/test_grading.py)."""

from __future__ import annotations

import numpy as np

from bilevel_envs.tabular import TabularModel


def soft_max_value(q: np.ndarray, lam: float) -> np.ndarray:
    return q.max(axis=-1)  # wrong: the hard maximum


def policy_from_q(q: np.ndarray, lam: float) -> np.ndarray:
    return np.eye(q.shape[-1])[q.argmax(axis=-1)]  # wrong: greedy


def q_from_v(model: TabularModel, v: np.ndarray) -> np.ndarray:
    return model.r + model.gamma * np.einsum("sat,t->sa", model.P, v)


def soft_bellman_backup(model: TabularModel, v: np.ndarray, lam: float) -> np.ndarray:
    return soft_max_value(q_from_v(model, v), lam)


def soft_value_iteration(model: TabularModel, lam: float, tol: float = 1e-8,
                         max_iter: int = 1_000_000) -> tuple[np.ndarray, np.ndarray]:
    v = np.zeros(model.n_states)
    for _ in range(max_iter):
        v_new = soft_bellman_backup(model, v, lam)
        delta = np.max(np.abs(v_new - v))
        v = v_new
        if delta <= tol:  # wrong: guarantees only gamma/(1 - gamma) * tol
            break
    return v, policy_from_q(q_from_v(model, v), lam)


def soft_policy_evaluation(model: TabularModel, pi: np.ndarray, lam: float) -> np.ndarray:
    r_pi = (pi * model.r).sum(axis=-1)  # wrong: no entropy bonus
    P_pi = np.einsum("sa,sat->st", pi, model.P)
    return np.linalg.solve(np.eye(model.n_states) - model.gamma * P_pi, r_pi)
