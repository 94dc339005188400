"""``bilevel-bench``: reproduce the paper's experiments from the command line.

    bilevel-bench table3 --quick          # a few minutes on 2 cores
    bilevel-bench table3 --seeds 10       # the full Table 3 at the selected learning rates
    bilevel-bench table3 --grid           # search the paper's grid first
    bilevel-bench tax --quick             # tax design, tabular and soft-DQN households
    bilevel-bench tax                     # Fig. 3a/3b: 3 seeds, ≤ 1 hour with soft DQN
"""

from __future__ import annotations

import argparse
import os
import sys

from bilevel_bench.experiments import EXPERIMENTS, experiment_module


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bilevel-bench", description="Reproduce the experiments of Thoma et al. (2024) "
                                          "and the library's benchmarks.")
    subparsers = parser.add_subparsers(dest="experiment", required=True)
    for name in EXPERIMENTS:
        experiment_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # parallelism is across runs
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
