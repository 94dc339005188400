"""Soft Q-learning's distance to the soft-optimal Q* and π* as the number of steps T grows.

Default follower settings (16 chains, uniform behaviour, exploring starts, step sizes
t0/(t0 + n) with t0 = 1/(1 − γ)); errors are sup norms over all states and actions, mean and
max over seeds; time is the wall time of one run to the largest T.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_soft_q_convergence.py [n_seeds]
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from bilevel_envs.envs.four_rooms.problem import FourRoomsShaping  # noqa: E402
from bilevel_envs.envs.garnet import GarnetProblem  # noqa: E402
from bilevel_envs.followers.soft_q import SoftQLearning  # noqa: E402
from bilevel_envs.tabular import soft_policy_iteration  # noqa: E402

CASES = [
    ("Garnet λ=1 (γ=0.9)", GarnetProblem(lam=1.0), np.zeros(4), [250, 2_500, 25_000]),
    ("Garnet λ=0.1 (γ=0.9)", GarnetProblem(lam=0.1), np.zeros(4), [250, 2_500, 25_000]),
    ("Four-Rooms λ=0.05 (γ=0.99)", FourRoomsShaping(lam=0.05), np.zeros(105),
     [5_000, 20_000, 80_000, 320_000]),
    ("Four-Rooms λ=0.003 (γ=0.99)", FourRoomsShaping(lam=0.003), np.zeros(105),
     [5_000, 20_000, 80_000, 320_000]),
]


def main() -> None:
    n_seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    learner = SoftQLearning(n_chains=16)
    SoftQLearning(n_chains=1).learn_iterates(*CASES[0][1:3], 0, [1])  # compile the kernel
    print(f"{'problem':28s} {'T':>8s} {'updates':>10s}  ‖Q−Q*‖∞ mean (max)  ‖π−π*‖∞ mean (max)")
    for name, problem, x, steps in CASES:
        solution = soft_policy_iteration(problem.tabular(x, 0), problem.lam)
        errors = np.zeros((n_seeds, len(steps), 2))
        start = time.perf_counter()
        for seed in range(n_seeds):
            for i, r in enumerate(learner.learn_iterates(problem, x, 0, steps, seed=seed)):
                errors[seed, i] = (np.abs(r.warm_start.q - solution.q).max(),
                                   np.abs(r.policy.table - solution.pi).max())
        per_run = (time.perf_counter() - start) / n_seeds
        for i, t in enumerate(steps):
            q, pi = errors[:, i, 0], errors[:, i, 1]
            print(f"{name:28s} {t:8d} {16 * t:10d}  {q.mean():8.4f} ({q.max():.4f})"
                  f"     {pi.mean():8.4f} ({pi.max():.4f})")
        print(f"{name:28s} one run to T = {steps[-1]}: {per_run:.2f} s")


if __name__ == "__main__":
    main()
