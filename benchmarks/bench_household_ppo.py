"""Stock SB3 PPO, A2C and DQN on ``bilevel/Household-v0`` at the initial taxes: the household's
mean utility per step (the env's reward) after training, against the uniform policy and the exact
soft-optimal households of the 41-cell grid economy (``grid_soft_vi``), all on the continuous
assets, group 1.

The household sees raw assets in ``[−100, 100]`` and rewards down to −100 per step (debt counts
one for one). What makes stock SB3 learn here is scaling — SB3's ``VecNormalize`` or Gymnasium's
``TransformObservation(obs / 20)`` and ``TransformReward(r / 10)`` — and enough policy updates:
8 envs, PPO with 256-step rollouts (SB3's default 2,048 × 8 envs gives only 9 updates in
150,000 steps). The factored ``action_space="multidiscrete"`` (hours × goods) learns faster than
the flat ``Discrete(1250)``. DQN gets the stationary wrapper scaling: ``VecNormalize``'s running
reward scale changes the targets stored in its replay buffer.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_household_ppo.py [timesteps]   # default 150000
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from stable_baselines3 import A2C, DQN, PPO  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize  # noqa: E402

import bilevel_envs  # noqa: E402, F401
from bilevel_envs.envs.tax_design.followers import GridSoftVI  # noqa: E402

ENV_ID, CONTEXT, N_ENVS = "bilevel/Household-v0", 0, 8
OBS_SCALE, REWARD_SCALE = 20.0, 10.0
#: DQN with one gradient step per vector step, a faster target and longer exploration than
#: SB3's defaults (which stay at the uniform policy's debt here).
DQN_KWARGS = {"learning_rate": 5e-4, "buffer_size": 100_000, "batch_size": 256,
              "learning_starts": 1_000, "train_freq": 1, "target_update_interval": 1_000,
              "exploration_fraction": 0.2}
#: (algorithm, action space, scaling, algorithm kwargs): what is measured.
CONFIGS = [
    (PPO, "discrete", None, {"n_steps": 256, "batch_size": 256}),
    (PPO, "discrete", "VecNormalize", {"n_steps": 256, "batch_size": 256}),
    (PPO, "multidiscrete", "VecNormalize", {"n_steps": 256, "batch_size": 256}),
    (PPO, "multidiscrete", "wrappers", {"n_steps": 256, "batch_size": 256}),
    (A2C, "multidiscrete", "VecNormalize", {}),
    (DQN, "discrete", "wrappers", {}),
    (DQN, "discrete", "wrappers", DQN_KWARGS),
]


def make_env(action_space: str = "discrete", scaled: bool = False) -> gym.Env:
    env = gym.make(ENV_ID, context=CONTEXT, action_space=action_space)
    if scaled:
        env = gym.wrappers.TransformObservation(env, lambda s: s / OBS_SCALE,
                                                env.observation_space)
        env = gym.wrappers.TransformReward(env, lambda r: r / REWARD_SCALE)
    return env


def mean_utility(act: Callable, action_space: str = "discrete", episodes: int = 20) -> float:
    """Mean reward per step of ``act(obs) -> action`` over ``episodes`` 200-step episodes."""
    env, total, steps = gym.make(ENV_ID, context=CONTEXT, action_space=action_space), 0.0, 0
    for episode in range(episodes):
        obs, _ = env.reset(seed=10_000 + episode)
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total, steps, done = total + reward, steps + 1, terminated or truncated
    return total / steps


def observation_transform(venv: VecEnv, scaling: str | None) -> Callable:
    """How the trained agent's input is made from a raw observation."""
    if scaling == "VecNormalize":
        venv.training = False  # freeze the running statistics
        return venv.normalize_obs
    if scaling == "wrappers":
        return lambda s: s / OBS_SCALE
    return lambda s: s


def main(timesteps: int = 150_000) -> None:
    torch.set_num_threads(1)
    problem = gym.make(ENV_ID).unwrapped.problem
    rng = np.random.default_rng(0)
    exact = GridSoftVI().respond(problem, problem.x_init, CONTEXT).policy
    n_actions = int(problem.follower_action_space.n)
    uniform = mean_utility(lambda s: int(rng.integers(n_actions)))
    print(f"uniform: {uniform:.3f} per step")
    print(f"exact soft-optimal (grid_soft_vi): "
          f"{mean_utility(lambda s: int(exact.sample(s[None], rng)[0])):.3f} per step")
    for algo, action_space, scaling, kwargs in CONFIGS:
        venv = DummyVecEnv([lambda: make_env(action_space, scaling == "wrappers")] * N_ENVS)
        if scaling == "VecNormalize":
            venv = VecNormalize(venv, norm_obs=True, norm_reward=True, gamma=problem.gamma)
        start, cpu = time.perf_counter(), time.process_time()
        model = algo("MlpPolicy", venv, gamma=problem.gamma, seed=0, device="cpu", **kwargs)
        model.learn(timesteps)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        prepare = observation_transform(venv, scaling)

        def act(s, model=model, prepare=prepare):
            return model.predict(prepare(s), deterministic=False)[0]

        tuned = " (tuned)" if kwargs is DQN_KWARGS else ""
        print(f"{algo.__name__:3s}{tuned} {action_space:13s} scaling={scaling!s:12s}: "
              f"{mean_utility(act, action_space):8.3f} per step "
              f"({timesteps} steps, {N_ENVS} envs, {seconds:.0f} s wall, {cpu:.0f} s CPU)",
              flush=True)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
