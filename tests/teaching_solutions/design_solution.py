"""Reference solution of assignment 3 (contract design). Full marks in the grader."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

import bilevel_envs  # noqa: F401  (registers the env ids)
from bilevel_envs.envs.contract_design.model import FAILURE, HIGH, LOW, SUCCESS, WORK
from bilevel_envs.envs.contract_design.problem import ContractDesign
from leaders import HPGD

PROBLEM_KWARGS = {"instance": "project", "lam": 0.05, "cost_scales": (1.0, 1.5)}


def _instance(problem: ContractDesign):
    """``(Δp, Δc, R)`` of the project: success probabilities, effort costs and revenue."""
    p = problem.spec.P[WORK, :, SUCCESS]
    c = problem.spec.costs[WORK]
    return p[HIGH] - p[LOW], c[HIGH] - c[LOW], float(problem.spec.revenue[WORK, SUCCESS])


def _pay(problem: ContractDesign, x: np.ndarray) -> tuple[float, float]:
    """``(u, v)``: pay of a success and of a failure, discounted to the start of the period."""
    i, g = problem.spec.payment_index, problem.gamma
    return (x[i[WORK, SUCCESS]] + g * x[i[SUCCESS, WORK]],
            x[i[WORK, FAILURE]] + g * x[i[FAILURE, WORK]])


def hard_bonus(problem: ContractDesign) -> float:
    """Every type works hard iff ``Δp u − θ Δc ≥ 0``: ``u = max_θ θ Δc / Δp``."""
    dp, dc, _ = _instance(problem)
    return float(np.max(problem.cost_scales) * dc / dp)


def effort_probability(problem: ContractDesign, x: np.ndarray) -> np.ndarray:
    """``π(high|work) = σ((Δp (u − v) − θ Δc)/λ)`` per type: the continuation after the
    period is the same for both actions, so only this period's advantage matters."""
    dp, dc, _ = _instance(problem)
    u, v = _pay(problem, x)
    advantage = dp * (u - v) - np.asarray(problem.cost_scales) * dc
    return 1.0 / (1.0 + np.exp(-advantage / problem.lam))


def objective_closed_form(problem: ContractDesign, x: np.ndarray) -> float:
    """``J = Σ_ξ P(ξ) [p̄_ξ (R − u) − (1 − p̄_ξ) v] / (1 − γ²)``: a period lasts two steps."""
    dp, _, R = _instance(problem)
    u, v = _pay(problem, x)
    p_low = problem.spec.P[WORK, LOW, SUCCESS]
    p_bar = p_low + dp * effort_probability(problem, x)
    per_type = (p_bar * (R - u) - (1 - p_bar) * v) / (1 - problem.gamma ** 2)
    return float(problem.context_probs @ per_type)


def design_contract(seed: int) -> HPGD:
    """HPGD with every type served each step, started at the hard bonus: from x = 0 the
    gradient points to 'pay nothing' (no type works, J is flat-to-decreasing there)."""
    env = gym.make("bilevel/ContractDesign-v0", **PROBLEM_KWARGS, contexts="all", n_envs=4,
                   n_rollout_steps=1000)
    problem = env.unwrapped.problem
    x0 = np.zeros(problem.n_params)
    x0[problem.spec.payment_index[WORK, SUCCESS]] = hard_bonus(problem)
    return HPGD(env, learning_rate=0.05, seed=seed, x0=x0).learn(100)
