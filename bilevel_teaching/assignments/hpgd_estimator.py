"""Grader of assignment 2, ``hpgd_estimator``: HPGD's trajectory estimators (paper Alg. 2, 5).

The submission estimates, from trajectories only, the leader's ``Q̄``, the follower's ``∂Q`` and
``∂A`` (Thm 2, Alg. 2) and the hypergradient ``dJ_ξ/dx`` (Prop. 1, Alg. 5) on a small Garnet
problem in which ``x`` moves the follower's and the leader's rewards, the transitions and the
initial distribution (so every term of Prop. 1 matters). It sees the problem through
:class:`ProblemView` (discounts, λ and the per-transition derivative terms, no tabular model)
and the follower through :class:`OracleView` (``rollout`` only): as a leader would.

Each check draws many i.i.d. estimates and compares their means with the exact values computed
here (:func:`exact_terms`: linear solves with the exact soft-optimal policy), within ``z``
measured standard errors (:func:`~bilevel_teaching.core.unbiasedness`: ``z ≥ 4``, more when
many numbers are compared, for a 0.1 % family-wise false-alarm rate). The standard error must
also be small enough that a real mistake (a missing ``1/λ``, ``1/(1−γ̄)``, entropy bonus or
score term) would show: the checks list what each such mistake would have estimated and name
the one the submission's means agree with.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any

import numpy as np

from bilevel_envs.envs.garnet import GarnetProblem
from bilevel_envs.followers import TabularPolicy
from bilevel_envs.oracles import TabularOracle
from bilevel_envs.rollouts import Rollouts
from bilevel_envs.tabular import (
    TabularModel,
    evaluate_policy,
    expected_next,
    policy_transitions,
    soft_policy_iteration,
    solve_bellman,
)
from bilevel_teaching.core import (
    Check,
    CheckFailed,
    Outcome,
    WrittenPart,
    as_array,
    failed,
    passed,
    require_function,
    unbiasedness,
)

TITLE = "Assignment 2 - The HPGD hypergradient estimator (v1.0)"

WRITTEN = (
    WrittenPart("1.1", "random horizons: unbiasedness of the sqrt-discounted tail", 2),
    WrittenPart("1.2", "Alg. 5 is unbiased for Prop. 1", 3),
    WrittenPart("1.3", "why dA and not dQ; why two independent restarts", 2),
    WrittenPart("1.4", "variance: measure and explain the 1/(lambda (1 - gamma_L)) scaling", 2),
)

#: the problem of the assignment: x moves r, r_leader, P and mu; moderate variance
PROBLEM_KWARGS: dict[str, Any] = dict(n_states=5, n_actions=2, n_params=3, n_contexts=2,
                                      lam=0.5, gamma=0.6, leader_gamma=0.5, p_end=0.2,
                                      transition_scale=0.5, initial_scale=0.5, seed=1)
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


# ---------------------------------------------------------------------------- what a leader sees
class ProblemView:
    """The problem as HPGD sees it: discounts, λ, sizes and per-transition derivative terms.

    Every ``grad_*`` method takes arrays of ``N`` transitions and returns ``(N, d)``.
    """

    def __init__(self, problem: GarnetProblem):
        self._problem = problem
        self.lam: float = problem.lam
        self.gamma: float = problem.gamma
        self.leader_gamma: float = problem.leader_gamma
        self.n_params: int = problem.n_params
        self.n_states: int = problem.follower_observation_space.n
        self.n_actions: int = problem.follower_action_space.n

    def grad_follower_reward(self, x, context, obs, actions, next_obs) -> np.ndarray:
        """``∂x r(s, a)``, shape ``(N, d)``."""
        return self._problem.grad_follower_reward(x, context, obs, actions, next_obs)

    def grad_leader_reward(self, x, context, obs, actions, next_obs) -> np.ndarray:
        """``∂x r̄(s, a)``, shape ``(N, d)``."""
        return self._problem.grad_leader_reward(x, context, obs, actions, next_obs)

    def grad_log_transition(self, x, context, obs, actions, next_obs) -> np.ndarray:
        """``∂x log P(s'|s, a)``, shape ``(N, d)`` (meaningful for transitions that continue)."""
        return self._problem.grad_log_transition(x, context, obs, actions, next_obs)

    def grad_log_initial(self, x, context, obs) -> np.ndarray:
        """``∂x log μ(s_0)``, shape ``(N, d)``."""
        return self._problem.grad_log_initial(x, context, obs)

    def __repr__(self) -> str:
        return (f"ProblemView(lam={self.lam}, gamma={self.gamma}, leader_gamma="
                f"{self.leader_gamma}, n_states={self.n_states}, n_actions={self.n_actions}, "
                f"n_params={self.n_params})")


class OracleView:
    """The follower's trajectory oracle (paper Assumption 3.2): sampling only.

    Trajectories follow the follower's soft-optimal policy in the infinite-horizon MDP; a chain
    stops when its episode terminates (later entries have ``mask == False``).
    """

    def __init__(self, oracle: TabularOracle):
        self._oracle = oracle

    def rollout(self, rng: np.random.Generator, n_envs: int, n_steps: int, *,
                start_states=None, start_actions=None, lengths=None) -> Rollouts:
        """Sample ``n_envs`` chains of at most ``n_steps`` transitions.

        Args:
            rng: the source of randomness.
            start_states: ``(n_envs,)`` first states; ``-1`` (or ``None`` for all): from μ.
            start_actions: ``(n_envs,)`` first actions; ``-1`` (or ``None`` for all): from π.
            lengths: ``(n_envs,)`` number of transitions of each chain (``≤ n_steps``).

        Returns:
            :class:`~bilevel_envs.rollouts.Rollouts`: arrays ``(n_envs, n_steps)`` ``obs``,
            ``actions``, ``next_obs``, ``rewards`` (follower), ``leader_rewards``, ``entropy``
            (``H(π(·|s_t))``), ``terminated``, ``mask`` (real transitions).
        """
        return self._oracle.rollout(rng, n_envs, n_steps, start_states=start_states,
                                    start_actions=start_actions, lengths=lengths,
                                    auto_reset=False, time_limit=False)


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


def _call_pairs(function, su: Setup, rng: np.random.Generator, states: np.ndarray,
                actions: np.ndarray, what: str, with_x: bool = True) -> np.ndarray:
    """The submission's per-(s, a) estimates, requested ``CHUNK`` samples at a time."""
    parts = []
    for lo in range(0, states.size, CHUNK):
        s, a = states[lo:lo + CHUNK].copy(), actions[lo:lo + CHUNK].copy()
        args = (su.problem, su.x.copy(), su.context, su.oracle, rng, s, a) if with_x else \
            (su.problem, su.oracle, rng, s, a)
        shape = (s.size, su.problem.n_params) if with_x else (s.size,)
        parts.append(as_array(function(*args), shape, what))
    return np.concatenate(parts)


def _call_samples(function, su: Setup, rng: np.random.Generator, n: int, what: str
                  ) -> np.ndarray:
    """``n`` hypergradient estimates, requested ``CHUNK`` at a time."""
    parts = []
    for lo in range(0, n, CHUNK):
        m = min(CHUNK, n - lo)
        parts.append(as_array(function(su.problem, su.x.copy(), su.context, su.oracle, rng, m),
                              (m, su.problem.n_params), what))
    return np.concatenate(parts)


# ---------------------------------------------------------------------------- 2.1
def check_leader_q(submission: ModuleType, rng: np.random.Generator) -> Outcome:
    f = require_function(submission, "leader_q_estimates",
                         "leader_q_estimates(problem, oracle, rng, states, actions)")
    su = setup(0)
    states, actions = _pairs(su, PER_PAIR_Q_BAR)
    found = _call_pairs(f, su, rng, states, actions, "leader_q_estimates(...)", with_x=False)
    S, A = su.model.n_states, su.model.n_actions
    lg = su.problem.leader_gamma
    return unbiasedness(
        _grouped(found, S * A), su.exact.q_bar.ravel(), "Q_bar estimate",
        _pair_labels("Q_bar", np.repeat(np.arange(S), A), np.tile(np.arange(A), S)),
        targets={
            "weighting the tail by gamma_L^k; T' ~ Geo(1 - sqrt(gamma_L)) already survives k "
            "steps with probability gamma_L^(k/2), so weight by gamma_L^(k/2) (the means "
            "estimate Q_bar with discount gamma_L^1.5).":
                leader_q(su.model, su.exact.pi, lg ** 1.5).ravel(),
            "summing the rewards up to T' without weights: the random horizon gives only half "
            "of the discount (the means estimate Q_bar with discount sqrt(gamma_L)).":
                leader_q(su.model, su.exact.pi, np.sqrt(lg)).ravel(),
        })


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


def check_grad_q(submission: ModuleType, rng: np.random.Generator) -> Outcome:
    f = require_function(submission, "grad_q_estimates",
                         "grad_q_estimates(problem, x, context, oracle, rng, states, actions)")
    su = setup(1)
    S, A, d = su.model.n_states, su.model.n_actions, su.problem.n_params
    states, actions = _pairs(su, PER_PAIR_DQ)
    found = _call_pairs(f, su, rng, states, actions, "grad_q_estimates(...)")
    mistakes = _dq_mistakes(su, lambda terms: terms.dq.reshape(-1))
    return unbiasedness(_grouped(found, S * A), su.exact.dq.reshape(-1),
                        "dQ estimate (Alg. 2, first half)",
                        _pair_labels("dQ", np.repeat(np.arange(S), A), np.tile(np.arange(A), S),
                                     d), targets=mistakes)


def check_grad_v(submission: ModuleType, rng: np.random.Generator) -> Outcome:
    f = require_function(submission, "grad_q_estimates",
                         "grad_q_estimates(problem, x, context, oracle, rng, states, actions)")
    su = setup(1)
    S, d = su.model.n_states, su.problem.n_params
    states, actions = np.repeat(np.arange(S), PER_STATE_DV), np.full(S * PER_STATE_DV, -1)
    found = _call_pairs(f, su, rng, states, actions, "grad_q_estimates(..., actions = -1)")
    mistakes = _dq_mistakes(su, lambda terms: terms.dv.reshape(-1))
    hints = {"the first action taken from actions even when it is -1: pass start_actions "
             "through to the oracle, which draws a ~ pi for -1.": su.exact.dq[:, -1].reshape(-1)}
    no_score = list(mistakes)[-1]
    return unbiasedness(_grouped(found, S), su.exact.dv.reshape(-1),
                        "dV estimate (grad_q_estimates with actions = -1)",
                        _pair_labels("dQ", np.arange(S), np.full(S, -1), d),
                        targets={no_score: mistakes.pop(no_score)}, hints={**mistakes, **hints})


def check_grad_a(submission: ModuleType, rng: np.random.Generator) -> Outcome:
    f = require_function(submission, "grad_advantage_estimates",
                         "grad_advantage_estimates(problem, x, context, oracle, rng, states, "
                         "actions)")
    su = setup(1)
    S, A, d = su.model.n_states, su.model.n_actions, su.problem.n_params
    states, actions = _pairs(su, PER_PAIR_DA)
    found = _call_pairs(f, su, rng, states, actions, "grad_advantage_estimates(...)")
    target = {"returning dQ(s, a) instead of dA(s, a) = dQ(s, a) - dV(s): subtract an estimate "
              "of dV(s) from an independent trajectory whose first action is drawn from pi "
              "(actions = -1).": su.exact.dq.reshape(-1)}
    return unbiasedness(_grouped(found, S * A), su.exact.da.reshape(-1), "dA estimate (Alg. 2)",
                        _pair_labels("dA", np.repeat(np.arange(S), A), np.tile(np.arange(A), S),
                                     d), targets=target,
                        hints=_dq_mistakes(su, lambda terms: terms.da.reshape(-1)))


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


def _check_hypergradient(submission: ModuleType, rng: np.random.Generator, context: int
                         ) -> Outcome:
    f = require_function(submission, "hypergradient_estimates",
                         "hypergradient_estimates(problem, x, context, oracle, rng, n_samples)")
    su = setup(context)
    d = su.problem.n_params
    found = _call_samples(f, su, rng, N_HYPERGRADIENT, "hypergradient_estimates(...)")
    targets, hints = _hypergradient_mistakes(su)
    return unbiasedness(found, su.exact.gradient,
                        f"hypergradient estimate dJ/dx (Alg. 5) for context {context} at "
                        f"x = {list(X_POINTS[context])}", [f"dJ/dx_{k}" for k in range(d)],
                        targets=targets, hints=hints)


def check_hypergradient_0(submission: ModuleType, rng: np.random.Generator) -> Outcome:
    return _check_hypergradient(submission, rng, 0)


def check_hypergradient_1(submission: ModuleType, rng: np.random.Generator) -> Outcome:
    return _check_hypergradient(submission, rng, 1)


# ---------------------------------------------------------------------------- 2.5, 2.6
def check_reproducible(submission: ModuleType, rng: np.random.Generator) -> Outcome:
    f = require_function(submission, "hypergradient_estimates",
                         "hypergradient_estimates(problem, x, context, oracle, rng, n_samples)")
    su = setup(0)
    seed = int(rng.integers(2**32))
    n = 200
    runs = []
    for s in (seed, seed, seed + 1):
        np.random.seed(int(rng.integers(2**31)))  # a different global state for every call
        runs.append(_call_samples(f, su, np.random.default_rng(s), n,
                                  "hypergradient_estimates(...)"))
    if not np.array_equal(runs[0], runs[1]):
        return failed("two calls with generators seeded alike returned different estimates: "
                      "draw every random number from the rng argument (not np.random.* or "
                      "a generator of your own).")
    if np.array_equal(runs[0], runs[2]):
        return failed("calls with differently seeded generators returned the same estimates: "
                      "use the rng argument for the horizons and the oracle's rollouts.")
    return passed()


def expected_transitions(gamma: float, leader_gamma: float) -> float:
    """Expected number of transitions sampled by one Alg. 5 estimate (no termination): the main
    trajectory ``T + T' + 1`` and two Alg. 2 restarts of ``T_Q + T'_Q + 2`` each."""
    def mean(discount: float) -> float:  # E[Geo(1 − discount)] on {0, 1, ...}
        return discount / (1 - discount)

    main = mean(leader_gamma) + mean(np.sqrt(leader_gamma)) + 1
    restart = mean(gamma) + mean(np.sqrt(gamma)) + 2
    return float(main + 2 * restart)


def check_expected_transitions(submission: ModuleType, rng: np.random.Generator) -> Outcome:
    f = require_function(submission, "expected_sampled_transitions",
                         "expected_sampled_transitions(gamma, leader_gamma)")
    for gamma, lgamma in ((0.6, 0.5), (0.9, 0.8), (0.99, 0.3)):
        try:
            found = float(f(gamma, lgamma))
        except (TypeError, ValueError):
            raise CheckFailed("expected_sampled_transitions must return a number") from None
        expected = expected_transitions(gamma, lgamma)
        if not abs(found - expected) <= 1e-9 * expected:
            return failed(f"expected_sampled_transitions(gamma={gamma}, leader_gamma={lgamma}) "
                          f"returned {found:.6g}; expected {expected:.6g}. Count the transitions "
                          "of the main trajectory (T + T' + 1) and of both restarts (T_Q + T'_Q "
                          "+ 2 each); E[T] = g/(1 - g) for T ~ Geo(1 - g) on {0, 1, ...}.")
    return passed()


CHECKS = (
    Check("2.1", "leader_q_estimates: unbiased for Q_bar(s, a)", 3, check_leader_q),
    Check("2.2a", "grad_q_estimates: unbiased for dQ(s, a)", 3, check_grad_q),
    Check("2.2b", "grad_q_estimates with actions = -1: unbiased for dV(s)", 1, check_grad_v),
    Check("2.3", "grad_advantage_estimates: unbiased for dA(s, a)", 2, check_grad_a),
    Check("2.4a", "hypergradient_estimates: unbiased for dJ/dx (context 0)", 3,
          check_hypergradient_0),
    Check("2.4b", "hypergradient_estimates: unbiased for dJ/dx (context 1)", 3,
          check_hypergradient_1),
    Check("2.5", "hypergradient_estimates: reproducible from the rng", 1, check_reproducible),
    Check("2.6", "expected_sampled_transitions: the cost of one estimate", 1,
          check_expected_transitions),
)
