"""Grader of assignment 3, ``design``: design a contract and explain the agents' response.

The instance is the repeated project of :mod:`bilevel_envs.envs.contract_design` with two agent
types (a diligent and a lazy one, ``cost_scales=(1, 1.5)``) and soft best responses
(``λ = 0.05``). The submission derives the agents' response in closed form (checked against the
exact soft best response of :class:`~bilevel_envs.tabular.ExactSolver` and against
:func:`~bilevel_envs.tabular.exact_objective`) and designs a contract with a leader from
``leaders`` (graded by ``J(x)/J*`` with ``J*`` from :func:`project_optimum`).

Tolerances: the closed forms are exact, so the comparisons allow the exact solver's accuracy
(``1e-12`` on values) and round-off: ``1e-8``.
"""

from __future__ import annotations

from functools import cache
from types import ModuleType
from typing import Any

import numpy as np

from bilevel_envs.envs.contract_design.closed_forms import cheapest_effort_bonus, project_optimum
from bilevel_envs.envs.contract_design.model import FAILURE, HIGH, LOW, SUCCESS, TWO_TYPES, WORK
from bilevel_envs.envs.contract_design.problem import ContractDesign
from bilevel_envs.exact import ExactSolver, exact_objective
from bilevel_teaching.core import (
    Check,
    CheckFailed,
    Outcome,
    WrittenPart,
    as_array,
    compare,
    failed,
    passed,
    require_function,
)

TITLE = "Assignment 3 - Designing a contract for soft-optimal agents (v1.0)"

WRITTEN = (
    WrittenPart("1.1", "the agent's soft best response in closed form", 2),
    WrittenPart("1.2", "why paying on failure never helps", 2),
    WrittenPart("1.3", "J is not concave: the no-contract trap", 2),
    WrittenPart("1.4", "report: your contract and the agents' response", 3),
)

#: the instance of the design question (the starter file repeats it)
PROBLEM_KWARGS: dict[str, Any] = dict(instance="project", lam=0.05, cost_scales=TWO_TYPES)
#: full marks from this fraction of the optimum J*, half marks from PARTIAL_FRACTION
TARGET_FRACTION = 0.98
PARTIAL_FRACTION = 0.90
ATOL = 1e-8

#: instances on which the closed forms are checked: (description, ContractDesign kwargs)
INSTANCES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("the assignment's instance (two types, lambda = 0.05)", PROBLEM_KWARGS),
    ("one type, lambda = 0.2", dict(instance="project", lam=0.2)),
    ("types (1, 2), effort_probs (0.3, 0.7), effort_costs (0.1, 0.4), lambda = 0.1, gamma = "
     "0.8", dict(instance="project", lam=0.1, gamma=0.8, cost_scales=(1.0, 2.0),
                 effort_probs=(0.3, 0.7), effort_costs=(0.1, 0.4))),
)


@cache
def _problem(index: int) -> ContractDesign:
    return ContractDesign(**INSTANCES[index][1])


def problem() -> ContractDesign:
    """A fresh copy of the assignment's problem."""
    return ContractDesign(**PROBLEM_KWARGS)


def _contracts(rng: np.random.Generator, n: int = 6) -> np.ndarray:
    """Random contracts ``(n, 4)`` that pay on every transition, plus the hard-bonus region."""
    x = rng.uniform(0.0, 1.5, size=(n, 4))
    x[0] = [0.75, 0.0, 0.0, 0.0]
    return x


def _parts(p: ContractDesign, x: np.ndarray) -> tuple[float, float]:
    """``(u, v)``: the discounted pay of a success and of a failure period."""
    i = p.spec.payment_index
    return (x[i[WORK, SUCCESS]] + p.gamma * x[i[SUCCESS, WORK]],
            x[i[WORK, FAILURE]] + p.gamma * x[i[FAILURE, WORK]])


def exact_effort(p: ContractDesign, x: np.ndarray) -> np.ndarray:
    """``(n_types,)`` the exact soft best response's probability of high effort in ``work``."""
    _, solution, _ = ExactSolver(p, tol=1e-13).solve(x)
    return solution.pi[:, WORK, HIGH]


def hard_bonus(p: ContractDesign) -> float:
    """The cheapest success pay that makes every type (weakly) prefer high effort."""
    probs, costs = p.spec.P[WORK, :, SUCCESS], p.spec.costs[WORK]
    return float(max(cheapest_effort_bonus(probs[LOW], probs[HIGH],
                                              theta * (costs[HIGH] - costs[LOW]))
                     for theta in p.cost_scales))


