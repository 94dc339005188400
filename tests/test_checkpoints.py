"""Crafted leader checkpoints (untrusted files): each gives one clear error, none crashes the
interpreter, and only the files of the same leader on the same env resume."""

import json
import subprocess
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest

import bilevel_envs  # noqa: F401  (registers the ids)
from leaders import AMD, HPGD
from leaders.checkpoints import CheckpointError

SMALL = {"lam": 0.003, "n_envs": 1, "n_rollout_steps": 60, "contexts": "all"}


def four_rooms(**kwargs):
    return gym.make("bilevel/FourRoomsShaping-v0", **{**SMALL, **kwargs})


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A real HPGD checkpoint after two iterations (warm starts of both contexts saved) and its
    header and arrays."""
    path = tmp_path_factory.mktemp("ckpt") / "hpgd.npz"
    HPGD(four_rooms(), learning_rate=0.5, optimizer="adam", seed=3).learn(2).save(path)
    with np.load(path) as data:
        header = json.loads(str(data["header"]))
        arrays = {k: np.array(data[k]) for k in data.files if k != "header"}
    return path, header, arrays


def write(path, header, arrays, **extra):
    np.savez(path, header=np.array(json.dumps(header)), **{**arrays, **extra})
    return path


def test_a_checkpoint_resumes_exactly_on_the_same_env(saved, tmp_path):
    path, _, _ = saved
    resumed = HPGD.load(path, four_rooms()).learn(2)
    straight = HPGD(four_rooms(), learning_rate=0.5, optimizer="adam", seed=3).learn(4)
    np.testing.assert_array_equal(resumed.x, straight.x)


def edited(header, **changes):
    return {**header, **changes}


CRAFTED = {
    "transposed warm start": lambda h, a: (h, {**a, "env_warm_0": a["env_warm_0"].T.copy()}),
    "NaN in x": lambda h, a: (h, {**a, "x": np.full_like(a["x"], np.nan)}),
    "x of the wrong shape": lambda h, a: (h, {**a, "x": a["x"][:10]}),
    "x out of bounds": lambda h, a: (h, {**a, "x": np.full_like(a["x"], 1e6)}),
    "Adam state of the wrong shape": lambda h, a: (h, {**a, "opt_m": np.zeros(3)}),
    "negative counter": lambda h, a: (edited(h, num_iterations=-5), a),
    "fractional counter": lambda h, a: (edited(h, num_iterations=2.5), a),
    "a path among the hyperparameters": lambda h, a: (
        edited(h, hyperparameters={**h["hyperparameters"], "log_dir": "/tmp/owned"}), a),
    "unknown header field": lambda h, a: (edited(h, payload="rm -rf"), a),
    "another leader class": lambda h, a: (edited(h, **{"class": "AMD"}), a),
    "bad generator state": lambda h, a: (edited(h, rng={"bit_generator": "PCG64"}), a),
    "warm start of a context that does not exist": lambda h, a: (
        edited(h, env={**h["env"], "warm_contexts": [0, 7]}), {**a, "env_warm_7": a["env_warm_0"]}),
    "another format version": lambda h, a: (edited(h, format_version=99), a),
    "a learning rate that is a string": lambda h, a: (
        edited(h, hyperparameters={**h["hyperparameters"], "learning_rate": "fast"}), a),
}


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_checkpoints_give_one_clear_error(saved, tmp_path, name):
    _, header, arrays = saved
    bad_header, bad_arrays = CRAFTED[name](json.loads(json.dumps(header)), dict(arrays))
    path = write(tmp_path / "bad.npz", bad_header, bad_arrays)
    with pytest.raises(CheckpointError):
        HPGD.load(path, four_rooms())


def test_damaged_and_foreign_files(saved, tmp_path):
    path, header, arrays = saved
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:200])
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    text = tmp_path / "text.npz"
    text.write_text("not a checkpoint")
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, header=np.array(json.dumps(header)), x=np.array([object()], dtype=object))
    for bad in (truncated, foreign, text, pickled, tmp_path / "missing.npz"):
        with pytest.raises(CheckpointError, match=str(bad.name)):
            HPGD.load(bad, four_rooms())


def test_loading_onto_another_env_needs_an_explicit_override(saved):
    path, _, _ = saved
    for other in (four_rooms(lam=0.005), four_rooms(n_envs=2), four_rooms(beta=3.0)):
        with pytest.raises(CheckpointError, match="saved on another env"):
            HPGD.load(path, other)
    leader = HPGD.load(path, four_rooms(n_envs=2), allow_other_env=True)
    assert leader.num_iterations == 2


def test_amd_tables_are_checked(tmp_path):
    path = tmp_path / "amd.npz"
    env = four_rooms(objective="exact", n_rollout_steps=0)
    AMD(env, inner_iterations=2, seed=0).learn(2).save(path)
    with np.load(path) as data:
        header = json.loads(str(data["header"]))
        arrays = {k: np.array(data[k]) for k in data.files if k != "header"}
    key = next(k for k in arrays if k.startswith("extra_dq_"))
    write(tmp_path / "bad.npz", header, {**arrays, key: arrays[key][:, :, :3]})
    with pytest.raises(CheckpointError, match="dq_"):
        AMD.load(tmp_path / "bad.npz", four_rooms(objective="exact", n_rollout_steps=0))


def run_isolated(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (a crash there cannot take the test run down)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300)


def test_no_crafted_input_crashes_the_interpreter(saved, tmp_path):
    """The inputs that once reached compiled kernels out of bounds (a transposed warm start in a
    checkpoint and in the solver's own argument) end in a ValueError and exit status 0."""
    _, header, arrays = saved
    bad = write(tmp_path / "transposed.npz", header,
                {**arrays, "env_warm_0": arrays["env_warm_0"].T.copy(),
                 "env_warm_1": arrays["env_warm_1"].T.copy()})
    result = run_isolated(f"""
        import numpy as np, gymnasium as gym, bilevel_envs
        from bilevel_envs.tabular import soft_policy_iteration
        from leaders import HPGD
        env = gym.make("bilevel/FourRoomsShaping-v0", **{SMALL!r})
        for attempt in range(3):
            try:
                HPGD.load({str(bad)!r}, env).learn(2)
            except ValueError as error:
                print("refused:", type(error).__name__)
        model = env.unwrapped.problem.tabular(np.zeros(105), 0)
        try:
            soft_policy_iteration(model, 0.003, warm_start=np.zeros((4, 104)))
        except ValueError as error:
            print("refused:", error)
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("refused") == 4
    assert "warm_start must be a finite soft Q-function of shape (104, 4)" in result.stdout
