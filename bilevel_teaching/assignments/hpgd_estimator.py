"""Grader of assignment 2, ``hpgd_estimator``: HPGD's trajectory estimators (paper Alg. 2, 5).

The submission estimates, from trajectories only, the leader's ``Q̄``, the follower's ``∂Q`` and
``∂A`` (Thm 2, Alg. 2) and the hypergradient ``dJ_ξ/dx`` (Prop. 1, Alg. 5) on a small Garnet
problem in which ``x`` moves the follower's and the leader's rewards, the transitions and the
initial distribution (so every term of Prop. 1 matters). It sees the problem through
:class:`ProblemView` (discounts, λ and the per-transition derivative terms, no tabular model)
and the follower through :class:`OracleView` (``rollout`` only): as a leader would.

Each check draws many i.i.d. estimates and compares their means with the exact values computed
here (:func:`exact_terms`: linear solves with the exact soft-optimal policy), within ``z``
measured standard errors (:func:`~bilevel_teaching.comparisons.unbiasedness`: ``z ≥ 4``, more when
many numbers are compared, for a 0.1 % family-wise false-alarm rate). The standard error must
also be small enough that a real mistake (a missing ``1/λ``, ``1/(1−γ̄)``, entropy bonus or
score term) would show: the checks list what each such mistake would have estimated and name
the one the submission's means agree with.

The grading child builds the problem view and the oracle (from the soft-optimal policy this
module computes) and returns the raw estimates; means, standard errors and diagnoses are
computed here, from those estimates.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from bilevel_envs.envs.garnet import GarnetProblem
from bilevel_envs.oracles import TabularOracle
from bilevel_envs.policies import TabularPolicy
from bilevel_envs.tabular import (
    TabularModel,
    evaluate_policy,
    expected_next,
    policy_transitions,
    soft_policy_iteration,
    solve_bellman,
)
from bilevel_teaching.calls import Build, Call, Results, Rng
from bilevel_teaching.comparisons import unbiasedness
from bilevel_teaching.core import (
    Check,
    Context,
    Outcome,
    Plan,
    WrittenPart,
    failed,
    passed,
)
from bilevel_teaching.import_guard import ImportPolicy
from bilevel_teaching.student_objects import OracleView, ProblemView

TITLE = "Assignment 2 - The HPGD hypergradient estimator (v1.0)"

#: what a submission may import: NumPy (the problem and the oracle are handed to it)
IMPORTS = ImportPolicy(allow=("numpy",))

SIGNATURES = {
    "leader_q_estimates": "leader_q_estimates(problem, oracle, rng, states, actions)",
    "grad_q_estimates": "grad_q_estimates(problem, x, context, oracle, rng, states, actions)",
    "grad_advantage_estimates": "grad_advantage_estimates(problem, x, context, oracle, rng, "
                                "states, actions)",
    "hypergradient_estimates": "hypergradient_estimates(problem, x, context, oracle, rng, "
                               "n_samples)",
    "expected_sampled_transitions": "expected_sampled_transitions(gamma, leader_gamma)",
}

WRITTEN = (
    WrittenPart("1.1", "random horizons: unbiasedness of the sqrt-discounted tail", 2),
    WrittenPart("1.2", "Alg. 5 is unbiased for Prop. 1", 3),
    WrittenPart("1.3", "why dA and not dQ; why two independent restarts", 2),
    WrittenPart("1.4", "variance: measure and explain the 1/(lambda (1 - gamma_L)) scaling", 2),
)

#: the problem of the assignment: x moves r, r_leader, P and mu; moderate variance
PROBLEM_KWARGS: dict[str, Any] = {"n_states": 5, "n_actions": 2, "n_params": 3, "n_contexts": 2,
                                      "lam": 0.5, "gamma": 0.6, "leader_gamma": 0.5, "p_end": 0.2,
                                      "transition_scale": 0.5, "initial_scale": 0.5, "seed": 1}
#: the point x of each context at which everything is checked
X_POINTS = ((-0.2, 1.42, 1.19), (1.03, -0.32, -0.02))

# Sample sizes: enough for the reference estimator to tell the right answer from every target
# mistake of a check by z + 2 standard errors with a margin (tests/test_grading.py checks it),
# and a few seconds of vectorised sampling per check.
PER_PAIR_Q_BAR = 5_000
PER_PAIR_DQ = 25_000
PER_STATE_DV = 10_000
PER_PAIR_DA = 3_000
N_HYPERGRADIENT = 100_000


# ---------------------------------------------------------------------------- exact answers
@dataclass(frozen=True)
class ExactTerms:
    """Exact quantities of one ``(x, ξ)`` under the soft-optimal policy ``pi``.

    ``direct``, ``best_response`` and ``score`` are the three terms of Prop. 1 (their sum is
    ``gradient`` = ``dJ_ξ/dx``); ``q_bar``/``v_bar`` the leader's values; ``dq``, ``dv``, ``da``
    the follower's derivatives with the policy held fixed (Thm 2).
    """

    pi: np.ndarray
    q_bar: np.ndarray
    v_bar: np.ndarray
    dq: np.ndarray
    dv: np.ndarray
    da: np.ndarray
    direct: np.ndarray
    best_response: np.ndarray
    score: np.ndarray

    @property
    def gradient(self) -> np.ndarray:
        return self.direct + self.best_response + self.score


def leader_q(model: TabularModel, pi: np.ndarray, discount: float) -> np.ndarray:
    """``Q̄`` of the leader's reward under ``pi`` with the given discount."""
    v = evaluate_policy(model, pi, model.r_leader, discount)
    return model.r_leader + discount * expected_next(model.P, v)


