"""HPGD (every-visit estimator) on Four-Rooms (λ = 0.003, β = 1) with each follower type.

Reports seconds per leader iteration (CPU and wall), the exact J reached after a fixed number of
leader iterations (against HPGD with the exact soft-VI follower), and each follower's exact
quality (:mod:`bilevel_envs.follower_quality`): its soft-optimality gap and visited total
variation to π* at the first leader step (x_0) and at the final x (one more step there).

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_hpgd_followers.py [iterations] [name ...]

Names are keys of :data:`FOLLOWERS` (default: all). ``×8`` variants train on 8 vectorised copies
of the follower env (same transitions per leader step).
"""

from __future__ import annotations

import os
import sys
import time
import warnings

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import gymnasium as gym  # noqa: E402

import bilevel_envs  # noqa: E402, F401
from bilevel_envs.follower_quality import FollowerQualityWarning  # noqa: E402
from leaders import HPGD  # noqa: E402

_PPO = {"algo": "PPO", "total_timesteps": 4_000, "warmup_timesteps": 20_000,
        "algo_kwargs": {"n_steps": 512, "batch_size": 128}}
_DQN = {"algo": "DQN", "total_timesteps": 4_000, "warmup_timesteps": 20_000}
_SOFT_DQN = {"total_timesteps": 4_000, "warmup_timesteps": 20_000}
#: 8 envs: PPO keeps 512-transition rollouts (n_steps 64 × 8) and its updates; the Q-learners
#: take one gradient step per vectorised step (8 transitions; DQN's default is one per 4).
_VEC_Q = {"n_envs": 8, "algo_kwargs": {"train_freq": 1}}

FOLLOWERS: dict[str, tuple[str, dict]] = {
    "soft_vi": ("soft_vi", {}),
    "soft_q": ("soft_q", {"n_steps": 20_000, "n_chains": 16}),
    "sb3 PPO": ("sb3", _PPO),
    "sb3 DQN": ("sb3", _DQN),
    "soft_dqn": ("soft_dqn", _SOFT_DQN),
    "sb3 PPO ×8": ("sb3", {**_PPO, "n_envs": 8,
                           "algo_kwargs": {"n_steps": 64, "batch_size": 128}}),
    "sb3 DQN ×8": ("sb3", {**_DQN, **_VEC_Q}),
    "soft_dqn ×8": ("soft_dqn", {**_SOFT_DQN, **_VEC_Q}),
}


def run(name: str, iterations: int, seed: int = 0) -> dict[str, float]:
    follower, kwargs = FOLLOWERS[name]
    env = gym.make("bilevel/FourRoomsShaping-v0", lam=0.003, beta=1.0, follower=follower,
                   follower_kwargs=kwargs, n_envs=5, n_rollout_steps=2000,
                   follower_quality=True)
    leader = HPGD(env, learning_rate=0.5, seed=seed)
    quality = []

    def record(leader, _record):
        quality.append(env.unwrapped.last_step.quality[0])

    before = leader.exact_objective()
    start, cpu = time.perf_counter(), time.process_time()
    leader.learn(iterations, callback=record)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    env.step(leader.x)  # the follower's response at the final x
    final = env.unwrapped.last_step.quality[0]
    return {"J0": before, "JT": leader.exact_objective(), "cpu": cpu / iterations,
            "wall": wall / iterations, "gap0": quality[0].gap, "gapT": final.gap,
            "tv0": quality[0].tv, "tvT": final.tv}


def main(iterations: int = 30, names: list[str] | None = None) -> None:
    warnings.simplefilter("ignore", FollowerQualityWarning)  # the table reports the gaps
    print(f"HPGD, every-visit, lr 0.5, {iterations} leader iterations, Four-Rooms λ=0.003 β=1, "
          "seed 0; J is the exact objective (exact best responses) at the leader's x; gap and "
          "TV: the follower's soft-optimality gap and visited TV to π* at x_0 and at x_T")
    print(f"{'follower':>12} {'J(x_0)':>7} {'J(x_T)':>7} {'CPU s/it':>9} {'wall s/it':>9} "
          f"{'gap(x_0)':>9} {'gap(x_T)':>9} {'TV(x_0)':>8} {'TV(x_T)':>8}")
    for name in names or list(FOLLOWERS):
        r = run(name, iterations)
        print(f"{name:>12} {r['J0']:7.3f} {r['JT']:7.3f} {r['cpu']:9.3f} {r['wall']:9.3f} "
              f"{r['gap0']:9.2e} {r['gapT']:9.2e} {r['tv0']:8.3f} {r['tvT']:8.3f}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30, sys.argv[2:] or None)
