"""The registered ``bilevel/TaxDesign-v0`` in an RL loop: seconds to construct, seconds per step
and the pickled size of the env before and after steps (a size that grows with the steps would
make checkpoints and vector envs impractical).

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_tax_default.py            # the default
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_tax_default.py soft_dqn   # the paper's
                                                                              # households (minutes)
"""

from __future__ import annotations

import os
import pickle
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import gymnasium as gym  # noqa: E402

import bilevel_envs  # noqa: E402, F401


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def main(follower: str | None = None, steps: int = 3) -> None:
    kwargs = {} if follower is None else {"follower": follower}
    start = clock()
    env = gym.make("bilevel/TaxDesign-v0", **kwargs)
    wall, cpu = (b - a for a, b in zip(start, clock()))
    unwrapped = env.unwrapped
    print(f"bilevel/TaxDesign-v0 {kwargs or '(registered default)'}: follower "
          f"{unwrapped.follower!r}")
    print(f"construct: {wall:6.2f} s wall, {cpu:6.2f} s CPU")
    print(f"pickled before any step: {len(pickle.dumps(unwrapped)) / 1e3:8.1f} KB")
    env.reset(seed=0)
    x = unwrapped.problem.x_init
    for step in range(steps):
        start = clock()
        _, reward, *_ = env.step(x)
        wall, cpu = (b - a for a, b in zip(start, clock()))
        print(f"step {step}: {wall:6.2f} s wall, {cpu:6.2f} s CPU, J estimate {reward:8.3f}, "
              f"pickled {len(pickle.dumps(unwrapped)) / 1e3:8.1f} KB")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
