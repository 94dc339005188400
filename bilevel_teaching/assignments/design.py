"""Grader of assignment 3, ``design``: design a contract and explain the agents' response.

The instance is the repeated project of :mod:`bilevel_envs.envs.contract_design` with two agent
types (a diligent and a lazy one, ``cost_scales=(1, 1.5)``) and soft best responses
(``λ = 0.05``). The submission derives the agents' response in closed form (checked against the
exact soft best response of :class:`~bilevel_envs.tabular.ExactSolver` and against
:func:`~bilevel_envs.tabular.exact_objective`) and designs a contract with a leader from
``leaders`` (graded by ``J(x)/J*`` with ``J*`` from :func:`project_optimum`).

Tolerances: the closed forms are exact, so the comparisons allow the exact solver's accuracy
(``1e-12`` on values) and round-off: ``1e-8``.

The grading child only returns what the submission computed (numbers, and for the designed
contract a summary of the trained leader: its type, iterations, problem and ``x``); ``J(x)`` and
the agents' exact response are computed here from the returned ``x``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from bilevel_envs.envs.contract_design.closed_forms import (
    cheapest_effort_bonus,
    project_optimum,
)
from bilevel_envs.envs.contract_design.model import (
    FAILURE,
    HIGH,
    LOW,
    SUCCESS,
    TWO_TYPES,
    WORK,
)
from bilevel_envs.envs.contract_design.problem import ContractDesign
from bilevel_envs.exact import ExactSolver, exact_objective
from bilevel_teaching.calls import Build, Call, Results, Unconvertible, as_array
from bilevel_teaching.comparisons import compare
from bilevel_teaching.core import (
    Check,
    CheckFailed,
    Context,
    FollowsFrom,
    Outcome,
    Plan,
    SubmissionError,
    WrittenPart,
    failed,
    passed,
)
from bilevel_teaching.import_guard import ImportPolicy
from bilevel_teaching.student_objects import problem_summary

TITLE = "Assignment 3 - Designing a contract for soft-optimal agents (v1.0)"

WRITTEN = (
    WrittenPart("1.1", "the agent's soft best response in closed form", 2),
    WrittenPart("1.2", "why paying on failure never helps", 2),
    WrittenPart("1.3", "J is not concave: the no-contract trap", 2),
    WrittenPart("1.4", "report: your contract and the agents' response", 3),
)

_EXACT = "it computes the exact answers this assignment asks you to derive"
#: what a submission may import: NumPy, SciPy, Gymnasium and the library's envs and leaders,
#: but not the exact solvers, the closed forms of the contract problem or the tabular solvers
IMPORTS = ImportPolicy(
    allow=("numpy", "scipy", "gymnasium", "bilevel_envs", "leaders",
           "bilevel_envs.tabular:TabularModel"),
    deny={"bilevel_envs.exact": _EXACT,
          "bilevel_envs.envs.contract_design.closed_forms": _EXACT,
          "bilevel_envs.tabular": _EXACT, "bilevel_envs.followers": _EXACT},
    deny_methods={"leaders.base:Leader.exact_objective": _EXACT,
                  "leaders.base:Leader.exact_context_values": _EXACT,
                  "bilevel_envs.leader_env:LeaderEnv.exact_values": _EXACT})

SIGNATURES = {
    "hard_bonus": "hard_bonus(problem)",
    "effort_probability": "effort_probability(problem, x)",
    "objective_closed_form": "objective_closed_form(problem, x)",
    "design_contract": "design_contract(seed)",
}

#: the instance of the design question (the starter file repeats it)
PROBLEM_KWARGS: dict[str, Any] = {"instance": "project", "lam": 0.05, "cost_scales": TWO_TYPES}
#: full marks from this fraction of the optimum J*, half marks from PARTIAL_FRACTION
TARGET_FRACTION = 0.98
PARTIAL_FRACTION = 0.90
ATOL = 1e-8

#: instances on which the closed forms are checked: (description, ContractDesign kwargs)
INSTANCES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("the assignment's instance (two types, lambda = 0.05)", PROBLEM_KWARGS),
    ("one type, lambda = 0.2", {"instance": "project", "lam": 0.2}),
    ("types (1, 2), effort_probs (0.3, 0.7), effort_costs (0.1, 0.4), lambda = 0.1, gamma = 0.8",
     {"instance": "project", "lam": 0.1, "gamma": 0.8, "cost_scales": (1.0, 2.0),
      "effort_probs": (0.3, 0.7), "effort_costs": (0.1, 0.4)}),
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


def _build(index: int) -> Build:
    """A fresh copy of instance ``index`` for the submission."""
    return Build("contract_design", dict(INSTANCES[index][1]))


# ---------------------------------------------------------------------------- 2.1
def plan_hard_bonus(context: Context) -> Plan:
    def judge(results: Results) -> Outcome:
        for index, (description, _) in enumerate(INSTANCES):
            p = _problem(index)
            found = results.number(index, "hard_bonus")
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

    return Plan([Call("hard_bonus", (_build(i),), returns="number")
                 for i in range(len(INSTANCES))], judge)


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


def _cases(context: Context) -> list[tuple[int, np.ndarray]]:
    """(instance, contract) pairs of the checks 2.2 and 2.3."""
    contracts = _contracts(context.rng)
    return [(index, x) for index in range(len(INSTANCES)) for x in contracts]


def plan_effort(context: Context) -> Plan:
    cases = _cases(context)

    def judge(results: Results) -> Outcome:
        for k, (index, x) in enumerate(cases):
            p = _problem(index)
            found = results.array(k, (p.n_contexts,), "effort_probability(problem, x)")
            outcome = compare(found, exact_effort(p, x), ATOL,
                              f"P(high effort in work) per type on {INSTANCES[index][0]} for "
                              f"x = {np.round(x, 3).tolist()}", _effort_diagnoses(p, x))
            if outcome.fraction < 1:
                return outcome
        return passed()

    return Plan([Call("effort_probability", (_build(i), x)) for i, x in cases], judge)


def objective_from_effort(p: ContractDesign, x: np.ndarray, effort: np.ndarray) -> float:
    """``J(x)`` in closed form for the given probabilities of high effort (one per type)."""
    u, v = _parts(p, x)
    probs = p.spec.P[WORK, :, SUCCESS]
    revenue = float(p.spec.revenue[WORK, SUCCESS])
    p_bar = probs[LOW] + (probs[HIGH] - probs[LOW]) * effort
    per_type = (p_bar * (revenue - u) - (1 - p_bar) * v) / (1 - p.gamma ** 2)
    return float(p.context_probs @ per_type)


def plan_objective(context: Context) -> Plan:
    cases = _cases(context)
    calls = [Call("objective_closed_form", (_build(i), x), returns="number") for i, x in cases]
    # probes: the submission's own effort probabilities at the same contracts
    calls += [Call("effort_probability", (_build(i), x), probe=True) for i, x in cases]

    def judge(results: Results) -> Outcome:
        for k, (index, x) in enumerate(cases):
            p = _problem(index)
            found = results.number(k, "objective_closed_form")
            expected = exact_objective(p, x, tol=1e-13)
            per_step = expected * (1 - p.gamma ** 2) / (1 - p.gamma)
            atol = ATOL * max(1, abs(expected))
            outcome = compare(np.array(found), np.array(expected), atol,
                              f"J(x) on {INSTANCES[index][0]} for x = "
                              f"{np.round(x, 3).tolist()}", {
                                  "you divided by 1 - gamma; a period (work, then an outcome "
                                  "state) lasts two steps, so the discount per period is gamma^2 "
                                  "and the sum is 1/(1 - gamma^2).": per_step,
                              }, diagnosis_atol=1e-6 * max(1, abs(expected)))
            if outcome.fraction < 1:
                effort = results.probe(len(cases) + k, (p.n_contexts,))
                if effort is not None and \
                        abs(objective_from_effort(p, x, effort) - found) <= atol:
                    return failed(outcome.feedback + "\nJ(x) is right for the effort "
                                  "probabilities your effort_probability returns.", cause="2.2")
                return outcome
        return passed()

    return Plan(calls, judge)


# ---------------------------------------------------------------------------- 2.4, 2.5
_EXPECTED_PROBLEM = problem_summary(problem())


def trained_design(results: Results, call: int = 0) -> tuple[dict[str, Any], np.ndarray]:
    """``(leader summary, x)`` of a ``design_contract`` call, validated; :class:`CheckFailed`
    if the design did not come from a leader on the assignment's problem."""
    raw = results.values[call]
    if isinstance(raw, Unconvertible):
        raise CheckFailed(f"design_contract(seed) must return the trained leader (an HPGD, AMD, "
                          f"ZeroOrder, ... from leaders); got {raw.reason}")
    summary = results.value(call)
    if not (isinstance(summary, dict) and isinstance(summary.get("type"), str)
            and type(summary.get("num_iterations")) is int
            and isinstance(summary.get("problem"), dict)):
        raise CheckFailed("design_contract(seed) returned something that is not a trained leader")
    if summary["problem"] != _EXPECTED_PROBLEM:
        raise CheckFailed(f"your leader optimised {summary['problem']}; the assignment's problem "
                          f"is {_EXPECTED_PROBLEM} (build the env with PROBLEM_KWARGS)")
    expected = problem()
    x = as_array(summary.get("x"), (expected.n_params,), "leader.x")
    try:
        x = expected.check_x(x, name="leader.x")
    except ValueError as error:
        raise CheckFailed(str(error)) from None
    return summary, x


