"""Grader of assignment 1, ``soft_vi``: the follower's soft value iteration (paper Alg. 3).

The submission defines ``soft_max_value``, ``policy_from_q``, ``soft_bellman_backup``,
``soft_value_iteration`` and ``soft_policy_evaluation`` (see
``examples/teaching/soft_vi/README.md``). They are checked on small Garnet problems (random
MDPs that terminate with probability ``p_end`` per step) and on Four-Rooms (γ = 0.99, an
absorbing goal, λ = 0.001: soft maxima overflow unless computed stably) against the library's
exact soft solutions (:func:`~bilevel_envs.tabular.soft_policy_iteration` to 1e-12) and exact
policy values (:func:`~bilevel_envs.tabular.evaluate_policy`, one linear solve).

Tolerances: round-off (1e-9 relative) for single operations; for value iteration run with
tolerance ``tol``, the guarantee ``‖V − V*‖∞ ≤ tol`` itself, and for its policy the consequence
``|π − π*| ≤ exp(4γ tol/λ) − 1`` (softmax of ``Q`` with ``‖Q − Q*‖∞ ≤ 2γ tol``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from types import ModuleType

import numpy as np

from bilevel_envs.tabular import (
    TabularModel,
    evaluate_policy,
    expected_next,
    soft_max_value,
    soft_policy_iteration,
    softmax_policy,
)
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

TITLE = "Assignment 1 - Soft value iteration: the follower (v1.0)"

WRITTEN = (
    WrittenPart("1.1", "the soft Bellman operator is a gamma-contraction", 3),
    WrittenPart("1.2", "Gibbs variational principle: pi* = softmax(Q*/lambda)", 3),
    WrittenPart("1.3", "the stopping rule of value iteration", 2),
    WrittenPart("1.4", "the limits lambda -> 0 and lambda -> infinity", 2),
)

#: the tolerance the grader asks ``soft_value_iteration`` for
VI_TOL = 1e-8
#: accuracy of the grader's own exact solutions
EXACT_TOL = 1e-12
ROUND_OFF = 1e-9


# ---------------------------------------------------------------------------- test models
@cache
def _garnet(seed: int, lam: float, gamma: float, p_end: float):
    from bilevel_envs.envs.garnet import GarnetProblem

    return GarnetProblem(seed=seed, lam=lam, gamma=gamma, p_end=p_end, leader_gamma=0.5)


def garnet_model(context: int = 0, seed: int = 1, lam: float = 0.5, gamma: float = 0.9,
                 p_end: float = 0.05) -> tuple[TabularModel, float, str]:
    """A Garnet follower MDP ``(model, λ, description)`` at ``x = 0.5·1``."""
    problem = _garnet(seed, lam, gamma, p_end)
    model = problem.tabular(np.full(problem.n_params, 0.5), context)
    return model, lam, (f"a Garnet MDP ({model.n_states} states, {model.n_actions} actions, "
                        f"gamma={gamma}, lambda={lam}, termination probability {p_end})")


@cache
def _four_rooms_problem():
    from bilevel_envs.envs.four_rooms.problem import FourRoomsShaping

    return FourRoomsShaping(lam=0.001, beta=1.0)


def four_rooms_model() -> tuple[TabularModel, float, str]:
    """Four-Rooms at ``x_init``: 104 states, γ = 0.99, λ = 0.001, an absorbing goal."""
    problem = _four_rooms_problem()
    model = problem.tabular(problem.x_init, 0)
    return model, problem.lam, ("Four-Rooms (104 states, 4 actions, gamma=0.99, lambda=0.001, "
                                "goal rows of P are zero)")


def models() -> list[tuple[TabularModel, float, str]]:
    return [garnet_model(0), garnet_model(1, seed=2, p_end=0.4), four_rooms_model()]


def exact_solution(model: TabularModel, lam: float):
    """The exact soft solution (to ``EXACT_TOL``)."""
    return soft_policy_iteration(model, lam, tol=EXACT_TOL)


def student_copy(model: TabularModel) -> TabularModel:
    """A deep copy to hand to the submission (it may modify arrays in place)."""
    arrays = {name: None if getattr(model, name) is None else np.array(getattr(model, name))
              for name in ("P", "r", "r_leader", "mu", "dr", "dr_leader", "dP", "dmu")}
    return TabularModel(gamma=model.gamma, leader_gamma=model.leader_gamma, **arrays)


def hard_value_iteration(model: TabularModel, tol: float = 1e-12) -> np.ndarray:
    """Unregularised optimal values (for the diagnosis 'hard max instead of soft max')."""
    v = np.zeros(model.n_states)
    threshold = tol * (1 - model.gamma) / model.gamma
    for _ in range(100_000):
        v_new = (model.r + model.gamma * expected_next(model.P, v)).max(-1)
        done = np.max(np.abs(v_new - v)) <= threshold
        v = v_new
        if done:
            break
    return v


def _scale(values: np.ndarray) -> float:
    return max(1.0, float(np.max(np.abs(values))))


# ---------------------------------------------------------------------------- 2.1, 2.2
def _soft_max_cases(rng: np.random.Generator) -> list[tuple[np.ndarray, float]]:
    return [(rng.normal(0.0, 2.0, size=(7, 4)), 1.0), (rng.normal(0.0, 1.0, size=(5, 3)), 0.3),
            (rng.normal(0.0, 1.0, size=(1, 6)), 2.5)]


def _stability_cases(rng: np.random.Generator) -> list[tuple[np.ndarray, float]]:
    return [(1000.0 + rng.normal(0.0, 1.0, size=(4, 3)), 0.01),
            (-1000.0 + rng.normal(0.0, 1.0, size=(4, 3)), 0.01)]


@dataclass(frozen=True)
class RowFunction:
    """A function of the submission applied row by row to ``q`` ``(S, A)`` (2.1, 2.2)."""

    name: str
    reference: Callable[[np.ndarray, float], np.ndarray]
    per_state: bool  # output (S,) rather than (S, A)
    diagnoses: Callable[[np.ndarray, float], dict[str, np.ndarray]]
    stability_hint: str


SOFT_MAX = RowFunction(
    "soft_max_value", soft_max_value, True,
    lambda q, lam: {
        "you returned the hard maximum max_a q(s, a); the soft maximum is "
        "lam * log(sum_a exp(q(s, a) / lam)).": q.max(-1),
        "you left out the factor lam in front of the log: lam * log(sum_a exp(q/lam)).":
            np.log(np.exp(q / lam).sum(-1)),
        "you left out the division by lam inside the exp: lam * log(sum_a exp(q/lam)).":
            lam * np.log(np.exp(q).sum(-1)),
    },
    "subtract m(s) = max_a q(s, a) before exp and add it back: lam*log(sum exp(q/lam)) = "
    "m + lam*log(sum exp((q - m)/lam)).")

POLICY = RowFunction(
    "policy_from_q", softmax_policy, False,
    lambda q, lam: {
        "you returned the greedy (argmax) policy; the soft-optimal policy is softmax(q/lam), "
        "which gives every action positive probability.": np.eye(q.shape[1])[q.argmax(-1)],
        "you forgot to divide q by lam: the policy is softmax(q/lam).": softmax_policy(q, 1.0),
        "you returned exp(q/lam) without normalising each row to sum to one.": np.exp(q / lam),
    },
    "softmax is unchanged when you subtract max_a q(s, a) from every entry of the row first.")


def check_rows(function: RowFunction, submission: ModuleType, rng: np.random.Generator,
               stable: bool = False) -> Outcome:
    """Values of ``function`` on random ``q`` (``stable``: on ``q ≈ ±1000`` with λ = 0.01)."""
    f = require_function(submission, function.name, f"{function.name}(q, lam)")
    for q, lam in (_stability_cases if stable else _soft_max_cases)(rng):
        what = f"{function.name}(q, lam={lam}) for q of shape {q.shape}" + (
            f" around {q.mean():.0f}" if stable else "")
        shape = (q.shape[0],) if function.per_state else q.shape
        with np.errstate(all="ignore"):
            found = f(q.copy(), lam)
        try:
            found = as_array(found, shape, what)
        except CheckFailed as failure:
            if not stable:
                raise
            raise CheckFailed(f"{failure}. Hint: {function.stability_hint}") from None
        expected = function.reference(q, lam)
        scale = _scale(expected) if function.per_state else 1.0
        with np.errstate(all="ignore"):
            diagnoses = {} if stable else function.diagnoses(q, lam)
        outcome = compare(found, expected, ROUND_OFF * scale, what, diagnoses)
        if outcome.fraction < 1:
            return outcome
    return passed()


# ---------------------------------------------------------------------------- 2.3
def _backup_diagnoses(model: TabularModel, v: np.ndarray, lam: float) -> dict[str, np.ndarray]:
    q = model.r + model.gamma * expected_next(model.P, v)
    no_gamma = model.r + expected_next(model.P, v)
    transposed = model.r + model.gamma * np.einsum("sat,s->ta", model.P, v)
    return {
        "you took the hard maximum over actions; the soft Bellman operator uses the soft "
        "maximum lam * log(sum_a exp(Q(s, a)/lam)).": q.max(-1),
        "you forgot the discount gamma in Q = r + gamma * P V.": soft_max_value(no_gamma, lam),
        "you summed P over the wrong axis: (P V)(s, a) = sum_s' P[s, a, s'] V(s').":
            soft_max_value(transposed, lam),
    }


def check_backup(submission: ModuleType, rng: np.random.Generator) -> Outcome:
    f = require_function(submission, "soft_bellman_backup", "soft_bellman_backup(model, v, lam)")
    for model, lam, description in models():
        v = rng.normal(0.0, 1.0, size=model.n_states)
        found = as_array(f(student_copy(model), v.copy(), lam), (model.n_states,),
                         f"soft_bellman_backup on {description}")
        expected = soft_max_value(model.r + model.gamma * expected_next(model.P, v), lam)
        outcome = compare(found, expected, ROUND_OFF * _scale(expected),
                          f"T V on {description} for a random V",
                          _backup_diagnoses(model, v, lam))
        if outcome.fraction < 1:
            return outcome
    return passed()


def check_contraction(submission: ModuleType, rng: np.random.Generator) -> Outcome:
    f = require_function(submission, "soft_bellman_backup", "soft_bellman_backup(model, v, lam)")
    model, lam, description = garnet_model(0)
    worst = 0.0
    for _ in range(20):
        v1, v2 = rng.normal(0.0, 3.0, size=(2, model.n_states))
        t1, t2 = (as_array(f(student_copy(model), v.copy(), lam), (model.n_states,),
                           "soft_bellman_backup") for v in (v1, v2))
        ratio = np.max(np.abs(t1 - t2)) / np.max(np.abs(v1 - v2))
        worst = max(worst, float(ratio))
    if worst == 0.0:
        return failed(f"on {description}, T V1 = T V2 for every pair of random V1, V2 tried: "
                      "your operator does not depend on V (a constant is a contraction, but not "
                      "the soft Bellman operator).")
    if worst <= model.gamma * (1 + 1e-9):
        return passed(f"largest ratio ||TV1 - TV2|| / ||V1 - V2|| = {worst:.4f} <= gamma")
    return failed(f"on {description}, ||T V1 - T V2||_inf / ||V1 - V2||_inf reached {worst:.4f} "
                  f"for random V1, V2: more than gamma = {model.gamma}. A correct soft Bellman "
                  "operator is a gamma-contraction (question 1.1).")


# ---------------------------------------------------------------------------- 2.4
def _run_vi(submission: ModuleType, model: TabularModel, lam: float, tol: float, description: str
            ) -> tuple[np.ndarray, np.ndarray]:
    f = require_function(submission, "soft_value_iteration",
                         "soft_value_iteration(model, lam, tol)")
    out = f(student_copy(model), lam, tol)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise CheckFailed(f"soft_value_iteration must return a pair (V, pi); got "
                          f"{type(out).__name__}")
    v = as_array(out[0], (model.n_states,), f"V returned by soft_value_iteration on {description}")
    pi = as_array(out[1], (model.n_states, model.n_actions),
                  f"pi returned by soft_value_iteration on {description}")
    return v, pi


def check_vi_values(submission: ModuleType, rng: np.random.Generator) -> Outcome:
    for model, lam, description in models():
        v, _ = _run_vi(submission, model, lam, VI_TOL, description)
        exact = exact_solution(model, lam)
        outcome = compare(v, exact.v, VI_TOL * (1 + 1e-6) + 10 * EXACT_TOL,
                          f"V from soft_value_iteration(model, lam, tol={VI_TOL:g}) on "
                          f"{description} vs the exact soft-optimal V*", {
                              "your values are the unregularised optimal values (hard max): "
                              "use the soft maximum in the backup.": hard_value_iteration(model),
                          }, diagnosis_atol=1e-4 * _scale(exact.v))
        if outcome.fraction < 1:
            return outcome
    return passed()


def check_vi_policy(submission: ModuleType, rng: np.random.Generator) -> Outcome:
    for model, lam, description in models():
        _, pi = _run_vi(submission, model, lam, VI_TOL, description)
        rows = np.abs(pi.sum(-1) - 1.0)
        if rows.max() > 1e-9:
            return failed(f"the rows of pi returned on {description} must sum to 1; row "
                          f"{int(rows.argmax())} sums to {pi.sum(-1)[rows.argmax()]:.6g}")
        exact = exact_solution(model, lam)
        atol = float(np.expm1(4 * model.gamma * VI_TOL / lam)) + 1e-10
        greedy = np.eye(model.n_actions)[exact.q.argmax(-1)]
        outcome = compare(pi, exact.pi, atol, f"pi from soft_value_iteration on {description} "
                          "vs the exact softmax(Q*/lambda)", {
                              "your policy is greedy (argmax); the soft-optimal policy is "
                              "softmax(Q*/lambda).": greedy}, diagnosis_atol=1e-3)
        if outcome.fraction < 1:
            return outcome
    return passed()


def check_stopping_rule(submission: ModuleType, rng: np.random.Generator) -> Outcome:
    tol = 1e-3
    model, lam, description = garnet_model(0, seed=3, gamma=0.95, p_end=0.0)
    v, _ = _run_vi(submission, model, lam, tol, description)
    error = float(np.max(np.abs(v - exact_solution(model, lam).v)))
    if error <= tol * (1 + 1e-6):
        return passed(f"||V - V*|| = {error:.2e} <= tol = {tol:g}")
    ratio = error / tol
    hint = (" That is what stopping as soon as ||V_k+1 - V_k|| <= tol gives. Question 1.3: "
            "||V_k+1 - V*|| <= gamma/(1 - gamma) ||V_k+1 - V_k||, so stop when ||V_k+1 - V_k|| "
            "<= tol (1 - gamma)/gamma.") if ratio < model.gamma / (1 - model.gamma) * 1.01 else ""
    return failed(f"soft_value_iteration(model, lam, tol={tol:g}) on {description} (slowly "
                  f"mixing: it never terminates) returned V with ||V - V*||_inf = {error:.3g}, "
                  f"{ratio:.1f} times the requested tolerance.{hint}")


# ---------------------------------------------------------------------------- 2.5
def check_evaluation(submission: ModuleType, rng: np.random.Generator) -> Outcome:
    f = require_function(submission, "soft_policy_evaluation",
                         "soft_policy_evaluation(model, pi, lam)")
    for model, lam, description in models():
        exact = exact_solution(model, lam)
        cases = [("a random policy", rng.dirichlet(np.ones(model.n_actions), model.n_states)),
                 ("the soft-optimal policy pi* (its soft value is V*)", exact.pi)]
        for name, pi in cases:
            found = as_array(f(student_copy(model), pi.copy(), lam), (model.n_states,),
                             f"soft_policy_evaluation on {description}")
            expected = evaluate_policy(model, pi, lam=lam)
            outcome = compare(found, expected, 1e-7 * _scale(expected),
                              f"V^pi_lambda of {name} on {description}", {
                                  "you left out the entropy bonus lam * H(pi(.|s)) of the soft "
                                  "value.": evaluate_policy(model, pi),
                                  "the entropy bonus has the wrong sign: H(pi) = -sum pi log pi"
                                  " >= 0 is added.": evaluate_policy(model, pi, lam=-lam),
                              })
            if outcome.fraction < 1:
                return outcome
    return passed()


def check_evaluation_deterministic(submission: ModuleType, rng: np.random.Generator) -> Outcome:
    f = require_function(submission, "soft_policy_evaluation",
                         "soft_policy_evaluation(model, pi, lam)")
    model, lam, description = garnet_model(0)
    pi = np.eye(model.n_actions)[rng.integers(model.n_actions, size=model.n_states)]
    with np.errstate(all="ignore"):
        found = f(student_copy(model), pi.copy(), lam)
    try:
        found = as_array(found, (model.n_states,), "soft_policy_evaluation of a deterministic "
                         "policy")
    except CheckFailed as failure:
        raise CheckFailed(f"{failure}. Hint: 0 * log 0 = 0 in the entropy; np.log(0) = -inf "
                          "and 0 * -inf = nan.") from None
    return compare(found, evaluate_policy(model, pi), 1e-7 * _scale(found),
                   f"V^pi of a deterministic policy on {description} (its entropy is 0)")


CHECKS = (
    Check("2.1a", "soft_max_value: values", 1, partial(check_rows, SOFT_MAX)),
    Check("2.1b", "soft_max_value: numerically stable for large |q|/lambda", 1,
          partial(check_rows, SOFT_MAX, stable=True)),
    Check("2.2a", "policy_from_q: values", 1, partial(check_rows, POLICY)),
    Check("2.2b", "policy_from_q: numerically stable for large |q|/lambda", 1,
          partial(check_rows, POLICY, stable=True)),
    Check("2.3a", "soft_bellman_backup: one application of T", 3, check_backup),
    Check("2.3b", "soft_bellman_backup: a gamma-contraction", 1, check_contraction),
    Check("2.4a", "soft_value_iteration: V within tol of V*", 2, check_vi_values),
    Check("2.4b", "soft_value_iteration: pi = softmax(Q*/lambda)", 1, check_vi_policy),
    Check("2.4c", "soft_value_iteration: the stopping rule guarantees tol", 2,
          check_stopping_rule),
    Check("2.5a", "soft_policy_evaluation: soft values of policies", 2, check_evaluation),
    Check("2.5b", "soft_policy_evaluation: deterministic policies (0 log 0 = 0)", 1,
          check_evaluation_deterministic),
)
