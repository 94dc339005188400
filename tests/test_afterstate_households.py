"""Afterstate soft-DQN households: ``Q(s, a) = r(s, a) + γ W(m(s, a))``, the grid economy's
afterstate tables, and the households' exact soft-optimality gap."""

import copy

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")
import torch as th  # noqa: E402

from bilevel_envs.envs.tax_design.problem import TaxDesignTabular  # noqa: E402
from bilevel_envs.follower_quality import soft_optimality_gap  # noqa: E402
from bilevel_envs.followers.afterstate_q import AfterstateQNetwork  # noqa: E402
from bilevel_envs.followers.soft_dqn import SoftDQN, SoftDQNFollower, soft_value  # noqa: E402
from bilevel_envs.tabular import solve_follower  # noqa: E402

#: a reduced economy: 2 goods, 3 hours and 3 consumption levels (27 joint actions), 5 cells
SMALL = dict(asset_cells=5, asset_bound=10.0, prices=(1.0, 1.0),
             preferences=((0.6, 0.4), (0.2, 0.8)), hours_levels=(0.0, 2.0, 4.0),
             consumption_levels=(0.0, 1.0, 2.0), noise_std=2.0)
#: the reduced economy's households: 8,000 transitions, the step size falling to 5 %
SMALL_FOLLOWER = dict(
    total_timesteps=8_000, n_envs=4, policy="AfterstateMlpPolicy", episode_steps=20,
    exploring_starts=True,
    algo_kwargs={"learning_rate": 1e-3, "batch_size": 64, "learning_starts": 200,
                 "target_update_interval": 100, "exploration_initial_eps": 0.1,
                 "exploration_fraction": 0.05, "loss": "mse", "buffer_size": 20_000,
                 "gradient_steps": 4,
                 "lr_decay": {"kind": "linear", "timesteps": 8_000, "final": 0.05},
                 "policy_kwargs": {"net_arch": [32, 32], "value_scale": 10.0}})
OTHER_TAXES = np.array([0.45, 0.1, 0.2])


@pytest.mark.parametrize("variant", ["code", "paper"])
def test_grid_economy_afterstates_determine_its_model(variant):
    """The tables ``follower_afterstates`` gives are the model's: the rewards are ``r``, and
    ``(s, a)`` pairs with the same afterstate have the same next-cell law, so the soft optimum
    is ``Q* = r + γ W*(m)`` with ``W*(m) = Σ_k' P(k'|m) V*(k')``."""
    problem = TaxDesignTabular(variant, **SMALL)
    for x, group in ((problem.x_init, 0), (OTHER_TAXES, 1)):
        model = problem.tabular(x, group)
        rewards, afterstates = problem.follower_afterstates(x, group)
        np.testing.assert_allclose(rewards, model.r, rtol=1e-12, atol=0)
        assert afterstates.shape == (*model.r.shape, 1)
        distinct, inverse = np.unique(afterstates.reshape(-1, 1), axis=0, return_inverse=True)
        assert len(distinct) < 0.5 * inverse.size  # the actions share afterstates
        P = model.P.reshape(inverse.size, -1)
        first = np.zeros(len(distinct), dtype=np.int64)
        first[inverse[::-1]] = np.arange(inverse.size)[::-1]  # first pair of each afterstate
        np.testing.assert_array_equal(P, P[first][inverse])
        solution = solve_follower(model, problem.lam)
        w_star = P[first] @ solution.v
        np.testing.assert_allclose(rewards + problem.gamma * w_star[inverse].reshape(rewards.shape),
                                   solution.q, rtol=0, atol=1e-9 * np.abs(solution.q).max())
    # the income tax moves the savings: a tax-blind table would mix different laws
    _, before = problem.follower_afterstates(problem.x_init, 0)
    _, after = problem.follower_afterstates(OTHER_TAXES, 0)
    assert not np.allclose(before, after)


def _small_model(seed: int = 0) -> tuple[TaxDesignTabular, SoftDQN]:
    problem = TaxDesignTabular(**SMALL)
    follower = SoftDQNFollower(**{**SMALL_FOLLOWER, "total_timesteps": 300})
    return problem, follower.respond(problem, problem.x_init, 0, seed=seed).warm_start


def test_afterstate_network_is_the_reward_plus_the_discounted_value_of_the_afterstate():
    problem, model = _small_model()
    net = model.q_net
    rewards, afterstates = problem.follower_afterstates(problem.x_init, 0)
    states = th.arange(problem.n_cells).reshape(-1, 1)
    with th.no_grad():
        # W applied to every (s, a) on its own, without the shared-afterstate shortcut
        w = net.q_net(th.as_tensor(afterstates.reshape(-1, 1), dtype=th.float32))
        expected = rewards + problem.gamma * 10.0 * w.numpy().reshape(rewards.shape)
        q = net(states).numpy()
        np.testing.assert_allclose(q, expected, rtol=1e-5, atol=1e-5)
        actions = th.as_tensor(np.random.default_rng(0).integers(27, size=(40, 1)))
        obs = th.as_tensor(np.random.default_rng(1).integers(problem.n_cells, size=(40, 1)))
        np.testing.assert_allclose(net.q_values_at(obs, actions).numpy(),
                                   q[obs.numpy()[:, 0], actions.numpy()[:, 0]][:, None],
                                   rtol=1e-6, atol=1e-6)


