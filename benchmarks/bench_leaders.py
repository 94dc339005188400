"""Milliseconds per outer iteration of each leader in the Table 3 configuration (one seed).

``--engines`` compares the two ways ``bilevel-bench table3`` can run a spec: the leaders
(``engine="leaders"``: ``Leader.learn`` on the env) and the compiled run (``engine="compiled"``:
bilevel_bench/experiments/table3/compiled.py, 1,000 iterations per numba call), with the
Table 3 density of exact evaluations (every 10th iteration and the last tenth).

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


def engines(iterations: int = 2000, repeats: int = 3) -> None:
    """CPU ms per iteration of each Table 3 algorithm on the two engines (median of
    ``repeats`` interleaved runs; λ = 0.001 and 0.005, β = 1)."""
    from bilevel_bench.experiments.table3.run import run_spec

    print(f"ms CPU per outer iteration, {iterations} iterations, exact J every 10th and on the "
          f"last {iterations // 10} (Table 3's density), median of {repeats} interleaved runs:")
    print(f"  {'leader':>10}  {'lambda':>6}  {'leaders':>7}  {'compiled':>8}  speed-up")
    for algorithm in LEADERS:
        for lam in (0.001, 0.005):
            times: dict[str, list[float]] = {"leaders": [], "compiled": []}
            for repeat in range(repeats + 1):  # the first round compiles and warms up
                for engine in times:
                    spec = Table3Spec(algorithm=algorithm, lam=lam, beta=1.0, learning_rate=0.5,
                                      seed=repeat, iterations=iterations, eval_every=10,
                                      eval_last=iterations // 10, engine=engine,
                                      perturbation_constant=0.5 if algorithm == "zero_order"
                                      else None)
                    result = run_spec(spec)
                    if repeat:
                        times[engine].append(result["cpu_seconds"] / iterations * 1e3)
            ours, theirs = np.median(times["compiled"]), np.median(times["leaders"])
            print(f"  {algorithm:>10}  {lam:>6}  {theirs:7.3f}  {ours:8.3f}  "
                  f"{theirs / ours:5.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--breakdown", action="store_true",
                        help="split each leader's iteration into kernels, draws and the rest")
    parser.add_argument("--engines", action="store_true",
                        help="the leaders against the compiled Table 3 run")
    arguments = parser.parse_args()
    if arguments.breakdown:
        breakdown()
    elif arguments.engines:
        engines()
    else:
        main()
