"""Every registered id against the ecosystem's own checkers: Gymnasium's (check_env, the passive
checker of gym.make, render modes, spec round trip, episode lengths, pickling) and
Stable-Baselines3's (check_env, make_vec_env with DummyVecEnv and SubprocVecEnv). Every warning
fails the test unless it is in the commented allow-list of ``tests/conftest.py``. PettingZoo's
checkers run on ``households_v0`` in ``tests/test_households_pettingzoo.py``."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.registration import EnvSpec, load_env_creator

import bilevel_envs
from bilevel_envs.followers.base import Follower, FollowerResponse
from bilevel_envs.followers.soft_vi import SoftValueIteration
from tests.conftest import check_env_strict, strict_warnings

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"n_envs": 2, "n_rollout_steps": 50}
#: Cheap constructor arguments per id (small follower budgets; the registered defaults otherwise:
#: TaxDesign-v0 keeps continuous assets and its default grid follower, on a coarser grid).
KWARGS: dict[str, dict] = {
    "bilevel/FourRoomsShaping-v0": SMALL,
    "bilevel/TaxDesign-v0": {**SMALL, "follower_kwargs": {"asset_cells": 11}},
    "bilevel/ContractDesign-v0": SMALL,
    "bilevel/RLHF-v0": {"n_pairs": 4},
    "bilevel/FourRooms-v0": {},
    "bilevel/ContractAgent-v0": {},
    "bilevel/PreferenceGrid-v0": {},
    "bilevel/Household-v0": {},
}
IDS = sorted(bilevel_envs.ENV_IDS)
LEADER_IDS = [i for i in IDS if bilevel_envs.ENV_IDS[i][1]["max_episode_steps"] == 1000]
FOLLOWER_IDS = [i for i in IDS if i not in LEADER_IDS]


def render_modes(env_id: str) -> list[str]:
    """The modes the id's class declares (what gym.make reads, without building an env)."""
    return list(load_env_creator(gym.spec(env_id).entry_point).metadata["render_modes"])


MODES = [(env_id, mode) for env_id in IDS for mode in render_modes(env_id)]


def test_the_table_covers_every_registered_id():
    assert set(KWARGS) == set(bilevel_envs.ENV_IDS)


# ---------------------------------------------------------------------------- Gymnasium
@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_check_env(env_id):
    """Gymnasium's check_env, including its render check in every declared mode."""
    check_env_strict(gym.make(env_id, **KWARGS[env_id]).unwrapped)


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_passive_checker_over_an_episode_start(env_id):
    """gym.make's PassiveEnvChecker watches reset and a few steps of sampled actions."""
    with strict_warnings():
        env = gym.make(env_id, **KWARGS[env_id])
        env.action_space.seed(0)
        env.reset(seed=0)
        for _ in range(3):
            *_, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                env.reset()
        env.close()


@pytest.mark.parametrize("env_id, mode", MODES, ids=[f"{i}-{m}" for i, m in MODES])
def test_every_declared_render_mode_renders(env_id, mode):
    with strict_warnings():
        env = gym.make(env_id, render_mode=mode, **KWARGS[env_id])
        env.reset(seed=0)
        first = env.render()
        env.step(env.action_space.sample())
        after = env.render()
    for frame in (first, after):
        if mode == "ansi":
            assert isinstance(frame, str) and frame.strip()
        else:
            assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3


@pytest.mark.parametrize("env_id", IDS)
def test_render_mode_none_renders_nothing_with_gymnasiums_warning(env_id):
    env = gym.make(env_id, render_mode=None, **KWARGS[env_id])
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="without specifying any render mode"):
        assert env.unwrapped.render() is None


@pytest.mark.parametrize("env_id", [i for i in IDS if "rgb_array" not in render_modes(i)])
def test_undeclared_render_mode_raises_the_type_error_tools_expect(env_id):
    with pytest.warns(UserWarning, match="not in the possible render_modes"), \
            pytest.raises(TypeError, match=r"render_mode must be one of \['ansi'\] or None; got "
                                           r"'rgb_array'"):
        gym.make(env_id, render_mode="rgb_array", **KWARGS[env_id])


