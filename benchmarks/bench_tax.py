"""Speed of tax design: the exact layer on the tabular variant and the household simulators.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_tax.py

Rows: exact J + dJ/dx on the tabular variant (cold: new solver; warm: nearby x, the leader's
case), building the model at a new income tax, one LeaderEnv step, and follower transitions per
second of the vectorised simulator (300 households × 200 steps = the authors' 60,000-transition
estimation batch; 10 × 6,000 = their chain layout) against the generic Gymnasium path.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from bench_core import timeit  # noqa: E402  (python benchmarks/bench_tax.py)

import bilevel_envs  # noqa: E402, F401
from bilevel_envs.envs.tax_design.followers import GridSoftVI  # noqa: E402
from bilevel_envs.envs.tax_design.problem import TaxDesign, TaxDesignTabular
from bilevel_envs.envs.tax_design.simulator import HouseholdOracle
from bilevel_envs.exact import ExactSolver
from bilevel_envs.followers import TabularPolicy  # noqa: E402
from bilevel_envs.oracles import GymOracle, TabularOracle


def main() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for variant in ("code", "paper"):
        problem = TaxDesignTabular(variant)
        xs = problem.x_init + rng.uniform(0, 0.2, size=(8, problem.n_params))

        def cold():
            ExactSolver(problem).value_and_grad(xs[0])

        solver = ExactSolver(problem)
        it = iter(range(10**9))
        warm = timeit(lambda: solver.value_and_grad(xs[next(it) % 8]), 7)
        model = timeit(lambda: problem.tabular(xs[0], 0), 5)
        rows.append((f"exact J + dJ/dx, {variant} (S={problem.n_cells}, A=1250), cold",
                     f"{timeit(cold, 5) * 1e3:7.0f} ms"))
        rows.append((f"exact J + dJ/dx, {variant}, warm, new x", f"{warm * 1e3:7.0f} ms"))
        rows.append((f"tabular model at a new income tax, {variant}", f"{model * 1e3:7.0f} ms"))

    continuous = TaxDesign()
    x = continuous.x_init
    policy = GridSoftVI().respond(continuous, x, 0).policy
    oracle = HouseholdOracle(continuous, x, 0, policy)
    for n_envs, n_steps in ((300, 200), (10, 6000), (3000, 200)):
        seconds = timeit(lambda: oracle.rollout(np.random.default_rng(1), n_envs, n_steps), 3)
        rows.append((f"vectorised simulator, {n_envs} x {n_steps}",
                     f"{n_envs * n_steps / seconds / 1e3:7.0f} k transitions/s"))
    gym_oracle = GymOracle(continuous, x, 0, policy)
    seconds = timeit(lambda: gym_oracle.rollout(np.random.default_rng(1), 10, 200), 2)
    rows.append(("generic Gymnasium path, 10 x 200",
                 f"{2000 / seconds / 1e3:7.0f} k transitions/s"))
    tabular = TaxDesignTabular()
    table = ExactSolver(tabular).solve(tabular.x_init, [0])[1].pi[0]
    tab_oracle = TabularOracle(tabular, tabular.x_init, 0, TabularPolicy(table))
    seconds = timeit(lambda: tab_oracle.rollout(np.random.default_rng(1), 300, 200), 3)
    rows.append(("tabular variant (numba), 300 x 200", f"{60 / seconds:7.0f} k transitions/s"))

    for kwargs, label in (({"tabular": True}, "tabular, soft_vi"),
                          ({"follower": "grid_soft_vi"}, "continuous, grid_soft_vi")):
        env = gym.make("bilevel/TaxDesign-v0", **kwargs)
        env.reset(seed=0)
        xs = iter(x + 0.01 * k for k in range(100))
        rows.append((f"TaxDesign-v0 step (60,000 transitions), {label}",
                     f"{timeit(lambda: env.step(next(xs)), 3) * 1e3:7.0f} ms"))

    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
