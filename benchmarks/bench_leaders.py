"""Milliseconds per outer iteration of each leader in the Table 3 configuration (one seed).

``--breakdown`` splits each leader's iteration into compiled kernels (numba, from a cProfile
run of the same iterations: single calls that the profiler does not slow down) and the rest
(Python and NumPy glue: argument checks, model building, records, and for HPGD the 30,000
uniforms it draws per iteration, timed separately), the unprofiled CPU time minus the kernels.

HPGD: every-visit estimator, 5 chains × 2,000 steps per gradient (10,000 environment steps),
exact soft-VI follower warm-started. AMD: exact inner solve. Zero-order: two exact evaluations.
All: Four-Rooms, move_prob 0.56, one sampled context per iteration, gradient clipping 1.0.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import os
import pstats
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from bilevel_bench.experiments.table3.run import make_leader  # noqa: E402
from bilevel_bench.experiments.table3.spec import Table3Spec  # noqa: E402

LEADERS = ("hpgd", "amd", "zero_order")
KERNEL_MODULES = ("_kernels", "_exact_kernels", "_rollout_kernels")


def make(algorithm: str, lam: float):
    spec = Table3Spec(algorithm=algorithm, lam=lam, beta=1.0, learning_rate=0.5, seed=0,
                      perturbation_constant=0.5 if algorithm == "zero_order" else None)
    leader = make_leader(spec)
    leader.learn(50)
    return leader


def main(iterations: int = 1000) -> None:
    print(f"ms per outer iteration ({iterations} iterations after 50 warm-up, one seed); "
          "CPU time of this process, and wall time (inflated if other processes share the CPU):")
    for algorithm in LEADERS:
        for lam in (0.001, 0.005):
            leader = make(algorithm, lam)
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


def _is_kernel(filename: str, name: str) -> bool:
    """A numba-compiled function of the library's kernel modules."""
    from numba.core.registry import CPUDispatcher

    module = os.path.splitext(os.path.basename(filename))[0]
    if module not in KERNEL_MODULES:
        return False
    return isinstance(getattr(importlib.import_module(f"bilevel_envs.{module}"), name, None),
                      CPUDispatcher)


def breakdown(iterations: int = 2000, lam: float = 0.003) -> None:
    """Each leader's iteration (Table 3 schedule: exact J every 10th iteration) split into
    compiled kernels, random draws and the rest."""
    def schedule(t):
        return t % 10 == 0

    print(f"ms CPU per outer iteration, lambda={lam}, beta=1, {iterations} iterations, exact J "
          "every 10th (the Table 3 schedule before its last 1,000 iterations):")
    print(f"  {'leader':>10}  {'total':>6}  {'kernels':>7}  {'rest':>6}")
    for algorithm in LEADERS:
        leader = make(algorithm, lam)
        cpu = time.process_time()
        leader.learn(iterations, eval_every=schedule)
        total = (time.process_time() - cpu) / iterations * 1e3
        leader = make(algorithm, lam)
        profile = cProfile.Profile()
        profile.runcall(leader.learn, iterations, eval_every=schedule)
        kernels = sum(row[2] for (filename, _, name), row in pstats.Stats(profile).stats.items()
                      if _is_kernel(filename, name)) / iterations * 1e3
        print(f"  {algorithm:>10}  {total:6.3f}  {kernels:7.3f}  {total - kernels:6.3f}")
    rng = np.random.default_rng(0)
    cpu = time.process_time()
    for _ in range(iterations):  # HPGD's draws per iteration: 5 chains × 2,000 steps × 3
        rng.random(5)
        rng.random((5, 2000, 3))
    print(f"  (of HPGD's rest: its uniform draws "
          f"{(time.process_time() - cpu) / iterations * 1e3:.3f} ms)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--breakdown", action="store_true",
                        help="split each leader's iteration into kernels, draws and the rest")
    if parser.parse_args().breakdown:
        breakdown()
    else:
        main()
