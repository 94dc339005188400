"""Stock SB3 PPO on ``bilevel/Household-v0`` at the initial taxes: the household's mean utility
per step (the env's reward) after training, against the uniform policy and the exact
soft-optimal households of the 41-cell grid economy (``grid_soft_vi``), all on the continuous
assets, group 1.

PPO sees raw assets in ``[−100, 100]`` and rewards down to −100 per step (debt counts one for one):
without scaling its value network cannot follow. Scaling with stock Gymnasium wrappers
(``TransformObservation(obs / 20)``, ``TransformReward(r / 10)``) or SB3's ``VecNormalize`` is
what this measures, with the flat (``Discrete(1250)``) and the factored
(``action_space="multidiscrete"``) action space.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_household_ppo.py [timesteps]   # default 30000
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize  # noqa: E402

import bilevel_envs  # noqa: E402, F401
from bilevel_envs.envs.tax_design.followers import GridSoftVI  # noqa: E402

ENV_ID, CONTEXT = "bilevel/Household-v0", 0


def make_env(action_space: str = "discrete", scaled: bool = False) -> gym.Env:
    env = gym.make(ENV_ID, context=CONTEXT, action_space=action_space)
    if scaled:
        env = gym.wrappers.TransformObservation(env, lambda s: s / 20.0, env.observation_space)
        env = gym.wrappers.TransformReward(env, lambda r: r / 10.0)
    return env


def mean_utility(act, action_space: str = "discrete", episodes: int = 20) -> float:
    """Mean reward per step of ``act(obs) -> action`` over ``episodes`` 200-step episodes."""
    env, total, steps = gym.make(ENV_ID, context=CONTEXT, action_space=action_space), 0.0, 0
    for episode in range(episodes):
        obs, _ = env.reset(seed=10_000 + episode)
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total, steps, done = total + reward, steps + 1, terminated or truncated
    return total / steps


def main(timesteps: int = 30_000) -> None:
    torch.set_num_threads(1)
    problem = gym.make(ENV_ID).unwrapped.problem
    rng = np.random.default_rng(0)
    exact = GridSoftVI().respond(problem, problem.x_init, CONTEXT).policy
    n_actions = int(problem.follower_action_space.n)
    uniform = mean_utility(lambda s: int(rng.integers(n_actions)))
    print(f"uniform: {uniform:.3f} per step")
    print(f"exact soft-optimal (grid_soft_vi): "
          f"{mean_utility(lambda s: int(exact.sample(s[None], rng)[0])):.3f} per step")
    for action_space, scaling in [("discrete", None), ("discrete", "wrappers"),
                                  ("discrete", "VecNormalize"), ("multidiscrete", "wrappers")]:
        venv = DummyVecEnv([lambda: make_env(action_space, scaling == "wrappers")] * 4)
        if scaling == "VecNormalize":
            venv = VecNormalize(venv, norm_obs=True, norm_reward=True, gamma=problem.gamma)
        start = time.perf_counter()
        model = PPO("MlpPolicy", venv, gamma=problem.gamma, seed=0, device="cpu")
        model.learn(timesteps)
        seconds = time.perf_counter() - start
        if scaling == "VecNormalize":
            venv.training = False

            def prepare(s, venv=venv):
                return venv.normalize_obs(s)
        elif scaling == "wrappers":
            def prepare(s):
                return s / 20.0
        else:
            def prepare(s):
                return s

        def act(s, model=model, prepare=prepare):
            return model.predict(prepare(s), deterministic=False)[0]

        print(f"PPO {action_space:13s} scaling={scaling!s:12s}: "
              f"{mean_utility(act, action_space):.3f} per step "
              f"({timesteps} steps, {seconds:.0f} s)")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
