"""Seconds of ``bilevel_envs.testing.check_problem`` (with HPGD's estimator) on every registered
problem and its variants — the table of ``tests/test_check_problem.py`` — and its three most
expensive checks. A warm-up on a Garnet problem compiles the numba kernels first.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_check_problem.py
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from bilevel_envs.envs.garnet import GarnetProblem  # noqa: E402
from bilevel_envs.testing import check_problem  # noqa: E402
from leaders.testing import hpgd_estimator  # noqa: E402
from tests.test_check_problem import CASES, CHECK_KWARGS, registered_problem  # noqa: E402


def main(repeats: int = 2) -> None:
    check_problem(GarnetProblem(), estimator=hpgd_estimator)  # compile the kernels
    print(f"{'problem':<45} {'wall s':>7} {'CPU s':>6}  most expensive checks")
    for env_id, variant in CASES:
        problem = registered_problem(env_id, variant)
        kwargs = CHECK_KWARGS.get((env_id, variant), {})
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            report = check_problem(problem, estimator=hpgd_estimator, **kwargs)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            top = sorted(report.results, key=lambda r: -r.seconds)[:3]
            parts = ", ".join(f"{r.name} {r.seconds:.2f}" for r in top)
            label = f"{env_id} {variant}" + (f" {kwargs}" if kwargs else "")
            print(f"{label:<45} {wall:7.2f} {cpu:6.2f}  {parts}")


if __name__ == "__main__":
    main()
