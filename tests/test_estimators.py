"""HPGD's estimators against the exact hypergradient (tolerances from measured standard errors)."""

import gymnasium as gym
import numpy as np
import pytest

from bilevel_envs.envs.four_rooms.problem import FourRoomsShaping
from bilevel_envs.envs.garnet import GarnetProblem
from bilevel_envs.exact import ExactSolver
from bilevel_envs.followers import TabularPolicy
from bilevel_envs.oracles import TabularOracle
from bilevel_envs.rollouts import Rollouts
from leaders.estimators import WeightedTerms, every_visit_estimate, paper_estimate


def _estimates(problem, x, n_samples, seed, drop=None):
    """``(n_samples, d)`` context-weighted Alg. 5 estimates and the exact ``dJ/dx``."""
    solver = ExactSolver(problem, tol=1e-12)
    _, solution, _ = solver.solve(x)
    values = solver.per_context(x, with_gradient=True)
    weights = problem.context_probs
    rng = np.random.default_rng(seed)
    per_sample = 0.0
    for c in range(problem.n_contexts):
        oracle = TabularOracle(problem, x, c, TabularPolicy(solution.pi[c]))
        terms = paper_estimate(problem, x, c, oracle, rng, n_samples)
        if drop is not None:
            terms = WeightedTerms(problem, x, c, [p for p in terms.parts if p[0] != drop])
        per_sample = per_sample + weights[c] * terms.per_segment(n_samples)
    return per_sample, weights @ values.gradient


def _z_scores(samples, exact):
    se = samples.std(axis=0, ddof=1) / np.sqrt(len(samples))
    return (samples.mean(axis=0) - exact) / se


def _directions(d, k=5, seed=0):
    u = np.random.default_rng(seed).normal(size=(d, k))
    return u / np.linalg.norm(u, axis=0)


@pytest.mark.parametrize("lam", [0.001, 0.005])
def test_paper_estimator_is_unbiased_on_four_rooms(lam):
    """≥ 2,000 estimates per x (4,000 per context), 3 random x: every coordinate and 5 random
    unit directions within 4 measured standard errors of the exact hypergradient."""
    problem = FourRoomsShaping(lam=lam, beta=1.0)
    for seed in range(3):
        x = np.random.default_rng(seed).normal(0.0, 1.0, size=105)
        samples, exact = _estimates(problem, x, 4000, seed=100 + seed)
        assert np.abs(_z_scores(samples, exact)).max() < 4
        u = _directions(105)
        assert np.abs(_z_scores(samples @ u, exact @ u)).max() < 4


def test_unbiasedness_check_detects_a_missing_term_on_four_rooms():
    """Power: dropping the best-response term (the leader's steering signal) must fail."""
    problem = FourRoomsShaping(lam=0.005, beta=1.0)
    x = np.random.default_rng(0).normal(0.0, 1.0, size=105)
    samples, exact = _estimates(problem, x, 4000, seed=100, drop="follower_reward")
    assert np.abs(_z_scores(samples, exact)).max() > 4


GARNET = dict(lam=0.5, gamma=0.7, leader_gamma=0.6, p_end=0.1)


@pytest.mark.parametrize("seed", [0, 1])
def test_paper_estimator_is_unbiased_with_score_terms(seed):
    """x moves P and μ too (∂log P, ∂log μ terms, γ ≠ γ̄): all coordinates within 4 SE."""
    problem = GarnetProblem(seed=seed, **GARNET)
    x = np.random.default_rng(seed).uniform(-1, 1, size=problem.n_params)
    samples, exact = _estimates(problem, x, 60_000, seed=seed)
    assert np.abs(_z_scores(samples, exact)).max() < 4


@pytest.mark.parametrize("drop, scales", [("log_transition", {}),
                                          ("log_initial", {"initial_scale": 2.0})])
