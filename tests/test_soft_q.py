"""Tabular soft Q-learning (paper Alg. 4): update, convergence, seeding, iterates, warm starts."""

import math

import gymnasium as gym
import numpy as np
import pytest

import bilevel_envs  # noqa: F401  (registers the env ids)
from bilevel_envs.envs.four_rooms.problem import FourRoomsShaping
from bilevel_envs.envs.garnet import GarnetProblem
from bilevel_envs.followers import make_follower, soft_q
from bilevel_envs.followers.soft_q import SoftQLearning, SoftQState, soft_q_steps
from bilevel_envs.tabular import soft_max_value, soft_policy_iteration, softmax_policy
from tests.conftest import check_env_strict


def _kernel_step(q, u, states, *, lr=0.5, lam=0.5, gamma=0.9, uniform=True, epsilon=0.0):
    """One kernel step on a hand-made 2-state MDP: state 0 always moves to state 1 (rewards
    (0.3, −0.2) by action), every action in state 1 ends the episode (rewards (1.0, 2.0))."""
    next_states = np.array([[[1], [1]], [[0], [0]]], dtype=np.int64)
    next_cdf = np.array([[[1.0], [1.0]], [[0.0], [0.0]]])  # state 1: a draw is never below 0
    r_next = np.array([[[0.3], [-0.2]], [[0.0], [0.0]]])
    r_end = np.array([[9.0, 9.0], [1.0, 2.0]])  # state 0 never terminates: 9 must not appear
    counts = np.zeros((2, 2), dtype=np.int64)
    taus = np.zeros(len(states), dtype=np.int64)
    episodes = soft_q_steps(q, counts, states, taus, next_states, next_cdf, r_next, r_end,
                            np.array([1.0, 1.0]), gamma, lam, uniform, epsilon, lr, 1.0, 0.0, 0,
                            u)
    return q, counts, states, episodes


