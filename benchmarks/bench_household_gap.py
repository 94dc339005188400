"""How close do soft-DQN households get to the soft optimum? Train one household with given
follower arguments at given taxes and print its exact soft-optimality gap per preference group,
measured on the 41-cell grid economy (:mod:`bilevel_envs.follower_quality`).

    python benchmarks/bench_household_gap.py --setup neural_grid --groups 0 1 \
        --path x0 mid hpgd --seed 0

``--path`` trains the household at the first taxes for the set-up's warm-up budget, then at each
further taxes for its per-step budget (warm-started, as across leader steps), and prints the gap
after each. ``--set key=value`` overrides follower arguments (``algo_kwargs.learning_rate=1e-3``;
values are parsed as Python literals, e.g.
``'algo_kwargs.lr_decay={"kind": "linear", "timesteps": 200000, "final": 0.05}'``). Repeat a
name to print the gap after each chunk: ``--path x0 x0 x0 --set warmup_timesteps=20000
--set total_timesteps=20000``. ``--by-state K`` prints, after the last chunk, the K asset cells
that cost the most (:func:`bilevel_envs.follower_quality.gap_by_state`). Shared machine: times
are indicative.
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

#: named taxes: the initial ones, the exact-household HPGD result (tabular set-up, 40
#: iterations, docs/tax_design.md) and their midpoint
TAXES = {"x0": np.full(4, 0.3), "hpgd": np.array([0.61, 0.0, 0.0, 0.28])}
TAXES["mid"] = 0.5 * (TAXES["x0"] + TAXES["hpgd"])


def parse_override(follower_kwargs: dict, item: str) -> None:
    key, _, value = item.partition("=")
    target = follower_kwargs
    *parents, leaf = key.split(".")
    for parent in parents:
        target = target.setdefault(parent, {})
    target[leaf] = ast.literal_eval(value)


def main() -> None:
    import torch

    from bilevel_bench.experiments.tax.spec import SETUPS
    from bilevel_envs.envs.tax_design.problem import TaxDesign, TaxDesignTabular
    from bilevel_envs.follower_quality import follower_quality, gap_by_state
    from bilevel_envs.followers import make_follower

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setup", default="neural_grid", choices=sorted(SETUPS))
    parser.add_argument("--groups", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--path", nargs="+", default=["x0"], choices=sorted(TAXES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--by-state", type=int, default=0, metavar="K",
                        help="after the last chunk, the K cells with the largest share of the gap")
    args = parser.parse_args()
    torch.set_num_threads(1)

    setup = SETUPS[args.setup]
    kwargs = copy.deepcopy(setup["follower_kwargs"])
    for item in args.set:
        parse_override(kwargs, item)
    problem = (TaxDesignTabular() if setup["tabular"] else TaxDesign())
    grid = problem.discretised(41)
    observations = problem.twin_observations(grid)
    print(f"setup {args.setup}  overrides {args.set}")
    for group in args.groups:
        follower = make_follower(setup["follower"], **kwargs)
        warm = None
        for name in args.path:
            x = TAXES[name]
            start, cpu = time.perf_counter(), time.process_time()
            response = follower.respond(problem, x, group, seed=args.seed, warm_start=warm)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            warm = response.warm_start
            model = grid.tabular(x, group)
            quality, solution = follower_quality(model, problem.lam, response.policy,
                                                 observations=observations)
            print(f"group {group}  x={name:5s} transitions {response.cost.transitions:7d}  "
                  f"gap {quality.gap:8.4f}  V* {quality.v_star:7.3f}  V^pi {quality.v_pi:7.3f}"
                  f"  TV {quality.tv:.3f}  wall {wall:6.1f}s cpu {cpu:6.1f}s", flush=True)
        if args.by_state:
            split = gap_by_state(model, problem.lam, response.policy,
                                 observations=observations, solution=solution)
            shares = ", ".join(f"cell {c} {split[c] / abs(quality.v_star):.3f}"
                               for c in np.argsort(-split)[:args.by_state])
            print(f"group {group}  largest shares of the gap: {shares}", flush=True)


if __name__ == "__main__":
    main()
