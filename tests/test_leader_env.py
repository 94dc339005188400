"""LeaderEnv: gym.make, checker, Monte-Carlo J vs exact J, determinism, bad input."""

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import bilevel_envs
from bilevel_envs.exact import ExactSolver
from bilevel_envs.rollouts import Rollouts
from tests.conftest import check_env_strict

SMALL = {"n_envs": 2, "n_rollout_steps": 50}
#: cheap constructor arguments of the leader ids
LEADER_SMALL = {"bilevel/FourRoomsShaping-v0": SMALL, "bilevel/ContractDesign-v0": SMALL,
                "bilevel/TaxDesign-v0": {**SMALL, "tabular": True, "asset_cells": 11},
                "bilevel/RLHF-v0": {"instance": "tiny", "n_pairs": 4}}


def test_gym_make_and_step():
    env = gym.make("bilevel/FourRoomsShaping-v0", lam=0.001, beta=1.0, follower="soft_vi",
                   **SMALL)
    obs, info = env.reset(seed=0)
    assert np.array_equal(obs, np.zeros(105))
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert np.isfinite(reward) and not terminated and not truncated
    assert set(info) >= {"rollouts", "contexts", "objective_estimate", "follower_stats"}
    assert info["rollouts"]["obs"].shape == (2, 50)