def test_the_four_rooms_leader_picture_shows_penalties_and_both_paths():
    env = gym.make("bilevel/FourRoomsShaping-v0", contexts="all", render_mode="rgb_array",
                   **SMALL)
    env.reset(seed=0)
    blank = env.render()
    x = np.zeros(105)
    x[40] = 8.0  # one heavily penalised cell
    env.step(x)
    picture = env.render()
    from bilevel_envs.envs.four_rooms.model import CELLS, PATH_COLOURS

    assert picture.shape == blank.shape == (13 * 24, 13 * 24, 3)
    r, c = CELLS[40]
    red = picture[r * 24 + 2, c * 24 + 2].astype(int)
    assert abs(red - [103, 0, 13]).max() < 5  # almost the full penalty: dark red
    for colour in PATH_COLOURS:  # the followers of G1 (black) and G2 (violet)
        assert (picture == colour).all(axis=2).sum() > 100
        assert not (blank == colour).all(axis=2).any()


@pytest.mark.parametrize("env_id", IDS)
def test_spec_serialises_and_remakes_the_same_env_with_array_kwargs(env_id):
    """env.spec.to_json() works when kwargs hold NumPy arrays (stored as lists), and the spec
    read back makes an env that behaves identically."""
    kwargs = dict(KWARGS[env_id])
    if env_id in FOLLOWER_IDS:
        kwargs["x"] = 0.5 * np.asarray(gym.make(env_id).unwrapped.x)  # an array, not the default
    elif env_id == "bilevel/ContractDesign-v0":
        kwargs["cost_scales"] = np.array([1.0, 1.5])
    env = gym.make(env_id, **kwargs)
    text = env.spec.to_json()
    clone = gym.make(EnvSpec.from_json(text))
    assert clone.spec.to_json() == text
    for e in (env, clone):
        e.action_space.seed(3)
    a = [env.reset(seed=1)[0]] + [env.step(env.action_space.sample())[:2] for _ in range(2)]
    b = [clone.reset(seed=1)[0]] + [clone.step(clone.action_space.sample())[:2]
                                    for _ in range(2)]
    assert repr(a) == repr(b)


@pytest.mark.parametrize("env_id", IDS)
def test_episode_length_is_visible_in_the_spec(env_id):
    """Leader ids: 1000 leader steps; infinite-horizon follower ids: 200 steps; PreferenceGrid:
    None on purpose, its episodes end after trajectory_length steps."""
    expected = {"bilevel/PreferenceGrid-v0": None}.get(
        env_id, 1000 if env_id in LEADER_IDS else 200)
    env = gym.make(env_id, **KWARGS[env_id])
    assert env.spec.max_episode_steps == expected
    if expected is None:
        env.reset(seed=0)
        H = env.unwrapped.problem.trajectory_length
        ends = [env.step(0)[2] for _ in range(H)]
        assert ends == [False] * (H - 1) + [True]


# ---------------------------------------------------------------------------- pickling
@pytest.mark.parametrize("env_id", LEADER_IDS)
def test_pickled_leader_env_does_not_grow_and_continues_identically(env_id):
    env = gym.make(env_id, **KWARGS[env_id]).unwrapped
    env.reset(seed=0)
    x = env.problem.x_init
    env.step(x)
    one_step = len(pickle.dumps(env))
    for _ in range(3):
        env.step(x)
    assert len(pickle.dumps(env)) - one_step < 20_000
    clone = pickle.loads(pickle.dumps(env))
    assert clone.last_step is None
    assert env.step(x)[1] == clone.step(x)[1]


def test_default_tax_design_env_pickles_small_after_a_full_step():
    """The registered default (60,000 household transitions per step): the step's record stays
    out of the pickle (it was 5-40 MB), the grid follower's warm start (an array) stays in."""
    env = gym.make("bilevel/TaxDesign-v0").unwrapped
    before = len(pickle.dumps(env))
    env.reset(seed=0)
    env.step(env.problem.x_init)
    assert env.last_step.followers[0].rollouts.mask.sum() == 60_000
    assert len(pickle.dumps(env)) < before + 600_000