def test_update_is_the_soft_bellman_target_with_zero_continuation_on_termination():
    q0 = np.array([[0.1, 0.4], [0.7, -0.3]])
    lam, gamma, lr = 0.5, 0.9, 0.5
    # chain 0 in state 0 takes action 1 (u = 0.6); chain 1 in state 1 takes action 0 (u = 0.2)
    # and restarts in state 0 (reset_cdf puts all mass there).
    u = np.array([[[0.0, 0.6, 0.5, 0.5], [0.0, 0.2, 0.5, 0.5]]])
    q, counts, states, episodes = _kernel_step(q0.copy(), u, np.array([0, 1]))
    # Both targets use Q_t: chain 0 bootstraps from state 1 *before* chain 1's update.
    soft_v1 = lam * math.log(math.exp(0.7 / lam) + math.exp(-0.3 / lam))
    expected = q0.copy()
    expected[0, 1] = 0.4 + lr * (-0.2 + gamma * soft_v1 - 0.4)
    expected[1, 0] = 0.7 + lr * (1.0 - 0.7)  # terminal: reward only
    np.testing.assert_allclose(q, expected, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(counts, [[0, 1], [1, 0]])
    np.testing.assert_array_equal(states, [1, 0])
    assert episodes == 1


def test_behaviour_draws_follow_the_boltzmann_policy():
    """With ε = 0 the kernel's action draws invert the CDF of softmax(Q(s)/λ) exactly: on a grid
    of N uniforms each action's frequency is within 1/N of its probability."""
    n, lam = 4000, 0.5
    q0 = np.array([[0.1, 0.4], [0.0, 0.0]])
    u = np.zeros((1, n, 4))
    u[0, :, 1] = (np.arange(n) + 0.5) / n
    u[0, :, 0] = 0.99  # above ε = 0: never uniform
    q, counts, _, _ = _kernel_step(q0.copy(), u, np.zeros(n, dtype=np.int64), lam=lam,
                                   uniform=False)
    freq = counts[0] / n
    assert np.abs(freq - softmax_policy(q0[0], lam)).max() <= 1.0 / n


def _wrong_fixed_point_distance(problem, x):
    """‖Q* − Q‖∞ for the Q of the nearest plausible bug: the discount off by 0.01."""
    model = problem.tabular(x, 0)
    q_star = soft_policy_iteration(model, problem.lam).q
    q_bug = soft_policy_iteration(model.with_updates(gamma=model.gamma - 0.01), problem.lam).q
    return float(np.abs(q_star - q_bug).max())


@pytest.mark.parametrize("kwargs", [{}, {"behaviour": "epsilon_soft", "epsilon": 0.1},
                                    {"reset": "mu"}])
def test_converges_to_the_soft_optimal_policy(kwargs):
    """‖π_T − π*‖∞ falls as T grows and is small at the largest T.

    Garnet (6 states, 3 actions, γ = 0.9, λ = 1), 16 chains, T = 250, 2,500, 25,000 steps,
    errors averaged over 4 seeds. Rescaled-linear step sizes converge at the rate
    O(√(log T / T)) (paper Prop. 6), about 3× per decade of T: we ask for 1.5× (measured 2.3×–3×
    over 20 seeds). At T = 25,000 (≈ 67,000 updates per pair), the bound on ‖Q_T − Q*‖∞ is 0.2:
    below half the distance to the fixed point of a learner whose discount is off by 0.01
    (0.45; a hard-max target or a bootstrap through terminations lands > 3 away). Measured max
    over 20 seeds: 0.12. It gives ‖π_T − π*‖∞ ≤ 0.2 / (2λ) = 0.1, as softmax(·/λ) is
    1/(2λ)-Lipschitz from sup norm to sup norm (measured ≤ 0.021).
    """
    problem, x = GarnetProblem(lam=1.0), np.zeros(4)
    solution = soft_policy_iteration(problem.tabular(x, 0), problem.lam)
    follower = SoftQLearning(n_chains=16, **kwargs)
    steps = [250, 2_500, 25_000]
    q_err, pi_err = np.zeros((4, 3)), np.zeros((4, 3))
    for seed in range(4):
        for i, r in enumerate(follower.learn_iterates(problem, x, 0, steps, seed=seed)):
            q_err[seed, i] = np.abs(r.warm_start.q - solution.q).max()
            pi_err[seed, i] = np.abs(r.policy.table - solution.pi).max()
    assert np.all(pi_err <= q_err / (2 * problem.lam) + 1e-12)  # the Lipschitz bound itself
    mean = pi_err.mean(axis=0)
    assert mean[0] > 1.5 * mean[1] > 2.25 * mean[2], mean
    assert _wrong_fixed_point_distance(problem, x) > 2 * 0.2
    assert q_err[:, -1].max() <= 0.2, q_err[:, -1]
    assert pi_err[:, -1].max() <= 0.2 / (2 * problem.lam), pi_err[:, -1]


def test_converges_on_four_rooms_at_the_papers_lambda():
    """Four-Rooms, λ = 0.003, γ = 0.99, 16 chains, T = 20,000, 80,000, 320,000 steps, 3 seeds.

    Each quadrupling of T should shrink the error about 2× (O(√(log T / T))): we ask ≥ 1.5× for
    ‖Q_T − Q*‖∞ (measured ≥ 1.7× in 4 groups of 3 seeds) and ≥ 1.2× for ‖π_T − π*‖∞ (measured
    ≥ 1.37×). At T = 320,000 (≈ 12,000 updates per pair) ‖Q_T − Q*‖∞ ≤ 0.012, half the distance
    to the fixed point of a discount off by 0.001 (0.024; measured max over 12 seeds 0.0064).
    That bound says little about π here (softmax(·/λ) magnifies Q errors up to 1/(2λ) ≈ 167×),
    so the policy bound, ‖π_T − π*‖∞ ≤ 0.4, is stated from measurements (max over 12 seeds 0.28).
    """
    problem, x = FourRoomsShaping(lam=0.003), np.zeros(105)
    solution = soft_policy_iteration(problem.tabular(x, 0), problem.lam)
    follower = SoftQLearning(n_chains=16)
    errors = np.array([[(np.abs(r.warm_start.q - solution.q).max(),
                         np.abs(r.policy.table - solution.pi).max())
                        for r in follower.learn_iterates(problem, x, 0, [20_000, 80_000, 320_000],
                                                         seed=seed)]
                       for seed in range(3)])
    q_mean, pi_mean = errors.mean(axis=0).T
    assert np.all(q_mean[:-1] >= 1.5 * q_mean[1:]), q_mean
    assert np.all(pi_mean[:-1] >= 1.2 * pi_mean[1:]), pi_mean
    assert errors[:, -1, 0].max() <= 0.012 and errors[:, -1, 1].max() <= 0.4, errors[:, -1]


def test_same_seed_same_q_table_different_seed_differs():
    problem, x = FourRoomsShaping(lam=0.05), np.zeros(105)
    follower = SoftQLearning(n_steps=500, n_chains=4)
    a = follower.respond(problem, x, 1, seed=3)
    b = follower.respond(problem, x, 1, seed=3)
    c = follower.respond(problem, x, 1, seed=4)
    np.testing.assert_array_equal(a.warm_start.q, b.warm_start.q)
    np.testing.assert_array_equal(a.warm_start.visits, b.warm_start.visits)
    assert a.stats == b.stats
    assert not np.array_equal(a.warm_start.q, c.warm_start.q)


def test_iterates_come_from_one_run(monkeypatch):
    """π^{t1}, π^{tk}, π^{tk+1} of one run equal separate runs' finals, whatever the blocks."""
    problem, x = GarnetProblem(), np.full(4, 0.3)
    follower = SoftQLearning(n_steps=700, n_chains=3, behaviour="epsilon_soft")
    iterates = follower.learn_iterates(problem, x, 1, [0, 50, 200, 700], seed=9)
    assert [r.stats["steps"] for r in iterates] == [0, 50, 200, 700]
    np.testing.assert_array_equal(iterates[0].warm_start.q, 0.0)
    monkeypatch.setattr(soft_q, "_BLOCK_DRAWS", 7 * 3 * 4)  # blocks of 7 steps
    for r in iterates[1:]:
        alone = follower.learn_iterates(problem, x, 1, [r.stats["steps"]], seed=9)[0]
        np.testing.assert_array_equal(alone.warm_start.q, r.warm_start.q)
        np.testing.assert_array_equal(alone.policy.table, r.policy.table)
    final = follower.respond(problem, x, 1, seed=9)
    np.testing.assert_array_equal(final.warm_start.q, iterates[-1].warm_start.q)
    assert final.stats["q_change"] > 0 and final.stats["updates"] == 700 * 3


def test_warm_start_reaches_the_same_accuracy_in_fewer_steps():
    """After a leader step on Four-Rooms (λ = 0.003), a run warm-started from the previous
    response is more accurate after T/4 steps than a cold run after T/2 (measured over 16 seeds:
    ‖Q − Q*‖∞ 0.024–0.046 warm vs 0.052–0.084 cold, every seed)."""
    problem = FourRoomsShaping(lam=0.003)
    rng = np.random.default_rng(0)
    x0 = rng.normal(0, 0.5, 105)
    x1 = x0 + 0.1 * rng.normal(size=105)
    q_star = soft_policy_iteration(problem.tabular(x1, 0), problem.lam).q
    T = 8_000
    follower = SoftQLearning(n_steps=T, n_chains=16)
    warm_err, cold_err = [], []
    for seed in range(3):
        previous = follower.respond(problem, x0, 0, seed=100 + seed)
        warm = follower.learn_iterates(problem, x1, 0, [T // 4], seed=seed,
                                       warm_start=previous.warm_start)[0]
        cold = follower.learn_iterates(problem, x1, 0, [T // 2], seed=seed)[0]
        warm_err.append(np.abs(warm.warm_start.q - q_star).max())
        cold_err.append(np.abs(cold.warm_start.q - q_star).max())
    assert np.mean(warm_err) < np.mean(cold_err), (warm_err, cold_err)


def test_warm_start_accepts_a_bare_q_table_and_resumes_visits_from_a_state():
    problem, x = GarnetProblem(), np.zeros(4)
    exact_q = soft_policy_iteration(problem.tabular(x, 0), problem.lam).q
    follower = SoftQLearning(n_steps=10, n_chains=2)
    response = follower.respond(problem, x, 0, seed=0, warm_start=exact_q)
    assert isinstance(response.warm_start, SoftQState)
    assert response.warm_start.visits.sum() == 20  # this run's updates only
    again = follower.respond(problem, x, 0, seed=0, warm_start=response.warm_start)
    assert again.warm_start.visits.sum() == 20


def test_leader_env_with_soft_q_follower_is_seeded_and_passes_the_checker():
    # 200 steps are far from optimal: a threshold above any gap keeps the checker free of
    # quality warnings while the seeded stats still include the exact quality.
    kwargs = dict(lam=0.05, follower="soft_q", follower_kwargs={"n_steps": 200, "n_chains": 4},
                  n_envs=2, n_rollout_steps=50, quality_threshold=100.0)
    check_env_strict(gym.make("bilevel/FourRoomsShaping-v0", **kwargs).unwrapped)

    def run(seed):
        env = gym.make("bilevel/FourRoomsShaping-v0", **kwargs)
        env.reset(seed=seed)
        steps = [env.step(np.zeros(105)) for _ in range(2)]
        return ([(s[1], s[4]["follower_stats"]) for s in steps],
                env.unwrapped.last_step.followers[0].response.policy.table)

    (steps_a, table_a), (steps_b, table_b) = run(1), run(1)
    assert steps_a == steps_b and "soft_optimality_gap" in steps_a[0][1][0]
    np.testing.assert_array_equal(table_a, table_b)
    assert not np.array_equal(table_a, run(2)[1])
    stats = steps_a[1][1][0]
    assert stats["steps"] == 200 and stats["updates"] == 800


@pytest.mark.parametrize("kwargs, pattern", [
    ({"behaviour": "greedy"}, r"behaviour must be one of \['uniform', 'epsilon_soft'\]"),
    ({"reset": "start"}, r"reset must be one of \['mu', 'uniform'\]"),
    ({"n_steps": -5}, r"n_steps must be an integer >= 1"),
    ({"n_chains": 0}, r"n_chains must be an integer >= 1"),
    ({"epsilon": 1.5}, r"epsilon must be a finite number in \[0, 1\]"),
    ({"learning_rate": 0.0}, r"learning_rate must be a finite number in \(0, 1\]"),
    ({"lr_t0": -1.0}, r"lr_t0 \(or None\) must be a finite number in \(0, inf\)"),
    ({"lr_power": -0.5}, r"lr_power must be a finite number in \[0, inf\)"),
])
def test_bad_arguments_are_rejected(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        make_follower("soft_q", **kwargs)


def test_bad_calls_are_rejected():
    problem, x = GarnetProblem(), np.zeros(4)
    follower = SoftQLearning(n_steps=10)
    problem.is_tabular = False
    assert not follower.supports(problem)
    with pytest.raises(ValueError, match=r"'soft_q' needs a tabular problem"):
        follower.respond(problem, x, 0)
    problem.is_tabular = True
    with pytest.raises(ValueError, match=r"steps must be a non-empty non-decreasing"):
        follower.learn_iterates(problem, x, 0, [10, 5])
    with pytest.raises(ValueError, match=r"warm_start must be a SoftQState or a finite Q-table "
                                         r"of shape \(6, 3\)"):
        follower.respond(problem, x, 0, warm_start=np.zeros((3, 6)))


def test_soft_value_kernel_matches_numpy():
    q = np.random.default_rng(0).normal(size=(5, 4)) * 3
    for lam in (0.003, 0.1, 2.0):
        np.testing.assert_allclose([soft_q._soft_value(row, lam) for row in q],
                                   soft_max_value(q, lam), rtol=1e-13)
