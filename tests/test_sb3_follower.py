"""SB3Follower: PPO, A2C and DQN followers through the LeaderEnv, seeding, warm starts, errors."""

import random
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest

import bilevel_envs  # noqa: F401  (registers the env ids)
from bilevel_envs.envs.four_rooms.problem import FourRoomsShaping
from bilevel_envs.envs.garnet import GarnetProblem
from bilevel_envs.followers import make_follower

th = pytest.importorskip("torch")
pytest.importorskip("stable_baselines3")

from bilevel_envs.followers.sb3 import SB3Follower, SB3Policy, require_sb3  # noqa: E402
from tests.conftest import check_env_strict  # noqa: E402

#: tiny budgets: one PPO/A2C update, a few DQN updates per leader step
BUDGETS = {
    "PPO": {"algo": "PPO", "total_timesteps": 128,
            "algo_kwargs": {"n_steps": 64, "batch_size": 64, "n_epochs": 2}},
    "A2C": {"algo": "A2C", "total_timesteps": 64, "algo_kwargs": {"n_steps": 16}},
    "DQN": {"algo": "DQN", "total_timesteps": 128,
            "algo_kwargs": {"learning_starts": 32, "buffer_size": 1_000, "batch_size": 16}},
}
ALL_STATES = np.arange(104)


def _leader_run(follower_kwargs, seed, steps=2):
    env = gym.make("bilevel/FourRoomsShaping-v0", lam=0.003, beta=1.0, follower="sb3",
                   follower_kwargs=follower_kwargs, n_envs=1, n_rollout_steps=50)
    env.reset(seed=seed)
    x = np.random.default_rng(0).normal(0, 0.5, size=(steps, 105))
    infos = [env.step(xi)[4] for xi in x]
    return env.unwrapped, infos


@pytest.mark.parametrize("algo", sorted(BUDGETS))
def test_trains_through_the_leader_env_with_warm_starts(algo):
    env, infos = _leader_run(BUDGETS[algo], seed=0)
    first, second = (info["follower_stats"][0] for info in infos)
    budget = BUDGETS[algo]["total_timesteps"]
    assert (first["warm_started"], second["warm_started"]) == (False, True)
    assert first["num_timesteps"] >= budget and second["num_timesteps"] >= 2 * budget
    probs = env.last_step.followers[0].response.policy.action_probs(ALL_STATES)
    assert probs.shape == (104, 4) and probs.dtype == np.float64
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    exact = env.exact_values()
    assert np.all(np.isfinite(exact))


@pytest.mark.parametrize("algo", ["PPO", "DQN"])
def test_same_seed_same_policy_different_seed_different(algo):
    runs = [_leader_run(BUDGETS[algo], seed=s)[0] for s in (3, 3, 4)]
    probs = [r.last_step.followers[0].response.policy.action_probs(ALL_STATES) for r in runs]
    np.testing.assert_array_equal(probs[0], probs[1])
    assert not np.array_equal(probs[0], probs[2])


def test_sb3_checker_passes_on_every_follower_env():
    from stable_baselines3.common.env_checker import check_env

    x = np.random.default_rng(0).normal(size=105)
    for problem, xs in ((FourRoomsShaping(lam=0.003), x), (GarnetProblem(), np.zeros(4))):
        for context in range(problem.n_contexts):
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                check_env(problem.follower_env(xs, context))


def test_gymnasium_checker_passes_on_the_leader_env_with_an_sb3_follower():
    # The tiny A2C budget is far from optimal: the quality warning (tested in
    # test_follower_quality.py) would be one the strict checker does not expect.
    env = gym.make("bilevel/FourRoomsShaping-v0", follower="sb3",
                   follower_kwargs=BUDGETS["A2C"], n_envs=1, n_rollout_steps=20,
                   follower_quality=False)
    check_env_strict(env.unwrapped)


def test_responses_are_frozen_and_global_state_is_left_alone():
    problem, x = GarnetProblem(), np.zeros(4)
    follower = SB3Follower(**BUDGETS["DQN"])
    threads = th.get_num_threads()
    random.seed(1), np.random.seed(1), th.manual_seed(1)
    before = random.random(), np.random.random(), th.rand(1).item()
    random.seed(1), np.random.seed(1), th.manual_seed(1)
    first = follower.respond(problem, x, 0, seed=5)
    after = random.random(), np.random.random(), th.rand(1).item()
    assert after == before and th.get_num_threads() == threads
    snapshot = first.policy.action_probs(np.arange(6))
    follower.respond(problem, x + 0.5, 0, seed=6, warm_start=first.warm_start)
    np.testing.assert_array_equal(first.policy.action_probs(np.arange(6)), snapshot)