def test_unbiasedness_check_detects_missing_score_terms(drop, scales):
    problem = GarnetProblem(seed=0, **GARNET, **scales)
    x = np.random.default_rng(0).uniform(-1, 1, size=problem.n_params)
    samples, exact = _estimates(problem, x, 60_000, seed=0)
    assert np.abs(_z_scores(samples, exact)).max() < 4  # the full estimator passes ...
    samples, exact = _estimates(problem, x, 60_000, seed=0, drop=drop)
    assert np.abs(_z_scores(samples, exact)).max() > 4  # ... and fails without the term


def _every_visit_error(problem, x, n_envs, n_steps, seed):
    """Relative error of the context-weighted every-visit estimate (what HPGD steps along)."""
    solver = ExactSolver(problem, tol=1e-12)
    _, solution, _ = solver.solve(x)
    _, exact = solver.value_and_grad(x)
    estimate = 0.0
    for c, weight in enumerate(problem.context_probs):
        oracle = TabularOracle(problem, x, c, TabularPolicy(solution.pi[c]))
        rollouts = oracle.rollout(np.random.default_rng(seed), n_envs, n_steps, time_limit=False)
        estimate = estimate + weight * every_visit_estimate(problem, x, c, rollouts).total()
    return np.linalg.norm(estimate - exact) / np.linalg.norm(exact)


def test_every_visit_estimator_is_consistent():
    """The authors' batch estimator is biased for small batches but consistent: its relative
    error shrinks with the batch (10⁴ → 10⁶ transitions) and is small for the large one."""
    problem = FourRoomsShaping(lam=0.005, beta=1.0)
    x = np.random.default_rng(1).normal(0.0, 0.5, size=105)
    small = _every_visit_error(problem, x, 5, 2000, seed=0)
    large = _every_visit_error(problem, x, 200, 5000, seed=0)
    assert large < small / 3 and large < 0.1


def test_every_visit_estimator_is_consistent_with_score_terms():
    problem = GarnetProblem(seed=0, **GARNET)
    x = np.random.default_rng(0).uniform(-1, 1, size=problem.n_params)
    assert _every_visit_error(problem, x, 400, 5000, seed=0) < 0.05


def test_every_visit_needs_discrete_observations():
    problem = GarnetProblem()
    problem.follower_observation_space = gym.spaces.Box(-1.0, 1.0, shape=(1,))
    with pytest.raises(ValueError, match=r"^estimator='every_visit' needs a Discrete follower "
                       r"observation space or a state aggregation \(problem.n_observation_cells, "
                       r"observation_index\); use estimator='paper'$"):
        every_visit_estimate(problem, np.zeros(4), 0, None)


def _garnet_rollouts(n_envs, n_steps, seed, **problem_kwargs):
    problem = GarnetProblem(**{**GARNET, **problem_kwargs})
    x = np.random.default_rng(0).uniform(-1, 1, size=problem.n_params)
    _, solution, _ = ExactSolver(problem, tol=1e-12).solve(x)
    oracle = TabularOracle(problem, x, 0, TabularPolicy(solution.pi[0]))
    return problem, x, oracle.rollout(np.random.default_rng(seed), n_envs, n_steps,
                                      time_limit=False)


def test_leave_one_out_advantages_need_another_visit_of_the_pair():
    """A batch that visits every (s, a) once: the leave-one-out advantage has no other visit to
    average (0), so there is no best-response term; the plain estimator (the default) has one.
    Everything else is the same."""
    problem, x, rollouts = _garnet_rollouts(1, 5, seed=0, n_states=8, n_actions=4)
    pairs = rollouts.obs[0] * 4 + rollouts.actions[0]
    assert len(set(pairs)) == 5
    plain = every_visit_estimate(problem, x, 0, rollouts)
    loo = every_visit_estimate(problem, x, 0, rollouts, leave_one_out=True)
    np.testing.assert_array_equal(loo.total(term="best_response"), 0.0)
    assert np.abs(plain.total(term="best_response")).max() > 1e-3
    for term in ("direct", "transition_score", "initial_score"):
        np.testing.assert_array_equal(loo.total(term=term), plain.total(term=term))