def _design_of(context: Context) -> tuple[dict[str, Any], np.ndarray]:
    """The design returned in check 2.4a; :class:`FollowsFrom` if there is none."""
    try:
        return trained_design(context.results_of("2.4a"))
    except (CheckFailed, SubmissionError):
        raise FollowsFrom("2.4a") from None


def plan_uses_leader(context: Context) -> Plan:
    def judge(results: Results) -> Outcome:
        summary, _ = trained_design(results)
        if summary["num_iterations"] < 1:
            return failed("the leader returned by design_contract has not been trained (0 "
                          "iterations): call leader.learn(...)")
        return passed(f"{summary['type']}, {summary['num_iterations']} iterations")

    return Plan([Call("design_contract", (0,), returns="leader")], judge)


def plan_design_quality(context: Context) -> Plan:
    _, x = _design_of(context)

    def judge(results: Results) -> Outcome:
        p = problem()
        optimum = project_optimum(p)
        value = exact_objective(p, x, tol=1e-13)
        baseline = exact_objective(p, np.zeros(p.n_params), tol=1e-13)
        fraction = value / optimum.objective
        u, v = _parts(p, x)
        summary = (f"J(x) = {value:.6f} for x = {np.round(x, 4).tolist()} (success pay u = "
                   f"{u:.4f}, failure pay v = {v:.4f}): {100 * fraction:.2f} % of the optimum "
                   f"J* = {optimum.objective:.6f}")
        if fraction >= TARGET_FRACTION:
            return passed(summary)
        hints = []
        if abs(value - baseline) <= 0.02 * optimum.objective:
            hints.append("that is what no contract at all earns. Either your gradient ignores the "
                         "agents' response (without the best-response term every payment is a "
                         "pure cost), or your leader started at x = 0, where neither type works "
                         "hard and dJ/dx says 'pay less' (question 1.3): start where the agents "
                         "respond to pay, e.g. at your hard bonus (leader argument x0).")
        if v > 0.01:
            hints.append("you pay on failure; question 1.2 shows that this never helps.")
        if not hints:
            hints.append("train longer or with a smaller learning rate; the optimum pays no more "
                         "than the revenue R = 2 on success.")
        message = (f"{summary}; needed {100 * TARGET_FRACTION:.0f} % for full marks, "
                   f"{100 * PARTIAL_FRACTION:.0f} % for half.\nHint: " + " ".join(hints))
        return Outcome(0.5, message) if fraction >= PARTIAL_FRACTION else failed(message)

    return Plan([], judge)