def test_new_taxes_reach_both_networks_and_the_soft_value_table():
    """A warm start at new taxes gives the online and the target network the new tables, the
    target's soft values are recomputed from them, and an earlier response's policy stays as
    it was (a frozen copy)."""
    problem = TaxDesignTabular(**SMALL)
    follower = SoftDQNFollower(**{**SMALL_FOLLOWER, "total_timesteps": 300})
    first = follower.respond(problem, problem.x_init, 0, seed=0)
    model = first.warm_start
    states = th.arange(problem.n_cells).reshape(-1, 1)
    before_probs = first.policy.action_probs(np.arange(problem.n_cells))
    stale = model._next_soft_values(states).clone()
    rewards, afterstates = problem.follower_afterstates(OTHER_TAXES, 0)
    model.policy.set_afterstates(rewards, afterstates)
    for net in (model.q_net, model.q_net_target):
        np.testing.assert_allclose(net.rewards.numpy(), rewards, rtol=1e-6)
    with th.no_grad():
        fresh = soft_value(model.q_net_target(states), model.lam)[:, None]
    th.testing.assert_close(model._next_soft_values(states), fresh)
    assert not th.allclose(stale, fresh)
    follower.respond(problem, OTHER_TAXES, 0, seed=1, warm_start=model)
    np.testing.assert_allclose(model.q_net_target.rewards.numpy(), rewards, rtol=1e-6)
    np.testing.assert_array_equal(first.policy.action_probs(np.arange(problem.n_cells)),
                                  before_probs)


def test_afterstate_model_saves_and_loads(tmp_path):
    problem, model = _small_model()
    model.save(tmp_path / "household")
    loaded = SoftDQN.load(tmp_path / "household")
    states = th.arange(problem.n_cells).reshape(-1, 1)
    with th.no_grad():
        th.testing.assert_close(loaded.q_net(states), model.q_net(states))


def test_afterstate_policy_refuses_bad_tables_by_name():
    problem, model = _small_model()
    net = model.q_net
    rewards, afterstates = problem.follower_afterstates(problem.x_init, 0)
    with pytest.raises(ValueError, match=r"rewards must be a finite array of shape \(5, 27\)"):
        net.set_afterstates(rewards[:, :3], afterstates)
    bad = rewards.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"rewards must be a finite array of shape \(5, 27\)"):
        net.set_afterstates(bad, afterstates)
    with pytest.raises(ValueError,
                       match=r"afterstates must be a finite array of shape \(5, 27, ·\)"):
        net.set_afterstates(rewards, afterstates[..., 0])
    env = copy.deepcopy(model.get_env())
    with pytest.raises(ValueError, match="needs rewards"):
        SoftDQN("AfterstateMlpPolicy", env)
    with pytest.raises(ValueError, match="value_scale"):
        SoftDQN("AfterstateMlpPolicy", env, policy_kwargs={
            "rewards": rewards, "afterstates": afterstates, "discount": 0.9, "value_scale": 0})
    with pytest.raises(ValueError, match="discount"):
        SoftDQN("AfterstateMlpPolicy", env, policy_kwargs={
            "rewards": rewards, "afterstates": afterstates, "discount": 1.0})
    from gymnasium import spaces
    with pytest.raises(ValueError, match="Discrete observation space"):
        AfterstateQNetwork(spaces.Box(-1, 1, (1,)), spaces.Discrete(27), th.nn.Flatten(), 1,
                           rewards, afterstates, 0.9)


def test_afterstate_follower_needs_a_problem_with_afterstate_tables():
    from bilevel_envs.envs.four_rooms.problem import FourRoomsShaping

    problem = FourRoomsShaping()
    follower = SoftDQNFollower(total_timesteps=64, policy="AfterstateMlpPolicy")
    with pytest.raises(ValueError, match="needs a problem with follower_afterstates"):
        follower.respond(problem, problem.x_init, 0, seed=0)


def test_afterstate_households_reach_the_gap_target_on_a_reduced_economy():
    """8,000 transitions on the 27-action, 5-cell economy: the exact soft-optimality gap is
    within the 5 % target (measured, seeds 0–9: 0.004–0.047, median 0.013; docs/tax_design.md,
    "Households that know their savings"); the joint-action head's households of the same
    economy (3,000 transitions) are at 1.3–11.5, the uniform policy at 15.7
    (tests/test_neural_households.py)."""
    problem = TaxDesignTabular(**SMALL)
    response = SoftDQNFollower(**SMALL_FOLLOWER).respond(problem, problem.x_init, 0, seed=0)
    gap = soft_optimality_gap(problem.tabular(problem.x_init, 0), problem.lam, response.policy)
    assert 0 < gap <= 0.05


@pytest.mark.slow
def test_afterstate_benchmark_households_at_the_initial_taxes():
    """The ``neural_afterstate`` households of the tax benchmark after their 150,000-transition
    warm-up at ``x_0`` (group 0, seed 0) on the 41-cell grid economy: within the 5 % target
    (docs/tax_design.md, "Households that know their savings")."""
    from bilevel_bench.experiments.tax.spec import NEURAL_AFTERSTATE_FOLLOWER

    problem = TaxDesignTabular()
    kwargs = {k: v for k, v in NEURAL_AFTERSTATE_FOLLOWER.items() if k != "total_timesteps"}
    response = SoftDQNFollower(**kwargs).respond(problem, problem.x_init, 0, seed=0)
    gap = soft_optimality_gap(problem.tabular(problem.x_init, 0), problem.lam, response.policy)
    assert 0 < gap <= 0.05
