"""The loop shared by the follower examples: a few leader steps on Four-Rooms (λ = 0.003, β = 1).

Both goals are served every step (``contexts="all"``), each by its own follower, warm-started
from its previous response. The leader is idealised (exact hypergradient ascent, available on
tabular problems) so that the examples show the followers alone; the ``leaders`` package has
HPGD, AMD and the zero-order leader. Columns:

* ``J estimate``: the env's reward, a Monte-Carlo estimate of J from the followers' rollouts;
* ``J(π)``: the exact leader objective of the followers' current policies;
* ``J(π*)``: the exact objective under the exact regularised best response (soft VI);
* ``s/step``: wall time of the env step (the followers' training dominates it).
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np

import bilevel_envs  # noqa: F401  (registers the env ids)
from bilevel_envs.exact import ExactSolver


def run(follower: str, follower_kwargs: dict[str, Any] | None = None, leader_steps: int = 4,
        learning_rate: float = 30.0, seed: int = 0) -> None:
    """Take ``leader_steps`` exact-gradient leader steps with the named follower, printing J."""
    env = gym.make("bilevel/FourRoomsShaping-v0", lam=0.003, beta=1.0, follower=follower,
                   follower_kwargs=follower_kwargs, contexts="all", n_envs=10,
                   n_rollout_steps=1_000)
    env.reset(seed=seed)
    leader_env = env.unwrapped
    problem = leader_env.problem
    exact = ExactSolver(problem)
    x = problem.sample_x_init(np.random.default_rng(seed))
    print(f"follower {leader_env.follower!r}")
    print("step  J estimate      J(π)     J(π*)   s/step")
    for t in range(leader_steps):
        start = time.perf_counter()
        _, j_estimate, _, _, info = env.step(x)
        elapsed = time.perf_counter() - start
        j_follower = np.asarray(info["context_weights"]) @ leader_env.exact_values()
        j_best, grad = exact.value_and_grad(x)
        print(f"{t:4d}  {j_estimate:10.4f}  {j_follower:8.4f}  {j_best:8.4f}  {elapsed:7.2f}")
        x = np.clip(x + learning_rate * grad, problem.x_space.low, problem.x_space.high)