def plan_reproducible(context: Context) -> Plan:
    first, x = _design_of(context)

    def judge(results: Results) -> Outcome:
        if first["num_iterations"] < 1:
            return failed("train the leader first (see 2.4a); an untrained leader proves nothing")
        _, again = trained_design(results)
        if not np.array_equal(again, x):
            return failed("design_contract(0) returned a different contract the second time: "
                          "pass the seed to the leader (seed=seed) and use no other randomness.")
        return passed()

    return Plan([Call("design_contract", (0,), returns="leader")], judge)


def plan_explained(context: Context) -> Plan:
    _, x = _design_of(context)
    p = problem()

    def judge(results: Results) -> Outcome:
        found = results.array(0, (p.n_contexts,), "effort_probability(problem, x)")
        return compare(found, exact_effort(p, x), ATOL,
                       f"the agents' probabilities of high effort at your design x = "
                       f"{np.round(x, 4).tolist()} (diligent type, lazy type)",
                       _effort_diagnoses(p, x))

    return Plan([Call("effort_probability", (Build("contract_design", dict(PROBLEM_KWARGS)), x))],
                judge)


CHECKS = (
    Check("2.1", "hard_bonus: cheapest bonus for hard-best-responding types", 2,
          plan_hard_bonus),
    Check("2.2", "effort_probability: the agents' soft best response", 3, plan_effort),
    Check("2.3", "objective_closed_form: J(x) in closed form", 2, plan_objective),
    Check("2.4a", "design_contract: a trained leader from leaders/", 1, plan_uses_leader),
    Check("2.4b", f"design_contract: J(x) >= {TARGET_FRACTION:.0%} of J*", 4,
          plan_design_quality),
    Check("2.4c", "design_contract: reproducible from its seed", 1, plan_reproducible),
    Check("2.5", "effort_probability at your design: the response explained", 1,
          plan_explained, depends_on=("2.2",)),
)
