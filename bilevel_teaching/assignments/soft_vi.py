"""Grader of assignment 1, ``soft_vi``: the follower's soft value iteration (paper Alg. 3).

The submission defines ``soft_max_value``, ``policy_from_q``, ``soft_bellman_backup``,
``soft_value_iteration`` and ``soft_policy_evaluation`` (see
``examples/teaching/soft_vi/README.md``). They are checked on small Garnet problems (random
MDPs that terminate with probability ``p_end`` per step) and on Four-Rooms (γ = 0.99, an
absorbing goal, λ = 0.001: soft maxima overflow unless computed stably) against the library's
exact soft solutions (:func:`~bilevel_envs.tabular.soft_policy_iteration` to 1e-12) and exact
policy values (:func:`~bilevel_envs.tabular.evaluate_policy`, one linear solve), computed by
the grader, never by the process that runs the submission.

Tolerances: round-off (1e-9 relative) for single operations; for value iteration run with
tolerance ``tol``, the guarantee ``‖V − V*‖∞ ≤ tol`` itself, and for its policy the consequence
``|π − π*| ≤ exp(4γ tol/λ) − 1`` (softmax of ``Q`` with ``‖Q − Q*‖∞ ≤ 2γ tol``).

When value iteration fails, the grader also calls the submission's ``soft_bellman_backup`` at
the returned ``V`` (and ``policy_from_q`` at the exact ``Q*``): if ``V`` is a fixed point of the
submission's own backup that is not ``V*``, the report says the failure follows from the backup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial

import numpy as np

from bilevel_envs.tabular import (
    SoftSolution,
    TabularModel,
    evaluate_policy,
    expected_next,
    soft_max_value,
    soft_policy_iteration,
    softmax_policy,
)
from bilevel_teaching.calls import Build, Call, Ref, Results
from bilevel_teaching.comparisons import compare
from bilevel_teaching.core import (
    Check,
    CheckFailed,
    Context,
    Outcome,
    Plan,
    WrittenPart,
    failed,
    passed,
)
from bilevel_teaching.import_guard import ImportPolicy

TITLE = "Assignment 1 - Soft value iteration: the follower (v1.0)"

WRITTEN = (
    WrittenPart("1.1", "the soft Bellman operator is a gamma-contraction", 3),
    WrittenPart("1.2", "Gibbs variational principle: pi* = softmax(Q*/lambda)", 3),
    WrittenPart("1.3", "the stopping rule of value iteration", 2),
    WrittenPart("1.4", "the limits lambda -> 0 and lambda -> infinity", 2),
)

#: what a submission may import: NumPy and the model class, not the library's solvers
IMPORTS = ImportPolicy(
    allow=("numpy", "bilevel_envs.tabular:TabularModel"),
    deny={"bilevel_envs.tabular": "it holds the solvers this assignment asks you to write"})

SIGNATURES = {
    "soft_max_value": "soft_max_value(q, lam)",
    "policy_from_q": "policy_from_q(q, lam)",
    "soft_bellman_backup": "soft_bellman_backup(model, v, lam)",
    "soft_value_iteration": "soft_value_iteration(model, lam, tol)",
    "soft_policy_evaluation": "soft_policy_evaluation(model, pi, lam)",
}

#: the tolerance the grader asks ``soft_value_iteration`` for
VI_TOL = 1e-8
#: accuracy of the grader's own exact solutions
EXACT_TOL = 1e-12
ROUND_OFF = 1e-9


# ---------------------------------------------------------------------------- test models
@dataclass(frozen=True)
class GradedModel:
    """A follower MDP of the checks: the model, λ and a description for messages."""

    key: str
    model: TabularModel
    lam: float
    description: str

    def build(self) -> Build:
        """The model as the child builds it for the submission (a fresh copy per check)."""
        m = self.model
        arrays = {"P": m.P, "r": m.r, "r_leader": m.r_leader, "mu": m.mu, "gamma": m.gamma,
                  "leader_gamma": m.leader_gamma, "dr": m.dr, "dr_leader": m.dr_leader}
        return Build("tabular_model", arrays, share=self.key)


@cache
def garnet_model(context: int = 0, seed: int = 1, lam: float = 0.5, gamma: float = 0.9,
                 p_end: float = 0.05) -> GradedModel:
    """A Garnet follower MDP at ``x = 0.5·1``."""
    from bilevel_envs.envs.garnet import GarnetProblem

    problem = GarnetProblem(seed=seed, lam=lam, gamma=gamma, p_end=p_end, leader_gamma=0.5)
    model = problem.tabular(np.full(problem.n_params, 0.5), context)
    return GradedModel(f"garnet-{context}-{seed}-{gamma}-{p_end}", model, lam, (
        f"a Garnet MDP ({model.n_states} states, {model.n_actions} actions, gamma={gamma}, "
        f"lambda={lam}, termination probability {p_end})"))


@cache
def four_rooms_model() -> GradedModel:
    """Four-Rooms at ``x_init``: 104 states, γ = 0.99, λ = 0.001, an absorbing goal."""
    from bilevel_envs.envs.four_rooms.problem import FourRoomsShaping

    problem = FourRoomsShaping(lam=0.001, beta=1.0)
    return GradedModel("four-rooms", problem.tabular(problem.x_init, 0), problem.lam,
                     "Four-Rooms (104 states, 4 actions, gamma=0.99, lambda=0.001, goal rows of "
                     "P are zero)")


def models() -> list[GradedModel]:
    return [garnet_model(0), garnet_model(1, seed=2, p_end=0.4), four_rooms_model()]


@cache
def _exact(test: GradedModel) -> SoftSolution:
    return soft_policy_iteration(test.model, test.lam, tol=EXACT_TOL)


def exact_solution(test: GradedModel) -> SoftSolution:
    """The exact soft solution (to ``EXACT_TOL``)."""
    return _exact(test)


def q_of(model: TabularModel, v: np.ndarray) -> np.ndarray:
    """``Q = r + γ P V``."""
    return model.r + model.gamma * expected_next(model.P, v)


def hard_value_iteration(model: TabularModel, tol: float = 1e-12) -> np.ndarray:
    """Unregularised optimal values (for the diagnosis 'hard max instead of soft max')."""
    v = np.zeros(model.n_states)
    threshold = tol * (1 - model.gamma) / model.gamma
    for _ in range(100_000):
        v_new = q_of(model, v).max(-1)
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


def plan_rows(function: RowFunction, context: Context, stable: bool = False) -> Plan:
    """Values of ``function`` on random ``q`` (``stable``: on ``q ≈ ±1000`` with λ = 0.01)."""
    cases = (_stability_cases if stable else _soft_max_cases)(context.rng)

    def judge(results: Results) -> Outcome:
        for k, (q, lam) in enumerate(cases):
            what = f"{function.name}(q, lam={lam}) for q of shape {q.shape}" + (
                f" around {q.mean():.0f}" if stable else "")
            shape = (q.shape[0],) if function.per_state else q.shape
            try:
                found = results.array(k, shape, what)
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

    return Plan([Call(function.name, (q, lam)) for q, lam in cases], judge)


# ---------------------------------------------------------------------------- 2.3
def _backup_diagnoses(model: TabularModel, v: np.ndarray, lam: float) -> dict[str, np.ndarray]:
    q = q_of(model, v)
    no_gamma = model.r + expected_next(model.P, v)
    transposed = model.r + model.gamma * np.einsum("sat,s->ta", model.P, v)
    return {
        "you took the hard maximum over actions; the soft Bellman operator uses the soft "
        "maximum lam * log(sum_a exp(Q(s, a)/lam)).": q.max(-1),
        "you forgot the discount gamma in Q = r + gamma * P V.": soft_max_value(no_gamma, lam),
        "you summed P over the wrong axis: (P V)(s, a) = sum_s' P[s, a, s'] V(s').":
            soft_max_value(transposed, lam),
    }


def plan_backup(context: Context) -> Plan:
    tests = models()
    vs = [context.rng.normal(0.0, 1.0, size=t.model.n_states) for t in tests]
    calls = [Call("soft_bellman_backup", (t.build(), v, t.lam)) for t, v in zip(tests, vs)]
    # probes: the submission's soft maximum of the right Q
    calls += [Call("soft_max_value", (q_of(t.model, v), t.lam), probe=True)
              for t, v in zip(tests, vs)]

    def judge(results: Results) -> Outcome:
        for k, (t, v) in enumerate(zip(tests, vs)):
            found = results.array(k, (t.model.n_states,),
                                  f"soft_bellman_backup on {t.description}")
            expected = soft_max_value(q_of(t.model, v), t.lam)
            atol = ROUND_OFF * _scale(expected)
            outcome = compare(found, expected, atol, f"T V on {t.description} for a random V",
                              _backup_diagnoses(t.model, v, t.lam))
            if outcome.fraction < 1:
                own = results.probe(len(tests) + k, (t.model.n_states,))
                if own is not None and np.max(np.abs(own - found)) <= atol:
                    return failed(outcome.feedback + "\nYour backup equals your soft_max_value "
                                  "of the right Q = r + gamma P V.", cause="2.1a")
                return outcome
        return passed()

    return Plan(calls, judge)


def plan_contraction(context: Context) -> Plan:
    test = garnet_model(0)
    pairs = [context.rng.normal(0.0, 3.0, size=(2, test.model.n_states)) for _ in range(20)]
    calls = [Call("soft_bellman_backup", (test.build(), v, test.lam)) for pair in pairs
             for v in pair]

    def judge(results: Results) -> Outcome:
        worst = 0.0
        for k, (v1, v2) in enumerate(pairs):
            t1, t2 = (results.array(2 * k + j, (test.model.n_states,), "soft_bellman_backup")
                      for j in (0, 1))
            worst = max(worst, float(np.max(np.abs(t1 - t2)) / np.max(np.abs(v1 - v2))))
        gamma = test.model.gamma
        if worst == 0.0:
            return failed(f"on {test.description}, T V1 = T V2 for every pair of random V1, V2 "
                          "tried: your operator does not depend on V (a constant is a "
                          "contraction, but not the soft Bellman operator).")
        if worst <= gamma * (1 + 1e-9):
            return passed(f"largest ratio ||TV1 - TV2|| / ||V1 - V2|| = {worst:.4f} <= gamma")
        return failed(f"on {test.description}, ||T V1 - T V2||_inf / ||V1 - V2||_inf reached "
                      f"{worst:.6f} for random V1, V2: more than gamma = {gamma}. A correct soft "
                      "Bellman operator is a gamma-contraction (question 1.1).")

    return Plan(calls, judge)


# ---------------------------------------------------------------------------- 2.4
def _vi_calls(tests: list[GradedModel], tol: float) -> list[Call]:
    """``soft_value_iteration`` on each model, then (probes) the submission's backup at the
    returned ``V``."""
    calls = [Call("soft_value_iteration", (t.build(), t.lam, tol), returns="pair")
             for t in tests]
    calls += [Call("soft_bellman_backup", (t.build(), Ref(k, 0), t.lam), probe=True)
              for k, t in enumerate(tests)]
    return calls


def _vi_result(results: Results, k: int, test: GradedModel) -> tuple[np.ndarray, np.ndarray]:
    S, A = test.model.n_states, test.model.n_actions
    return results.pair(k, ((S,), (S, A)), ("V", "pi"),
                        f"soft_value_iteration on {test.description}")


def _own_fixed_point(results: Results, probe: int, test: GradedModel, v: np.ndarray) -> bool:
    """Whether ``v`` is closer to the fixed point of the submission's own backup than to V*
    (``‖v − fix‖ ≤ ‖T v − v‖/(1 − γ)`` for a γ-contraction): then the backup is to blame."""
    own = results.probe(probe, v.shape)
    if own is None:
        return False
    residual = float(np.max(np.abs(own - v)))
    error = float(np.max(np.abs(v - exact_solution(test).v)))
    return error > 1.01 * residual / (1 - test.model.gamma) + 1e-9 * _scale(v)


_OWN_BACKUP = ("\nThis V is (nearly) a fixed point of your own soft_bellman_backup: value "
               "iteration converged, to the wrong values.")


def plan_vi_values(context: Context) -> Plan:
    tests = models()

    def judge(results: Results) -> Outcome:
        for k, t in enumerate(tests):
            v, _ = _vi_result(results, k, t)
            exact = exact_solution(t)
            outcome = compare(v, exact.v, VI_TOL * (1 + 1e-6) + 10 * EXACT_TOL,
                              f"V from soft_value_iteration(model, lam, tol={VI_TOL:g}) on "
                              f"{t.description} vs the exact soft-optimal V*", {
                                  "your values are the unregularised optimal values (hard max): "
                                  "use the soft maximum in the backup.":
                                      hard_value_iteration(t.model),
                              }, diagnosis_atol=1e-4 * _scale(exact.v))
            if outcome.fraction < 1:
                if _own_fixed_point(results, len(tests) + k, t, v):
                    return failed(outcome.feedback + _OWN_BACKUP, cause="2.3a")
                return outcome
        return passed()

    return Plan(_vi_calls(tests, VI_TOL), judge)


def plan_vi_policy(context: Context) -> Plan:
    tests = models()
    calls = [Call("soft_value_iteration", (t.build(), t.lam, VI_TOL), returns="pair")
             for t in tests]
    # probes: the submission's policy_from_q at the exact Q*
    calls += [Call("policy_from_q", (exact_solution(t).q, t.lam), probe=True) for t in tests]

    def judge(results: Results) -> Outcome:
        for k, t in enumerate(tests):
            v, pi = _vi_result(results, k, t)
            rows = np.abs(pi.sum(-1) - 1.0)
            if rows.max() > 1e-9:
                return failed(f"the rows of pi returned on {t.description} must sum to 1; row "
                              f"{int(rows.argmax())} sums to {pi.sum(-1)[rows.argmax()]:.12g}")
            exact = exact_solution(t)
            atol = float(np.expm1(4 * t.model.gamma * VI_TOL / t.lam)) + 1e-10
            greedy = np.eye(t.model.n_actions)[exact.q.argmax(-1)]
            outcome = compare(pi, exact.pi, atol, f"pi from soft_value_iteration on "
                              f"{t.description} vs the exact softmax(Q*/lambda)", {
                                  "your policy is greedy (argmax); the soft-optimal policy is "
                                  "softmax(Q*/lambda).": greedy}, diagnosis_atol=1e-3)
            if outcome.fraction == 1:
                continue
            v_error = float(np.max(np.abs(v - exact.v)))
            if v_error > VI_TOL * (1 + 1e-6) + 10 * EXACT_TOL and np.max(np.abs(
                    pi - softmax_policy(q_of(t.model, v), t.lam))) <= 1e-6:
                return failed(outcome.feedback + "\npi is softmax(Q/lambda) of the V you "
                              "returned, and that V is off.", cause="2.4a")
            own = results.probe(len(tests) + k, pi.shape)
            if own is not None and np.max(np.abs(own - pi)) <= 1e-6:
                return failed(outcome.feedback + "\npi is what your policy_from_q gives for "
                              "Q*.", cause="2.2a")
            return outcome
        return passed()

    return Plan(calls, judge)


def plan_stopping_rule(context: Context) -> Plan:
    tol = 1e-3
    test = garnet_model(0, seed=3, gamma=0.95, p_end=0.0)

    def judge(results: Results) -> Outcome:
        v, _ = _vi_result(results, 0, test)
        gamma = test.model.gamma
        error = float(np.max(np.abs(v - exact_solution(test).v)))
        if error <= tol * (1 + 1e-6):
            return passed(f"||V - V*|| = {error:.3e} <= tol = {tol:g}")
        ratio = error / tol
        hint = (" That is what stopping as soon as ||V_k+1 - V_k|| <= tol gives. Question 1.3: "
                "||V_k+1 - V*|| <= gamma/(1 - gamma) ||V_k+1 - V_k||, so stop when "
                "||V_k+1 - V_k|| <= tol (1 - gamma)/gamma.") \
            if ratio < gamma / (1 - gamma) * 1.01 else ""
        message = (f"soft_value_iteration(model, lam, tol={tol:g}) on {test.description} "
                   f"(slowly mixing: it never terminates) returned V with ||V - V*||_inf = "
                   f"{error:.6g}, {ratio:.1f} times the requested tolerance.{hint}")
        if not hint and _own_fixed_point(results, 1, test, v):
            return failed(message + _OWN_BACKUP, cause="2.3a")
        return failed(message)

    return Plan(_vi_calls([test], tol), judge)


# ---------------------------------------------------------------------------- 2.5
def plan_evaluation(context: Context) -> Plan:
    cases = []
    for t in models():
        cases += [(t, "a random policy",
                   context.rng.dirichlet(np.ones(t.model.n_actions), t.model.n_states)),
                  (t, "the soft-optimal policy pi* (its soft value is V*)", exact_solution(t).pi)]
    calls = [Call("soft_policy_evaluation", (t.build(), pi, t.lam)) for t, _, pi in cases]

    def judge(results: Results) -> Outcome:
        for k, (t, name, pi) in enumerate(cases):
            found = results.array(k, (t.model.n_states,),
                                  f"soft_policy_evaluation on {t.description}")
            expected = evaluate_policy(t.model, pi, lam=t.lam)
            outcome = compare(found, expected, 1e-7 * _scale(expected),
                              f"V^pi_lambda of {name} on {t.description}", {
                                  "you left out the entropy bonus lam * H(pi(.|s)) of the soft "
                                  "value.": evaluate_policy(t.model, pi),
                                  "the entropy bonus has the wrong sign: H(pi) = -sum pi log pi"
                                  " >= 0 is added.": evaluate_policy(t.model, pi, lam=-t.lam),
                              })
            if outcome.fraction < 1:
                return outcome
        return passed()

    return Plan(calls, judge)


def plan_evaluation_deterministic(context: Context) -> Plan:
    test = garnet_model(0)
    pi = np.eye(test.model.n_actions)[context.rng.integers(test.model.n_actions,
                                                           size=test.model.n_states)]

    def judge(results: Results) -> Outcome:
        try:
            found = results.array(0, (test.model.n_states,), "soft_policy_evaluation of a "
                                  "deterministic policy")
        except CheckFailed as failure:
            raise CheckFailed(f"{failure}. Hint: 0 * log 0 = 0 in the entropy; np.log(0) = -inf "
                              "and 0 * -inf = nan.") from None
        return compare(found, evaluate_policy(test.model, pi), 1e-7 * _scale(found),
                       f"V^pi of a deterministic policy on {test.description} (its entropy is "
                       "0)")

    return Plan([Call("soft_policy_evaluation", (test.build(), pi, test.lam))], judge)


CHECKS = (
    Check("2.1a", "soft_max_value: values", 1, partial(plan_rows, SOFT_MAX)),
    Check("2.1b", "soft_max_value: numerically stable for large |q|/lambda", 1,
          partial(plan_rows, SOFT_MAX, stable=True), depends_on=("2.1a",)),
    Check("2.2a", "policy_from_q: values", 1, partial(plan_rows, POLICY)),
    Check("2.2b", "policy_from_q: numerically stable for large |q|/lambda", 1,
          partial(plan_rows, POLICY, stable=True), depends_on=("2.2a",)),
    Check("2.3a", "soft_bellman_backup: one application of T", 3, plan_backup),
    Check("2.3b", "soft_bellman_backup: a gamma-contraction", 1, plan_contraction,
          depends_on=("2.3a",)),
    Check("2.4a", "soft_value_iteration: V within tol of V*", 2, plan_vi_values),
    Check("2.4b", "soft_value_iteration: pi = softmax(Q*/lambda)", 1, plan_vi_policy),
    Check("2.4c", "soft_value_iteration: the stopping rule guarantees tol", 2,
          plan_stopping_rule),
    Check("2.5a", "soft_policy_evaluation: soft values of policies", 2, plan_evaluation),
    Check("2.5b", "soft_policy_evaluation: deterministic policies (0 log 0 = 0)", 1,
          plan_evaluation_deterministic, depends_on=("2.5a",)),
)
