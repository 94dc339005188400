"""Property-based hardening: every registered env and every leader, random valid and invalid
input."""

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bilevel_envs
from bilevel_envs.envs.four_rooms.problem import FourRoomsShaping
from bilevel_envs.followers import TabularPolicy
from bilevel_envs.tabular import soft_policy_iteration, soft_value_iteration
from leaders import AMD, HPGD, LEADERS, ZeroOrder

PROFILE = settings(max_examples=6, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.function_scoped_fixture,
                                          HealthCheck.too_slow])

#: small-budget constructors of every registered leader-level id
LEADER_ENVS = {
    "bilevel/FourRoomsShaping-v0": {"n_envs": 2, "n_rollout_steps": 30},
    "bilevel/TaxDesign-v0": {"tabular": True, "asset_cells": 11, "n_envs": 4,
                             "n_rollout_steps": 20},
    "bilevel/ContractDesign-v0": {"n_envs": 2, "n_rollout_steps": 30},
    "bilevel/RLHF-v0": {"instance": "tiny", "n_pairs": 4},
}
FOLLOWER_ENVS = ["bilevel/FourRooms-v0", "bilevel/ContractAgent-v0",
                 "bilevel/PreferenceGrid-v0", "bilevel/Household-v0"]


def test_every_registered_id_is_covered():
    assert set(LEADER_ENVS) | set(FOLLOWER_ENVS) == set(bilevel_envs.ENV_IDS)


def point_in(space, u):
    """Map ``u ∈ [0, 1]^d`` into the box (endpoints included)."""
    low, high = space.low.astype(float), space.high.astype(float)
    return low + np.asarray(u) * (high - low)


@pytest.fixture(scope="module")
def leader_envs():
    return {env_id: gym.make(env_id, **kwargs) for env_id, kwargs in LEADER_ENVS.items()}


@pytest.mark.parametrize("env_id", sorted(LEADER_ENVS))
@PROFILE
@given(data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_random_valid_x_and_seed_keep_j_finite(leader_envs, env_id, data, seed):
    env = leader_envs[env_id]
    d = env.action_space.shape[0]
    u = data.draw(st.lists(st.floats(0.0, 1.0), min_size=d, max_size=d))
    env.reset(seed=seed)
    obs, reward, terminated, truncated, info = env.step(point_in(env.action_space, u))
    assert np.isfinite(reward) and np.isfinite(info["objective_estimate"])
    assert env.observation_space.contains(obs)


INVALID_X = {
    "wrong shape": lambda space: np.zeros(space.shape[0] + 1),
    "NaN": lambda space: np.full(space.shape, np.nan),
    "inf": lambda space: np.full(space.shape, np.inf),
    "above the box": lambda space: space.high.astype(float) + 1.0,
    "below the box": lambda space: space.low.astype(float) - 1.0,
    "strings": lambda space: np.array(["0"] * space.shape[0]),
    "object": lambda space: object(),
}


@pytest.mark.parametrize("env_id", sorted(LEADER_ENVS))
@pytest.mark.parametrize("kind", sorted(INVALID_X))
def test_invalid_x_raises_a_clear_error(leader_envs, env_id, kind):
    env = leader_envs[env_id]
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"^action "):
        env.step(INVALID_X[kind](env.action_space))


@pytest.mark.parametrize("env_id", FOLLOWER_ENVS)
@PROFILE
@given(seed=st.integers(0, 2**31 - 1), actions=st.lists(st.integers(0, 10**6), min_size=1,
                                                         max_size=30))
def test_follower_envs_never_crash_on_valid_actions(env_id, seed, actions):
    env = gym.make(env_id)
    obs, _ = env.reset(seed=seed)
    n = env.action_space.n
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a % n)
        assert np.isfinite(reward) and np.isfinite(info["leader_reward"])
        assert env.observation_space.contains(obs)
        if terminated or truncated:
            obs, _ = env.reset()


@pytest.mark.parametrize("env_id", FOLLOWER_ENVS)
@pytest.mark.parametrize("bad", [-1, 10**9, 0.5, "up", None])
def test_follower_envs_reject_invalid_actions(env_id, bad):
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action must be an integer in 0\.\."):
        env.step(bad)


@pytest.mark.parametrize("name", sorted(LEADERS))
@PROFILE
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(0.0, 30.0))
def test_leaders_keep_iterates_valid_and_j_finite(name, seed, scale):
    env = gym.make("bilevel/FourRoomsShaping-v0", lam=0.005, n_envs=2, n_rollout_steps=60,
                   objective="exact" if name != "hpgd" else "monte_carlo")
    x0 = np.clip(np.random.default_rng(seed).normal(0, scale + 1e-12, 105), -30, 30)
    kwargs = {"inner": "exact"} if name == "amd" else {}
    leader = LEADERS[name](env, learning_rate=1.0, seed=seed, x0=x0, **kwargs).learn(3)
    assert np.all(np.abs(leader.x) <= 30) and np.isfinite(leader.exact_objective())
    assert np.all(np.isfinite(leader.history["objective_estimate"]))


@pytest.mark.parametrize("name, kwargs", [("follower", {"follower": "nope"}),
                                          ("contexts", {"contexts": ["G7"]})])
def test_unknown_names_raise(name, kwargs):
    with pytest.raises(KeyError, match=r"unknown"):
        gym.make("bilevel/FourRoomsShaping-v0", **kwargs)


# ---------------------------------------------------------------------------- divergence
def test_solvers_detect_divergence_instead_of_returning_garbage():
    model = FourRoomsShaping().tabular(np.zeros(105), 0)
    exploding = model.with_updates(r=np.full((104, 4), 1e308))
    for solver in (soft_policy_iteration, soft_value_iteration):
        with pytest.raises(FloatingPointError, match="diverged"):
            solver(exploding, 0.01)


def test_followers_reject_non_finite_policies():
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        TabularPolicy(np.full((3, 2), np.nan))


# ---------------------------------------------------------------------------- no pickle
class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_loading_a_checkpoint_never_unpickles(tmp_path):
    env = gym.make("bilevel/FourRoomsShaping-v0", n_envs=1, n_rollout_steps=10)
    leader = AMD(env, inner="exact", seed=0).learn(2)
    path = leader.save(tmp_path / "run.npz")
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    marker = tmp_path / "pwned"
    payload = np.empty(1, dtype=object)
    payload[0] = _Payload(str(marker))
    np.savez(tmp_path / "evil.npz", **arrays, x_extra=payload)
    with pytest.raises(ValueError, match="allow_pickle"):
        AMD.load(tmp_path / "evil.npz", env)
    assert not marker.exists()
    for cls in (HPGD, ZeroOrder):  # wrong class: a clear error, nothing executed
        with pytest.raises(ValueError, match="checkpoint"):
            cls.load(path, env)


def test_dense_solver_path_detects_divergence_too():
    from bilevel_envs.tabular import TabularModel

    model = FourRoomsShaping().tabular(np.zeros(105), 0)
    exploding = TabularModel.stack([model.with_updates(r=np.full((104, 4), 1e308))])
    with pytest.raises(FloatingPointError, match="diverged"):
        soft_policy_iteration(exploding, 0.01)
