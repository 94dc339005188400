"""The compiled fast paths agree with the reference NumPy paths they replace.

Banded single models (Four-Rooms) take compiled kernels for the exact leader value, the
hypergradient's linear solves and the metric's evaluation; a stack of one model takes the dense
path, the reference. The tolerances are round-off: both solve the same linear systems, by
elimination in a different order.
"""

import numpy as np
import pytest

from bilevel_envs._exact_kernels import leader_value_sparse, policy_solver
from bilevel_envs._kernels import discounted_returns
from bilevel_envs.envs.four_rooms.problem import FourRoomsShaping
from bilevel_envs.exact import ExactSolver
from bilevel_envs.hypergradient import hypergradient_terms, leader_values
from bilevel_envs.rollouts import Rollouts
from bilevel_envs.tabular import (
    TabularModel,
    policy_transitions,
    solve_follower,
    sparse_transitions,
)


@pytest.fixture(scope="module", params=[0, 1])
def case(request):
    problem = FourRoomsShaping(lam=0.003, beta=3.0, move_prob=0.56)
    x = np.random.default_rng(request.param).normal(0.0, 1.0, size=105)
    model = problem.tabular(x, request.param)
    return problem, x, model, solve_follower(model, problem.lam).pi


def test_banded_leader_values_match_the_dense_path(case):
    problem, _, model, pi = case
    fast = leader_values(model, pi, problem.lam)
    dense = leader_values(TabularModel.stack([model]), pi[None], problem.lam)
    scale = np.abs(dense.gradient).max()
    assert fast.objective == pytest.approx(dense.objective[0], abs=1e-13)
    np.testing.assert_allclose(fast.v_leader, dense.v_leader[0], atol=1e-13)
    np.testing.assert_allclose(fast.gradient, dense.gradient[0], atol=1e-12 * scale)
    value_only = leader_values(model, pi, problem.lam, with_gradient=False)
    assert value_only.gradient is None
    assert value_only.objective == pytest.approx(dense.objective[0], abs=1e-13)
    terms = hypergradient_terms(model, pi, problem.lam)
    dense_terms = hypergradient_terms(TabularModel.stack([model]), pi[None], problem.lam)
    for key, value in terms.items():
        np.testing.assert_allclose(value, dense_terms[key][0], atol=1e-12 * scale)


def test_policy_solver_solves_both_systems(case):
    _, _, model, pi = case
    next_states, probs, lo, up = sparse_transitions(model)
    solve = policy_solver(next_states, probs, pi, lo, up)
    M = np.eye(model.n_states) - 0.9 * policy_transitions(model.P, pi)
    rhs = np.random.default_rng(3).normal(size=(model.n_states, 2))
    np.testing.assert_allclose(solve(0.9, rhs), np.linalg.solve(M, rhs), atol=1e-12)
    np.testing.assert_allclose(solve(0.9, rhs[:, 0], transpose=True),
                               np.linalg.solve(M.T, rhs[:, 0]), atol=1e-12)
    with pytest.raises(ValueError, match="lo, up"):  # a band too narrow for the transitions
        policy_solver(next_states, probs, pi, 0, 0)


def test_metric_evaluation_matches_the_reference_solve(case):
    problem, x, model, _ = case
    fast = ExactSolver(problem).per_context(x)
    reference = ExactSolver(problem)
    models, solution, _ = reference.solve(x)
    for c, m in enumerate(models):
        dense = leader_values(TabularModel.stack([m]), solution.pi[c][None], problem.lam,
                              with_gradient=False)
        assert fast.objective[c] == pytest.approx(dense.objective[0], abs=1e-12)
        np.testing.assert_allclose(fast.v_leader[c], dense.v_leader[0], atol=1e-12)
    next_states, probs, lo, up = sparse_transitions(model)
    with pytest.raises(ValueError, match="q \\(warm start\\)"):
        leader_value_sparse(next_states, probs, model.r, model.r_leader, model.mu, 0.99, 0.99,
                            problem.lam, np.zeros((3, 3)), 1e-12, 10, lo, up)


def _episode_returns_reference(rollouts, gamma):
    """The NumPy formulation the compiled scan replaced."""
    values = np.where(rollouts.mask, rollouts.leader_rewards, 0.0)
    returns = discounted_returns(values.astype(np.float64), rollouts.ends, float(gamma))
    starts = rollouts.mask & (rollouts.episode_step == 0)
    t = np.arange(rollouts.n_steps)
    last_end = np.where(rollouts.ends.any(axis=1),
                        rollouts.n_steps - 1 - np.argmax(rollouts.ends[:, ::-1], axis=1), -1)
    finished = starts & (t[None, :] <= last_end[:, None])
    first = starts & (t[None, :] == 0) & (last_end[:, None] < 0)
    return returns[finished | first]


def test_episode_returns_equal_the_numpy_reference():
    rng = np.random.default_rng(7)
    for _ in range(300):
        n, T = int(rng.integers(1, 5)), int(rng.integers(1, 30))
        mask = np.arange(T)[None, :] < rng.integers(0, T + 1, size=(n, 1))
        ends = (rng.random((n, T)) < rng.random() / 2) & mask
        step = np.zeros((n, T), np.int64)
        for e in range(n):
            for t in range(1, T):
                step[e, t] = 0 if ends[e, t - 1] else step[e, t - 1] + 1
        step[:, 0] = rng.integers(0, 3, size=n)  # chains may start mid-episode
        step[~mask] = 0
        zeros = np.zeros((n, T))
        rollouts = Rollouts(step, step, step, zeros, rng.normal(size=(n, T)), ends, ~mask & mask,
                            step, zeros, zeros, step, mask)
        expected = _episode_returns_reference(rollouts, 0.9)
        np.testing.assert_array_equal(rollouts.episode_returns(0.9), expected)


@pytest.mark.parametrize("probs", [[0.5, 0.5], [0.2, 0.3, 0.5], [0.0, 1.0]])
def test_sample_context_draws_what_rng_choice_draws(probs):
    problem = FourRoomsShaping()
    problem.context_probs = np.array(probs)
    problem.context_values = tuple(range(len(probs)))
    a, b = np.random.default_rng(11), np.random.default_rng(11)
    drawn = [problem.sample_context(a) for _ in range(2000)]
    assert drawn == [int(b.choice(len(probs), p=probs)) for _ in range(2000)]
    assert a.bit_generator.state == b.bit_generator.state
    problem.context_probs = np.array(probs) * 2  # invalid: rng.choice's own error
    with pytest.raises(ValueError):
        problem.sample_context(a)
