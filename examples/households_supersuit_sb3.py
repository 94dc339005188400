"""Train tax-design households with Stable-Baselines3 PPO through PettingZoo and SuperSuit.

The standard PettingZoo recipe: ``households_v0.parallel_env`` → SuperSuit's
``agent_indicator_v0`` (a one-hot of the household appended to its observation, so one shared
policy can tell the households apart) → ``pettingzoo_env_to_vec_env_v1`` (one vector slot per
household) → ``concat_vec_envs_v1(..., base_class="stable_baselines3")`` → SB3's
``VecNormalize`` (utilities run from about −100 in debt to +3, so returns are normalised) → PPO
with parameter sharing across all households.

A small economy keeps it quick: hours {0, 4, 8}, spending {0, 2.5, 5} per good (81 actions),
continuous assets, four households (two per preference group), taxes fixed at 0.3. The learned
policy is then scored in the same economy against the uniform policy and against the exact
soft-optimal policy of the discretised economy (``grid_soft_vi``, the library's default
tax-design follower): mean utility per household step and the welfare (the government's
reward) per step, over fresh episodes.

    python examples/households_supersuit_sb3.py                 # 100,000 steps, a few minutes
    python examples/households_supersuit_sb3.py --timesteps 5000
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import supersuit as ss
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import VecNormalize

from bilevel_envs.envs import households_v0
from bilevel_envs.envs.tax_design.followers import GridSoftVI
from bilevel_envs.envs.tax_design.problem import TaxDesign

ECONOMY = {"hours_levels": (0.0, 4.0, 8.0), "consumption_levels": (0.0, 2.5, 5.0)}
TAXES = np.full(4, 0.3)  # income tax, VAT on goods 1..3
HOUSEHOLDS = {0: 2, 1: 2}


def make_env(max_cycles: int = 200):
    """The households as a PettingZoo parallel env, with SuperSuit's agent indicator."""
    env = households_v0.parallel_env(x=TAXES, households=HOUSEHOLDS, max_cycles=max_cycles,
                                     **ECONOMY)
    return ss.agent_indicator_v0(env)


def train(total_timesteps: int, seed: int = 0) -> tuple[PPO, VecNormalize]:
    """PPO on every household at once (one shared policy), rewards and observations
    normalised."""
    env = make_env()
    # Seeded here: SuperSuit's vector env has no seed() for PPO(seed=...) to call; the
    # households' generator then carries on through every later reset.
    env.reset(seed=seed)
    set_random_seed(seed)
    torch.set_num_threads(1)  # a small MLP: extra threads only add synchronisation
    vec_env = ss.pettingzoo_env_to_vec_env_v1(env)
    vec_env = ss.concat_vec_envs_v1(vec_env, 1, base_class="stable_baselines3")
    with warnings.catch_warnings():
        # SuperSuit's vector env has no get_attr, so SB3 cannot read render_mode and says it
        # uses None; households are not rendered here.
        warnings.filterwarnings("ignore", "The `render_mode` attribute is not defined")
        vec_env = VecNormalize(vec_env, gamma=0.9)
    model = PPO("MlpPolicy", vec_env, gamma=0.9, n_steps=256, batch_size=256, learning_rate=3e-4,
                ent_coef=0.01, verbose=0)
    model.learn(total_timesteps=total_timesteps)
    vec_env.training = False  # freeze the normalisation statistics for evaluation
    return model, vec_env


def evaluate(choose, episodes: int, seed: int) -> tuple[float, float]:
    """Mean utility per household step and mean welfare per household step of a policy
    ``choose(agent, observation, rng) -> action`` over fresh episodes."""
    env = make_env()
    rng = np.random.default_rng(seed)
    utility, welfare, steps = 0.0, 0.0, 0
    for episode in range(episodes):
        observations, _ = env.reset(seed=seed + episode)
        while env.agents:
            actions = {a: choose(a, observations[a], rng) for a in env.agents}
            observations, rewards, _, _, infos = env.step(actions)
            utility += sum(rewards.values())
            welfare += sum(info["leader_reward"] for info in infos.values())
            steps += len(rewards)
    return utility / steps, welfare / steps


def main(total_timesteps: int = 100_000, episodes: int = 10, seed: int = 0) -> dict[str, tuple]:
    model, vec_env = train(total_timesteps, seed)
    n_actions = model.action_space.n

    def learned(agent, observation, rng):
        action, _ = model.predict(vec_env.normalize_obs(observation[None]), deterministic=False)
        return int(action[0])

    def uniform(agent, observation, rng):
        return int(rng.integers(n_actions))

    problem = TaxDesign(**ECONOMY)
    groups = households_v0.parallel_env(households=HOUSEHOLDS).groups
    policies = [GridSoftVI().respond(problem, TAXES, int(g)).policy for g in groups]

    def soft_optimal(agent, observation, rng):
        policy = policies[int(agent.split("_")[1])]
        return int(policy.sample(observation[None, :1], rng)[0])  # drop the agent indicator

    scores = {name: evaluate(choose, episodes, seed + 1000)
              for name, choose in (("PPO (shared, SuperSuit)", learned), ("uniform", uniform),
                                   ("exact soft-optimal, grid", soft_optimal))}
    print(f"households_v0, {sum(HOUSEHOLDS.values())} households, taxes {TAXES.tolist()}, "
          f"PPO for {total_timesteps:,} household steps; {episodes} evaluation episodes")
    print(f"{'policy':<26} {'utility/step':>12} {'welfare/step':>12}")
    for name, (u, w) in scores.items():
        print(f"{name:<26} {u:12.3f} {w:12.3f}")
    return scores


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.timesteps, args.episodes, args.seed)