def follower_dq(model: TabularModel, pi: np.ndarray, value: np.ndarray, score_scale: float = 1.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """``(∂Q, ∂V)`` with ``pi`` fixed (Thm 2): ``∂Q = ∂r + s γ ∂P·value + γ P ∂V``,
    ``∂V = Σ_a π ∂Q`` — ``value = V^π_λ`` and ``s = 1`` for the right answer."""
    gamma = model.gamma
    b = model.dr + score_scale * gamma * np.einsum("sapd,p->sad", model.dP, value)
    dv = solve_bellman(policy_transitions(model.P, pi), gamma, np.einsum("sa,sad->sd", pi, b))
    return b + gamma * expected_next(model.P, dv), dv


def exact_terms(model: TabularModel, pi: np.ndarray, lam: float, *, soft: bool = True,
                score_scale: float = 1.0) -> ExactTerms:
    """The exact :class:`ExactTerms` (``soft``/``score_scale`` give the values of two common
    mistakes in ``∂Q``: no entropy bonus in the tail, a missing ``γ/(1−γ)``)."""
    lgamma = model.leader_gamma
    value = evaluate_policy(model, pi, lam=lam if soft else 0.0)
    dq, dv = follower_dq(model, pi, value, score_scale)
    da = dq - dv[:, None, :]
    v_bar = evaluate_policy(model, pi, model.r_leader, lgamma)
    q_bar = model.r_leader + lgamma * expected_next(model.P, v_bar)
    occupancy = solve_bellman(policy_transitions(model.P, pi), lgamma, model.mu, transpose=True)
    weight = occupancy[:, None] * pi  # Σ_t γ̄^t P(s_t = s, a_t = a)
    direct = np.einsum("sa,sad->d", weight, model.dr_leader)
    best_response = np.einsum("sa,sad->d", weight * q_bar / lam, da)
    score = lgamma * np.einsum("sa,sapd,p->d", weight, model.dP, v_bar) + model.dmu.T @ v_bar
    return ExactTerms(pi, q_bar, v_bar, dq, dv, da, direct, best_response, score)


# ---------------------------------------------------------------------------- the setup
@dataclass(frozen=True)
class Setup:
    """One ``(x, ξ)`` of the assignment: what the submission gets and the exact answers."""

    problem: ProblemView
    x: np.ndarray
    context: int
    oracle: OracleView
    model: TabularModel
    exact: ExactTerms


@cache
def _problem(overrides: tuple[tuple[str, Any], ...] = ()) -> GarnetProblem:
    return GarnetProblem(**{**PROBLEM_KWARGS, **dict(overrides)})


def setup(context: int = 0, x: Any = None, **overrides: Any) -> Setup:
    """The assignment's problem at ``x`` (default ``X_POINTS[context]``) for ``context``.

    Students may use it to try their estimators: ``setup().exact`` holds the exact answers, and
    ``overrides`` change the problem (e.g. ``lam=0.25``; keys of :data:`PROBLEM_KWARGS`).
    """
    unknown = sorted(set(overrides) - set(PROBLEM_KWARGS))
    if unknown:
        raise ValueError(f"unknown problem argument(s) {unknown}; expected keys of "
                         f"{sorted(PROBLEM_KWARGS)}")
    problem = _problem(tuple(sorted(overrides.items())))
    x = problem.check_x(X_POINTS[context] if x is None else x)
    model = problem.tabular(x, context)
    pi = soft_policy_iteration(model, problem.lam, tol=1e-13).pi
    oracle = TabularOracle(problem, x, context, TabularPolicy(pi), model=model)
    return Setup(ProblemView(problem), x, context, OracleView(oracle), model,
                 exact_terms(model, pi, problem.lam))


@cache
def _graded_setup(context: int) -> Setup:
    return setup(context)


def _problem_build() -> Build:
    return Build("hpgd_problem", {"problem": PROBLEM_KWARGS}, share="problem")


def _oracle_build(su: Setup) -> Build:
    return Build("hpgd_oracle", {"problem": PROBLEM_KWARGS, "x": su.x, "context": su.context,
                                 "pi": su.exact.pi}, share="oracle")


def _pair_labels(prefix: str, states, actions, d: int | None = None) -> list[str]:
    labels = []
    for s, a in zip(states, actions):
        name = f"{prefix}(s={s}, a={a})" if a >= 0 else f"{prefix.replace('Q', 'V')}(s={s})"
        labels.extend([name] if d is None else [f"{name}[x_{k}]" for k in range(d)])
    return labels


def _pairs(su: Setup, per_pair: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (state, action) pair, ``per_pair`` times each."""
    S, A = su.model.n_states, su.model.n_actions
    states = np.repeat(np.arange(S), A)
    actions = np.tile(np.arange(A), S)
    return np.repeat(states, per_pair), np.repeat(actions, per_pair)


def _grouped(values: np.ndarray, n_groups: int) -> np.ndarray:
    """``(n_groups·m, ...)`` → ``(m, n_groups·...)``: estimates of the groups side by side."""
    m = values.shape[0] // n_groups
    return values.reshape((n_groups, m) + values.shape[1:]).swapaxes(0, 1).reshape(m, -1)


#: the grader hands the submission at most this many samples per call (memory stays small)
CHUNK = 10_000


def _pair_calls(function: str, su: Setup, seed: int, states: np.ndarray, actions: np.ndarray,
                with_x: bool = True) -> list[Call]:
    """Calls for the per-(s, a) estimates, ``CHUNK`` samples at a time, sharing one generator."""
    calls = []
    for lo in range(0, states.size, CHUNK):
        s, a = states[lo:lo + CHUNK], actions[lo:lo + CHUNK]
        rng = Rng(seed, share="rng")
        args = (_problem_build(), su.x, su.context, _oracle_build(su), rng, s, a) if with_x \
            else (_problem_build(), _oracle_build(su), rng, s, a)
        calls.append(Call(function, args))
    return calls


def _gather(results: Results, states: np.ndarray, width: int | None, what: str,
            first: int = 0) -> np.ndarray:
    """The validated chunks of calls ``first, first + 1, ...`` stacked."""
    parts = []
    for k, lo in enumerate(range(0, states.size, CHUNK)):
        n = min(CHUNK, states.size - lo)
        parts.append(results.array(first + k, (n,) if width is None else (n, width), what))
    return np.concatenate(parts)


def _sample_calls(su: Setup, rng: Rng, n: int, numpy_seed: int | None = None) -> list[Call]:
    """Calls for ``n`` hypergradient estimates, ``CHUNK`` at a time, sharing ``rng``."""
    return [Call("hypergradient_estimates",
                 (_problem_build(), su.x, su.context, _oracle_build(su), rng,
                  min(CHUNK, n - lo)), numpy_seed=numpy_seed) for lo in range(0, n, CHUNK)]


def _gather_samples(results: Results, n: int, d: int, first: int = 0) -> np.ndarray:
    return np.concatenate([results.array(first + k, (min(CHUNK, n - lo), d),
                                         "hypergradient_estimates(...)")
                           for k, lo in enumerate(range(0, n, CHUNK))])


def _seed(context: Context) -> int:
    return int(context.rng.integers(2**63))


# ---------------------------------------------------------------------------- 2.1
def plan_leader_q(context: Context) -> Plan:
    su = _graded_setup(0)
    states, actions = _pairs(su, PER_PAIR_Q_BAR)
    S, A = su.model.n_states, su.model.n_actions
    lg = su.problem.leader_gamma

    def judge(results: Results) -> Outcome:
        found = _gather(results, states, None, "leader_q_estimates(...)")
        return unbiasedness(
            _grouped(found, S * A), su.exact.q_bar.ravel(), "Q_bar estimate",
            _pair_labels("Q_bar", np.repeat(np.arange(S), A), np.tile(np.arange(A), S)),
            targets={
                "weighting the tail by gamma_L^k; T' ~ Geo(1 - sqrt(gamma_L)) already survives "
                "k steps with probability gamma_L^(k/2), so weight by gamma_L^(k/2) (the means "
                "estimate Q_bar with discount gamma_L^1.5).":
                    leader_q(su.model, su.exact.pi, lg ** 1.5).ravel(),
                "summing the rewards up to T' without weights: the random horizon gives only "
                "half of the discount (the means estimate Q_bar with discount sqrt(gamma_L)).":
                    leader_q(su.model, su.exact.pi, np.sqrt(lg)).ravel(),
            })

    return Plan(_pair_calls("leader_q_estimates", su, _seed(context), states, actions,
                            with_x=False), judge)


# ---------------------------------------------------------------------------- 2.2, 2.3
def _dq_mistakes(su: Setup, select) -> dict[str, np.ndarray]:
    """The answers of three mistakes in Alg. 2, through ``select`` (dQ, dV or dA)."""
    lam, gamma = su.problem.lam, su.problem.gamma
    return {
        "the tail after T + 1 without the entropy bonus: it estimates the soft value V_lambda, "
        "so add lam * H(pi(.|s_t)) to each reward.":
            select(exact_terms(su.model, su.exact.pi, lam, soft=False)),
        "the score term without its factor gamma/(1 - gamma) (T is geometric: P(T = t) = "
        "(1 - gamma) gamma^t).":
            select(exact_terms(su.model, su.exact.pi, lam, score_scale=(1 - gamma) / gamma)),
        "no score term gamma/(1 - gamma) dlogP(s_T+1|s_T, a_T) * (soft tail return): x moves "
        "P here, so it is needed.": select(exact_terms(su.model, su.exact.pi, lam,
                                                       score_scale=0.0)),
    }


def plan_grad_q(context: Context) -> Plan:
    su = _graded_setup(1)
    S, A, d = su.model.n_states, su.model.n_actions, su.problem.n_params
    states, actions = _pairs(su, PER_PAIR_DQ)

    def judge(results: Results) -> Outcome:
        found = _gather(results, states, d, "grad_q_estimates(...)")
        mistakes = _dq_mistakes(su, lambda terms: terms.dq.reshape(-1))
        return unbiasedness(_grouped(found, S * A), su.exact.dq.reshape(-1),
                            "dQ estimate (Alg. 2, first half)",
                            _pair_labels("dQ", np.repeat(np.arange(S), A),
                                         np.tile(np.arange(A), S), d), targets=mistakes)

    return Plan(_pair_calls("grad_q_estimates", su, _seed(context), states, actions), judge)


def plan_grad_v(context: Context) -> Plan:
    su = _graded_setup(1)
    S, d = su.model.n_states, su.problem.n_params
    states, actions = np.repeat(np.arange(S), PER_STATE_DV), np.full(S * PER_STATE_DV, -1)

    def judge(results: Results) -> Outcome:
        found = _gather(results, states, d, "grad_q_estimates(..., actions = -1)")
        mistakes = _dq_mistakes(su, lambda terms: terms.dv.reshape(-1))
        hints = {"the first action taken from actions even when it is -1: pass start_actions "
                 "through to the oracle, which draws a ~ pi for -1.":
                     su.exact.dq[:, -1].reshape(-1)}
        no_score = list(mistakes)[-1]
        return unbiasedness(_grouped(found, S), su.exact.dv.reshape(-1),
                            "dV estimate (grad_q_estimates with actions = -1)",
                            _pair_labels("dQ", np.arange(S), np.full(S, -1), d),
                            targets={no_score: mistakes.pop(no_score)},
                            hints={**mistakes, **hints})

    return Plan(_pair_calls("grad_q_estimates", su, _seed(context), states, actions), judge)


def plan_grad_a(context: Context) -> Plan:
    su = _graded_setup(1)
    S, A, d = su.model.n_states, su.model.n_actions, su.problem.n_params
    states, actions = _pairs(su, PER_PAIR_DA)

    def judge(results: Results) -> Outcome:
        found = _gather(results, states, d, "grad_advantage_estimates(...)")
        target = {"returning dQ(s, a) instead of dA(s, a) = dQ(s, a) - dV(s): subtract an "
                  "estimate of dV(s) from an independent trajectory whose first action is drawn "
                  "from pi (actions = -1).": su.exact.dq.reshape(-1)}
        return unbiasedness(_grouped(found, S * A), su.exact.da.reshape(-1),
                            "dA estimate (Alg. 2)",
                            _pair_labels("dA", np.repeat(np.arange(S), A),
                                         np.tile(np.arange(A), S), d), targets=target,
                            hints=_dq_mistakes(su, lambda terms: terms.da.reshape(-1)))

    return Plan(_pair_calls("grad_advantage_estimates", su, _seed(context), states, actions),
                judge)


# ---------------------------------------------------------------------------- 2.4
def _hypergradient_mistakes(su: Setup) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(targets, hints)``: answers of common mistakes in Alg. 5."""
    e, lam, lg = su.exact, su.problem.lam, su.problem.leader_gamma
    occupancy = solve_bellman(policy_transitions(su.model.P, e.pi), lg, su.model.mu,
                              transpose=True)
    with_dq = np.einsum("s,sa,sad->d", occupancy, e.pi * e.q_bar / lam, e.dq)
    targets = {
        "the best-response term without its 1/lambda (d pi*/dx = pi* dA / lambda).":
            e.direct + lam * e.best_response + e.score,
        "the best-response and score terms without their 1/(1 - gamma_L) (T ~ Geo(1 - "
        "gamma_L): P(T = t) = (1 - gamma_L) gamma_L^t).":
            e.direct + (1 - lg) * (e.best_response + e.score),
        "no best-response term dA(s_T, a_T) Q_bar_hat / (lambda (1 - gamma_L)): the "
        "follower's response to x is the point of HPGD.": e.direct + e.score,
        "dQ in place of dA in the best-response term.": e.direct + with_dq + e.score,
    }
    hints = {
        "no score term dlog P(s_T|s_T-1, a_T-1) Q_bar_hat / (1 - gamma_L) (dlog mu(s_0) when "
        "T = 0): x moves P and mu here.": e.direct + e.best_response,
    }
    return targets, hints


def _plan_hypergradient(context: Context, index: int) -> Plan:
    su = _graded_setup(index)
    d = su.problem.n_params

    def judge(results: Results) -> Outcome:
        found = _gather_samples(results, N_HYPERGRADIENT, d)
        targets, hints = _hypergradient_mistakes(su)
        return unbiasedness(found, su.exact.gradient,
                            f"hypergradient estimate dJ/dx (Alg. 5) for context {index} at "
                            f"x = {list(X_POINTS[index])}", [f"dJ/dx_{k}" for k in range(d)],
                            targets=targets, hints=hints)

    return Plan(_sample_calls(su, Rng(_seed(context), share="rng"), N_HYPERGRADIENT), judge)


def plan_hypergradient_0(context: Context) -> Plan:
    return _plan_hypergradient(context, 0)


def plan_hypergradient_1(context: Context) -> Plan:
    return _plan_hypergradient(context, 1)


# ---------------------------------------------------------------------------- 2.5, 2.6
def plan_reproducible(context: Context) -> Plan:
    su = _graded_setup(0)
    seed = int(context.rng.integers(2**32))
    n = 200
    calls = []
    for s in (seed, seed, seed + 1):  # a different global NumPy state for every call
        calls += _sample_calls(su, Rng(s), n, numpy_seed=int(context.rng.integers(2**31)))

    def judge(results: Results) -> Outcome:
        runs = [_gather_samples(results, n, su.problem.n_params, first=k) for k in range(3)]
        if not np.array_equal(runs[0], runs[1]):
            return failed("two calls with generators seeded alike returned different estimates: "
                          "draw every random number from the rng argument (not np.random.* or "
                          "a generator of your own).")
        if np.array_equal(runs[0], runs[2]):
            return failed("calls with differently seeded generators returned the same "
                          "estimates: use the rng argument for the horizons and the oracle's "
                          "rollouts.")
        return passed()

    return Plan(calls, judge)


def expected_transitions(gamma: float, leader_gamma: float) -> float:
    """Expected number of transitions sampled by one Alg. 5 estimate (no termination): the main
    trajectory ``T + T' + 1`` and two Alg. 2 restarts of ``T_Q + T'_Q + 2`` each."""
    def mean(discount: float) -> float:  # E[Geo(1 − discount)] on {0, 1, ...}
        return discount / (1 - discount)

    main = mean(leader_gamma) + mean(np.sqrt(leader_gamma)) + 1
    restart = mean(gamma) + mean(np.sqrt(gamma)) + 2
    return float(main + 2 * restart)


def plan_expected_transitions(context: Context) -> Plan:
    cases = ((0.6, 0.5), (0.9, 0.8), (0.99, 0.3))

    def judge(results: Results) -> Outcome:
        for k, (gamma, lgamma) in enumerate(cases):
            found = results.number(k, "expected_sampled_transitions")
            expected = expected_transitions(gamma, lgamma)
            if not abs(found - expected) <= 1e-9 * expected:
                return failed(f"expected_sampled_transitions(gamma={gamma}, leader_gamma="
                              f"{lgamma}) returned {found:.12g}; expected {expected:.12g}. Count "
                              "the transitions of the main trajectory (T + T' + 1) and of both "
                              "restarts (T_Q + T'_Q + 2 each); E[T] = g/(1 - g) for T ~ Geo(1 - "
                              "g) on {0, 1, ...}.")
        return passed()

    return Plan([Call("expected_sampled_transitions", case, returns="number") for case in cases],
                judge)


CHECKS = (
    Check("2.1", "leader_q_estimates: unbiased for Q_bar(s, a)", 3, plan_leader_q),
    Check("2.2a", "grad_q_estimates: unbiased for dQ(s, a)", 3, plan_grad_q),
    Check("2.2b", "grad_q_estimates with actions = -1: unbiased for dV(s)", 1, plan_grad_v,
          depends_on=("2.2a",)),
    Check("2.3", "grad_advantage_estimates: unbiased for dA(s, a)", 2, plan_grad_a,
          depends_on=("2.2a", "2.2b")),
    Check("2.4a", "hypergradient_estimates: unbiased for dJ/dx (context 0)", 3,
          plan_hypergradient_0, depends_on=("2.3", "2.1")),
    Check("2.4b", "hypergradient_estimates: unbiased for dJ/dx (context 1)", 3,
          plan_hypergradient_1, depends_on=("2.3", "2.1")),
    Check("2.5", "hypergradient_estimates: reproducible from the rng", 1, plan_reproducible),
    Check("2.6", "expected_sampled_transitions: the cost of one estimate", 1,
          plan_expected_transitions),
)