def test_every_visit_estimate_ignores_padding():
    """The same chains padded at the end with masked steps give the same estimate."""
    problem, x, rollouts = _garnet_rollouts(3, 200, seed=4)
    fields = rollouts.to_dict()
    padded = Rollouts.from_dict({k: np.pad(v, [(0, 0), (0, 7)] + [(0, 0)] * (v.ndim - 2))
                                 for k, v in fields.items()})
    assert padded.n_steps == 207 and padded.n_transitions == rollouts.n_transitions
    for loo in (False, True):
        a = every_visit_estimate(problem, x, 0, rollouts, leave_one_out=loo)
        b = every_visit_estimate(problem, x, 0, padded, leave_one_out=loo)
        for term in (None, "best_response", "transition_score"):
            np.testing.assert_allclose(b.total(term=term), a.total(term=term), rtol=1e-12,
                                       atol=1e-15)


def test_leave_one_out_baseline():
    from leaders.estimators import leave_one_out_baseline

    np.testing.assert_allclose(leave_one_out_baseline(np.array([1.0, 2.0, 6.0])),
                               [4.0, 3.5, 1.5], rtol=1e-15)
    np.testing.assert_array_equal(leave_one_out_baseline(np.array([3.0])), [0.0])
    assert leave_one_out_baseline(np.array([3.0])).dtype == np.float64


def test_alg2_restart_weights_follow_the_paper_formula():
    """Known answer for each restart of Alg. 2, recomputed sample by sample from the rollouts
    the estimator drew: ``Σ_{t≤T} ∂r_t`` (weight ±c on steps 0..T) and the score
    ``±c γ/(1−γ) ∂log P(s_{T+1}|s_T, a_T) Σ_{k≥0} γ^{k/2} (r + λH)_{T+1+k}`` (only at step T).
    The per-term mean checks cannot see a change of the tail that has mean 0 on their problems
    (e.g. adding step T's ``r + λH``, uncorrelated with the score when ``r`` depends on (s, a))."""
    from leaders.estimators import _advantage_gradient_terms

    problem = GarnetProblem(n_states=3, n_actions=2, n_params=2, n_contexts=1, gamma=0.7,
                            lam=0.5, p_end=0.0, seed=5)
    x = np.array([0.3, -0.2])
    _, solution, _ = ExactSolver(problem, tol=1e-12).solve(x)
    seen = []

    class Recording(TabularOracle):
        def rollout(self, *args, **kwargs):
            seen.append((super().rollout(*args, **kwargs), kwargs["lengths"]))
            return seen[-1][0]

    oracle = Recording(problem, x, 0, TabularPolicy(solution.pi[0]))
    n, gamma, lam = 40, problem.gamma, problem.lam
    rng = np.random.default_rng(2)
    coefficient = rng.uniform(0.5, 1.5, size=n)
    terms = WeightedTerms(problem, x, 0)
    _advantage_gradient_terms(terms, oracle, rng, rng.integers(0, 3, n), rng.integers(0, 2, n),
                              coefficient, np.arange(n), 1, lam, False)
    assert [p.kind for p in terms.parts] == ["follower_reward", "log_transition"] * 2
    pairs = zip(*[iter(terms.parts)] * 2)
    for sign, (r, lengths), (reward_part, score_part) in zip((1, -1), seen, pairs):
        # p_end = 0: every restart runs its full length T + T' + 2
        np.testing.assert_array_equal(r.mask.sum(1), lengths)
        reward_w, score_w = np.zeros(r.mask.shape), np.zeros(r.mask.shape)
        reward_w[r.mask], score_w[r.mask] = reward_part.weights, score_part.weights
        expected_score = np.zeros_like(score_w)
        for i in range(n):
            T = int(np.count_nonzero(reward_w[i])) - 1
            np.testing.assert_array_equal(reward_w[i, :T + 1], sign * coefficient[i])
            soft = r.rewards[i] + lam * r.entropy[i]
            tail = sum(gamma ** (k / 2) * soft[T + 1 + k] for k in range(lengths[i] - T - 1))
            expected_score[i, T] = sign * coefficient[i] * gamma / (1 - gamma) * tail
        np.testing.assert_allclose(score_w, expected_score, rtol=1e-12, atol=1e-14)