# ---------------------------------------------------------------------------- 2.1
def check_hard_bonus(submission: ModuleType, rng: np.random.Generator) -> Outcome:
    f = require_function(submission, "hard_bonus", "hard_bonus(problem)")
    for index, (description, _) in enumerate(INSTANCES):
        p = _problem(index)
        try:
            found = float(f(ContractDesign(**INSTANCES[index][1])))
        except (TypeError, ValueError):
            raise CheckFailed("hard_bonus must return a number") from None
        expected = hard_bonus(p)
        probs, costs = p.spec.P[WORK, :, SUCCESS], p.spec.costs[WORK]
        dp, dc = probs[HIGH] - probs[LOW], costs[HIGH] - costs[LOW]
        outcome = compare(np.array(found), np.array(expected), ATOL,
                          f"hard_bonus on {description}", {
                              "you made only the cheapest type work: every type must prefer "
                              "high effort, so take the largest bonus over the types.":
                                  min(p.cost_scales) * dc / dp,
                              "you divided by p_H instead of p_H - p_L: the incentive "
                              "constraint compares high effort with low effort.":
                                  max(p.cost_scales) * dc / probs[HIGH],
                              "you left out the type's cost multiplier theta: type xi pays "
                              "theta_xi * c(s, a).": dc / dp,
                          })
        if outcome.fraction < 1:
            return outcome
    return passed()


# ---------------------------------------------------------------------------- 2.2, 2.3
def _effort_diagnoses(p: ContractDesign, x: np.ndarray) -> dict[str, np.ndarray]:
    u, v = _parts(p, x)
    probs, costs = p.spec.P[WORK, :, SUCCESS], p.spec.costs[WORK]
    dp, dc = probs[HIGH] - probs[LOW], costs[HIGH] - costs[LOW]
    thetas = np.asarray(p.cost_scales)

    def logistic(z: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-z))

    i = p.spec.payment_index
    direct_u, direct_v = x[i[WORK, SUCCESS]], x[i[WORK, FAILURE]]
    return {
        "your agents respond hard (all or nothing); they are soft-optimal: pi(high) = "
        "sigmoid(advantage of high effort / lambda).":
            (dp * (u - v) - thetas * dc >= 0).astype(float),
        "you ignored the payments on success->work and failure->work: they arrive one step "
        "later, so they count with a factor gamma.":
            logistic((dp * (direct_u - direct_v) - thetas * dc) / p.lam),
        "you ignored the failure payments: low effort fails more often, so a failure payment "
        "rewards low effort.": logistic((dp * u - thetas * dc) / p.lam),
    }


def check_effort(submission: ModuleType, rng: np.random.Generator) -> Outcome:
    f = require_function(submission, "effort_probability", "effort_probability(problem, x)")
    contracts = _contracts(rng)
    for index, (description, kwargs) in enumerate(INSTANCES):
        p = _problem(index)
        for x in contracts:
            found = as_array(f(ContractDesign(**kwargs), x.copy()), (p.n_contexts,),
                             "effort_probability(problem, x)")
            outcome = compare(found, exact_effort(p, x), ATOL,
                              f"P(high effort in work) per type on {description} for x = "
                              f"{np.round(x, 3).tolist()}", _effort_diagnoses(p, x))
            if outcome.fraction < 1:
                return outcome
    return passed()


def check_objective(submission: ModuleType, rng: np.random.Generator) -> Outcome:
    f = require_function(submission, "objective_closed_form", "objective_closed_form(problem, x)")
    contracts = _contracts(rng)
    for index, (description, kwargs) in enumerate(INSTANCES):
        p = _problem(index)
        for x in contracts:
            try:
                found = float(f(ContractDesign(**kwargs), x.copy()))
            except (TypeError, ValueError):
                raise CheckFailed("objective_closed_form must return a number") from None
            expected = exact_objective(p, x, tol=1e-13)
            u, v = _parts(p, x)
            per_step = expected * (1 - p.gamma ** 2) / (1 - p.gamma)
            outcome = compare(np.array(found), np.array(expected), ATOL * max(1, abs(expected)),
                              f"J(x) on {description} for x = {np.round(x, 3).tolist()}", {
                                  "you divided by 1 - gamma; a period (work, then an outcome "
                                  "state) lasts two steps, so the discount per period is gamma^2 "
                                  "and the sum is 1/(1 - gamma^2).": per_step,
                              }, diagnosis_atol=1e-6 * max(1, abs(expected)))
            if outcome.fraction < 1:
                return outcome
    return passed()


# ---------------------------------------------------------------------------- 2.4, 2.5
_DESIGNS: dict[tuple[int, int], Any] = {}


def _design(submission: ModuleType, seed: int):
    """The submission's trained leader for ``seed`` (computed once per grading process)."""
    key = (id(submission), seed)
    if key not in _DESIGNS:
        f = require_function(submission, "design_contract", "design_contract(seed)")
        _DESIGNS[key] = f(seed)
    return _DESIGNS[key]


