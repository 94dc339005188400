"""The problem's samplers against its model: transitions and initial states of the follower env
(and of a native oracle) by chi-square tests, and the env's rewards against the problem's
per-transition reward functions.

The follower env is stepped with uniformly random actions (every action is exercised; the
transition law does not depend on the policy). Transitions are grouped by ``(s, a)``; each
pair's outcomes (next state, or "the episode ended": the missing mass of the model's row) are
compared with ``P(·|s, a)`` by two tests, each at half the check's false-alarm budget split over
the contexts: Pearson's chi-square summed over pairs (small bins pooled,
:func:`~bilevel_envs.testing.statistics.merged_pearson`) and the pooled count of each pair's most
likely outcome (:func:`~bilevel_envs.testing.statistics.pooled_mode_chi_square_p`, powerful
against a wrong slip probability). Initial states are counted over ``reset()`` calls.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from bilevel_envs.policies import TabularPolicy
from bilevel_envs.problem import BilevelProblem
from bilevel_envs.tabular import TabularModel
from bilevel_envs.testing.report import CheckResult
from bilevel_envs.testing.statistics import (
    impossible_outcomes,
    merged_pearson,
    pooled_mode_chi_square_p,
)

#: the largest dense table of outcome counts (pairs × (S + 1)); the most visited pairs beyond it
#: are kept
MAX_TABLE = 20_000_000


@dataclass
class Transitions:
    """Transitions of one context sampled by one sampler (``obs`` etc. of length ``N``)."""

    obs: np.ndarray
    actions: np.ndarray
    next_obs: np.ndarray
    ended: np.ndarray
    rewards: np.ndarray | None = None
    leader_rewards: np.ndarray | None = None


def sample_follower_env(problem: BilevelProblem, x: np.ndarray, context: int, n: int,
                        n_initial: int, rng: np.random.Generator) -> tuple[Transitions, np.ndarray]:
    """``n`` transitions of ``problem.follower_env(x, context)`` under uniform actions
    (auto-reset after an episode ends or is truncated) and the first observations of
    ``n_initial`` further resets."""
    env = problem.follower_env(x, context)
    try:
        obs, _ = env.reset(seed=int(rng.integers(2**31 - 1)))
        actions = rng.integers(problem.follower_action_space.n, size=n)
        rows: list[tuple[Any, ...]] = []
        for a in actions.tolist():
            nxt, reward, terminated, truncated, info = env.step(a)
            if "leader_reward" not in info:
                raise KeyError("the follower env's step info has no 'leader_reward' (the "
                               "leader's reward of the transition)")
            rows.append((obs, nxt, terminated, reward, info["leader_reward"]))
            obs = env.reset()[0] if terminated or truncated else nxt
        initial = np.asarray([env.reset()[0] for _ in range(n_initial)])
    finally:
        env.close()
    o, nxt, ended, r, lr = zip(*rows)
    return Transitions(np.asarray(o), actions, np.asarray(nxt), np.asarray(ended, dtype=bool),
                       np.asarray(r, dtype=np.float64), np.asarray(lr, dtype=np.float64)), initial


def sample_native(problem: BilevelProblem, x: np.ndarray, context: int, n: int,
                  rng: np.random.Generator, n_states: int) -> Transitions | None:
    """``n`` transitions of the problem's own oracle (uniform policy), or ``None`` if it has
    none."""
    uniform = TabularPolicy(np.full((n_states, problem.follower_action_space.n),
                                    1.0 / problem.follower_action_space.n))
    oracle = problem.make_oracle(x, context, uniform)
    if oracle is None:
        return None
    n_envs = max(1, min(100, n // 100))
    r = oracle.rollout(rng, n_envs, -(-n // n_envs))
    m = r.mask
    return Transitions(r.obs[m], r.actions[m], r.next_obs[m], r.terminated[m])


def rewards_check(problem: BilevelProblem, x: np.ndarray, samples: dict[int, Transitions]
                  ) -> CheckResult:
    """The env's reward and ``info["leader_reward"]`` against ``follower_reward`` and
    ``leader_reward`` at the sampled transitions (equal to round-off)."""
    start = time.perf_counter()
    worst, where = 0.0, ""
    for c, t in samples.items():
        for name, observed in (("follower_reward", t.rewards), ("leader_reward",
                                                                t.leader_rewards)):
            expected = np.asarray(getattr(problem, name)(x, c, t.obs, t.actions, t.next_obs),
                                  dtype=np.float64)
            if expected.shape != observed.shape:
                return CheckResult("sampler rewards", False, None,
                                   f"{name} returned shape {expected.shape} for "
                                   f"{len(observed)} transitions at context {c}",
                                   time.perf_counter() - start)
            scale = max(np.abs(expected).max(), np.abs(observed).max(), 1e-300)
            err = np.abs(expected - observed) / scale
            i = int(np.argmax(err))
            if err[i] > worst or not where:
                env_name = "reward" if name == "follower_reward" else 'info["leader_reward"]'
                worst = float(err[i])
                where = (f"the env's {env_name} {observed[i]:.6g} vs {name} {expected[i]:.6g} "
                         f"at context {c}, transition (s={t.obs[i]}, a={t.actions[i]}, "
                         f"s'={t.next_obs[i]})")
    seconds = time.perf_counter() - start
    if worst > 1e-9:
        return CheckResult("sampler rewards", False, worst,
                           f"the follower env's rewards disagree with the problem's reward "
                           f"functions: {where} (rel. error {worst:.3g})", seconds)
    return CheckResult("sampler rewards", True, worst, "the env's rewards equal follower_reward "
                       f"and leader_reward to round-off (worst rel. error {worst:.3g})", seconds)


def _state_indices(values: np.ndarray, n_states: int, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.dtype.kind not in "iu" or (arr.size and (
            arr.min() < 0 or arr.max() >= n_states)):
        raise ValueError(f"the {what} are not the model's state indices 0..{n_states - 1} "
                         f"(dtype {arr.dtype}, shape {arr.shape})")
    return arr.astype(np.int64)


def outcome_table(model: TabularModel, t: Transitions) -> tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray]:
    """Per visited ``(s, a)`` (the most visited first): the pair, the counts of its outcomes
    ``(pairs, S + 1)`` (last: the episode ended) and the model's probabilities of them."""
    S, A = model.n_states, model.n_actions
    s = _state_indices(t.obs, S, "follower env's observations")
    nxt = _state_indices(t.next_obs, S, "follower env's next observations")
    outcome = np.where(t.ended, S, nxt)
    pair = s * A + np.asarray(t.actions, dtype=np.int64)
    keys, inverse, visits = np.unique(pair, return_inverse=True, return_counts=True)
    order = np.argsort(-visits, kind="stable")[: max(1, MAX_TABLE // (S + 1))]
    rank = np.full(len(keys), -1)
    rank[order] = np.arange(len(order))
    row = rank[inverse]
    kept = row >= 0
    counts = np.zeros((len(order), S + 1))
    np.add.at(counts, (row[kept], outcome[kept]), 1.0)
    ps, pa = keys[order] // A, keys[order] % A
    rows = model.P[ps, pa]
    probs = np.concatenate([rows, np.maximum(1.0 - rows.sum(-1), 0.0)[:, None]], axis=1)
    return np.stack([ps, pa], axis=1), counts, probs


def transitions_check(models: dict[int, TabularModel], samples: dict[str, dict[int, Transitions]],
                      alpha: float) -> CheckResult:
    """Chi-square tests of every sampler's transitions against ``P`` (see module docstring):
    Bonferroni over samplers, contexts and the two tests."""
    start = time.perf_counter()
    n_tests = 2 * sum(len(by_context) for by_context in samples.values())
    level = alpha / max(n_tests, 1)
    worst_p, worst = 1.0, ""
    for source, by_context in samples.items():
        for c, t in by_context.items():
            pairs, counts, probs = outcome_table(models[c], t)
            bad = impossible_outcomes(counts, probs)
            if len(bad):
                r, k = bad[0]
                s, a = pairs[r]
                to = "ended the episode" if k == models[c].n_states else f"moved to s'={k}"
                return CheckResult("sampler transitions", False, 0.0,
                                   f"the {source} {to} from s={s} with a={a} at context {c}, "
                                   "which the model's P gives probability 0",
                                   time.perf_counter() - start)
            statistic, df = merged_pearson(counts, probs)
            p_pearson = float(stats.chi2.sf(statistic, df)) if df else 1.0
            p_mode = pooled_mode_chi_square_p(counts, probs)
            p = min(p_pearson, p_mode)
            if p < worst_p or not worst:
                worst_p = p
                worst = (f"the {source} at context {c}: Pearson chi-square {statistic:.1f} on "
                         f"{df} df (p = {p_pearson:.3g}), pooled most-likely-outcome test "
                         f"p = {p_mode:.3g}, {int(counts.sum())} transitions in "
                         f"{len(counts)} (s, a) pairs")
    seconds = time.perf_counter() - start
    verdict = worst_p >= level
    head = ("the samplers' transitions agree with the model's P" if verdict else
            "the sampler's transitions disagree with the model's P")
    return CheckResult("sampler transitions", verdict, worst_p,
                       f"{head} (smallest p = {worst_p:.3g}, threshold {level:.3g} = α / "
                       f"{n_tests} tests): {worst}", seconds)


def initial_states_check(models: dict[int, TabularModel], initial: dict[int, np.ndarray],
                         alpha: float) -> CheckResult:
    """Pearson's chi-square of the follower env's reset states against ``μ`` per context
    (Bonferroni over contexts)."""
    start = time.perf_counter()
    level = alpha / max(len(initial), 1)
    worst_p, worst = 1.0, ""
    for c, states in initial.items():
        mu = models[c].mu
        s = _state_indices(states, len(mu), "follower env's reset observations")
        counts = np.bincount(s, minlength=len(mu)).astype(np.float64)
        bad = impossible_outcomes(counts, mu)
        if len(bad):
            return CheckResult("sampler initial states", False, 0.0,
                               f"the follower env started in s={bad[0][1]} at context {c}, "
                               "which the model's μ gives probability 0",
                               time.perf_counter() - start)
        statistic, df = merged_pearson(counts, mu)
        p = float(stats.chi2.sf(statistic, df)) if df else 1.0
        if p < worst_p or not worst:
            worst_p, worst = p, (f"context {c}: chi-square {statistic:.1f} on {df} df over "
                                 f"{len(s)} resets")
    verdict = worst_p >= level
    head = ("the follower env's initial states agree with the model's μ" if verdict else
            "the follower env's initial states disagree with the model's μ")
    return CheckResult("sampler initial states", verdict, worst_p,
                       f"{head} (smallest p = {worst_p:.3g}, threshold {level:.3g}): {worst}",
                       time.perf_counter() - start)