def test_dqn_policy_is_boltzmann_over_q_and_ppo_policy_is_its_distribution():
    problem, x = GarnetProblem(lam=0.5), np.zeros(4)
    obs = np.arange(6)
    dqn = SB3Follower(**BUDGETS["DQN"]).respond(problem, x, 0, seed=0)
    q = dqn.warm_start.q_net(dqn.warm_start.policy.obs_to_tensor(obs)[0]).detach().double()
    expected = th.softmax(q / problem.lam, dim=-1).numpy()
    np.testing.assert_allclose(dqn.policy.action_probs(obs), expected, rtol=1e-12)
    ppo = SB3Follower(**BUDGETS["PPO"]).respond(problem, x, 0, seed=0)
    model = ppo.warm_start
    dist = model.policy.get_distribution(model.policy.obs_to_tensor(obs)[0])
    np.testing.assert_allclose(ppo.policy.action_probs(obs),
                               dist.distribution.probs.detach().double().numpy(), rtol=1e-6)
    one = ppo.policy.action_probs(2)  # a single observation is a batch of one
    assert one.shape == (1, 3)


def test_sample_draws_from_action_probs():
    """Frequencies of N = 4,000 draws per state lie within 4 standard errors of π(a|s)."""
    response = SB3Follower(**BUDGETS["PPO"]).respond(GarnetProblem(), np.zeros(4), 0, seed=0)
    n = 4_000
    obs = np.repeat(np.arange(6), n)
    actions = response.policy.sample(obs, np.random.default_rng(0))
    freq = np.stack([np.bincount(actions[obs == s], minlength=3) / n for s in range(6)])
    probs = response.policy.action_probs(np.arange(6))
    assert np.all(np.abs(freq - probs) <= 4 * np.sqrt(probs * (1 - probs) / n))


def test_warmup_timesteps_set_the_cold_budget():
    follower = SB3Follower(**BUDGETS["A2C"], warmup_timesteps=160)
    response = follower.respond(GarnetProblem(), np.zeros(4), 0, seed=0)
    assert response.stats["timesteps"] == 160 and response.stats["num_timesteps"] == 160


@pytest.mark.parametrize("kwargs, error, pattern", [
    ({"algo": "PPG"}, ValueError, r"algo must be one of \['A2C', 'DQN', 'PPO', 'SoftDQN'\]"),
    ({"algo": "no_such_module:Algo"}, ValueError, r"algo 'no_such_module:Algo' cannot be"),
    ({"algo": "numpy:ndarray"}, TypeError, r"algo must name a stable_baselines3 BaseAlgorithm"),
    ({"total_timesteps": -5}, ValueError, r"total_timesteps must be an integer >= 1; got -5"),
    ({"warmup_timesteps": 0}, ValueError, r"warmup_timesteps must be an integer >= 1"),
    ({"n_envs": 0}, ValueError, r"n_envs must be an integer >= 1"),
    ({"algo_kwargs": {"seed": 1}}, ValueError, r"algo_kwargs must not set \['seed'\]"),
    ({"episode_steps": 0}, ValueError, r"episode_steps must be an integer >= 1"),
    ({"exploring_starts": "yes"}, ValueError, r"exploring_starts must be True or False"),
])
def test_bad_arguments_are_rejected(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        make_follower("sb3", **kwargs)


def test_bad_warm_start_is_rejected():
    with pytest.raises(TypeError, match=r"warm_start must be a PPO model"):
        SB3Follower().respond(GarnetProblem(), np.zeros(4), 0, warm_start=np.zeros((6, 3)))


def test_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "stable_baselines3", None)
    with pytest.raises(ImportError, match=r'pip install "bilevel-envs\[sb3\]"'):
        require_sb3()


def test_policy_without_probabilities_is_rejected():
    class Opaque:
        action_space = gym.spaces.Discrete(2)

    with pytest.raises(TypeError, match=r"neither an action distribution"):
        SB3Policy(Opaque(), lam=1.0)


def test_generic_gymnasium_oracle_samples_the_sb3_policy():
    env = gym.make("bilevel/FourRoomsShaping-v0", lam=0.003, follower="sb3",
                   follower_kwargs=BUDGETS["PPO"], n_envs=2, n_rollout_steps=30, oracle="gym")
    env.reset(seed=0)
    info = env.step(np.zeros(105))[4]
    rollouts = info["rollouts"]
    probs = env.unwrapped.last_step.followers[0].response.policy.action_probs(
        rollouts["obs"].ravel())
    np.testing.assert_allclose(rollouts["action_probs"].ravel(),
                               probs[np.arange(probs.shape[0]), rollouts["actions"].ravel()])


def test_torch_loads_only_when_an_sb3_follower_is_built():
    code = ("import sys, bilevel_envs; from bilevel_envs.followers import make_follower; "
            "import bilevel_envs.followers.sb3; make_follower('soft_q'); "
            "print('torch' in sys.modules, 'stable_baselines3' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("problem", [FourRoomsShaping(lam=0.003), GarnetProblem()],
                         ids=["in_place", "rebuilt_inner_env"])