def _checked_design(submission: ModuleType, seed: int = 0):
    """``(leader, x)``, or :class:`CheckFailed` if the design did not come from a leader."""
    from leaders.base import Leader

    leader = _design(submission, seed)
    if not isinstance(leader, Leader):
        raise CheckFailed(f"design_contract(seed) must return the trained leader (an HPGD, AMD, "
                          f"ZeroOrder, ... from leaders); got {type(leader).__name__}")
    p = leader.problem
    expected = problem()
    same = (isinstance(p, ContractDesign) and p.instance == expected.instance
            and p.instance_kwargs == expected.instance_kwargs and p.lam == expected.lam
            and p.gamma == expected.gamma and p.x_max == expected.x_max
            and np.array_equal(p.cost_scales, expected.cost_scales)
            and np.array_equal(p.context_probs, expected.context_probs))
    if not same:
        raise CheckFailed(f"your leader optimised {p!r}; the assignment's problem is "
                          f"{expected!r} (build the env with PROBLEM_KWARGS)")
    return leader, expected.check_x(leader.x, name="leader.x")


def check_uses_leader(submission: ModuleType, rng: np.random.Generator) -> Outcome:
    leader, _ = _checked_design(submission)
    if leader.num_iterations < 1:
        return failed("the leader returned by design_contract has not been trained (0 "
                      "iterations): call leader.learn(...)")
    return passed(f"{type(leader).__name__}, {leader.num_iterations} iterations")


def check_design_quality(submission: ModuleType, rng: np.random.Generator) -> Outcome:
    _, x = _checked_design(submission)
    p = problem()
    optimum = project_optimum(p)
    value = exact_objective(p, x, tol=1e-13)
    baseline = exact_objective(p, np.zeros(p.n_params), tol=1e-13)
    fraction = value / optimum.objective
    u, v = _parts(p, x)
    summary = (f"J(x) = {value:.4f} for x = {np.round(x, 4).tolist()} (success pay u = {u:.4f}, "
               f"failure pay v = {v:.4f}): {100 * fraction:.1f} % of the optimum J* = "
               f"{optimum.objective:.4f}")
    if fraction >= TARGET_FRACTION:
        return passed(summary)
    hints = []
    if abs(value - baseline) <= 0.02 * optimum.objective:
        hints.append("that is what no contract at all earns. Either your gradient ignores the "
                     "agents' response (without the best-response term every payment is a pure "
                     "cost), or your leader started at x = 0, where neither type works hard and "
                     "dJ/dx says 'pay less' (question 1.3): start where the agents respond to "
                     "pay, e.g. at your hard bonus (leader argument x0).")
    if v > 0.01:
        hints.append("you pay on failure; question 1.2 shows that this never helps.")
    if not hints:
        hints.append("train longer or with a smaller learning rate; the optimum pays no more "
                     "than the revenue R = 2 on success.")
    message = (f"{summary}; needed {100 * TARGET_FRACTION:.0f} % for full marks, "
               f"{100 * PARTIAL_FRACTION:.0f} % for half.\nHint: " + " ".join(hints))
    return Outcome(0.5, message) if fraction >= PARTIAL_FRACTION else failed(message)


def check_reproducible(submission: ModuleType, rng: np.random.Generator) -> Outcome:
    leader, x = _checked_design(submission, seed=0)
    if leader.num_iterations < 1:
        return failed("train the leader first (see 2.4a); an untrained leader proves nothing")
    f = require_function(submission, "design_contract", "design_contract(seed)")
    again = f(0)
    if not np.array_equal(np.asarray(again.x), x):
        return failed("design_contract(0) returned a different contract the second time: pass "
                      "the seed to the leader (seed=seed) and use no other randomness.")
    return passed()


def check_explained(submission: ModuleType, rng: np.random.Generator) -> Outcome:
    _, x = _checked_design(submission)
    f = require_function(submission, "effort_probability", "effort_probability(problem, x)")
    p = problem()
    found = as_array(f(problem(), x.copy()), (p.n_contexts,), "effort_probability(problem, x)")
    return compare(found, exact_effort(p, x), ATOL,
                   f"the agents' probabilities of high effort at your design x = "
                   f"{np.round(x, 4).tolist()} (diligent type, lazy type)",
                   _effort_diagnoses(p, x))


CHECKS = (
    Check("2.1", "hard_bonus: cheapest bonus for hard-best-responding types", 2,
          check_hard_bonus),
    Check("2.2", "effort_probability: the agents' soft best response", 3, check_effort),
    Check("2.3", "objective_closed_form: J(x) in closed form", 2, check_objective),
    Check("2.4a", "design_contract: a trained leader from leaders/", 1, check_uses_leader),
    Check("2.4b", f"design_contract: J(x) >= {TARGET_FRACTION:.0%} of J*", 4,
          check_design_quality),
    Check("2.4c", "design_contract: reproducible from its seed", 1, check_reproducible),
    Check("2.5", "effort_probability at your design: the response explained", 1,
          check_explained),
)
