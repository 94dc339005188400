"""A deliberately wrong solution of assignment 3: a designer who ignores the agents' response.

* ``hard_bonus`` pays only what the diligent type needs;
* ``effort_probability`` treats the agents as hard best responders;
* ``objective_closed_form`` discounts periods by γ instead of γ²;
* ``design_contract`` ascends J holding the agents' policies fixed (HPGD without the
  best-response term): since every payment costs the principal money, it pays nothing.

The grader must fail it (tests/test_grading.py)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

import bilevel_envs  # noqa: F401  (registers the env ids)
from bilevel_envs.envs.contract_design.model import FAILURE, HIGH, LOW, SUCCESS, WORK
from bilevel_envs.envs.contract_design.problem import ContractDesign
from bilevel_envs.rollouts import Rollouts
from leaders import HPGD
from leaders.estimators import every_visit_estimate

PROBLEM_KWARGS = {"instance": "project", "lam": 0.05, "cost_scales": (1.0, 1.5)}


def _instance(problem: ContractDesign):
    p, c = problem.spec.P[WORK, :, SUCCESS], problem.spec.costs[WORK]
    return p[HIGH] - p[LOW], c[HIGH] - c[LOW], float(problem.spec.revenue[WORK, SUCCESS])


def _pay(problem: ContractDesign, x: np.ndarray) -> tuple[float, float]:
    i, g = problem.spec.payment_index, problem.gamma
    return (x[i[WORK, SUCCESS]] + g * x[i[SUCCESS, WORK]],
            x[i[WORK, FAILURE]] + g * x[i[FAILURE, WORK]])


def hard_bonus(problem: ContractDesign) -> float:
    dp, dc, _ = _instance(problem)
    return float(np.min(problem.cost_scales) * dc / dp)  # wrong: only the diligent type works


def effort_probability(problem: ContractDesign, x: np.ndarray) -> np.ndarray:
    dp, dc, _ = _instance(problem)
    u, v = _pay(problem, x)
    advantage = dp * (u - v) - np.asarray(problem.cost_scales) * dc
    return (advantage >= 0).astype(float)  # wrong: hard best response


def objective_closed_form(problem: ContractDesign, x: np.ndarray) -> float:
    dp, _, R = _instance(problem)
    u, v = _pay(problem, x)
    p_bar = problem.spec.P[WORK, LOW, SUCCESS] + dp * effort_probability(problem, x)
    per_type = (p_bar * (R - u) - (1 - p_bar) * v) / (1 - problem.gamma)  # wrong: gamma^2
    return float(problem.context_probs @ per_type)


class MyopicHPGD(HPGD):
    """HPGD that keeps only the direct term E[Σ γ^t ∂r̄]: the agents' policy is taken as fixed."""

    def estimate_gradient(self) -> tuple[np.ndarray, dict[str, Any]]:
        _, reward, _, truncated, info = self.env.step(self.x)
        n_envs = self.env.unwrapped.n_envs
        grad = np.zeros(self.problem.n_params)
        for i, (context, weight) in enumerate(zip(info["contexts"], info["context_weights"])):
            chains = slice(i * n_envs, (i + 1) * n_envs)
            rollouts = Rollouts.from_dict({k: v[chains] for k, v in info["rollouts"].items()})
            terms = every_visit_estimate(self.problem, self.x, context, rollouts)
            terms.parts = [part for part in terms.parts if part[0] == "leader_reward"]
            grad += weight * terms.total()
        return grad, {"objective_estimate": reward, "contexts": info["contexts"],
                      "truncated": truncated}


def design_contract(seed: int) -> HPGD:
    env = gym.make("bilevel/ContractDesign-v0", **PROBLEM_KWARGS, contexts="all", n_envs=4,
                   n_rollout_steps=1000)
    problem = env.unwrapped.problem
    x0 = np.zeros(problem.n_params)
    x0[problem.spec.payment_index[WORK, SUCCESS]] = 0.75
    return MyopicHPGD(env, learning_rate=0.05, seed=seed, x0=x0).learn(100)