class _HeavyWarmStart(Follower):
    """Soft VI whose warm start is an object, not an array (as an SB3 model is)."""

    name = "heavy_warm_start"

    def supports(self, problem):
        return True

    def respond(self, problem, x, context, seed=None, warm_start=None):
        response = SoftValueIteration().respond(problem, x, context, seed=seed)
        return FollowerResponse(policy=response.policy, warm_start={"buffer": bytes(10**6)},
                                stats=response.stats, cost=response.cost)


def test_warm_starts_that_are_not_arrays_are_not_pickled():
    env = gym.make("bilevel/FourRoomsShaping-v0", follower=_HeavyWarmStart(), **SMALL).unwrapped
    env.reset(seed=0)
    env.step(np.zeros(105))
    assert env._warm and len(pickle.dumps(env)) < 10**6  # the warm start alone is 1 MB
    assert pickle.loads(pickle.dumps(env))._warm == {}


# ---------------------------------------------------------------------------- Stable-Baselines3
@pytest.mark.parametrize("env_id", IDS)
def test_sb3_check_env(env_id):
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.env_checker import check_env

    with strict_warnings():
        check_env(gym.make(env_id, **KWARGS[env_id]).unwrapped, warn=True)


def _exercise(vec_env) -> None:
    vec_env.seed(0)
    vec_env.reset()
    for _ in range(2):
        vec_env.step(np.stack([vec_env.action_space.sample() for _ in range(vec_env.num_envs)]))
    vec_env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_sb3_make_vec_env_with_dummy_vec_env(env_id):
    """SB3 asks for render_mode="rgb_array": ids that draw one get it, the others are built
    without a render mode."""
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.env_util import make_vec_env

    with strict_warnings():
        vec_env = make_vec_env(env_id, n_envs=2, seed=0, env_kwargs=KWARGS[env_id])
        expected = "rgb_array" if "rgb_array" in render_modes(env_id) else None
        assert vec_env.get_attr("render_mode") == [expected, expected]
        _exercise(vec_env)


@pytest.mark.parametrize("env_id", IDS)
def test_sb3_make_vec_env_with_subproc_vec_env(env_id):
    """One worker process per id, forked (fast); the default start method is checked once
    below. A constructor error in a worker used to surface as "Connection reset by peer"."""
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv

    with strict_warnings():
        _exercise(make_vec_env(env_id, n_envs=1, seed=0, env_kwargs=KWARGS[env_id],
                               vec_env_cls=SubprocVecEnv,
                               vec_env_kwargs={"start_method": "fork"}))


SUBPROC_SCRIPT = """
import warnings
warnings.simplefilter("error")  # here and in the workers, which start from this module
# the allow-listed warning of gym.make (see tests/conftest.py)
warnings.filterwarnings("ignore", ".*not in the possible render_modes")
import numpy as np
import bilevel_envs  # registers the ids (the workers inherit the registry from this script)
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv

if __name__ == "__main__":
    for env_id in ("bilevel/Household-v0", "bilevel_envs:bilevel/PreferenceGrid-v0"):
        vec_env = make_vec_env(env_id, n_envs=2, seed=0, vec_env_cls=SubprocVecEnv)
        vec_env.reset()
        vec_env.step(np.array([vec_env.action_space.sample() for _ in range(2)]))
        vec_env.close()
        print("ok", env_id)
"""


def test_sb3_make_vec_env_with_subproc_vec_env_default_start_method(tmp_path):
    """A user's script with SB3's default start method (forkserver: workers start from a server
    that imported the script, so ``import bilevel_envs`` there registers the ids; the
    ``"bilevel_envs:"`` prefix imports the package in any worker)."""
    pytest.importorskip("stable_baselines3")
    script = tmp_path / "train.py"
    script.write_text(SUBPROC_SCRIPT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split("\n")[:2] == ["ok bilevel/Household-v0",
                                          "ok bilevel_envs:bilevel/PreferenceGrid-v0"]
