"""HPGD (every-visit estimator) on Four-Rooms (λ = 0.003, β = 1) with each follower type.

Reports seconds per leader iteration (CPU and wall) and the exact J reached after a fixed
number of leader iterations, against HPGD with the exact soft-VI follower.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_hpgd_followers.py [iterations]
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import gymnasium as gym  # noqa: E402

import bilevel_envs  # noqa: E402, F401
from leaders import HPGD  # noqa: E402

FOLLOWERS = {
    "soft_vi": {},
    "soft_q": {"n_steps": 20_000, "n_chains": 16},
    "sb3 PPO": {"algo": "PPO", "total_timesteps": 4_000, "warmup_timesteps": 20_000,
                "algo_kwargs": {"n_steps": 512, "batch_size": 128}},
    "sb3 DQN": {"algo": "DQN", "total_timesteps": 4_000, "warmup_timesteps": 20_000},
    "soft_dqn": {"total_timesteps": 4_000, "warmup_timesteps": 20_000},
}


def run(name: str, iterations: int, seed: int = 0) -> tuple[float, float, float, float]:
    follower = name.split()[0]
    env = gym.make("bilevel/FourRoomsShaping-v0", lam=0.003, beta=1.0, follower=follower,
                   follower_kwargs=FOLLOWERS[name], n_envs=5, n_rollout_steps=2000)
    leader = HPGD(env, learning_rate=0.5, seed=seed)
    before = leader.exact_objective()
    start, cpu = time.perf_counter(), time.process_time()
    leader.learn(iterations)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return before, leader.exact_objective(), cpu / iterations, wall / iterations


def main(iterations: int = 30) -> None:
    print(f"HPGD, every-visit, lr 0.5, {iterations} leader iterations, Four-Rooms λ=0.003 β=1, "
          "seed 0; J is the exact objective (exact best responses) at the leader's x")
    print(f"{'follower':>10} {'J(x_0)':>8} {'J(x_T)':>8} {'s/iteration CPU':>16} {'wall':>8}")
    for name in FOLLOWERS:
        before, after, cpu, wall = run(name, iterations)
        print(f"{name:>10} {before:8.3f} {after:8.3f} {cpu:16.3f} {wall:8.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
