"""Speed of the core layer on Four-Rooms (106-dim x, both contexts).

Targets: exact objective + hypergradient ≤ 20 ms; warm-started soft solve after a small
step ≤ 2 ms; tabular sampling ≥ 5 M transitions/s on one core.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from bilevel_envs.envs.four_rooms.problem import FourRoomsShaping  # noqa: E402
from bilevel_envs.exact import ExactSolver, exact_hypergradient, exact_objective
from bilevel_envs.followers import TabularPolicy  # noqa: E402
from bilevel_envs.oracles import TabularOracle
from bilevel_envs.tabular import soft_policy_iteration


def timeit(fn, repeat: int) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeat`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for lam in (0.001, 0.003, 0.005):
        problem = FourRoomsShaping(lam=lam, beta=1.0, move_prob=0.56)
        x = problem.sample_x_init(rng)
        cold = timeit(lambda: (exact_objective(problem, x), exact_hypergradient(problem, x)), 20)
        solver = ExactSolver(problem)
        solver.value_and_grad(x)
        steps = rng.normal(0, 0.05, size=(50, 105))
        state = {"i": 0}

        def warm_value_and_grad():
            state["i"] += 1
            solver.value_and_grad(x + steps[state["i"] % 50])

        warm_vg = timeit(warm_value_and_grad, 50)
        model = problem.tabular(x, 0)
        q0 = soft_policy_iteration(model, lam).q
        moved = problem.tabular(x + 0.05 * rng.normal(size=105), 0)
        warm_solve = timeit(lambda: soft_policy_iteration(moved, lam, warm_start=q0), 100)
        rows.append((lam, cold, warm_vg, warm_solve))

    print("exact layer, Four-Rooms, both contexts, d = 105 (median):")
    print(f"{'lambda':>7} {'J + dJ/dx cold':>16} {'J + dJ/dx warm':>16} {'warm solve (1 ctx)':>19}")
    for lam, cold, warm_vg, warm_solve in rows:
        print(f"{lam:>7} {cold * 1e3:>13.2f} ms {warm_vg * 1e3:>13.2f} ms "
              f"{warm_solve * 1e3:>16.3f} ms")

    problem = FourRoomsShaping(lam=0.003, move_prob=0.56)
    x = problem.sample_x_init(rng)
    _, sol, _ = ExactSolver(problem).solve(x)
    oracle = TabularOracle(problem, x, 1, TabularPolicy(sol.pi[1]))
    for n_envs, n_steps in ((5, 2000), (100, 10_000)):
        seconds = timeit(lambda: oracle.rollout(rng, n_envs, n_steps), 10)
        print(f"tabular sampling {n_envs:>4} x {n_steps:>6}: {seconds * 1e3:8.2f} ms, "
              f"{n_envs * n_steps / seconds / 1e6:6.1f} M transitions/s (rewards included)")


if __name__ == "__main__":
    main()
