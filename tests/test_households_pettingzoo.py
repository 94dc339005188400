"""PettingZoo households_v0: API test, multi-step seed determinism, agreement with the
single-household env, bad input and the lazy import."""

import subprocess
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("pettingzoo")
from pettingzoo.test import parallel_api_test  # noqa: E402

from bilevel_envs.envs import households_v0  # noqa: E402
from bilevel_envs.envs.tax_design.problem import TaxDesignTabular  # noqa: E402
from tests.test_household import chi_square_p  # noqa: E402


@pytest.mark.parametrize("kwargs", [{"households": [0, 0, 1, 1]},
                                    {"households": {0: 1, 1: 2}, "asset_cells": 41,
                                     "variant": "paper"}])
def test_parallel_api_test_passes_without_warnings(kwargs):
    env = households_v0.parallel_env(**kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parallel_api_test(env, num_cycles=250)
    assert not caught, [str(w.message) for w in caught]


def play(seed, steps=60, **kwargs):
    env = households_v0.parallel_env(households=[0, 1, 1], **kwargs)
    obs, _ = env.reset(seed=seed)
    history = [obs]
    for _ in range(steps):
        actions = {agent: env.action_space(agent).sample() for agent in env.agents}
        history.append((actions,) + env.step(actions))
    return history


def flatten(history):
    """Every number of a history in a fixed order (dicts by agent name)."""
    out = []

    def walk(item):
        if isinstance(item, dict):
            for key in sorted(item):
                walk(item[key])
        elif isinstance(item, (tuple, list)):
            for value in item:
                walk(value)
        elif isinstance(item, (bool, np.bool_)):
            out.append(float(item))
        else:
            out.extend(np.ravel(np.asarray(item, dtype=np.float64)).tolist())

    walk(history)
    return np.array(out)


@pytest.mark.parametrize("kwargs", [{}, {"asset_cells": 41}])
def test_equal_seeds_give_identical_trajectories(kwargs):
    """Observations, actions, rewards, ends and infos over many steps (not only the first)."""
    a, b, c = (flatten(play(seed, **kwargs)) for seed in (11, 11, 12))
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_all_households_are_truncated_together():
    env = households_v0.parallel_env(households={0: 2})
    env.reset(seed=0)
    for t in range(200):
        _, _, terminations, truncations, _ = env.step({a: 0 for a in env.agents})
        assert not any(terminations.values())
        assert all(truncations.values()) == (t == 199)
    assert env.agents == [] and env.step({}) == ({}, {}, {}, {}, {})


def test_rewards_and_welfare_follow_each_households_group():
    x = np.array([0.4, 0.2, 0.6, 1.0])
    env = households_v0.parallel_env(x=x, households=[0, 1], asset_cells=41)
    problem = TaxDesignTabular()
    obs, infos = env.reset(seed=0, options={"state": {"household_0": 25, "household_1": 25}})
    assert obs == {"household_0": 25, "household_1": 25}
    assert [infos[a]["group"] for a in env.agents] == [0, 1]
    # 444 = hours index 3, consumption indices (2, 3, 4): every good bought, so α matters
    _, rewards, _, _, infos = env.step({"household_0": 444, "household_1": 444})
    for agent, group in (("household_0", 0), ("household_1", 1)):
        model = problem.tabular(x, group)
        assert rewards[agent] == pytest.approx(model.r[25, 444])
        assert infos[agent]["leader_reward"] == pytest.approx(model.r_leader[25, 444])
    assert rewards["household_0"] != rewards["household_1"]  # different preferences


def test_households_transition_like_the_tabular_model():
    """Pooled next cells of many households from one (s, a) follow P (chi-square)."""
    x = np.array([0.6, 0.2, 0.9, 1.4])
    n_agents, rounds = 50, 60
    env = households_v0.parallel_env(x=x, households={0: n_agents},
                                                  asset_cells=41)
    P = TaxDesignTabular().tabular(x, 0).P[22, 9 * 125 + 3]
    env.reset(seed=1)
    counts = np.zeros(41, dtype=np.int64)
    for _ in range(rounds):
        env.reset(options={"state": {a: 22 for a in env.possible_agents}})
        obs = env.step({a: 9 * 125 + 3 for a in env.agents})[0]
        counts += np.bincount(list(obs.values()), minlength=41)
    assert chi_square_p(counts, P) > 1e-3


@pytest.mark.parametrize("kwargs, error, pattern", [
    ({"households": [0, 2]}, KeyError, r"unknown household group 2 in households; expected an "
                                       r"index in 0..1"),
    ({"households": {0: -1}}, ValueError, r"households\[0\] \(a count\) must be an integer >= 0"),
    ({"households": []}, ValueError, r"households must name at least one household"),
    ({"households": "all"}, ValueError, r"households must be a list of preference groups"),
    ({"x": np.full(4, 2.5)}, ValueError, r"x is outside x_space: x\[0\] = 2.5 is not in \[0, 2\]"),
    ({"x": np.full(2, 0.3)}, ValueError, r"x must have shape \(4,\)"),
    ({"variant": "textbook"}, ValueError, r"variant must be one of \('code', 'paper'\)"),
    ({"max_cycles": 0}, ValueError, r"max_cycles must be an integer >= 1"),
])
def test_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        households_v0.parallel_env(**kwargs)


def test_bad_actions_and_states():
    env = households_v0.parallel_env(households=[0, 1])
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"actions are missing for live agents \['household_1'\]"):
        env.step({"household_0": 0})
    with pytest.raises(ValueError, match=r"action of household_1 must be an integer in 0..1249"):
        env.step({"household_0": 0, "household_1": 5000})
    with pytest.raises(ValueError, match=r"options\['state'\]\['household_0'\] must be one asset"):
        env.reset(options={"state": {"household_0": 500.0}})
    with pytest.raises(KeyError, match=r"unknown agent 'household_9'"):
        env.reset(options={"state": {"household_9": 0.0}})


def test_import_error_names_the_extra():
    code = ("import sys; sys.modules['pettingzoo'] = None\n"
            "import bilevel_envs\n"
            "try:\n    from bilevel_envs.envs import households_v0\n"
            "except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert 'pip install "bilevel-envs[pettingzoo]"' in out


def test_package_import_does_not_load_pettingzoo():
    code = "import sys, bilevel_envs; print('pettingzoo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


def test_households_learn_through_the_parallel_env():
    """The example's independent soft Q-learners, on a short budget, already beat the uniform
    policy and close 90 % of its gap to the exact soft-optimal value."""
    from bilevel_envs.tabular import evaluate_policy, soft_value_iteration, softmax_policy
    from examples.tax_households_pettingzoo import ECONOMY, TAXES, soft_q_learning

    env = households_v0.parallel_env(x=TAXES, households=[0, 1], **ECONOMY)
    q = soft_q_learning(env, episodes=60, lam=0.2, gamma=0.9, seed=0)
    problem = TaxDesignTabular(**ECONOMY)
    uniform = np.full((21, 81), 1 / 81)
    for i, group in enumerate(env.groups):
        model = problem.tabular(TAXES, int(group))
        learned = model.mu @ evaluate_policy(model, softmax_policy(q[i], 0.2), lam=0.2)
        optimum = model.mu @ soft_value_iteration(model, 0.2).v
        random = model.mu @ evaluate_policy(model, uniform, lam=0.2)
        assert optimum - learned < 0.1 * (optimum - random), (learned, optimum, random)
