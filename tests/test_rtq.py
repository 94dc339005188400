"""HPGD with RT-Q (paper Alg. 8): same mean as vanilla soft-Q at t_K, fewer lower-level steps."""

import numpy as np
import pytest

from bilevel_envs.envs.four_rooms.problem import FourRoomsShaping
from bilevel_envs.envs.garnet import GarnetProblem
from bilevel_envs.hypergradient import hypergradient_terms, leader_values
from bilevel_envs.leader_env import LeaderEnv
from leaders.estimators import COMPONENTS
from leaders.hpgd_rtq import HPGDRTQ

GARNET = dict(seed=0, lam=0.5, gamma=0.7, leader_gamma=0.6, p_end=0.1)


def make_leader(**kwargs):
    problem = GarnetProblem(**GARNET)
    x0 = np.random.default_rng(0).uniform(-1, 1, size=problem.n_params)
    return HPGDRTQ(LeaderEnv(problem, n_envs=1, n_rollout_steps=10), levels=5, steps_scale=5,
                   soft_q_kwargs={"n_chains": 1}, seed=0, x0=x0, **kwargs)


def _z(a, b):
    se = np.hypot(a.std(0, ddof=1) / np.sqrt(len(a)), b.std(0, ddof=1) / np.sqrt(len(b)))
    return (a.mean(0) - b.mean(0)) / se


def test_rtq_estimate_has_the_mean_of_vanilla_soft_q_at_t_K():
    """Full estimators (soft-Q noise and Alg. 5 noise): every coordinate within 4 SE."""
    leader = make_leader()
    rtq = np.array([leader.estimate_gradient()[0] for _ in range(1500)])
    vanilla = np.array([leader.vanilla_estimate()[0] for _ in range(1500)])
    assert np.abs(_z(rtq, vanilla)).max() < 4


def exact_given_policy(leader):
    """Alg. 5's conditional mean given the follower's policy (Eq. 8 evaluated at π)."""
    problem = leader.problem

    def mean(context, policy, n, by_term=False):
        model = problem.tabular(leader.x, context)
        if by_term:
            terms = hypergradient_terms(model, policy.table, problem.lam)
            return np.stack([terms[c] for c in COMPONENTS])
        return leader_values(model, policy.table, problem.lam).gradient

    return mean


def test_rtq_telescoping_is_unbiased_and_level_one_alone_is_not():
    """With Alg. 5 replaced by its exact conditional mean only the soft-Q randomness remains,
    which makes the check sharp: RT-Q matches vanilla at t_K, while stopping at t_1 (the
    negative control: the telescoping correction dropped) is rejected."""
    leader = make_leader()
    leader._alg5_mean = exact_given_policy(leader)
    n = 2000
    rtq = np.array([leader.estimate_gradient()[0] for _ in range(n)])
    vanilla = np.array([leader.vanilla_estimate()[0] for _ in range(n)])
    assert np.abs(_z(rtq, vanilla)).max() < 4
    level_one = []
    for _ in range(n):
        xi = leader.problem.sample_context(leader.rng)
        (response,) = leader.soft_q.learn_iterates(leader.problem, leader.x, xi,
                                                   [leader.schedule[0]],
                                                   seed=int(leader.rng.integers(2**31)))
        level_one.append(leader._alg5_mean(xi, response.policy, 1))
    assert np.abs(_z(np.array(level_one), vanilla)).max() > 4


def test_rtq_uses_fewer_lower_level_steps_in_expectation():
    leader = make_leader()
    assert leader.schedule == [10, 40, 120, 320, 800]
    assert leader.truncation_probs.sum() == pytest.approx(1.0)
    assert leader.expected_lower_level_steps < leader.schedule[-1] / 4  # 149 vs 800
    steps = [leader.estimate_gradient()[1]["lower_level_steps"] for _ in range(400)]
    se = np.std(steps) / np.sqrt(len(steps))
    assert abs(np.mean(steps) - leader.expected_lower_level_steps) < 4 * se


def test_rtq_leader_improves_j_and_refuses_non_tabular_problems():
    """1,000 iterations (a few seconds): J from −0.21 to ≈ 2 (the RT-Q estimate is noisy: the
    1/p_k factor multiplies Alg. 5's noise, hence 16 samples and a small step)."""
    leader = make_leader(learning_rate=0.05, n_samples=16)
    before = leader.exact_objective()
    leader.learn(1000)
    assert leader.exact_objective() > before + 0.5

    class NoModel(FourRoomsShaping):
        is_tabular = False

    problem = NoModel()
    stub = type("Env", (), {"unwrapped": type("U", (), {"problem": problem})(),
                            "action_space": problem.x_space})()
    with pytest.raises(ValueError, match="runs soft Q-learning on the problem's model"):
        HPGDRTQ(stub)