def test_warm_start_reuses_model_and_env_and_trains_at_the_new_x(problem):
    import copy

    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from bilevel_envs.followers.sb3 import FollowerEnvSlot

    follower = SB3Follower(**BUDGETS["DQN"], n_envs=2)
    x1 = problem.x_init
    x2 = x1 + np.random.default_rng(0).normal(0, 3.0, size=x1.shape)
    first = follower.respond(problem, x1, 0, seed=1)
    model, env = first.warm_start, first.warm_start.get_env()
    branch = copy.deepcopy(model)
    second = follower.respond(problem, x2, 0, seed=2, warm_start=model)
    assert second.warm_start is model and model.get_env() is env  # nothing rebuilt
    assert second.stats["warm_started"] and second.stats["episodes"] >= 0
    expected = problem.tabular(x2, 0).r
    for monitor in env.envs:
        inner = monitor.env.unwrapped
        if hasattr(inner, "model"):  # the Garnet's env: a new inner env behind the same slot
            np.testing.assert_array_equal(inner.model.r, expected)
        else:  # Four-Rooms: the same env object, moved in place
            np.testing.assert_array_equal(inner.x, x2)
    # The same training on a freshly made env at x2 gives the same policy bit for bit ...
    fresh = DummyVecEnv([lambda: Monitor(FollowerEnvSlot(problem, x2, 0)) for _ in range(2)])
    states = np.arange(problem.follower_observation_space.n)
    same = copy.deepcopy(branch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        same.set_env(fresh)
    same.set_random_seed(2)
    same.learn(follower.total_timesteps, reset_num_timesteps=False)
    np.testing.assert_array_equal(
        SB3Policy(same.policy, problem.lam).action_probs(states),
        second.policy.action_probs(states))
    # ... and training at x1 instead does not (the follower responds to x).
    stay = follower.respond(problem, x1, 0, seed=2, warm_start=branch)
    assert not np.array_equal(stay.policy.action_probs(states),
                              second.policy.action_probs(states))


def test_episode_steps_and_exploring_starts_shape_the_training_episodes():
    """Episodes of 7 steps from uniformly random cells of a tax economy with 5 asset cells: the
    starts cover every cell (not only μ's), and the same seed gives the same starts."""
    from bilevel_envs.envs.tax_design.problem import TaxDesignTabular
    from bilevel_envs.followers.sb3 import FollowerEnvSlot

    problem = TaxDesignTabular(asset_cells=5, asset_bound=10.0, prices=(1.0, 1.0),
                               preferences=((0.6, 0.4), (0.2, 0.8)),
                               hours_levels=(0.0, 2.0), consumption_levels=(0.0, 1.0))

    def starts(seed):
        slot = FollowerEnvSlot(problem, problem.x_init, 0, episode_steps=7,
                               exploring_starts=True)
        first = [slot.reset(seed=seed)[0]]
        for _ in range(99):
            for t in range(7):
                truncated = slot.step(0)[3]
                assert truncated == (t == 6)
            first.append(slot.reset()[0])
        return np.array(first)

    a = starts(3)
    np.testing.assert_array_equal(a, starts(3))
    counts = np.bincount(a, minlength=5)
    assert counts.min() > 0.5 * 100 / 5  # μ puts < 1 % on the outer cells
    assert problem.mu[0] < 0.01
    follower = make_follower("soft_dqn", total_timesteps=64, n_envs=2, episode_steps=7,
                             exploring_starts=True, algo_kwargs={"learning_starts": 16})
    response = follower.respond(problem, problem.x_init, 0, seed=0)
    assert response.stats["episodes"] == 64 // 7 // 2 * 2


def test_training_leaves_no_log_folders_and_verbose_still_prints(tmp_path, monkeypatch, capsys):
    """SB3's default logger makes an empty ``SB3-<time>`` folder in the temp directory on every
    ``learn()``; the follower's models log without one (to stdout when verbose)."""
    import tempfile

    from stable_baselines3 import DQN

    def sb3_folders():
        return [p for p in tmp_path.iterdir() if p.name.startswith("SB3-")]

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    _leader_run(BUDGETS["DQN"], seed=0, steps=3)
    assert sb3_folders() == []
    # Negative control: the same model class trained with SB3's own logger does make one.
    problem = FourRoomsShaping(lam=0.003)
    DQN("MlpPolicy", problem.follower_env(np.zeros(105), 0), learning_starts=10,
        buffer_size=100, batch_size=8, seed=0).learn(20)
    assert len(sb3_folders()) == 1
    verbose = {**BUDGETS["PPO"], "algo_kwargs": {**BUDGETS["PPO"]["algo_kwargs"], "verbose": 1}}
    capsys.readouterr()
    _leader_run(verbose, seed=0, steps=1)
    assert "total_timesteps" in capsys.readouterr().out
    assert len(sb3_folders()) == 1
