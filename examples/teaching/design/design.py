"""Assignment 3 - Designing a contract for soft-optimal agents.   (starter file, version 1.0)

Fill in every part marked ``# TODO``. Keep the names and signatures: the grader calls them.
Until you fill them in, the functions return placeholders, so the grader still runs and tells
you what is missing:

    python -m bilevel_teaching design examples/teaching/design/design.py

``problem`` is a :class:`bilevel_envs.envs.contract_design.ContractDesign` of the ``"project"``
instance. Useful attributes: ``problem.spec.P`` ``(S, A, S)``, ``problem.spec.costs`` ``(S, A)``
(type multiplier 1), ``problem.spec.revenue`` ``(S, S)``, ``problem.spec.payment_index``
``(S, S)`` (which entry of ``x`` is paid on ``s → s'``), ``problem.cost_scales`` (one θ per
type), ``problem.context_probs``, ``problem.lam``, ``problem.gamma``. The constants ``WORK``,
``SUCCESS``, ``FAILURE`` (states) and ``LOW``, ``HIGH`` (actions) index them.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

import bilevel_envs  # noqa: F401  (registers the env ids)
from bilevel_envs.envs.contract_design.model import (  # noqa: F401  (for your solution)
    FAILURE,
    HIGH,
    LOW,
    SUCCESS,
    WORK,
)
from bilevel_envs.envs.contract_design.problem import ContractDesign
from leaders import AMD, HPGD, ZeroOrder  # noqa: F401  (pick one)
from leaders.base import Leader

#: the instance to design for (do not change): two agent types, soft best responses
PROBLEM_KWARGS = dict(instance="project", lam=0.05, cost_scales=(1.0, 1.5))


# ---------------------------------------------------------------------------- 2.1
def hard_bonus(problem: ContractDesign) -> float:
    """The smallest payment ``u`` on success (nothing on failure) for which every type weakly
    prefers high effort, if the types best-responded *hard* (λ → 0)."""
    # TODO (2.1)
    return 0.0


# ---------------------------------------------------------------------------- 2.2
def effort_probability(problem: ContractDesign, x: np.ndarray) -> np.ndarray:
    """The probability that each type chooses high effort in ``work`` under its soft best
    response to the contract ``x`` (question 1.1).

    Returns:
        ``(n_types,)`` array, in the order of ``problem.cost_scales``.
    """
    # TODO (2.2)
    return np.zeros(len(problem.cost_scales))


# ---------------------------------------------------------------------------- 2.3
def objective_closed_form(problem: ContractDesign, x: np.ndarray) -> float:
    """The principal's objective ``J(x)`` in closed form (no solver, no sampling)."""
    # TODO (2.3)
    return 0.0


# ---------------------------------------------------------------------------- 2.4
def design_contract(seed: int) -> Leader:
    """Design a contract for ``PROBLEM_KWARGS`` with a leader from ``leaders`` and return the
    trained leader (the grader reads ``leader.x``). Must be reproducible from ``seed`` and take
    less than a minute."""
    env = gym.make("bilevel/ContractDesign-v0", **PROBLEM_KWARGS, contexts="all", n_envs=4,
                   n_rollout_steps=1000)
    # TODO (2.4): choose the leader, where it starts (x0) and its hyperparameters; train it.
    leader = HPGD(env, learning_rate=0.05, seed=seed)
    return leader


if __name__ == "__main__":
    # Your design and the agents' response (not graded; the numbers for your report, 1.4).
    from bilevel_envs.envs.contract_design.closed_forms import project_optimum
    from bilevel_envs.exact import exact_objective

    leader = design_contract(seed=0)
    problem = leader.problem
    print("contract x   :", {name: round(float(pay), 4)
                             for name, pay in zip(problem.spec.payment_names(), leader.x)})
    print("J(x), exact  :", round(exact_objective(problem, leader.x), 4))
    print("J*           :", round(project_optimum(problem).objective, 4))
    print("P(high effort) per type:", np.round(effort_probability(problem, leader.x), 4))
