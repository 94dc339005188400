"""Milliseconds per outer iteration of each leader in the Table 3 configuration (one seed).

HPGD: every-visit estimator, 5 chains × 2,000 steps per gradient (10,000 environment steps),
exact soft-VI follower warm-started. AMD: exact inner solve. Zero-order: two exact evaluations.
All: Four-Rooms, move_prob 0.56, one sampled context per iteration, gradient clipping 1.0.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from bilevel_bench.experiments.table3.run import make_leader  # noqa: E402
from bilevel_bench.experiments.table3.spec import Table3Spec  # noqa: E402


def main(iterations: int = 1000) -> None:
    print(f"ms per outer iteration ({iterations} iterations after 50 warm-up, one seed); "
          "CPU time of this process, and wall time (inflated if other processes share the CPU):")
    for algorithm in ("hpgd", "amd", "zero_order"):
        for lam in (0.001, 0.005):
            spec = Table3Spec(algorithm=algorithm, lam=lam, beta=1.0, learning_rate=0.5, seed=0,
                              perturbation_constant=0.5 if algorithm == "zero_order" else None)
            leader = make_leader(spec)
            leader.learn(50)
            start, cpu = time.perf_counter(), time.process_time()
            leader.learn(iterations)
            wall = (time.perf_counter() - start) / iterations * 1e3
            cpu = (time.process_time() - cpu) / iterations * 1e3
            print(f"  {algorithm:>10}  lambda={lam}: {cpu:6.3f} ms CPU  ({wall:6.3f} ms wall)")
    spec = Table3Spec(algorithm="amd", lam=0.003, beta=1.0, learning_rate=0.5, seed=0)
    leader = make_leader(spec)
    xs = [leader.x + 0.01 * np.random.default_rng(i).normal(size=105) for i in range(200)]
    leader.exact_objective(xs[0])
    start, cpu = time.perf_counter(), time.process_time()
    for x in xs:
        leader.exact_objective(x)
    print(f"  exact J (both contexts, warm) for the metric: "
          f"{(time.process_time() - cpu) / len(xs) * 1e3:6.3f} ms CPU "
          f"({(time.perf_counter() - start) / len(xs) * 1e3:6.3f} ms wall)")


if __name__ == "__main__":
    main()
