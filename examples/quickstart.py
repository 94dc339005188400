"""Quickstart (the README's): the Four-Rooms leader env, the exact objective and hypergradient,
and 300 iterations of HPGD.

    python examples/quickstart.py
"""

import gymnasium as gym
import numpy as np

import bilevel_envs  # noqa: F401  (registers the ids)
from bilevel_envs.exact import exact_hypergradient, exact_objective
from leaders import HPGD

env = gym.make("bilevel/FourRoomsShaping-v0", lam=0.003, beta=1.0, contexts="all")
obs, info = env.reset(seed=0)
problem = env.unwrapped.problem  # the BilevelProblem: exact model and derivatives
x = problem.x_init  # the leader's action: 105 penalty logits
obs, reward, terminated, truncated, info = env.step(x)  # reward: an estimate of J(x)
print(f"J(x_init) = {reward:.3f} estimated from {info['rollouts']['mask'].sum():,} follower "
      f"transitions; exact {exact_objective(problem, x):.3f}")
print(f"|dJ/dx(x_init)| = {np.linalg.norm(exact_hypergradient(problem, x)):.3f} (exact)")

leader = HPGD(env, learning_rate=0.5, seed=0).learn(300, eval_every=100)
history = leader.history
for t, j in zip(history["iteration"], history["exact_objective"]):
    if not np.isnan(j):
        print(f"HPGD iteration {t:3d}: exact J = {j:.3f}")
print(f"HPGD after 300 iterations: exact J = {leader.exact_objective():.3f}")