def test_gym_make_with_module_prefix_in_fresh_process():
    code = ("import gymnasium as gym, numpy as np; "
            "env = gym.make('bilevel_envs:bilevel/FourRoomsShaping-v0', n_envs=1, "
            "n_rollout_steps=10); env.reset(seed=0); print(env.step(np.zeros(105))[1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert np.isfinite(float(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("env_id", sorted(bilevel_envs.ENV_IDS))
def test_check_env_on_every_registered_id(env_id):
    kwargs = SMALL if "Shaping" in env_id else {}
    if "TaxDesign" in env_id:  # the exact follower: the default one of continuous assets trains
        kwargs = {**SMALL, "tabular": True}
    check_env_strict(gym.make(env_id, **kwargs).unwrapped)


@pytest.mark.parametrize("env_id", [i for i in bilevel_envs.ENV_IDS
                                    if bilevel_envs.ENV_IDS[i][1]["max_episode_steps"] == 1000])
def test_leader_ids_truncate_at_their_registered_max_episode_steps(env_id):
    """The episode length is the spec's (Gymnasium's TimeLimit): 1000 by default, changed with
    gym.make(max_episode_steps=N); the env itself never ends an episode."""
    assert gym.spec(env_id).max_episode_steps == 1000
    env = gym.make(env_id, max_episode_steps=2, **LEADER_SMALL[env_id])
    assert env.spec.max_episode_steps == 2
    env.reset(seed=0)
    x = env.unwrapped.problem.x_init
    assert env.step(x)[2:4] == (False, False)
    assert env.step(x)[2:4] == (False, True)
    direct = type(env.unwrapped)(**LEADER_SMALL[env_id])
    direct.reset(seed=0)
    assert all(direct.step(x)[2:4] == (False, False) for _ in range(3))


def test_monte_carlo_objective_agrees_with_exact():
    env = gym.make("bilevel/FourRoomsShaping-v0", lam=0.003, beta=1.0, contexts="all",
                   n_envs=50, n_rollout_steps=4000)
    env.reset(seed=3)
    x = np.random.default_rng(0).normal(0, 0.3, size=105)
    _, reward, _, _, info = env.step(x)
    rollouts = Rollouts.from_dict(info["rollouts"])
    problem = env.unwrapped.problem
    variances = []
    for c in (0, 1):
        chains = rollouts.context[:, 0] == c
        part = Rollouts.from_dict({k: v[chains] for k, v in info["rollouts"].items()})
        returns = part.episode_returns(problem.leader_gamma)
        variances.append(returns.var() / returns.size)
    se = 0.5 * np.sqrt(sum(variances))
    exact = ExactSolver(problem).objective(x)
    assert abs(reward - exact) < 4 * se, (reward, exact, se)


def test_exact_objective_mode_returns_exact_value():
    env = gym.make("bilevel/FourRoomsShaping-v0", lam=0.003, contexts="all", n_rollout_steps=0,
                   objective="exact")
    env.reset(seed=0)
    x = np.random.default_rng(1).normal(size=105)
    reward = env.step(x)[1]
    assert reward == pytest.approx(ExactSolver(env.unwrapped.problem).objective(x), abs=1e-9)


def _trajectory(seed, steps=3):
    env = gym.make("bilevel/FourRoomsShaping-v0", lam=0.003, **SMALL)
    env.reset(seed=seed)
    xs = np.random.default_rng(0).normal(size=(steps, 105))
    return [env.step(x) for x in xs]


def test_seeded_determinism_over_several_steps():
    a, b, c = _trajectory(5), _trajectory(5), _trajectory(6)
    for step_a, step_b in zip(a, b):
        assert step_a[1] == step_b[1]
        for key, value in step_a[4]["rollouts"].items():
            np.testing.assert_array_equal(value, step_b[4]["rollouts"][key])
    assert any(not np.array_equal(sa[4]["rollouts"]["obs"], sc[4]["rollouts"]["obs"])
               for sa, sc in zip(a, c))


def test_common_random_numbers_repeat_contexts_and_rollouts():
    env = gym.make("bilevel/FourRoomsShaping-v0", lam=0.003, **SMALL)
    env.reset(seed=0)
    x = np.zeros(105)
    with env.unwrapped.common_random_numbers():
        first = env.step(x)[4]
        second = env.step(x)[4]
    assert first["contexts"] == second["contexts"]
    np.testing.assert_array_equal(first["rollouts"]["obs"], second["rollouts"]["obs"])


def _soft_dqn_leader_env():
    pytest.importorskip("stable_baselines3")
    follower_kwargs = {"total_timesteps": 128, "warmup_timesteps": 256,
                       "algo_kwargs": {"learning_starts": 32, "batch_size": 16,
                                       "buffer_size": 1_000}}
    env = gym.make("bilevel/FourRoomsShaping-v0", lam=0.003, follower="soft_dqn",
                   follower_kwargs=follower_kwargs, n_envs=1, n_rollout_steps=50,
                   contexts=[0], follower_quality=False)
    env.reset(seed=3)
    return env


def test_common_random_numbers_start_learning_followers_from_the_same_warm_start():
    """Two steps in a block train two copies of one warm start with one seed: at the same x
    the same follower, bit for bit (without the copy the second trains on top of the first).
    After the block the followers continue from the block's first step."""
    x, other = np.zeros(105), np.random.default_rng(0).uniform(-5.0, 5.0, 105)

    def policy(env):
        return env.unwrapped.last_step.followers[0].response.policy.action_probs(np.arange(104))

    env = _soft_dqn_leader_env()
    env.step(x)  # a warm start to fork from
    with env.unwrapped.common_random_numbers():
        env.step(x)
        first = policy(env)
        env.step(x)
        np.testing.assert_array_equal(policy(env), first)
        env.step(other)
        assert not np.array_equal(policy(env), first)
    env.step(x)

    reference = _soft_dqn_leader_env()
    for _ in range(3):
        reference.step(x)
    np.testing.assert_array_equal(policy(env), policy(reference))


@pytest.mark.parametrize("bad, pattern", [
    (np.zeros(3), r"action must have shape \(105,\)"),
    (np.full(105, np.nan), r"action must be finite"),
    (np.full(105, 100.0), r"action is outside x_space.*\[-30, 30\]"),
])
def test_step_rejects_bad_x(bad, pattern):
    env = gym.make("bilevel/FourRoomsShaping-v0", **SMALL)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=pattern):
        env.step(bad)


@pytest.mark.parametrize("kwargs, error, pattern", [
    ({"follower": "oracle_of_delphi"}, KeyError, r"unknown follower 'oracle_of_delphi'"),
    ({"contexts": "some"}, ValueError, r"contexts must be one of"),
    ({"contexts": [(0, 0)]}, KeyError, r"unknown context"),
    ({"n_envs": 0}, ValueError, r"n_envs must be an integer >= 1"),
    ({"objective": "median"}, ValueError, r"objective must be one of"),
    ({"n_rollout_steps": 0}, ValueError, r"n_rollout_steps=0 leaves nothing"),
    ({"lam": -1.0}, ValueError, r"lam must be a finite number in \(0, inf\)"),
    ({"follower_kwargs": {"tol": -1}}, ValueError, r"tol must be a finite number in \(0, inf\)"),
])
def test_constructor_rejects_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        gym.make("bilevel/FourRoomsShaping-v0", **kwargs)
