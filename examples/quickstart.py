"""Quickstart: the Four-Rooms leader env, its exact objective and exact hypergradient.

    python examples/quickstart.py
"""

import gymnasium as gym
import numpy as np

import bilevel_envs  # noqa: F401  (registers the env ids)
from bilevel_envs.envs.four_rooms.model import CELLS
from bilevel_envs.exact import exact_hypergradient, exact_objective

env = gym.make("bilevel/FourRoomsShaping-v0", lam=0.001, beta=1.0, move_prob=0.56,
               follower="soft_vi", contexts="all")
obs, info = env.reset(seed=0)
problem = env.unwrapped.problem
x = problem.x_init

obs, reward, terminated, truncated, info = env.step(x)
print(f"problem: {problem}")
print(f"Monte-Carlo J(x_init) from {info['rollouts']['mask'].sum()} follower transitions: "
      f"{info['objective_estimate']:.4f}")
print(f"exact J(x_init)        = {exact_objective(problem, x):.4f}")
grad = exact_hypergradient(problem, x)
print(f"exact |dJ/dx(x_init)|  = {np.linalg.norm(grad):.4f}")
top = np.argsort(-np.abs(grad[:104]))[:3]
cells = [CELLS[i] for i in top]
print(f"cells whose penalty logit matters most: {cells}")
